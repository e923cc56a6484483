"""XEP-0282 on the real five-server network, with the real daemons: one ``dmuc-master``
(``channel.avalon.irc`` on avalon.irc) and one ``dmuc-slave`` per slave server
(``dmuc.<domain>`` on killrc.oulubox.irc, eris.dclxvii.irc, vesa.yeggmaex.irc); efnet.irc has
no slave, its users are direct occupants. The seed's use cases (§5.1 entering, §5.2 a message
to all occupants) are checked stanza by stanza, with the stanzas counted on the s2s links.

The module starts a network of its own (on 127.0.1.x), so it can add a spare component on
avalon.irc that may forge the room's addresses (``forge.avalon.irc``, to play a misbehaving
master) and a plain one on vesa (``probe.vesa.yeggmaex.irc``, to play an unknown slave).
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import ComponentSpec, TwistdDaemon
from testbed.network import (
    DIRECT_DOMAIN,
    DMUC_NS,
    MASTER_DOMAIN,
    MUC_SERVICE,
    SLAVE_DOMAINS,
    DmucNetwork,
    slave_jid,
)
from tests.integration.cast import CAST as SEED_CAST
from tests.integration.cast import DIRECT_USER
from tests.integration.conftest import (
    PROBE_COMPONENT,
    MakeClient,
    keep_testbed,
    make_tempdir,
    running,
)
from tests.integration.test_network import RawComponent, error_condition_component
from tests.integration.xmpp_client import (
    NS_CLIENT,
    NS_DELAY,
    NS_DISCO_INFO,
    NS_MUC,
    NS_MUC_ADMIN,
    NS_MUC_USER,
    NS_PING,
    NS_VCARD,
    Client,
    Predicate,
    all_of,
    body,
    error_condition,
    has_status,
    is_iq,
    is_message,
    is_presence,
    muc_item,
    run,
    status_codes,
    take_through,
    xml_str,
)

pytestmark = pytest.mark.integration

KILLRC, ERIS, VESA = SLAVE_DOMAINS
FORGE = "forge.avalon.irc"  # may send as any JID avalon.irc hosts (the room's, too)
IPS = ("127.0.1.2", "127.0.1.3", "127.0.1.4", "127.0.1.5", "127.0.1.6")
NS_SID = "urn:xmpp:sid:0"

# XEP-0282 §3.1, plus a user of a server without a slave
CAST = {**SEED_CAST, DIRECT_USER[0]: DIRECT_USER[1]}
EVERYONE = list(CAST)
BEFORE_BIGCHEESE = [n for n in EVERYONE if n != "BigCheese"]
MODERATORS = {"Wumpus", "WiZ", "Troy"}  # once test 1 has granted them (seed §3.1)


def room_of(test: str) -> str:
    return f"wallops-{test}@{MUC_SERVICE}"


def wait_for_text(read: Callable[[], str], text: str, count: int = 1,
                  timeout: float = 10.0) -> None:
    """Wait until ``text`` occurs ``count`` times in ``read()`` (a log file), like
    TwistdDaemon.wait_for_log."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while read().count(text) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"{text!r} did not appear {count} times within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.1)


def mirror_line(domain: str) -> str:
    """What mod_dmuc_slave logs once the slave component has set its mirror list."""
    return f"{slave_jid(domain)} mirrors: {MUC_SERVICE}"


# ----------------------------------------------------------------------------------------------
# the network and the daemons


@pytest.fixture(scope="module")
def network() -> Iterator[DmucNetwork]:
    """This module's own five-server network (overrides the session one for this module;
    ``net_client_factory`` connects to it)."""
    workdir = make_tempdir("dmuc-slaves-net-")
    yield from running(DmucNetwork(workdir, ips=IPS, extra_components={
        VESA: [ComponentSpec(PROBE_COMPONENT, secrets.token_hex(16))],
        MASTER_DOMAIN: [ComponentSpec(FORGE, secrets.token_hex(16),
                                      options={"validate_from_addresses": False})],
    }), workdir)


@dataclass
class Daemons:
    network: DmucNetwork
    master: TwistdDaemon
    slaves: dict[str, TwistdDaemon]

    def stop_slave(self, domain: str) -> None:
        """Stop a slave by PID (its users stay connected to their server)."""
        daemon = self.slaves[domain]
        daemon.stop()
        assert not daemon.running()

    def start_slave(self, domain: str) -> TwistdDaemon:
        """Start a stopped slave again, on the same config and SQLite file; wait until it is
        connected and Prosody diverts room traffic to it again."""
        daemon = self.slaves[domain]
        prosody = self.network.server(domain).prosody
        mirrors = prosody.log_text().count(mirror_line(domain))
        daemon.start(wait_for="component connected")
        wait_for_text(prosody.log_text, mirror_line(domain), mirrors + 1)
        return daemon


