"""XEP-0045 as an occupant sees it: real clients (slixmpp) on the real Prosody, talking to the
real dmuc-master daemon (the session ``master`` fixture).

The cast is the seed's (XEP-0282 §3.1). The master is shared by the whole session, so every
test uses its own room, ``wallops-<test>@channel.avalon.irc``. No sleeps: every wait is
``expect`` (event-driven) or an ``expect_none`` ping barrier through the room.
"""

from __future__ import annotations

import asyncio
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable

import pytest

from testbed import TwistdDaemon
from tests.integration.cast import CAST
from tests.integration.conftest import MUC_DOMAIN, MakeClient
from tests.integration.xmpp_client import (
    NS_CLIENT,
    NS_DATA,
    NS_DELAY,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_MUC,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_PING,
    NS_VCARD,
    Client,
    Predicate,
    all_of,
    body,
    error_condition,
    fresh_id,
    get_loop,
    has_status,
    is_iq,
    is_message,
    is_presence,
    local,
    muc_item,
    muc_user,
    run,
    status_codes,
    take_through,
    xml_str,
)

pytestmark = pytest.mark.integration

NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
NS_SID = "urn:xmpp:sid:0"


People = Callable[..., list[Client]]


@pytest.fixture
def people(master: TwistdDaemon, client_factory: MakeClient) -> People:
    """``wumpus, valdis = people("Wumpus", "Valdis")``: cast members, logged in in parallel
    (with initial presence), the master running."""

    def make(*names: str) -> list[Client]:
        clients = [client_factory(CAST[n], connect=False) for n in names]
        run(asyncio.gather(*(c.connect() for c in clients)))
        return clients

    return make


# ----------------------------------------------------------------------------------------------
# helpers


def room_of(test: str) -> str:
    return f"wallops-{test}@{MUC_DOMAIN}"


def child(elem: ET.Element, name: str, ns: str = NS_CLIENT) -> ET.Element | None:
    return elem.find(f"{{{ns}}}{name}")


def is_subject(room: str) -> Predicate:
    """The room's subject message (XEP-0045 §7.2.15): <subject/>, no <body/>."""
    def pred(e: ET.Element) -> bool:
        return (is_message(type_="groupchat")(e)
                and (e.get("from") or "").split("/")[0] == room
                and child(e, "subject") is not None and child(e, "body") is None)
    return pred


def self_presence(occupant_jid: str) -> Predicate:
    return all_of(is_presence(from_=occupant_jid, type_="available"),
                  lambda e: has_status(e, 110))


def with_error(condition: str) -> Predicate:
    return lambda e: e.get("type") == "error" and error_condition(e) == condition


def groupchat_with_body(from_: str, text: str) -> Predicate:
    return all_of(is_message(from_=from_, type_="groupchat"), lambda e: body(e) == text)


def join_stanza(room: str, nick: str, muc_x: str = "", payload: str = "") -> str:
    return (f"<presence to='{room}/{nick}'>{payload}"
            f"<x xmlns='{NS_MUC}'>{muc_x}</x></presence>")


def join(client: Client, room: str, nick: str, muc_x: str = "", payload: str = ""
         ) -> list[ET.Element]:
    """Join and return the whole join sequence, up to and including the subject message."""
    client.send_raw(join_stanza(room, nick, muc_x, payload))
    seq = run(take_through(client, is_subject(room)))
    own = [e for e in seq if self_presence(f"{room}/{nick}")(e)]
    assert own, f"{client.jid} did not join {room} as {nick}:\n" + "\n".join(map(xml_str, seq))
    return seq


def join_refused(client: Client, room: str, nick: str, muc_x: str = "") -> ET.Element:
    """Try to join; return the error presence (asserting it is one)."""
    client.send_raw(join_stanza(room, nick, muc_x))
    err = run(client.expect(is_presence(from_=f"{room}/{nick}")))
    assert err.get("type") == "error", xml_str(err)
    assert child(err, "x", NS_MUC) is not None  # the join's <x/> comes back (§7.2.6 ff.)
    return err


def form_fields(fields: dict[str, str | list[str]] | None) -> str:
    parts = [f"<field var='FORM_TYPE' type='hidden'><value>{NS_ROOMCONFIG}</value></field>"]
    for var, value in (fields or {}).items():
        values = value if isinstance(value, list) else [value]
        parts.append(f"<field var='{var}'>"
                     + "".join(f"<value>{v}</value>" for v in values) + "</field>")
    return "".join(parts)


