"""XEP-0421 occupant-id and the room's vCard / avatar (XEP-0486) on the real five-server
network with the real daemons, seen by a direct user (efnet.irc, no slave) and by users
behind the killrc, eris and vesa slaves: everyone sees the master's ids and avatar.

A network of its own (127.0.7.x), so that it never meets another module's.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dmuc.master.features.occupant_id import compute
from testbed import ComponentSpec, ProsodyInstance, TwistdDaemon
from testbed.network import DmucNetwork, slave_jid
from tests.integration.conftest import make_tempdir, running, write_master_config
from tests.integration.test_dmuc_slaves import (  # noqa: F401 - fixtures, used by name
    ERIS,
    KILLRC,
    VESA,
    Daemons,
    People,
    _daemons_alive,
    cast,
    dmuc,
    enter_all,
    everyone_gets,
    is_groupchat,
    join,
    room_of,
    say,
)
from tests.integration.test_master_daemon import configure
from tests.integration.xmpp_client import (
    NS_DISCO_INFO,
    NS_MUC,
    NS_VCARD,
    Client,
    Predicate,
    all_of,
    error_condition,
    is_message,
    is_presence,
    run,
    take_through,
    xml_str,
)

pytestmark = pytest.mark.integration

IPS = ("127.0.7.2", "127.0.7.3", "127.0.7.4", "127.0.7.5", "127.0.7.6")
NS_OCCUPANT_ID = "urn:xmpp:occupant-id:0"
NS_VCARD_UPDATE = "vcard-temp:x:update"
NS_DATA = "jabber:x:data"
PHOTO = bytes(range(256)) * 8  # 2 KiB of "image"
PHOTO_SHA1 = hashlib.sha1(PHOTO).hexdigest()  # noqa: S324 - XEP-0153 names SHA-1
VCARD = (f"<vCard xmlns='{NS_VCARD}'><FN>Wallops</FN><PHOTO><TYPE>image/png</TYPE>"
         f"<BINVAL>{base64.b64encode(PHOTO).decode()}</BINVAL></PHOTO></vCard>")
FORGED = f"<occupant-id xmlns='{NS_OCCUPANT_ID}' id='forged'/>"


@pytest.fixture(scope="module")
def network() -> Iterator[DmucNetwork]:
    workdir = make_tempdir("dmuc-occid-net-")
    yield from running(DmucNetwork(workdir, ips=IPS), workdir)


def occupant_ids(elem: ET.Element) -> list[str]:
    return [e.get("id", "") for e in elem if e.tag == f"{{{NS_OCCUPANT_ID}}}occupant-id"]


def the_id(elem: ET.Element) -> str:
    ids = occupant_ids(elem)
    assert len(ids) == 1 and ids[0] and ids[0] != "forged", xml_str(elem)
    return ids[0]


def avatar_presence(room: str) -> Predicate:
    return all_of(is_presence(from_=room),
                  lambda e: e.find(f"{{{NS_VCARD_UPDATE}}}x") is not None)


def photo_of(presence: ET.Element) -> str:
    photo = presence.find(f"{{{NS_VCARD_UPDATE}}}x/{{{NS_VCARD_UPDATE}}}photo")
    assert photo is not None, xml_str(presence)
    return (photo.text or "").strip()


def disco_info(client: Client, room: str) -> ET.Element:
    reply = run(client.iq(f"<iq type='get' to='{room}'><query xmlns='{NS_DISCO_INFO}'/></iq>"))
    assert reply.get("type") == "result", xml_str(reply)
    return reply


def features(reply: ET.Element) -> set[str]:
    return {f.get("var", "") for f in reply.iter(f"{{{NS_DISCO_INFO}}}feature")}


def roominfo_values(reply: ET.Element, var: str) -> list[str]:
    for field in reply.iter(f"{{{NS_DATA}}}field"):
        if field.get("var") == var:
            return [v.text or "" for v in field.iter(f"{{{NS_DATA}}}value")]
    raise AssertionError(f"no {var} in {xml_str(reply)}")


def presence_ids(clients: list[Client], room: str, nick: str) -> list[str]:
    """The occupant-id each client sees on `nick`'s next available presence."""
    got = everyone_gets(clients, is_presence(from_=f"{room}/{nick}", type_="available"))
    return [the_id(p) for p in got]


