"""The mod_muc parity items that cross the master/slave link, on the real five-server
network with the real daemons: what a user behind a slave (vesa.yeggmaex.irc, eris) sees
is what a direct user (efnet.irc, no slave) sees, as mod_muc sends it.

- an occupant's own presence (status 110) carries its own real JID, in a semi-anonymous
  room, after a status change and a nick change, whichever way it came in;
- a mediated invitation keeps the inviting stanza's id, names the inviter by occupant JID,
  carries the reason (empty when none was given) and a body naming the inviter so;
- a moderator's probe of an occupant whose role is not broadcast gets its presence;
- an occupant whose role is no longer broadcast is announced as gone to the others (those
  behind its own slave too), while it keeps its own presence (110).
"""

from __future__ import annotations

import asyncio
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from testbed.faults import DmucDaemons
from testbed.network import MUC_SERVICE, DmucNetwork
from tests.integration.conftest import MakeClient, keep_testbed, make_tempdir, running
from tests.integration.xmpp_client import (
    NS_DATA,
    NS_MUC,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_MUC_USER,
    Client,
    all_of,
    body,
    has_status,
    is_message,
    is_presence,
    muc_item,
    muc_user,
    run,
    xml_str,
)

pytestmark = pytest.mark.integration

IPS = ("127.0.11.2", "127.0.11.3", "127.0.11.4", "127.0.11.5", "127.0.11.6")
NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"

LUDWIG = "ludwig@efnet.irc/vt100"  # direct: efnet.irc has no slave
BIGCHEESE = "rubenro@vesa.yeggmaex.irc/shaver"  # behind vesa's slave
TROY = "troy@eris.dclxvii.irc/screwdriver"  # behind eris's slave
EFCHEN = "msa@vesa.yeggmaex.irc/bicycle"
GUEST_ON_ERIS = "gus@eris.dclxvii.irc"  # never connects


@pytest.fixture(scope="module")
def network() -> Iterator[DmucNetwork]:
    """This module's own network (overrides the session one; net_client_factory uses it)."""
    workdir = make_tempdir("dmuc-parity-net-")
    yield from running(DmucNetwork(workdir, ips=IPS, log_level="info"), workdir)


@pytest.fixture(scope="module")
def daemons(network: DmucNetwork) -> Iterator[DmucDaemons]:
    workdir = make_tempdir("dmuc-parity-daemons-")
    daemons = DmucDaemons(network, workdir).start()
    try:
        yield daemons
    finally:
        daemons.stop()
        if not keep_testbed():
            shutil.rmtree(workdir, ignore_errors=True)


def users(factory: MakeClient, *jids: str) -> list[Client]:
    clients = [factory(j, connect=False) for j in jids]
    run(asyncio.gather(*(c.connect() for c in clients)))
    return clients


def enter(client: Client, room: str, nick: str) -> ET.Element:
    """Join and return the own presence (110)."""
    client.send_raw(f"<presence to='{room}/{nick}' id='join-{nick}'><x xmlns='{NS_MUC}'/>"
                    "</presence>")
    return run(client.expect(all_of(is_presence(from_=f"{room}/{nick}"),
                                    lambda e: has_status(e, 110)), 20))


def own_presence(client: Client, room: str, nick: str, type_: str | None = None
                 ) -> ET.Element:
    return run(client.expect(all_of(is_presence(from_=f"{room}/{nick}", type_=type_),
                                    lambda e: has_status(e, 110)), 20))


def create_room(owner: Client, room: str, nick: str, **fields: str | list[str]) -> None:
    assert has_status(enter(owner, room, nick), 201)
    configure(owner, room, **fields)


def configure(owner: Client, room: str, **fields: str | list[str]) -> None:
    parts = [f"<field var='FORM_TYPE'><value>{NS_ROOMCONFIG}</value></field>"]
    for var, values in fields.items():
        values = [values] if isinstance(values, str) else values
        parts.append(f"<field var='muc#roomconfig_{var}'>"
                     + "".join(f"<value>{v}</value>" for v in values) + "</field>")
    res = run(owner.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_OWNER}'>"
                       f"<x xmlns='{NS_DATA}' type='submit'>{''.join(parts)}</x></query></iq>"))
    assert res.get("type") == "result", xml_str(res)