def _slave_toml(network: DmucNetwork, domain: str, db: Path) -> str:
    # keepalive 600 s: no keepalive iq may cross a link while a test counts stanzas
    toml = network.slave_config(domain, db)
    assert "keepalive = 60\n" in toml
    return toml.replace("keepalive = 60\n", "keepalive = 600\n")


@pytest.fixture(scope="module")
def dmuc(network: DmucNetwork) -> Iterator[Daemons]:
    """The master and the three slaves, each in a workdir of its own; stopped by PID."""
    workdir = make_tempdir("dmuc-slaves-daemons-")
    master_dir = workdir / "master"
    master_dir.mkdir()
    config = master_dir / "master.toml"
    config.write_text(network.master_config(master_dir / "master.db"))
    master = TwistdDaemon("dmuc-master", config, master_dir)
    slaves: dict[str, TwistdDaemon] = {}
    for domain in SLAVE_DOMAINS:
        d = workdir / domain
        d.mkdir()
        (d / "slave.toml").write_text(_slave_toml(network, domain, d / "slave.db"))
        slaves[domain] = TwistdDaemon("dmuc-slave", d / "slave.toml", d)
    daemons = [master, *slaves.values()]
    try:
        with ThreadPoolExecutor(len(daemons)) as pool:
            for future in [pool.submit(d.start, "component connected") for d in daemons]:
                future.result()
        for domain in SLAVE_DOMAINS:  # room traffic is diverted to the slaves from now on
            wait_for_text(network.server(domain).prosody.log_text, mirror_line(domain))
        yield Daemons(network, master, slaves)
    finally:
        for daemon in daemons:
            daemon.stop()
        if not keep_testbed():
            shutil.rmtree(workdir, ignore_errors=True)


People = dict[str, Client]


@pytest.fixture
def cast(dmuc: Daemons, net_client_factory: MakeClient) -> Callable[..., People]:
    """``people = cast("Wumpus", "WiZ")``: their clients, logged in concurrently."""

    def make(*nicks: str) -> People:
        clients = {n: net_client_factory(CAST[n], connect=False) for n in nicks}
        run(asyncio.gather(*(c.connect() for c in clients.values())))
        return clients

    return make


@pytest.fixture(autouse=True)
def _daemons_alive(request: pytest.FixtureRequest) -> Iterator[None]:
    """Whatever a test sent, no daemon may have died."""
    yield
    if "dmuc" in request.fixturenames:
        daemons: Daemons = request.getfixturevalue("dmuc")
        for daemon in (daemons.master, *daemons.slaves.values()):
            assert daemon.running(), f"{daemon} died:\n{daemon.log_text()[-3000:]}"
            assert "Traceback" not in daemon.log_text(), daemon.log_text()[-3000:]


# ----------------------------------------------------------------------------------------------
# helpers


def child(elem: ET.Element, name: str, ns: str = NS_CLIENT) -> ET.Element | None:
    return elem.find(f"{{{ns}}}{name}")


def has_dmuc(elem: ET.Element) -> bool:
    return any(e.tag.startswith(f"{{{DMUC_NS}}}") for e in elem.iter())


def is_subject(room: str) -> Predicate:
    return lambda e: (is_message(type_="groupchat")(e)
                      and (e.get("from") or "").split("/")[0] == room
                      and child(e, "subject") is not None and child(e, "body") is None)


def is_groupchat(room: str, nick: str, text: str) -> Predicate:
    return all_of(is_message(from_=f"{room}/{nick}", type_="groupchat"),
                  lambda e: body(e) == text)


def is_self(room: str, nick: str) -> Predicate:
    return all_of(is_presence(from_=f"{room}/{nick}", type_="available"),
                  lambda e: has_status(e, 110))


def everyone_gets(clients: list[Client], predicate: Predicate) -> list[ET.Element]:
    return run(asyncio.gather(*(c.expect(predicate) for c in clients)))


def join(client: Client, room: str, nick: str) -> list[ET.Element]:
    """Join; return the whole join sequence up to and including the subject."""
    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'/></presence>")
    seq = run(take_through(client, is_subject(room)))
    assert any(is_self(room, nick)(e) for e in seq), \
        f"{client.jid} did not enter {room} as {nick}:\n" + "\n".join(map(xml_str, seq))
    return seq


def enter_all(people: People, room: str, order: list[str] | None = None) -> None:
    """Everyone enters ``room`` in ``order`` (the first creates it and owns it); every
    occupant has seen every later arrival; inboxes are left empty."""
    inside: list[Client] = []
    for nick in order or list(people):
        join(people[nick], room, nick)
        everyone_gets(inside, is_presence(from_=f"{room}/{nick}", type_="available"))
        inside.append(people[nick])
    for c in inside:
        c.drain()


def admin(client: Client, room: str, item: str) -> ET.Element:
    reply = run(client.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_ADMIN}'>"
                          f"{item}</query></iq>"))
    assert reply.get("type") == "result", xml_str(reply)
    return reply