# ----------------------------------------------------------------------------------------------


def test_the_same_occupant_id_directly_and_behind_every_slave_across_a_master_restart(
        dmuc: Daemons, cast: Callable[..., People]) -> None:  # noqa: F811 - fixtures
    room, other = room_of("occid"), room_of("occid-other")
    people = cast("Wumpus", "WiZ", "BigCheese", "Ludwig", "Efchen")
    wumpus, wiz, big, ludwig, efchen = (people[n] for n in
                                        ("Wumpus", "WiZ", "BigCheese", "Ludwig", "Efchen"))
    enter_all({n: people[n] for n in ("Wumpus", "WiZ", "BigCheese", "Ludwig")}, room)
    configure(wumpus, room, persistentroom=True)  # its salt is stored with it
    for reply in (disco_info(big, room), disco_info(ludwig, room)):  # through vesa; direct
        assert NS_OCCUPANT_ID in features(reply)

    # WiZ (behind eris) is seen with one id by the direct user and behind killrc and vesa;
    # the id WiZ's client sends is replaced (presence and message).
    wiz.send_raw(f"<presence to='{room}/WiZ'><status>here</status>{FORGED}</presence>")
    seen = presence_ids([wiz, wumpus, big, ludwig], room, "WiZ")
    assert len(set(seen)) == 1, seen
    wiz_id = seen[0]
    wiz.send_raw(f"<message to='{room}' type='groupchat'><body>one</body>{FORGED}</message>")
    got = everyone_gets([wiz, wumpus, big, ludwig], is_groupchat(room, "WiZ", "one"))
    assert [the_id(m) for m in got] == [wiz_id] * 4
    # and the direct user's id behind every slave
    ludwig.send_raw(f"<presence to='{room}/Ludwig'><status>hi</status></presence>")
    assert len(set(presence_ids([ludwig, wumpus, wiz, big], room, "Ludwig"))) == 1
    # a private message across servers carries the sender's id
    wiz.send_raw(f"<message to='{room}/BigCheese' type='chat'><body>psst</body></message>")
    pm = run(big.expect(is_message(from_=f"{room}/WiZ", type_="chat")))
    assert the_id(pm) == wiz_id

    # a newcomer behind vesa: the occupant list and the history from its slave
    seq = join(efchen, room, "Efchen")
    [listed] = [e for e in seq if is_presence(from_=f"{room}/WiZ")(e)]
    [old] = [e for e in seq if is_groupchat(room, "WiZ", "one")(e)]
    assert the_id(listed) == the_id(old) == wiz_id

    # another room: another id for the same user
    other_seq = join(wiz, other, "WiZ")
    [own_there] = [e for e in other_seq if is_presence(from_=f"{other}/WiZ")(e)]
    assert the_id(own_there) != wiz_id
    wiz.send_raw(f"<presence to='{other}/WiZ' type='unavailable'/>")
    run(wiz.expect(is_presence(from_=f"{other}/WiZ", type_="unavailable")))

    # a rejoin: the same id
    wiz.send_raw(f"<presence to='{room}/WiZ' type='unavailable'/>")
    left = everyone_gets([wumpus, big, ludwig],
                         is_presence(from_=f"{room}/WiZ", type_="unavailable"))
    assert [the_id(p) for p in left] == [wiz_id] * 3
    rejoin = join(wiz, room, "WiZ-again")
    assert the_id([e for e in rejoin if is_presence(from_=f"{room}/WiZ-again")(e)][-1]) \
        == wiz_id

    # the master restarts: the salt comes back from storage, so do the ids
    for c in people.values():
        c.drain()
    registered = f"registered with {room}"
    before = {d: dmuc.slaves[d].log_text().count(registered) for d in (KILLRC, ERIS, VESA)}
    dmuc.master.stop()
    dmuc.master.start(wait_for="component connected")
    for domain, count in before.items():
        dmuc.slaves[domain].wait_for_log(registered, count=count + 1)
    for nick, domain in (("WiZ-again", ERIS), ("Wumpus", KILLRC), ("BigCheese", VESA)):
        dmuc.master.wait_for_log(f"joined {room} as {nick} through {slave_jid(domain)}")
    join(ludwig, room, "Ludwig")  # kept across the restart: a join again, whole sequence
    say(wiz, room, "after the restart")
    got = everyone_gets([wiz, wumpus, big, ludwig, efchen],
                        is_groupchat(room, "WiZ-again", "after the restart"))
    assert [the_id(m) for m in got] == [wiz_id] * 5