def configure(owner: Client, room: str, fields: dict[str, str | list[str]] | None = None,
              *, empty: bool = False) -> None:
    """Submit the muc#owner configuration form (an empty submit makes an instant room)."""
    inner = "" if empty else form_fields(fields)
    reply = run(owner.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_OWNER}'>"
                         f"<x xmlns='{NS_DATA}' type='submit'>{inner}</x></query></iq>"))
    assert reply.get("type") == "result", xml_str(reply)


def create_room(owner: Client, room: str, nick: str,
                fields: dict[str, str | list[str]] | None = None) -> None:
    """Create a room by joining it, then unlock it (instant, or configured with ``fields``)."""
    seq = join(owner, room, nick)
    own = next(e for e in seq if self_presence(f"{room}/{nick}")(e))
    assert has_status(own, 201), xml_str(own)
    if fields:
        configure(owner, room, fields)
    else:
        configure(owner, room, empty=True)
    owner.drain()  # status 104 and the like: not what the test is about


def say(client: Client, room: str, text: str, msg_id: str | None = None) -> ET.Element:
    """Send a groupchat message and wait for the room's reflection of it."""
    msg_id = msg_id or fresh_id("m")
    client.send_raw(f"<message to='{room}' type='groupchat' id='{msg_id}'>"
                    f"<body>{text}</body></message>")
    return run(client.expect(all_of(is_message(type_="groupchat"),
                                    lambda e: (e.get("from") or "").startswith(room + "/"),
                                    lambda e: body(e) == text)))


def iq_to(client: Client, to: str, payload: str, type_: str = "get") -> ET.Element:
    return run(client.iq(f"<iq type='{type_}' to='{to}'>{payload}</iq>"))


def disco_items(client: Client, to: str) -> list[str]:
    reply = iq_to(client, to, f"<query xmlns='{NS_DISCO_ITEMS}'/>")
    assert reply.get("type") == "result", xml_str(reply)
    return [i.get("jid", "") for i in reply.iter(f"{{{NS_DISCO_ITEMS}}}item")]


def stamp_of(elem: ET.Element) -> ET.Element | None:
    return elem.find(f"{{{NS_DELAY}}}delay")