@pytest.mark.parametrize("way", ["through a slave", "directly"])
def test_own_presence_carries_own_real_jid(daemons: DmucDaemons,
                                           net_client_factory: MakeClient, way: str) -> None:
    """Seen with profanity's occupant panel: behind a slave, a status or nick change came
    back without the user's own JID. mod_muc always shows a user its own real JID."""
    room = f"ownjid-{way.split()[0]}@{MUC_SERVICE}"
    owner_jid, user_jid = (TROY, BIGCHEESE) if way == "through a slave" else (TROY, LUDWIG)
    owner, user = users(net_client_factory, owner_jid, user_jid)
    create_room(owner, room, "owner")  # semi-anonymous: the user is no moderator
    joined = enter(user, room, "user")
    assert muc_item(joined)["jid"] == user.jid, xml_str(joined)

    user.send_raw(f"<presence to='{room}/user' id='away'><show>away</show></presence>")
    changed = own_presence(user, room, "user")
    assert muc_item(changed).get("jid") == user.jid, xml_str(changed)
    assert changed.get("id") == "away", xml_str(changed)  # as mod_muc: its id

    user.send_raw(f"<presence to='{room}/renamed' id='nick'/>")
    gone = own_presence(user, room, "user", "unavailable")
    assert has_status(gone, 303) and muc_item(gone).get("jid") == user.jid, xml_str(gone)
    back = own_presence(user, room, "renamed")
    assert muc_item(back).get("jid") == user.jid, xml_str(back)
    # and the owner (a moderator, on another server) sees it too; no one else is shown it
    seen = run(owner.expect(is_presence(from_=f"{room}/renamed"), 20))
    assert muc_item(seen).get("jid") == user.jid


@pytest.mark.parametrize("way", ["through a slave", "directly"])
def test_mediated_invitation_as_mod_muc(daemons: DmucDaemons, net_client_factory: MakeClient,
                                        way: str) -> None:
    room = f"invite-{way.split()[0]}@{MUC_SERVICE}"
    inviter_jid = BIGCHEESE if way == "through a slave" else LUDWIG
    inviter, invitee = users(net_client_factory, inviter_jid, TROY)
    create_room(inviter, room, "host")
    for msg_id, reason in (("inv-r", "Join us"), ("inv-n", None)):
        inner = f"<reason>{reason}</reason>" if reason is not None else ""
        inviter.send_raw(f"<message to='{room}' id='{msg_id}'><x xmlns='{NS_MUC_USER}'>"
                         f"<invite to='{invitee.bare}'>{inner}</invite></x></message>")
        msg = run(invitee.expect(all_of(is_message(from_=room),
                                        lambda e: muc_user(e) is not None), 20))
        invite = muc_user(msg).find(f"{{{NS_MUC_USER}}}invite")
        assert msg.get("id") == msg_id, xml_str(msg)
        assert invite is not None and invite.get("from") == f"{room}/host", xml_str(msg)
        assert invite.findtext(f"{{{NS_MUC_USER}}}reason") == (reason or ""), xml_str(msg)
        suffix = f" ({reason})" if reason else ""
        assert body(msg) == f"{room}/host invited you to the room {room}{suffix}"