def say(client: Client, room: str, text: str) -> None:
    client.send_raw(f"<message to='{room}' type='groupchat'><body>{text}</body></message>")


def room_counts(network: DmucNetwork, room: str, target: str,
                source: str = MASTER_DOMAIN) -> dict[str, int]:
    """Stanzas ``source``'s server sent ``target``'s over s2s about ``room`` (from it, one of
    its occupants, or to it): the same as s2s_counts, minus other rooms' traffic."""
    counts = {"message": 0, "presence": 0, "iq": 0}
    for s in network.s2s_log(target, source):
        if room in ((s.from_ or "").split("/")[0], (s.to or "").split("/")[0]):
            counts[s.kind] += 1
    return counts


def counts_table(network: DmucNetwork, room: str, title: str,
                 occupants: dict[str, int]) -> str:
    lines = [title, f"  {'avalon.irc ->':<22}{'occupants':>10}{'message':>9}{'presence':>10}"
                    f"{'iq':>4}   (all rooms: message/presence/iq)"]
    for target, n in occupants.items():
        c = room_counts(network, room, target)
        raw = network.s2s_counts(target)
        lines.append(f"  {target:<22}{n:>10}{c['message']:>9}{c['presence']:>10}{c['iq']:>4}"
                     f"   ({raw['message']}/{raw['presence']}/{raw['iq']})")
    return "\n".join(lines)


def assert_nothing_more(client: Client, predicate: Predicate) -> None:
    """Nothing matching arrived by a round trip to the client's own server (which comes
    after everything its server had already routed to it)."""
    run(client.expect_none(predicate))


# ----------------------------------------------------------------------------------------------
# 1. §5.1 entering a room, Listings 7-15


def test_entering_a_room_stanza_by_stanza(network: DmucNetwork, cast: Callable[..., People]
                                          ) -> None:
    room = room_of("enter")
    people = cast(*EVERYONE)
    enter_all(people, room, BEFORE_BIGCHEESE)
    wumpus, wiz = people["Wumpus"], people["WiZ"]
    others = [people[n] for n in BEFORE_BIGCHEESE]
    # the seed's roles: WiZ admin, Troy moderator (Wumpus owns the room he created)
    admin(wumpus, room, f"<item affiliation='admin' jid='{CAST['WiZ'].split('/')[0]}'/>")
    admin(wumpus, room, "<item nick='Troy' role='moderator'/>")
    everyone_gets(others, all_of(is_presence(from_=f"{room}/Troy"),
                                 lambda e: (muc_item(e) or {}).get("role") == "moderator"))
    # a new moderator gets the occupant list again, now with real JIDs (as from mod_muc):
    # WiZ from the snapshot eris's slave got when it gained its first moderator (§4.7),
    # Troy from eris's slave itself (it has the JIDs already)
    for nick in ("WiZ", "Troy"):
        run(people[nick].expect(all_of(is_presence(from_=f"{room}/Valdis", type_="available"),
                                       lambda e: (muc_item(e) or {}).get("jid")
                                       == CAST["Valdis"])))
    # some history and a subject
    for text in ("h1", "h2"):
        say(wiz, room, text)
        everyone_gets(others, is_groupchat(room, "WiZ", text))
    wumpus.send_raw(f"<message to='{room}' type='groupchat'><subject>Netsplit 1990</subject>"
                    "</message>")
    everyone_gets(others, is_subject(room))
    for c in others:
        c.drain()

    big = people["BigCheese"]
    network.reset_counts()
    # Listing 7
    big.send_raw(f"<presence to='{room}/BigCheese'><x xmlns='{NS_MUC}'/></presence>")

    # Listings 9-11: every other occupant sees him arrive; only moderators see his real JID
    arrived = everyone_gets(others, is_presence(from_=f"{room}/BigCheese", type_="available"))
    for nick, presence in zip(BEFORE_BIGCHEESE, arrived):
        item = muc_item(presence)
        assert item is not None and (item["affiliation"], item["role"]) == (
            "none", "participant"), (nick, xml_str(presence))
        if nick in MODERATORS:
            assert item.get("jid") == CAST["BigCheese"], (nick, xml_str(presence))
        else:
            assert "jid" not in item, (nick, xml_str(presence))
        assert "110" not in status_codes(presence) and not has_dmuc(presence), xml_str(presence)

    # Listings 12-15: the roster, his own presence (110), the history (delayed), the subject
    seq = run(take_through(big, is_subject(room)))
    shown = [(e.tag.rsplit("}", 1)[1], e.get("from", "").partition("/")[2]) for e in seq]
    roster = [("presence", n) for n in BEFORE_BIGCHEESE]
    assert shown == [*roster, ("presence", "BigCheese"), ("message", "WiZ"), ("message", "WiZ"),
                     ("message", "Wumpus")], "\n".join(map(xml_str, seq))
    for e in seq[:len(roster)]:
        nick = e.get("from", "").partition("/")[2]
        item = muc_item(e)
        assert item is not None and "jid" not in item, xml_str(e)  # he is no moderator
        assert item["role"] == ("moderator" if nick in MODERATORS else "participant"), xml_str(e)
        # as the master lists occupants to a direct user: no actor, reason or status codes
        # left over from the broadcast that last changed the occupant (WiZ's and Troy's grants)
        x = e.find(f"{{{NS_MUC_USER}}}x")
        assert [c.tag for c in x] == [f"{{{NS_MUC_USER}}}item"], xml_str(e)
        assert list(x.find(f"{{{NS_MUC_USER}}}item")) == [], xml_str(e)
    own = seq[len(roster)]
    assert "110" in status_codes(own), xml_str(own)
    assert muc_item(own) == {"affiliation": "none", "role": "participant",
                             "jid": CAST["BigCheese"]}, xml_str(own)
    history = seq[len(roster) + 1:-1]
    assert [body(m) for m in history] == ["h1", "h2"]
    for m in history:
        assert m.get("type") == "groupchat" and child(m, "delay", NS_DELAY) is not None, \
            xml_str(m)
        assert child(m, "stanza-id", NS_SID) is not None, xml_str(m)
    assert child(seq[-1], "subject").text == "Netsplit 1990"
    assert not any(has_dmuc(e) for e in seq)

    # the s2s links: one presence per slave server (vesa also gets the ENTER), one per
    # direct remote occupant; the roster, history and subject came from vesa's slave
    expected = {KILLRC: {"message": 0, "presence": 1, "iq": 0},
                ERIS: {"message": 0, "presence": 1, "iq": 0},
                VESA: {"message": 0, "presence": 2, "iq": 0},
                DIRECT_DOMAIN: {"message": 0, "presence": 1, "iq": 0}}
    for target, want in expected.items():
        run(network.await_counts(target, presence=want["presence"]))
    print("\n" + counts_table(network, room, "§5.1: s2s stanzas while BigCheese enters",
                              {KILLRC: 3, ERIS: 2, VESA: 2, DIRECT_DOMAIN: 1}))
    for target, want in expected.items():
        assert room_counts(network, room, target) == want, (target, network.s2s_log(target))
    # his join crossed vesa -> avalon once (the slave forwards it unchanged, §4.8)
    assert room_counts(network, room, MASTER_DOMAIN, source=VESA) == {
        "message": 0, "presence": 1, "iq": 0}
    [join_stanza] = [s for s in network.s2s_log(MASTER_DOMAIN, VESA) if s.kind == "presence"]
    assert (join_stanza.from_, join_stanza.to) == (CAST["BigCheese"], f"{room}/BigCheese")
    for c in others:
        assert not c.received(is_presence(from_=f"{room}/BigCheese")), c.dump()