def test_the_rooms_vcard_and_avatar_directly_and_through_slaves(
        cast: Callable[..., People]) -> None:  # noqa: F811 - the fixture
    room = room_of("vcard")
    people = cast("Wumpus", "WiZ", "BigCheese", "Ludwig", "Efchen")
    wumpus, wiz, big, ludwig, efchen = (people[n] for n in
                                        ("Wumpus", "WiZ", "BigCheese", "Ludwig", "Efchen"))
    inside = [wumpus, wiz, big, ludwig]
    enter_all({n: people[n] for n in ("Wumpus", "WiZ", "BigCheese", "Ludwig")}, room)
    get = f"<iq type='get' to='{room}'><vCard xmlns='{NS_VCARD}'/></iq>"
    assert error_condition(run(big.iq(get))) == "item-not-found"
    assert roominfo_values(disco_info(big, room), "muc#roominfo_avatarhash") == []

    # only an owner may set it (Wumpus owns the room, behind killrc; BigCheese does not)
    res = run(big.iq(f"<iq type='set' to='{room}'>{VCARD}</iq>"))
    assert error_condition(res) == "forbidden", xml_str(res)
    too_big = VCARD.replace("<FN>Wallops</FN>", f"<DESC>{'x' * 140_000}</DESC>")
    res = run(wumpus.iq(f"<iq type='set' to='{room}'>{too_big}</iq>"))
    assert error_condition(res) == "not-acceptable", xml_str(res)
    res = run(wumpus.iq(f"<iq type='set' to='{room}'>{VCARD}</iq>"))
    assert res.get("type") == "result", xml_str(res)

    # everyone is told: the hash from the room JID, and status 104
    hashes = everyone_gets(inside, avatar_presence(room))
    assert [photo_of(p) for p in hashes] == [PHOTO_SHA1] * 4
    everyone_gets(inside, all_of(is_message(from_=room, type_="groupchat"),
                                 lambda e: "104" in {s.get("code") for s in e.iter()
                                                     if s.tag.endswith("}status")}))
    # everyone reads it: directly, and behind slaves (the IQ goes through the slave)
    for client in (ludwig, big, wiz):
        card = run(client.iq(get))
        assert card.get("type") == "result", xml_str(card)
        binval = card.find(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}PHOTO/{{{NS_VCARD}}}BINVAL")
        assert binval is not None and base64.b64decode(binval.text or "") == PHOTO
        info = disco_info(client, room)
        assert "vcard-temp" in features(info)
        assert roominfo_values(info, "muc#roominfo_avatarhash") == [PHOTO_SHA1]

    # a newcomer behind vesa gets the hash from its slave, one directly from the master
    efchen.send_raw(f"<presence to='{room}/Efchen'><x xmlns='{NS_MUC}'/></presence>")
    seq = run(take_through(efchen, avatar_presence(room)))
    assert photo_of(seq[-1]) == PHOTO_SHA1
    assert any(is_presence(from_=f"{room}/Efchen")(e) for e in seq)
    ludwig.send_raw(f"<presence to='{room}/Ludwig' type='unavailable'/>")
    run(ludwig.expect(is_presence(from_=f"{room}/Ludwig", type_="unavailable")))
    ludwig.drain()
    ludwig.send_raw(f"<presence to='{room}/Ludwig'><x xmlns='{NS_MUC}'/></presence>")
    assert photo_of(run(ludwig.expect(avatar_presence(room)))) == PHOTO_SHA1


# ----------------------------------------------------------------------------------------------
# against Prosody 0.12's own mod_muc: the same ids from the same salt, in the same places

REFERENCE_MUC = "realmuc.avalon.irc"  # Prosody's mod_muc
OUR_MUC = "channel.avalon.irc"  # dmuc-master