@pytest.mark.parametrize("way", ["through a slave", "directly"])
def test_probe_of_a_hidden_role(daemons: DmucDaemons, net_client_factory: MakeClient,
                                way: str) -> None:
    """presence_broadcast without participants (and with 'none', which mod_muc accepts):
    a moderator's probe still gets the participant's current presence, with its real JID;
    a probe from outside the room gets not-acceptable."""
    room = f"hidden-{way.split()[0]}@{MUC_SERVICE}"
    moderator_jid = EFCHEN if way == "through a slave" else LUDWIG
    moderator, hidden, outsider = users(net_client_factory, moderator_jid, TROY, BIGCHEESE)
    create_room(moderator, room, "mod", presencebroadcast=["moderator", "none"])
    enter(hidden, room, "hidden")
    hidden.send_raw(f"<presence to='{room}/hidden'><show>dnd</show></presence>")
    own_presence(hidden, room, "hidden")
    run(moderator.expect_none(is_presence(from_=f"{room}/hidden"), barrier_to=MUC_SERVICE))

    moderator.send_raw(f"<presence type='probe' to='{room}/hidden' id='pr1'/>")
    answer = run(moderator.expect(is_presence(from_=f"{room}/hidden"), 20))
    assert answer.findtext("{jabber:client}show") == "dnd", xml_str(answer)
    assert muc_item(answer)["role"] == "participant"
    assert muc_item(answer).get("jid") == hidden.jid, xml_str(answer)

    outsider.send_raw(f"<presence type='probe' to='{room}/hidden' id='pr2'/>")
    err = run(outsider.expect(is_presence(from_=f"{room}/hidden", type_="error"), 20))
    assert err.find("{jabber:client}error/{urn:ietf:params:xml:ns:xmpp-stanzas}"
                    "not-acceptable") is not None, xml_str(err)

    # a hidden occupant's nick change; once its role is broadcast again it is announced,
    # and still sees its own presence (110, own real JID) under its new nick
    hidden.send_raw(f"<presence to='{room}/renamed' id='hn'><show>dnd</show></presence>")
    assert has_status(own_presence(hidden, room, "hidden", "unavailable"), 303)
    own_presence(hidden, room, "renamed")
    configure(moderator, room, presencebroadcast=["moderator", "participant", "visitor"])
    announced = own_presence(hidden, room, "renamed")
    assert muc_item(announced).get("jid") == hidden.jid, xml_str(announced)
    seen = run(moderator.expect(is_presence(from_=f"{room}/renamed", type_="available"), 20))
    assert seen.findtext("{jabber:client}show") == "dnd", xml_str(seen)


@pytest.mark.parametrize("way", ["through a slave", "directly"])
def test_a_nick_failing_strict_validation(daemons: DmucDaemons, net_client_factory: MakeClient,
                                          way: str) -> None:
    """As mod_muc: U+1F916 (unassigned in stringprep's tables) is refused with
    jid-malformed "Nickname must pass strict validation", from the occupant JID, with by."""
    room = f"strict-{way.split()[0]}@{MUC_SERVICE}"
    owner, user = users(net_client_factory, TROY,
                        BIGCHEESE if way == "through a slave" else LUDWIG)
    create_room(owner, room, "owner")
    nick = "bot\U0001F916"
    user.send_raw(f"<presence to='{room}/{nick}' id='bot'><x xmlns='{NS_MUC}'/></presence>")
    err = run(user.expect(is_presence(from_=f"{room}/{nick}", type_="error"), 20))
    assert err.get("id") == "bot", xml_str(err)
    error = err.find("{jabber:client}error")
    assert error is not None and error.get("type") == "modify" and error.get("by") == room
    ns = "urn:ietf:params:xml:ns:xmpp-stanzas"
    assert error.find(f"{{{ns}}}jid-malformed") is not None, xml_str(err)
    assert error.findtext(f"{{{ns}}}text") == "Nickname must pass strict validation"
    # the room is fine afterwards: the same user enters with a valid nick
    assert muc_item(enter(user, room, "bot"))["jid"] == user.jid


def settle(sender: Client, room: str, marker: str, *clients: Client) -> None:
    """Wait until each client has a groupchat `sender` sends now: whatever the room sent
    them before it (through the same slave, or directly) has arrived."""
    sender.send_raw(f"<message to='{room}' type='groupchat' id='{marker}'><body>{marker}"
                    "</body></message>")
    for client in (sender, *clients):
        run(client.expect(all_of(is_message(from_=f"{room}/owner"),
                                 lambda e: body(e) == marker), 20))