# ----------------------------------------------------------------------------------------------
# 2. §5.2 a message to all occupants, Listings 16-20


def test_message_to_all_occupants_one_copy_per_server(network: DmucNetwork,
                                                      cast: Callable[..., People]) -> None:
    room = room_of("message")
    people = cast(*EVERYONE)
    enter_all(people, room, EVERYONE)
    text = "Phaedrus, we're all having a truly rotten time."
    network.reset_counts()
    # Listing 16
    people["BigCheese"].send_raw(f"<message to='{room}' type='groupchat' id='r1'>"
                                 f"<body>{text}</body></message>")
    # Listings 18-20: everyone, on every server, gets it from the room, as plain XEP-0045
    got = everyone_gets(list(people.values()), is_groupchat(room, "BigCheese", text))
    sids = set()
    for nick, m in zip(people, got):
        sid = child(m, "stanza-id", NS_SID)
        assert sid is not None and sid.get("by") == room, (nick, xml_str(m))
        sids.add(sid.get("id"))
        assert not has_dmuc(m), (nick, xml_str(m))
        assert child(m, "delay", NS_DELAY) is None, (nick, xml_str(m))  # live, not history
    assert len(sids) == 1  # one broadcast
    assert got[EVERYONE.index("BigCheese")].get("id") == "r1"

    # Listing 17: one copy per slave server, one per direct remote occupant
    for target in (KILLRC, ERIS, VESA, DIRECT_DOMAIN):
        run(network.await_counts(target, message=1))
    occupants = {KILLRC: 3, ERIS: 2, VESA: 2, DIRECT_DOMAIN: 1}
    print("\n" + counts_table(
        network, room, f"§5.2: s2s stanzas for ONE groupchat broadcast to {len(people)} "
                       f"occupants on 4 remote servers (plain XEP-0045 would send "
                       f"{sum(occupants.values())})", occupants))
    for target in (KILLRC, ERIS, VESA, DIRECT_DOMAIN):
        assert room_counts(network, room, target) == {"message": 1, "presence": 0, "iq": 0}, \
            (target, network.s2s_log(target))
    # each slave got exactly its one copy, addressed to the slave itself
    for target in (KILLRC, ERIS, VESA):
        [copy] = [s for s in network.s2s_log(target) if s.kind == "message"
                  and (s.from_ or "").startswith(room)]
        assert (copy.from_, copy.to, copy.type) == (f"{room}/BigCheese", slave_jid(target),
                                                    "groupchat")
    # the sender's message crossed vesa -> avalon once, unchanged (Listing 16)
    assert room_counts(network, room, MASTER_DOMAIN, source=VESA) == {
        "message": 1, "presence": 0, "iq": 0}
    for nick, c in people.items():
        assert not c.received(is_groupchat(room, "BigCheese", text)), (nick, c.dump())