@pytest.fixture(scope="module")
def reference() -> Iterator[ProsodyInstance]:
    """One Prosody with its own mod_muc and our master beside it."""
    workdir = make_tempdir("dmuc-occid-ref-")
    prosody = ProsodyInstance(
        workdir, ip="127.0.7.9", virtualhosts=["avalon.irc"],
        components=[ComponentSpec(OUR_MUC, secrets.token_hex(16))],
        extra_config=f'Component "{REFERENCE_MUC}" "muc"\n    muc_room_locking = false\n')
    for started in running(prosody, workdir):
        master_dir = workdir / "master"
        master_dir.mkdir()
        config = write_master_config(master_dir / "master.toml", started,
                                     master_dir / "master.db", component=OUR_MUC,
                                     extra_toml="[muc]\nroom_locking = false\n")
        daemon = TwistdDaemon("dmuc-master", config, master_dir)
        daemon.start(wait_for="component connected")
        try:
            yield started
        finally:
            daemon.stop()


def neighbours(elem: ET.Element) -> tuple[str | None, str | None]:
    """The tags just before and after the occupant-id element (None: none there)."""
    tags = [child.tag for child in elem if not child.tag.endswith("}stanza-id")]
    at = tags.index(f"{{{NS_OCCUPANT_ID}}}occupant-id")
    return (tags[at - 1] if at else None, tags[at + 1] if at + 1 < len(tags) else None)


def prosody_salt(prosody: ProsodyInstance, room_node: str) -> str:
    """The occupant-id salt mod_muc stored with a persistent room (internal storage)."""
    path = Path(prosody.workdir, "data", REFERENCE_MUC.replace(".", "%2e"), "config",
                f"{room_node}.dat")
    found = re.search(r'\["occupant_id_salt"\] = "([^"]+)"', path.read_text())
    assert found, path.read_text()
    return found.group(1)


def test_ids_and_their_places_are_prosodys(reference: ProsodyInstance) -> None:
    alice = Client("alice@avalon.irc/a", host=reference.ip, port=reference.c2s_port)
    bob = Client("bob@avalon.irc/b", host=reference.ip, port=reference.c2s_port)
    run(asyncio.gather(alice.connect(), bob.connect()))
    try:
        places = {}
        for service in (REFERENCE_MUC, OUR_MUC):
            room = f"ref@{service}"
            join(alice, room, "alice")
            configure(alice, room, persistentroom=True)
            join(bob, room, "bob")
            alice.drain()
            bob.send_raw(f"<presence to='{room}/bob'><status>s</status>{FORGED}</presence>")
            seen = [run(c.expect(is_presence(from_=f"{room}/bob", type_="available")))
                    for c in (alice, bob)]
            bob.send_raw(f"<message to='{room}' type='groupchat'><body>b</body>{FORGED}"
                         "</message>")
            seen += [run(c.expect(is_groupchat(room, "bob", "b"))) for c in (alice, bob)]
            bob.send_raw(f"<message to='{room}/alice' type='chat'><body>p</body>{FORGED}"
                         "</message>")
            seen.append(run(alice.expect(is_message(from_=f"{room}/bob", type_="chat"))))
            bob.send_raw(f"<presence to='{room}/bob' type='unavailable'/>")
            seen.append(run(alice.expect(is_presence(from_=f"{room}/bob",
                                                     type_="unavailable"))))
            ids = {the_id(e) for e in seen}
            assert len(ids) == 1, [xml_str(e) for e in seen]
            places[service] = [neighbours(e) for e in seen]
            if service == REFERENCE_MUC:
                expected = compute("bob@avalon.irc", prosody_salt(reference, "ref"))
                assert ids == {expected}  # our computation, on Prosody's own salt
            for c in (alice, bob):
                c.drain()
        assert places[OUR_MUC] == places[REFERENCE_MUC]
        for service in (REFERENCE_MUC, OUR_MUC):
            assert NS_OCCUPANT_ID in features(disco_info(alice, f"ref@{service}"))
    finally:
        run(asyncio.gather(alice.disconnect(), bob.disconnect(), return_exceptions=True))