@pytest.mark.parametrize("way", ["through a slave", "directly"])
def test_an_occupant_hidden_is_gone_for_the_others_not_for_itself(
        daemons: DmucDaemons, net_client_factory: MakeClient, way: str) -> None:
    """As mod_muc: when its role is no longer broadcast (the setting changed, or voice
    was revoked in a room that does not broadcast visitors) the others get an unavailable
    presence of the occupant; the occupant stays, and gets its own presence (110), not an
    unavailable. Shown again, it is announced. The other user is behind vesa's slave,
    the occupant too (through a slave) or on a server without one (directly)."""
    room = f"gone-{way.split()[0]}@{MUC_SERVICE}"
    owner, affected, other = users(net_client_factory, TROY,
                                   BIGCHEESE if way == "through a slave" else LUDWIG, EFCHEN)
    create_room(owner, room, "owner")
    enter(affected, room, "affected")
    enter(other, room, "other")
    of_affected = f"{room}/affected"

    def hidden_now(role: str, marker: str) -> None:
        gone = run(other.expect(is_presence(from_=of_affected, type_="unavailable"), 20))
        assert muc_item(gone)["role"] == role and not has_status(gone, 110), xml_str(gone)
        own = own_presence(affected, room, "affected")
        assert own.get("type") is None and muc_item(own)["role"] == role, xml_str(own)
        assert muc_item(own)["jid"] == affected.jid, xml_str(own)
        settle(owner, room, marker, affected, other)
        assert affected.received(is_presence(from_=of_affected, type_="unavailable")) == []

    configure(owner, room, presencebroadcast=["moderator"])
    hidden_now("participant", "hidden-by-config")
    configure(owner, room, presencebroadcast=["moderator", "participant", "visitor"])
    back = run(other.expect(is_presence(from_=of_affected, type_="available"), 20))
    assert muc_item(back)["role"] == "participant", xml_str(back)
    assert own_presence(affected, room, "affected").get("type") is None

    configure(owner, room, presencebroadcast=["moderator", "participant"])
    res = run(owner.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_ADMIN}'>"
                       "<item nick='affected' role='visitor'/></query></iq>"))
    assert res.get("type") == "result", xml_str(res)
    hidden_now("visitor", "hidden-by-role")


NS_MAM = "urn:xmpp:mam:2"
NS_FORWARD = "urn:xmpp:forward:0"
NS_HINTS = "urn:xmpp:hints"
NS_CHATSTATES = "http://jabber.org/protocol/chatstates"

# (payload, historic: mod_muc's muc-message-is-historic, which mod_muc_mam archives by)
KINDS = [
    (f"<composing xmlns='{NS_CHATSTATES}'/><no-store xmlns='{NS_HINTS}'/>"
     f"<no-permanent-store xmlns='{NS_HINTS}'/>", False),  # as Converse.js sends them
    (f"<active xmlns='{NS_CHATSTATES}'/>", False),
    ("<received xmlns='urn:xmpp:receipts' id='r1'/>", False),
    (f"<body>not to keep</body><no-store xmlns='{NS_HINTS}'/>", False),
    ("<body>to keep</body>", True),
    (f"<paused xmlns='{NS_CHATSTATES}'/><store xmlns='{NS_HINTS}'/>", True),
    ("<displayed xmlns='urn:xmpp:chat-markers:0' id='x1'/>", True),
]


def archived(client: Client, room: str) -> list[ET.Element]:
    """Every message of the room's archive (one page is enough here), as forwarded."""
    client.send_raw(f"<iq type='set' to='{room}' id='mam-all'><query xmlns='{NS_MAM}' "
                    "queryid='all'/></iq>")
    run(client.expect(all_of(lambda e: e.tag.endswith("}iq"), lambda e: e.get("id") == "mam-all"),
                      20))
    found = []
    for message in client.received(is_message(from_=room)):
        result = message.find(f"{{{NS_MAM}}}result")
        if result is not None and result.get("queryid") == "all":
            found.append(result.find(f"{{{NS_FORWARD}}}forwarded/{{jabber:client}}message"))
    return found