# ----------------------------------------------------------------------------------------------
# 3. occupant use cases across servers


def test_nick_change_of_a_slave_side_user(cast: Callable[..., People]) -> None:
    room = room_of("nick")
    people = cast("Wumpus", "Phaedrus", "WiZ", "Efchen", "Ludwig")
    enter_all(people, room)
    phaedrus = people["Phaedrus"]
    others = [c for n, c in people.items() if n != "Phaedrus"]
    phaedrus.send_raw(f"<presence to='{room}/Phaed'/>")
    for c in [*others, phaedrus]:
        gone = run(c.expect(is_presence(from_=f"{room}/Phaedrus", type_="unavailable")))
        assert "303" in status_codes(gone) and muc_item(gone)["nick"] == "Phaed", xml_str(gone)
        assert ("110" in status_codes(gone)) == (c is phaedrus), (c, xml_str(gone))
        new = run(c.expect(is_presence(from_=f"{room}/Phaed", type_="available")))
        assert ("110" in status_codes(new)) == (c is phaedrus), (c, xml_str(new))
        assert not has_dmuc(gone) and not has_dmuc(new)
    # the new nick is used everywhere (killrc's slave renamed him in its distribution list)
    say(phaedrus, room, "renamed")
    everyone_gets([*others, phaedrus], is_groupchat(room, "Phaed", "renamed"))
    say(people["WiZ"], room, "still there?")
    everyone_gets([*others, phaedrus], is_groupchat(room, "WiZ", "still there?"))


def test_a_groupchat_without_an_id_is_tracked_on_the_link_only(cast: Callable[..., People]) -> None:
    """A client that sends groupchat without an id (as `say` does): mod_dmuc_slave gives
    it one before the slave sees it, so that it can be handed over again after a crash
    and submitted again after a netsplit (docs/protocol.md §4.11.2). That handle stays on
    the master/slave link: everyone gets the message once, without an id, as its sender
    sent it, and as a direct user's message is."""
    room = room_of("noid")
    people = cast("Phaedrus", "WiZ", "Ludwig")
    enter_all(people, room)
    say(people["Phaedrus"], room, "no id from killrc")
    copies = everyone_gets([people["Phaedrus"], people["WiZ"], people["Ludwig"]],
                           is_groupchat(room, "Phaedrus", "no id from killrc"))
    assert [c.get("id") for c in copies] == [None, None, None], [xml_str(c) for c in copies]
    say(people["Ludwig"], room, "no id from efnet")
    [direct_echo] = everyone_gets([people["Ludwig"]],
                                  is_groupchat(room, "Ludwig", "no id from efnet"))
    assert direct_echo.get("id") is None, xml_str(direct_echo)
    for c in people.values():
        assert_nothing_more(c, is_groupchat(room, "Phaedrus", "no id from killrc"))


def test_moderator_on_killrc_kicks_a_user_on_eris(cast: Callable[..., People]) -> None:
    room = room_of("kick")
    people = cast("Wumpus", "Valdis", "WiZ", "Troy", "BigCheese", "Ludwig")
    enter_all(people, room)
    wumpus, troy = people["Wumpus"], people["Troy"]
    admin(wumpus, room, "<item nick='Troy' role='none'><reason>Squit</reason></item>")
    own = run(troy.expect(is_presence(from_=f"{room}/Troy", type_="unavailable")))
    assert {"307", "110"} <= status_codes(own) and not has_dmuc(own), xml_str(own)
    others = [c for n, c in people.items() if n != "Troy"]
    for seen in everyone_gets(others, is_presence(from_=f"{room}/Troy", type_="unavailable")):
        assert "307" in status_codes(seen) and "110" not in status_codes(seen), xml_str(seen)
    # eris's slave no longer delivers room messages to him, but does to WiZ
    say(wumpus, room, "after the kick")
    everyone_gets(others, is_groupchat(room, "Wumpus", "after the kick"))
    assert_nothing_more(troy, is_message(type_="groupchat"))
    # and his own messages are refused (he is no occupant)
    say(troy, room, "let me in")
    err = run(troy.expect(is_message(from_=room, type_="error")))
    assert error_condition(err) == "not-acceptable", xml_str(err)