def xmpp_time(t: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


# ----------------------------------------------------------------------------------------------
# room creation (§10.1)


def test_instant_room_locked_until_owner_submits_empty_form(people: People) -> None:
    room = room_of("instant")
    wumpus, valdis = people("Wumpus", "Valdis")
    seq = join(wumpus, room, "Wumpus")
    own = next(e for e in seq if self_presence(f"{room}/Wumpus")(e))
    assert {"110", "201"} <= status_codes(own)
    assert muc_item(own) == {"affiliation": "owner", "role": "moderator", "jid": wumpus.jid}

    # locked: nobody else may enter, and the room is not listed
    err = join_refused(valdis, room, "Valdis")
    assert error_condition(err) == "item-not-found"
    assert room not in disco_items(valdis, MUC_DOMAIN)
    run(wumpus.expect_none(is_presence(from_=f"{room}/Valdis"), barrier_to=room))

    configure(wumpus, room, empty=True)
    seq = join(valdis, room, "Valdis")
    own = next(e for e in seq if self_presence(f"{room}/Valdis")(e))
    assert "201" not in status_codes(own)
    assert muc_item(own)["role"] == "participant"
    run(wumpus.expect(is_presence(from_=f"{room}/Valdis", type_="available")))
    assert room in disco_items(valdis, MUC_DOMAIN)


def test_reserved_room_configured_through_the_form(people: People) -> None:
    room = room_of("reserved")
    wumpus, valdis = people("Wumpus", "Valdis")
    seq = join(wumpus, room, "Wumpus")
    assert has_status(next(e for e in seq if self_presence(f"{room}/Wumpus")(e)), 201)

    reply = iq_to(wumpus, room, f"<query xmlns='{NS_MUC_OWNER}'/>")
    assert reply.get("type") == "result", xml_str(reply)
    form = reply.find(f"{{{NS_MUC_OWNER}}}query/{{{NS_DATA}}}x")
    assert form is not None and form.get("type") == "form"
    fields = {f.get("var"): f for f in form.iter(f"{{{NS_DATA}}}field")}
    form_type = fields["FORM_TYPE"].find(f"{{{NS_DATA}}}value")
    assert form_type is not None and form_type.text == NS_ROOMCONFIG
    for var in ("muc#roomconfig_roomname", "muc#roomconfig_roomdesc",
                "muc#roomconfig_persistentroom", "muc#roomconfig_membersonly",
                "muc#roomconfig_moderatedroom", "muc#roomconfig_whois",
                "muc#roomconfig_maxusers", "muc#roomconfig_roomsecret"):
        assert var in fields, var

    # still locked while the owner fills in the form
    assert error_condition(join_refused(valdis, room, "Valdis")) == "item-not-found"

    configure(wumpus, room, {"muc#roomconfig_roomname": "Wallops of the Realm",
                             "muc#roomconfig_roomdesc": "operators only",
                             "muc#roomconfig_whois": "anyone"})
    info = iq_to(valdis, room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert info.get("type") == "result", xml_str(info)
    identity = info.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity")
    assert identity is not None and identity.get("name") == "Wallops of the Realm"
    features = {f.get("var") for f in info.iter(f"{{{NS_DISCO_INFO}}}feature")}
    assert {"muc_nonanonymous", "muc_temporary", "muc_public"} <= features
    values = {f.get("var"): [v.text for v in f.iter(f"{{{NS_DATA}}}value")]
              for f in info.iter(f"{{{NS_DATA}}}field")}
    assert values["muc#roomconfig_roomname"] == ["Wallops of the Realm"]
    assert values["muc#roominfo_description"] == ["operators only"]

    join(valdis, room, "Valdis")  # unlocked


# ----------------------------------------------------------------------------------------------
# entering (§7.2)


def test_join_sequence_in_order(people: People) -> None:
    room = room_of("sequence")
    wumpus, valdis, phaedrus = people("Wumpus", "Valdis", "Phaedrus")
    create_room(wumpus, room, "Wumpus")
    join(valdis, room, "Valdis")
    say(wumpus, room, "first")
    say(valdis, room, "second")
    wumpus.send_raw(f"<message to='{room}' type='groupchat'><subject>kill -9</subject></message>")
    run(valdis.expect(is_subject(room)))

    seq = join(phaedrus, room, "Phaedrus")
    kinds = []
    for e in seq:
        if is_presence(from_=f"{room}/Phaedrus")(e):
            kinds.append("self")
        elif local(e.tag) == "presence":
            kinds.append("occupant")
        elif is_subject(room)(e):
            kinds.append("subject")
        elif stamp_of(e) is not None:
            kinds.append("history")
        else:
            kinds.append(xml_str(e))
    assert kinds == ["occupant", "occupant", "self", "history", "history", "subject"], kinds

    occupants = [e for e in seq[:2]]
    assert {e.get("from") for e in occupants} == {f"{room}/Wumpus", f"{room}/Valdis"}
    assert not any(has_status(e, 110) for e in occupants)
    own = seq[2]
    assert has_status(own, 110)
    assert muc_item(own) == {"affiliation": "none", "role": "participant", "jid": phaedrus.jid}

    history = seq[3:5]
    assert [body(e) for e in history] == ["first", "second"]
    assert [e.get("from") for e in history] == [f"{room}/Wumpus", f"{room}/Valdis"]
    for e in history:
        delay = stamp_of(e)
        assert delay is not None and delay.get("from") == room and delay.get("stamp")
        assert e.get("type") == "groupchat"

    subject = child(seq[5], "subject")
    assert subject is not None and subject.text == "kill -9"
    assert seq[5].get("from") == f"{room}/Wumpus"

    # the others learn of the newcomer
    for other in (wumpus, valdis):
        pres = run(other.expect(is_presence(from_=f"{room}/Phaedrus", type_="available")))
        assert not has_status(pres, 110)


def test_slixmpp_muc_plugin_joins_and_chats(people: People) -> None:
    room = room_of("slixmpp")
    wumpus, valdis = people("Wumpus", "Valdis")
    create_room(wumpus, room, "Wumpus")
    say(wumpus, room, "before you came")

    plugin = valdis.xmpp.plugin["xep_0045"]
    pres, subject, occupants, history = run(plugin.join_muc_wait(room, "Valdis", maxstanzas=5,
                                                                 timeout=10))
    assert pres["type"] != "error"
    assert str(pres["from"]) == f"{room}/Valdis"
    # slixmpp counts our own presence among the occupants, after the others'
    assert [str(p["from"]) for p in occupants] == [f"{room}/Wumpus", f"{room}/Valdis"]
    assert [m["body"] for m in history] == ["before you came"]
    assert str(subject["from"]) == room and not subject["subject"]  # no subject set yet
    assert set(plugin.get_roster(room)) == {"Wumpus", "Valdis"}
    assert plugin.get_jid_property(room, "Wumpus", "role") == "moderator"

    got: asyncio.Future = get_loop().create_future()

    def on_groupchat(msg) -> None:  # type: ignore[no-untyped-def]
        if msg["mucroom"] == room and not got.done():
            got.set_result(msg)

    wumpus.xmpp.add_event_handler("groupchat_message", on_groupchat)
    valdis.xmpp.send_message(mto=room, mbody="hello from slixmpp", mtype="groupchat")
    msg = run(got)
    assert msg["mucnick"] == "Valdis" and msg["body"] == "hello from slixmpp"
    wumpus.xmpp.del_event_handler("groupchat_message", on_groupchat)
    run(valdis.expect(groupchat_with_body(f"{room}/Valdis", "hello from slixmpp")))


def test_non_anonymous_room_status_100_and_real_jids(people: People) -> None:
    room = room_of("nonanon")
    wumpus, valdis = people("Wumpus", "Valdis")
    create_room(wumpus, room, "Wumpus", {"muc#roomconfig_whois": "anyone"})
    seq = join(valdis, room, "Valdis")
    own = next(e for e in seq if self_presence(f"{room}/Valdis")(e))
    assert {"100", "110"} <= status_codes(own)
    owner = next(e for e in seq if is_presence(from_=f"{room}/Wumpus")(e))
    assert muc_item(owner)["jid"] == wumpus.jid  # a participant sees the owner's real JID


def test_semi_anonymous_room_hides_jids_from_participants(people: People) -> None:
    room = room_of("semianon")
    wumpus, valdis, phaedrus = people("Wumpus", "Valdis", "Phaedrus")
    create_room(wumpus, room, "Wumpus")
    seq_v = join(valdis, room, "Valdis")
    own = next(e for e in seq_v if self_presence(f"{room}/Valdis")(e))
    assert "100" not in status_codes(own)
    assert muc_item(own)["jid"] == valdis.jid  # one's own JID, yes

    seq_p = join(phaedrus, room, "Phaedrus")
    # the moderator sees both newcomers' real JIDs
    for client, nick in ((valdis, "Valdis"), (phaedrus, "Phaedrus")):
        pres = run(wumpus.expect(is_presence(from_=f"{room}/{nick}", type_="available")))
        assert muc_item(pres)["jid"] == client.jid
    pres = run(valdis.expect(is_presence(from_=f"{room}/Phaedrus", type_="available")))
    assert "jid" not in muc_item(pres)

    # traffic after the joins: presence change, message, private message, nick change
    phaedrus.send_raw(f"<presence to='{room}/Phaedrus'><show>away</show></presence>")
    say(phaedrus, room, "who is who?")
    phaedrus.send_raw(f"<message to='{room}/Valdis' type='chat'><body>psst</body></message>")
    run(valdis.expect(is_message(from_=f"{room}/Phaedrus", type_="chat")))
    wumpus.send_raw(f"<presence to='{room}/Wumpus'><status>oper</status></presence>")
    run(valdis.expect(is_presence(from_=f"{room}/Wumpus", type_="available")))
    pres = run(wumpus.expect(all_of(is_presence(from_=f"{room}/Phaedrus"),
                                    lambda e: child(e, "show") is not None)))
    assert muc_item(pres)["jid"] == phaedrus.jid
    run(valdis.barrier(room))
    run(phaedrus.barrier(room))

    for viewer, seq, others in ((valdis, seq_v, (wumpus, phaedrus)),
                                (phaedrus, seq_p, (wumpus, valdis))):
        seen = seq + viewer.received()
        assert seen
        for stanza in seen:
            text = xml_str(stanza)
            for other in others:
                assert other.bare not in text, f"{viewer.jid} saw {other.jid}: {text}"


# ----------------------------------------------------------------------------------------------
# refused entries (§7.2.5 ff.)


def test_password_protected_room(people: People) -> None:
    room = room_of("password")
    wumpus, valdis = people("Wumpus", "Valdis")
    create_room(wumpus, room, "Wumpus", {"muc#roomconfig_passwordprotectedroom": "1",
                                         "muc#roomconfig_roomsecret": "cauldron"})
    for attempt in ("", "<password>kettle</password>"):
        err = join_refused(valdis, room, "Valdis", attempt)
        assert error_condition(err) == "not-authorized", xml_str(err)
        error = child(err, "error")
        assert error is not None and error.get("type") == "auth"
    run(wumpus.expect_none(is_presence(from_=f"{room}/Valdis"), barrier_to=room))
    join(valdis, room, "Valdis", "<password>cauldron</password>")
    run(wumpus.expect(is_presence(from_=f"{room}/Valdis", type_="available")))


def test_members_only_banned_conflict_and_full(people: People) -> None:
    wumpus, valdis, phaedrus, wiz, troy = people("Wumpus", "Valdis", "Phaedrus", "WiZ", "Troy")

    members = room_of("membersonly")
    create_room(wumpus, members, "Wumpus", {"muc#roomconfig_membersonly": "1"})
    err = join_refused(valdis, members, "Valdis")
    assert error_condition(err) == "registration-required", xml_str(err)
    assert child(err, "error").get("type") == "auth"

    open_room = room_of("refusals")
    create_room(wumpus, open_room, "Wumpus", {"muc#roomconfig_maxusers": "3"})
    reply = iq_to(wumpus, open_room,
                  f"<query xmlns='{NS_MUC_ADMIN}'><item affiliation='outcast' "
                  f"jid='troy@eris.dclxvii.irc'><reason>flooding</reason></item></query>",
                  "set")
    assert reply.get("type") == "result", xml_str(reply)
    err = join_refused(troy, open_room, "Troy")
    assert error_condition(err) == "forbidden", xml_str(err)
    assert child(err, "error").get("type") == "auth"

    join(valdis, open_room, "Valdis")
    err = join_refused(wiz, open_room, "Valdis")
    assert error_condition(err) == "conflict", xml_str(err)
    assert child(err, "error").get("type") == "cancel"

    join(phaedrus, open_room, "Phaedrus")  # the third occupant: the room is now full
    err = join_refused(wiz, open_room, "WiZ")
    assert error_condition(err) == "service-unavailable", xml_str(err)
    assert child(err, "error").get("type") == "wait"

    # none of the refused made it in
    for refused in ("Troy", "WiZ"):
        run(valdis.expect_none(is_presence(from_=f"{open_room}/{refused}"),
                               barrier_to=open_room))


# ----------------------------------------------------------------------------------------------
# history (§7.2.15)


def test_history_request_limits(people: People) -> None:
    room = room_of("history")
    wumpus, valdis, phaedrus, wiz, troy, bigcheese, efchen = people(
        "Wumpus", "Valdis", "Phaedrus", "WiZ", "Troy", "BigCheese", "Efchen")
    create_room(wumpus, room, "Wumpus")
    for text in ("one", "two", "three"):
        say(wumpus, room, text)

    def history(client: Client, nick: str, request: str) -> list[str | None]:
        seq = join(client, room, nick, request)
        return [body(e) for e in seq if stamp_of(e) is not None]

    assert history(valdis, "Valdis", "<history maxstanzas='2'/>") == ["two", "three"]
    assert history(phaedrus, "Phaedrus", "<history maxchars='0'/>") == []
    future = xmpp_time(time.time() + 3600)
    assert history(wiz, "WiZ", f"<history since='{future}'/>") == []
    past = xmpp_time(time.time() - 3600)
    assert history(troy, "Troy", f"<history since='{past}' maxstanzas='10'/>") == [
        "one", "two", "three"]
    assert history(bigcheese, "BigCheese", "<history seconds='3600'/>") == [
        "one", "two", "three"]
    assert history(efchen, "Efchen", "<history seconds='0'/>") == []


# ----------------------------------------------------------------------------------------------
# subject (§8.1)


def test_subject_set_broadcast_and_delivered_on_join(people: People) -> None:
    room = room_of("subject")
    wumpus, valdis, phaedrus = people("Wumpus", "Valdis", "Phaedrus")
    create_room(wumpus, room, "Wumpus")
    join(valdis, room, "Valdis")

    wumpus.send_raw(f"<message to='{room}' type='groupchat' id='subj1'>"
                    f"<subject>netsplit at 3</subject></message>")
    for client in (wumpus, valdis):
        msg = run(client.expect(is_subject(room)))
        assert msg.get("from") == f"{room}/Wumpus"
        assert child(msg, "subject").text == "netsplit at 3"

    seq = join(phaedrus, room, "Phaedrus")
    assert child(seq[-1], "subject").text == "netsplit at 3"

    # a participant may not, unless the room allows it
    valdis.send_raw(f"<message to='{room}' type='groupchat' id='subj2'>"
                    f"<subject>mine now</subject></message>")
    err = run(valdis.expect(is_message(from_=room, type_="error")))
    assert err.get("id") == "subj2" and error_condition(err) == "forbidden"
    run(phaedrus.expect_none(is_subject(room), barrier_to=room))

    configure(wumpus, room, {"muc#roomconfig_changesubject": "1"})
    valdis.send_raw(f"<message to='{room}' type='groupchat' id='subj3'>"
                    f"<subject>mine now</subject></message>")
    msg = run(phaedrus.expect(is_subject(room)))
    assert msg.get("from") == f"{room}/Valdis" and child(msg, "subject").text == "mine now"


# ----------------------------------------------------------------------------------------------
# presence while in the room (§7.7, §7.6, §7.14)


def test_presence_change_broadcast(people: People) -> None:
    room = room_of("presence")
    wumpus, valdis = people("Wumpus", "Valdis")
    create_room(wumpus, room, "Wumpus")
    join(valdis, room, "Valdis")
    run(wumpus.expect(is_presence(from_=f"{room}/Valdis")))

    valdis.send_raw(f"<presence to='{room}/Valdis'><show>xa</show>"
                    f"<status>gone fishing</status></presence>")
    for client in (wumpus, valdis):
        pres = run(client.expect(is_presence(from_=f"{room}/Valdis", type_="available")))
        assert child(pres, "show").text == "xa"
        assert child(pres, "status").text == "gone fishing"
        assert has_status(pres, 110) == (client is valdis)
        assert muc_item(pres)["role"] == "participant"


def test_nick_change(people: People) -> None:
    room = room_of("nick")
    wumpus, valdis = people("Wumpus", "Valdis")
    create_room(wumpus, room, "Wumpus")
    join(valdis, room, "Valdis")
    run(wumpus.expect(is_presence(from_=f"{room}/Valdis")))

    valdis.send_raw(f"<presence to='{room}/Lysander'/>")
    for client in (valdis, wumpus):
        seq = run(take_through(client, is_presence(from_=f"{room}/Lysander")))
        seq = [e for e in seq if local(e.tag) == "presence"]
        assert [e.get("from") for e in seq] == [f"{room}/Valdis", f"{room}/Lysander"]
        gone, back = seq
        assert gone.get("type") == "unavailable" and has_status(gone, 303)
        assert muc_item(gone)["nick"] == "Lysander"
        assert back.get("type") is None
        assert has_status(gone, 110) == has_status(back, 110) == (client is valdis)

    # the nick is taken
    valdis.send_raw(f"<presence to='{room}/Wumpus'/>")
    err = run(valdis.expect(is_presence(from_=f"{room}/Wumpus", type_="error")))
    assert error_condition(err) == "conflict"
    run(wumpus.expect_none(is_presence(from_=f"{room}/Lysander"), barrier_to=room))

    # the room goes on with the new nick
    say(valdis, room, "call me Lysander")
    run(wumpus.expect(groupchat_with_body(f"{room}/Lysander", "call me Lysander")))


def test_leave_and_temporary_room_vanishes(people: People) -> None:
    room = room_of("leave")
    wumpus, valdis = people("Wumpus", "Valdis")
    create_room(wumpus, room, "Wumpus")
    join(valdis, room, "Valdis")
    assert room in disco_items(valdis, MUC_DOMAIN)

    valdis.send_raw(f"<presence to='{room}/Valdis' type='unavailable'>"
                    f"<status>bye</status></presence>")
    own = run(valdis.expect(is_presence(from_=f"{room}/Valdis", type_="unavailable")))
    assert has_status(own, 110)
    assert muc_item(own)["role"] == "none"
    seen = run(wumpus.expect(is_presence(from_=f"{room}/Valdis", type_="unavailable")))
    assert not has_status(seen, 110)
    assert child(seen, "status").text == "bye"

    # a left occupant is no longer in the room
    valdis.send_raw(f"<message to='{room}' type='groupchat'><body>echo?</body></message>")
    err = run(valdis.expect(is_message(from_=room, type_="error")))
    assert error_condition(err) == "not-acceptable"

    wumpus.send_raw(f"<presence to='{room}/Wumpus' type='unavailable'/>")
    own = run(wumpus.expect(is_presence(from_=f"{room}/Wumpus", type_="unavailable")))
    assert has_status(own, 110)
    assert room not in disco_items(wumpus, MUC_DOMAIN)
    info = iq_to(valdis, room, f"<query xmlns='{NS_DISCO_INFO}'/>")
    assert error_condition(info) == "item-not-found"

    seq = join(valdis, room, "Valdis")  # a new room, Valdis its owner
    own = next(e for e in seq if self_presence(f"{room}/Valdis")(e))
    assert has_status(own, 201)
    assert muc_item(own)["affiliation"] == "owner"
    assert not [e for e in seq if stamp_of(e) is not None]  # no history of the old room


# ----------------------------------------------------------------------------------------------
# messages (§7.4, §7.5)


def test_groupchat_broadcast_with_stanza_id(people: People) -> None:
    room = room_of("groupchat")
    wumpus, valdis, phaedrus, wiz = people("Wumpus", "Valdis", "Phaedrus", "WiZ")
    create_room(wumpus, room, "Wumpus")
    join(valdis, room, "Valdis")
    join(phaedrus, room, "Phaedrus")

    valdis.send_raw(f"<message to='{room}' type='groupchat' id='gc-1'>"
                    f"<body>PING :irc.killrc</body></message>")
    sids = set()
    for client in (wumpus, valdis, phaedrus):
        msg = run(client.expect(groupchat_with_body(f"{room}/Valdis", "PING :irc.killrc")))
        assert msg.get("to") == client.jid
        sid = msg.find(f"{{{NS_SID}}}stanza-id")
        assert sid is not None and sid.get("by") == room and sid.get("id")
        sids.add(sid.get("id"))
        if client is valdis:
            assert msg.get("id") == "gc-1"  # the sender recognises its own message
    assert len(sids) == 1

    # not an occupant
    wiz.send_raw(f"<message to='{room}' type='groupchat' id='gc-2'><body>hi</body></message>")
    err = run(wiz.expect(is_message(from_=room, type_="error")))
    assert err.get("id") == "gc-2" and error_condition(err) == "not-acceptable"
    run(valdis.expect_none(lambda e: body(e) == "hi", barrier_to=room))


def test_visitor_in_moderated_room_is_forbidden(people: People) -> None:
    room = room_of("moderated")
    wumpus, valdis = people("Wumpus", "Valdis")
    create_room(wumpus, room, "Wumpus", {"muc#roomconfig_moderatedroom": "1"})
    seq = join(valdis, room, "Valdis")
    own = next(e for e in seq if self_presence(f"{room}/Valdis")(e))
    assert muc_item(own)["role"] == "visitor"

    valdis.send_raw(f"<message to='{room}' type='groupchat' id='v-1'><body>hear me</body>"
                    f"</message>")
    err = run(valdis.expect(is_message(from_=room, type_="error")))
    assert err.get("id") == "v-1" and error_condition(err) == "forbidden"
    assert child(err, "error").get("type") == "auth"
    run(wumpus.expect_none(lambda e: body(e) == "hear me", barrier_to=room))


def test_private_messages(people: People) -> None:
    room = room_of("private")
    wumpus, valdis, phaedrus = people("Wumpus", "Valdis", "Phaedrus")
    create_room(wumpus, room, "Wumpus")
    join(valdis, room, "Valdis")
    join(phaedrus, room, "Phaedrus")

    valdis.send_raw(f"<message to='{room}/Phaedrus' type='chat' id='pm-1'>"
                    f"<body>/msg only you</body></message>")
    msg = run(phaedrus.expect(is_message(from_=f"{room}/Valdis", type_="chat")))
    assert body(msg) == "/msg only you" and msg.get("id") == "pm-1"
    assert msg.get("to") == phaedrus.jid
    assert muc_user(msg) is not None
    run(wumpus.expect_none(lambda e: body(e) == "/msg only you", barrier_to=room))

    phaedrus.send_raw(f"<message to='{room}/Valdis' type='chat'><body>ack</body></message>")
    msg = run(valdis.expect(is_message(from_=f"{room}/Phaedrus", type_="chat")))
    assert body(msg) == "ack"

    valdis.send_raw(f"<message to='{room}/Nobody' type='chat' id='pm-2'>"
                    f"<body>anyone?</body></message>")
    err = run(valdis.expect(is_message(from_=f"{room}/Nobody", type_="error")))
    assert err.get("id") == "pm-2" and error_condition(err) == "item-not-found"


# ----------------------------------------------------------------------------------------------
# IQs through the room (§7.8.2), self-ping (XEP-0410), probes


def test_iq_to_occupant_is_routed(people: People) -> None:
    room = room_of("iq")
    wumpus, valdis = people("Wumpus", "Valdis")
    create_room(wumpus, room, "Wumpus")
    join(valdis, room, "Valdis")

    # a ping to Valdis's occupant JID reaches Valdis's client, which answers it
    reply = run(wumpus.iq(f"<iq type='get' to='{room}/Valdis' id='ping-v'>"
                          f"<ping xmlns='{NS_PING}'/></iq>"))
    assert reply.get("type") == "result", xml_str(reply)
    assert reply.get("from") == f"{room}/Valdis"
    assert reply.get("id") == "ping-v"
    asked = run(valdis.expect(is_iq(type_="get", from_=f"{room}/Wumpus")))
    assert asked.find(f"{{{NS_PING}}}ping") is not None
    assert wumpus.bare not in xml_str(asked)  # semi-anonymous: the asker stays hidden

    # disco#info, answered by slixmpp's xep_0030
    reply = run(wumpus.iq(f"<iq type='get' to='{room}/Valdis' id='disco-v'>"
                          f"<query xmlns='{NS_DISCO_INFO}'/></iq>"))
    assert reply.get("type") == "result" and reply.get("id") == "disco-v", xml_str(reply)
    assert reply.find(f"{{{NS_DISCO_INFO}}}query") is not None

    # vCard: asked of the occupant's bare JID, answered by Prosody's vcard_legacy
    reply = run(valdis.iq(f"<iq type='get' to='{room}/Wumpus' id='vcard-w'>"
                          f"<vCard xmlns='{NS_VCARD}'/></iq>"))
    assert reply.get("id") == "vcard-w" and reply.get("from") == f"{room}/Wumpus"
    assert reply.get("type") == "result", xml_str(reply)
    assert reply.find(f"{{{NS_VCARD}}}vCard") is not None

    # an unknown nick
    reply = run(wumpus.iq(f"<iq type='get' to='{room}/Nobody'><ping xmlns='{NS_PING}'/></iq>"))
    assert error_condition(reply) == "item-not-found"


def test_self_ping(people: People) -> None:
    room = room_of("selfping")
    wumpus, valdis = people("Wumpus", "Valdis")
    create_room(wumpus, room, "Wumpus")

    reply = run(wumpus.iq(f"<iq type='get' to='{room}/Wumpus' id='sp-1'>"
                          f"<ping xmlns='{NS_PING}'/></iq>"))
    assert reply.get("type") == "result" and reply.get("from") == f"{room}/Wumpus"
    run(wumpus.expect_none(is_iq(type_="get"), barrier_to=room))  # the room answered itself

    reply = run(valdis.iq(f"<iq type='get' to='{room}/Valdis' id='sp-2'>"
                          f"<ping xmlns='{NS_PING}'/></iq>"))
    assert reply.get("type") == "error" and error_condition(reply) == "not-acceptable"
    reply = run(valdis.iq(f"<iq type='get' to='{room}/Wumpus' id='sp-3'>"
                          f"<ping xmlns='{NS_PING}'/></iq>"))
    assert error_condition(reply) == "not-acceptable"


def test_presence_probe_to_occupant(people: People) -> None:
    room = room_of("probe")
    wumpus, valdis = people("Wumpus", "Valdis")
    create_room(wumpus, room, "Wumpus")
    wumpus.send_raw(f"<presence to='{room}/Wumpus'><show>dnd</show></presence>")
    run(wumpus.expect(is_presence(from_=f"{room}/Wumpus")))
    join(valdis, room, "Valdis")

    valdis.send_raw(f"<presence to='{room}/Wumpus' type='probe'/>")
    pres = run(valdis.expect(is_presence(from_=f"{room}/Wumpus")))
    assert pres.get("type") is None, xml_str(pres)
    assert child(pres, "show").text == "dnd"
    assert muc_item(pres) == {"affiliation": "owner", "role": "moderator"}