@pytest.mark.parametrize("way", ["through a slave", "directly"])
def test_only_historic_messages_are_archived_and_replayed_and_ids_are_the_senders(
        daemons: DmucDaemons, net_client_factory: MakeClient, way: str) -> None:
    """As mod_muc and mod_muc_mam: chat states, receipts and messages hinted no-store
    reach everyone but neither the archive nor a joiner's history; a body, a marker, a
    store hint do. A message sent without an id reaches everyone, the archive and the
    history without one, whichever way it came (the slave's tracking id stays on the
    link). The joiner is behind a slave in one case, direct in the other."""
    room = f"historic-{way.split()[0]}@{MUC_SERVICE}"
    sender_jid, joiner_jid = ((BIGCHEESE, EFCHEN) if way == "through a slave"
                              else (LUDWIG, "jarkko@efnet.irc/irssi"))
    owner, sender, joiner = users(net_client_factory, TROY, sender_jid, joiner_jid)
    create_room(owner, room, "owner")
    enter(sender, room, "sender")
    for n, (payload, _) in enumerate(KINDS):
        sender.send_raw(f"<message to='{room}' type='groupchat' id='k{n}'>{payload}</message>")
    sender.send_raw(f"<message to='{room}' type='groupchat'><body>no id</body></message>")
    every = [f"k{n}" for n in range(len(KINDS))] + [None]
    historic = [f"k{n}" for n, (_, kept) in enumerate(KINDS) if kept] + [None]
    for client in (owner, sender):
        last = run(client.expect(all_of(is_message(from_=f"{room}/sender"),
                                        lambda e: body(e) == "no id"), 20))
        live = [m.get("id") for m in client.received(is_message(from_=f"{room}/sender"))]
        assert [*live, last.get("id")] == every, (client.jid, live, xml_str(last))
    assert [m.get("id") for m in archived(owner, room)] == historic
    assert [m.get("id") for m in archived(sender, room)] == historic
    joiner.send_raw(f"<presence to='{room}/joiner'><x xmlns='{NS_MUC}'/></presence>")
    run(joiner.expect(all_of(is_message(from_=room),
                             lambda e: e.find("{jabber:client}subject") is not None), 20))
    replayed = [m.get("id") for m in joiner.received(is_message(from_=f"{room}/sender"))]
    assert replayed == historic, replayed


def _item(presence: ET.Element) -> ET.Element:
    item = presence.find(f"{{{NS_MUC_USER}}}x/{{{NS_MUC_USER}}}item")
    assert item is not None, xml_str(presence)
    return item