def test_owner_on_killrc_bans_a_user_on_vesa(cast: Callable[..., People]) -> None:
    room = room_of("ban")
    people = cast("Wumpus", "WiZ", "BigCheese", "Efchen", "Ludwig")
    enter_all(people, room)
    wumpus, efchen = people["Wumpus"], people["Efchen"]
    admin(wumpus, room, "<item affiliation='outcast' jid='msa@vesa.yeggmaex.irc'>"
                        "<reason>Spamming</reason></item>")
    own = run(efchen.expect(is_presence(from_=f"{room}/Efchen", type_="unavailable")))
    assert {"301", "110"} <= status_codes(own), xml_str(own)
    others = [c for n, c in people.items() if n != "Efchen"]
    for seen in everyone_gets(others, is_presence(from_=f"{room}/Efchen", type_="unavailable")):
        assert "301" in status_codes(seen) and "110" not in status_codes(seen), xml_str(seen)
    # rejoining is refused: 403
    efchen.send_raw(f"<presence to='{room}/Efchen'><x xmlns='{NS_MUC}'/></presence>")
    err = run(efchen.expect(is_presence(from_=f"{room}/Efchen", type_="error")))
    assert error_condition(err) == "forbidden", xml_str(err)
    assert child(err, "error").get("code") == "403", xml_str(err)
    say(wumpus, room, "good riddance")
    everyone_gets([people["BigCheese"]], is_groupchat(room, "Wumpus", "good riddance"))
    assert_nothing_more(efchen, is_message(type_="groupchat"))
    for c in others:
        assert not c.received(is_presence(from_=f"{room}/Efchen")), c.dump()


def test_private_messages_across_servers_both_ways(cast: Callable[..., People]) -> None:
    room = room_of("pm")
    people = cast("Valdis", "BigCheese", "Efchen")
    enter_all(people, room)
    valdis, big = people["Valdis"], people["BigCheese"]
    valdis.send_raw(f"<message to='{room}/BigCheese' type='chat' id='pm1'><body>psst</body>"
                    "</message>")
    pm = run(big.expect(is_message(from_=f"{room}/Valdis", type_="chat")))
    assert (body(pm), pm.get("id"), pm.get("to")) == ("psst", "pm1", big.jid)
    big.send_raw(f"<message to='{room}/Valdis' type='chat' id='pm2'><body>what?</body>"
                 "</message>")
    pm = run(valdis.expect(is_message(from_=f"{room}/BigCheese", type_="chat")))
    assert (body(pm), pm.get("id")) == ("what?", "pm2")
    # private: Efchen, on BigCheese's server, saw neither
    assert_nothing_more(people["Efchen"], is_message(type_="chat"))
    # to a nick that is not there
    valdis.send_raw(f"<message to='{room}/Nobody' type='chat'><body>?</body></message>")
    err = run(valdis.expect(is_message(from_=f"{room}/Nobody", type_="error")))
    assert error_condition(err) == "item-not-found", xml_str(err)


def test_iqs_to_an_occupant_on_another_server(cast: Callable[..., People]) -> None:
    room = room_of("iq")
    people = cast("WiZ", "BigCheese", "Efchen")
    enter_all(people, room)
    wiz, efchen = people["WiZ"], people["Efchen"]
    # XMPP ping from eris to an occupant on vesa; her client answers the room, through vesa's
    # slave, and the room relays the answer back to WiZ
    reply = run(wiz.iq(f"<iq type='get' to='{room}/Efchen' id='p1'>"
                       f"<ping xmlns='{NS_PING}'/></iq>"))
    assert (reply.get("type"), reply.get("from")) == ("result", f"{room}/Efchen"), xml_str(reply)
    asked = run(efchen.expect(is_iq(type_="get", from_=f"{room}/WiZ")))
    assert asked.get("id") != "p1"  # the room rewrote the id
    # disco#info the other way round (vesa -> eris)
    reply = run(people["BigCheese"].iq(f"<iq type='get' to='{room}/WiZ'>"
                                       f"<query xmlns='{NS_DISCO_INFO}'/></iq>"))
    assert (reply.get("type"), reply.get("from")) == ("result", f"{room}/WiZ"), xml_str(reply)
    assert reply.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity") is not None