@pytest.mark.parametrize("way", ["through a slave", "directly"])
def test_a_member_removed_from_a_members_only_room(daemons: DmucDaemons,
                                                   net_client_factory: MakeClient,
                                                   way: str) -> None:
    """As mod_muc: a member whose affiliation is set to none leaves a members-only room
    with status 321; the actor is named by its nick to all, and by its real JID too to
    those who may see real JIDs (the owner), never in the removed member's own copy nor
    to the other non-moderators. The owner, the removed member and one watcher share a
    server (vesa's slave, or efnet.irc without one); another watcher is behind eris."""
    room = f"unmember-{way.split()[0]}@{MUC_SERVICE}"
    domain = "vesa.yeggmaex.irc" if way == "through a slave" else "efnet.irc"
    owner, removed, watcher, far = users(
        net_client_factory, f"boss@{domain}/desk", f"leaver@{domain}/phone",
        f"watcher@{domain}/w", TROY)
    create_room(owner, room, "owner", membersonly="1")
    for client in (removed, watcher, far):
        res = run(owner.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_ADMIN}'>"
                           f"<item jid='{client.bare}' affiliation='member'/></query></iq>"))
        assert res.get("type") == "result", xml_str(res)
    for client, nick in ((removed, "leaver"), (watcher, "watcher"), (far, "far")):
        enter(client, room, nick)
    res = run(owner.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_ADMIN}'>"
                       f"<item jid='{removed.bare}' affiliation='none'><reason>bye</reason>"
                       "</item></query></iq>"))
    assert res.get("type") == "result", xml_str(res)
    gone = is_presence(from_=f"{room}/leaver", type_="unavailable")
    for client in (owner, removed, watcher, far):
        seen = run(client.expect(all_of(gone, lambda e: has_status(e, 321)), 20))
        item = _item(seen)
        actor = item.find(f"{{{NS_MUC_USER}}}actor")
        assert (item.get("affiliation"), item.get("role")) == ("none", "none"), xml_str(seen)
        assert actor is not None and actor.get("nick") == "owner", xml_str(seen)
        assert item.findtext(f"{{{NS_MUC_USER}}}reason") == "bye", xml_str(seen)
        assert actor.get("jid") == (owner.jid if client is owner else None), \
            (client.jid, xml_str(seen))
        sees_jid = client in (owner, removed)
        assert item.get("jid") == (removed.jid if sees_jid else None), (client.jid,
                                                                        xml_str(seen))
        assert has_status(seen, 110) == (client is removed), xml_str(seen)


@pytest.mark.parametrize("way", ["through a slave", "directly"])
def test_a_probe_of_a_reserved_nick_nobody_holds(daemons: DmucDaemons,
                                                   net_client_factory: MakeClient,
                                                   way: str) -> None:
    """As mod_muc: a probe of a nick a member registered, while nobody holds it, gets an
    unavailable presence naming the member (affiliation, role none, nick), with the
    member's real JID to the owner and without it to a participant of a semi-anonymous
    room. Owner and participant are behind vesa's slave, or on efnet.irc (none)."""
    room = f"regprobe-{way.split()[0]}@{MUC_SERVICE}"
    owner_jid, prober_jid = ((EFCHEN, BIGCHEESE) if way == "through a slave"
                             else ("jarkko@efnet.irc/irssi", LUDWIG))
    owner, prober, member = users(net_client_factory, owner_jid, prober_jid, TROY)
    create_room(owner, room, "owner")
    res = run(owner.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_ADMIN}'>"
                       f"<item jid='{member.bare}' affiliation='member'/></query></iq>"))
    assert res.get("type") == "result", xml_str(res)
    res = run(member.iq(f"<iq type='set' to='{room}'><query xmlns='jabber:iq:register'>"
                        f"<x xmlns='{NS_DATA}' type='submit'><field var='FORM_TYPE'><value>"
                        "http://jabber.org/protocol/muc#register</value></field>"
                        "<field var='muc#register_roomnick'><value>Hank</value></field>"
                        "</x></query></iq>"))
    assert res.get("type") == "result", xml_str(res)
    # and one reserved by the owner's affiliation item with a nick (as mod_muc 0.12)
    res = run(owner.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_ADMIN}'>"
                       f"<item jid='{GUEST_ON_ERIS}' affiliation='member' nick='Gus'/>"
                       "</query></iq>"))
    assert res.get("type") == "result", xml_str(res)
    enter(prober, room, "prober")
    for nick, bare in (("Hank", member.bare), ("Gus", GUEST_ON_ERIS)):
        for client, jid in ((owner, bare), (prober, None)):
            client.send_raw(f"<presence type='probe' to='{room}/{nick}' id='pr-{nick}'/>")
            answer = run(client.expect(is_presence(from_=f"{room}/{nick}",
                                                   type_="unavailable"), 20))
            assert _item(answer).attrib == {"affiliation": "member", "role": "none",
                                            "nick": nick, **({"jid": jid} if jid else {})}, \
                (client.jid, xml_str(answer))