def test_vcard_of_an_occupant(cast: Callable[..., People]) -> None:
    room = room_of("vcard")
    people = cast("WiZ", "Efchen")
    efchen = people["Efchen"]
    stored = run(efchen.iq(f"<iq type='set'><vCard xmlns='{NS_VCARD}'><FN>Efchen</FN>"
                           "</vCard></iq>"))
    assert stored.get("type") == "result", xml_str(stored)
    enter_all(people, room)
    # a vCard request to an occupant goes to her bare JID (as mod_muc does): her server,
    # vesa, answers it, and the room relays the answer to WiZ on eris
    reply = run(people["WiZ"].iq(f"<iq type='get' to='{room}/Efchen'>"
                                 f"<vCard xmlns='{NS_VCARD}'/></iq>"))
    assert (reply.get("type"), reply.get("from")) == ("result", f"{room}/Efchen"), xml_str(reply)
    assert reply.findtext(f"{{{NS_VCARD}}}vCard/{{{NS_VCARD}}}FN") == "Efchen", xml_str(reply)


def test_slave_side_user_leaves(cast: Callable[..., People]) -> None:
    room = room_of("leave")
    people = cast("Wumpus", "Valdis", "WiZ", "BigCheese", "Ludwig")
    enter_all(people, room)
    valdis = people["Valdis"]
    valdis.send_raw(f"<presence to='{room}/Valdis' type='unavailable'>"
                    "<status>Gone to lunch</status></presence>")
    own = run(valdis.expect(is_presence(from_=f"{room}/Valdis", type_="unavailable")))
    assert "110" in status_codes(own) and not has_dmuc(own), xml_str(own)
    others = [c for n, c in people.items() if n != "Valdis"]
    for seen in everyone_gets(others, is_presence(from_=f"{room}/Valdis", type_="unavailable")):
        assert "110" not in status_codes(seen), xml_str(seen)
        assert seen.findtext(f"{{{NS_CLIENT}}}status") == "Gone to lunch", xml_str(seen)
    # killrc's slave stops delivering to him; Wumpus, on the same server, still gets it
    say(people["WiZ"], room, "after lunch")
    everyone_gets(others, is_groupchat(room, "WiZ", "after lunch"))
    assert_nothing_more(valdis, is_message(type_="groupchat"))


# ----------------------------------------------------------------------------------------------
# 4. bad input


def connect_raw(network: DmucNetwork, domain: str) -> RawComponent:
    return run(RawComponent(network, domain).connect())


def test_bad_input_is_refused_and_changes_nothing(network: DmucNetwork, dmuc: Daemons,
                                                  cast: Callable[..., People]) -> None:
    room = room_of("bad")
    people = cast("Wumpus", "WiZ", "BigCheese", "Ludwig")
    enter_all(people, room)
    sneaky = cast("Efchen")["Efchen"]  # online on vesa, never sent presence to the room
    master_log, vesa_log = dmuc.master, dmuc.slaves[VESA]
    probe = connect_raw(network, PROBE_COMPONENT)
    forge = connect_raw(network, FORGE)
    try:
        # (a) a slave the master does not allow may not register
        reply = run(probe.iq(f"<register xmlns='{DMUC_NS}' keepalive='60' history='20'/>", room))
        assert reply.get("type") == "error" and reply.get("from") == room, xml_str(reply)
        assert error_condition_component(reply) == ("auth", "forbidden"), xml_str(reply)
        line = master_log.wait_for_log("refused slave registration")
        assert PROBE_COMPONENT in line and room in line, line

        # (b) a refuse for a user of another domain (Wumpus, on killrc) is refused
        probe.send(f"<presence type='unavailable' id='rf1' from='{PROBE_COMPONENT}' "
                   f"to='{room}'><x xmlns='{DMUC_NS}'><refuse jid='{CAST['Wumpus']}'/></x>"
                   "</presence>")
        err = run(probe.expect(lambda e: e.get("id") == "rf1"))
        assert err.get("type") == "error", xml_str(err)
        assert error_condition_component(err)[1] in ("forbidden", "item-not-found"), xml_str(err)

        # (c) an ENTER for a user who sent no directed presence: vesa's slave refuses it, the
        # user gets nothing; forged as the room by a component of the master's server
        victim = sneaky.jid
        forge.send(f"<presence from='{room}/Mallory' to='{slave_jid(VESA)}'>"
                   "<x xmlns='http://jabber.org/protocol/muc#user'>"
                   "<item affiliation='none' role='participant'/><status code='110'/></x>"
                   f"<x xmlns='{DMUC_NS}'><enter jid='{victim}'/><history maxstanzas='20'/>"
                   "</x></presence>")
        line = vesa_log.wait_for_log("refused ENTER")
        assert victim in line and room in line, line
        line = master_log.wait_for_log(f"refused ENTER of {victim}")
        assert slave_jid(VESA) in line, line
        assert_nothing_more(sneaky, lambda e: (e.get("from") or "").startswith(room))
        assert_nothing_more(people["BigCheese"], is_presence(from_=f"{room}/Mallory"))

        # (d) a malformed dmuc element in a presence to the room gets an error
        probe.send(f"<presence id='bg1' from='{PROBE_COMPONENT}' to='{room}'>"
                   f"<x xmlns='{DMUC_NS}'><bogus/></x></presence>")
        err = run(probe.expect(lambda e: e.get("id") == "bg1"))
        assert err.get("type") == "error", xml_str(err)
        assert error_condition_component(err) == ("modify", "bad-request"), xml_str(err)
        # ... and so does an unknown dmuc iq
        reply = run(probe.iq(f"<bogus xmlns='{DMUC_NS}'/>", room))
        assert reply.get("type") == "error", xml_str(reply)
        assert probe.inbox == [] and forge.inbox == []
    finally:
        run(probe.close())
        run(forge.close())

    # nothing changed: nobody left, nobody arrived, the room works on every server
    for c in people.values():
        assert not c.received(is_presence()), c.dump()
    say(people["Wumpus"], room, "all is well")
    everyone_gets(list(people.values()), is_groupchat(room, "Wumpus", "all is well"))
    say(people["BigCheese"], room, "indeed")
    everyone_gets(list(people.values()), is_groupchat(room, "BigCheese", "indeed"))
    assert_nothing_more(sneaky, lambda e: (e.get("from") or "").startswith(room))


# ----------------------------------------------------------------------------------------------
# 5. persistence: a slave restarts under its users


def test_slave_restart_keeps_its_users_in_the_room(dmuc: Daemons,
                                                   cast: Callable[..., People]) -> None:
    room = room_of("restart")
    people = cast("Wumpus", "WiZ", "Troy", "BigCheese", "Ludwig")
    enter_all(people, room)
    wumpus, wiz, troy = people["Wumpus"], people["WiZ"], people["Troy"]
    everyone = list(people.values())
    eris_users = [wiz, troy]
    elsewhere = [c for c in everyone if c not in eris_users]
    say(wumpus, room, "before")
    everyone_gets(everyone, is_groupchat(room, "Wumpus", "before"))

    # eris's slave goes away; what the master sends it now bounces (§4.11.1)
    dmuc.stop_slave(ERIS)
    say(wumpus, room, "while you were out")
    everyone_gets(elsewhere, is_groupchat(room, "Wumpus", "while you were out"))
    dmuc.master.wait_for_log(f"netsplit: slave {slave_jid(ERIS)} for {room}")

    # it comes back on its SQLite: restores the room, registers again, resyncs
    slave = dmuc.start_slave(ERIS)
    line = slave.wait_for_log("restored")
    m = re.search(r"restored (\d+) mirrored rooms", line)
    assert m is not None and int(m.group(1)) >= 1, line
    slave.wait_for_log(f"registered with {room}")
    # WiZ and Troy get what they missed, as delayed history; the roster did not change, so
    # they get no presence
    for c in eris_users:
        missed = run(c.expect(is_groupchat(room, "Wumpus", "while you were out")))
        assert child(missed, "delay", NS_DELAY) is not None, xml_str(missed)
        assert not has_dmuc(missed), xml_str(missed)

    say(wumpus, room, "after the restart")
    everyone_gets(everyone, is_groupchat(room, "Wumpus", "after the restart"))
    for c in eris_users:
        assert not c.received(is_presence()), c.dump()
        assert not c.received(is_message(type_="groupchat")), c.dump()  # nothing twice
    # and what they send still reaches everyone, through the restarted slave
    say(wiz, room, "I'm back")
    everyone_gets(everyone, is_groupchat(room, "WiZ", "I'm back"))
    troy.send_raw(f"<message to='{room}/BigCheese' type='chat'><body>psst</body></message>")
    run(people["BigCheese"].expect(is_message(from_=f"{room}/Troy", type_="chat")))


def test_master_restart_brings_slave_users_back_without_waiting(
        dmuc: Daemons, cast: Callable[..., People]) -> None:
    """The master restarts (its temporary room is gone); on connecting it tells its slaves,
    which register again and make their users enter again at once — with keepalives of
    600 s here, nothing else could bring them back within the test."""
    room = room_of("master-restart")
    people = cast("Wumpus", "WiZ", "BigCheese")
    enter_all(people, room)
    everyone = list(people.values())
    say(people["WiZ"], room, "before")
    everyone_gets(everyone, is_groupchat(room, "WiZ", "before"))

    dmuc.master.stop()
    dmuc.master.start(wait_for="component connected")
    for domain in (KILLRC, ERIS, VESA):
        dmuc.slaves[domain].wait_for_log(f"registered with {room}", count=2)
    dmuc.master.wait_for_log(f"joined {room} as BigCheese through {slave_jid(VESA)}")

    say(people["BigCheese"], room, "after the master's restart")
    everyone_gets(everyone, is_groupchat(room, "BigCheese", "after the master's restart"))
    for c in everyone:
        # Nobody was told they left: their slaves re-entered them. (Others may be seen
        # leaving and coming back while the slaves re-register one after the other.)
        own_exit = [p for p in c.received(is_presence(type_="unavailable"))
                    if has_status(p, "110")]
        assert not own_exit, c.dump()
