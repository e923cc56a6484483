"""XEP-0045 moderation, administration, owner, invitation, registration, voice-request and
discovery use cases, with real clients against the session's dmuc-master (a Prosody component).

The cast is the XEP-0282 seed's (§3.1); every test uses a room of its own on channel.avalon.irc.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator

import pytest

from testbed import TwistdDaemon
from tests.integration.cast import CAST, bare, room_jid
from tests.integration.conftest import MUC_DOMAIN, MakeClient
from tests.integration.xmpp_client import (
    NS_CLIENT,
    NS_DATA,
    NS_DISCO_INFO,
    NS_DISCO_ITEMS,
    NS_MUC,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_MUC_USER,
    NS_PING,
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
    muc_user,
    run,
    status_codes,
    xml_str,
)

pytestmark = pytest.mark.integration

NS_REGISTER = "jabber:iq:register"
NS_CONFERENCE = "jabber:x:conference"
NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
NS_MUC_REGISTER = "http://jabber.org/protocol/muc#register"
NS_MUC_REQUEST = "http://jabber.org/protocol/muc#request"
NS_ROOMINFO = "http://jabber.org/protocol/muc#roominfo"



# ----------------------------------------------------------------------------------------------
# helpers


@pytest.fixture
def cast(master: TwistdDaemon, client_factory: MakeClient) -> Callable[..., list[Client]]:
    """``cast("Wumpus", "Valdis")`` -> their clients, connected concurrently."""

    def make(*nicks: str) -> list[Client]:
        clients = [client_factory(CAST[n], connect=False) for n in nicks]
        run(asyncio.gather(*(c.connect() for c in clients)))
        return clients

    return make


def form_xml(form_type: str, fields: dict[str, object], kind: str = "submit") -> str:
    parts = [f"<x xmlns='{NS_DATA}' type='{kind}'>",
             f"<field var='FORM_TYPE'><value>{form_type}</value></field>"]
    for var, value in fields.items():
        values = value if isinstance(value, list) else [value]
        vals = "".join(
            f"<value>{('1' if v else '0') if isinstance(v, bool) else v}</value>" for v in values)
        parts.append(f"<field var='{var}'>{vals}</field>")
    parts.append("</x>")
    return "".join(parts)


def form_values(x: ET.Element) -> dict[str, list[str]]:
    return {
        f.get("var", ""): [v.text or "" for v in f.findall(f"{{{NS_DATA}}}value")]
        for f in x.findall(f"{{{NS_DATA}}}field")
    }


def is_self_presence(room: str, nick: str) -> Predicate:
    return all_of(is_presence(from_=f"{room}/{nick}", type_="available"),
                  lambda e: has_status(e, 110))


def is_subject(room: str) -> Predicate:
    return all_of(is_message(type_="groupchat"),
                  lambda e: (e.get("from") or "").split("/")[0] == room,
                  lambda e: e.find(f"{{{NS_CLIENT}}}subject") is not None)


def is_error(kind: str, from_: str | None = None) -> Predicate:
    return lambda e: e.tag.endswith("}" + kind) and e.get("type") == "error" and (
        from_ is None or e.get("from") == from_)


def send_join(client: Client, room: str, nick: str, password: str | None = None) -> None:
    pw = f"<password>{password}</password>" if password else ""
    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'>{pw}</x></presence>")


def join(client: Client, room: str, nick: str, *, password: str | None = None,
         others: tuple[Client, ...] = ()) -> ET.Element:
    """Enter ``room`` as ``nick``; wait for the self-presence and the subject (the end of the
    join sequence), and for each of ``others`` (occupants) to see the newcomer."""
    send_join(client, room, nick, password)
    pres = run(client.expect(is_self_presence(room, nick)))
    run(client.expect(is_subject(room)))
    # the occupant list came before the self-presence: take it out of the inbox
    listed = client.received(lambda e: e.tag.endswith("}presence")
                             and (e.get("from") or "").startswith(room + "/"))
    client.inbox = [e for e in client.inbox if not any(e is x for x in listed)]
    for other in others:
        run(other.expect(is_presence(from_=f"{room}/{nick}", type_="available")))
    return pres


def configure(owner: Client, room: str, **fields: object) -> ET.Element:
    """Submit muc#owner configuration (field names without the muc#roomconfig_ prefix)."""
    values = {f"muc#roomconfig_{k}": v for k, v in fields.items()}
    res = run(owner.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_OWNER}'>"
                       f"{form_xml(NS_ROOMCONFIG, values)}</query></iq>"))
    assert res.get("type") == "result", xml_str(res)
    return res


def create(owner: Client, room: str, nick: str, **fields: object) -> None:
    """Create a room (201), configure it and so unlock it."""
    pres = join(owner, room, nick)
    assert {"110", "201"} <= status_codes(pres), xml_str(pres)
    assert muc_item(pres)["affiliation"] == "owner"
    configure(owner, room, **fields)


def populate(room: str, members: list[tuple[Client, str]], **config: object) -> None:
    """The first client creates and configures the room, the others join in order."""
    owner, owner_nick = members[0]
    create(owner, room, owner_nick, **config)
    inside = [owner]
    for client, nick in members[1:]:
        join(client, room, nick, others=tuple(inside))
        inside.append(client)


def admin_iq(client: Client, room: str, items: str, type_: str = "set") -> ET.Element:
    return run(client.iq(f"<iq type='{type_}' to='{room}'>"
                         f"<query xmlns='{NS_MUC_ADMIN}'>{items}</query></iq>"))


def admin_list(client: Client, room: str, affiliation: str) -> dict[str, dict[str, str]]:
    res = admin_iq(client, room, f"<item affiliation='{affiliation}'/>", "get")
    assert res.get("type") == "result", xml_str(res)
    items = res.findall(f"{{{NS_MUC_ADMIN}}}query/{{{NS_MUC_ADMIN}}}item")
    return {i.get("jid", ""): dict(i.attrib) for i in items}


def assert_result(res: ET.Element) -> None:
    assert res.get("type") == "result", xml_str(res)


def assert_error(res: ET.Element, condition: str, err_type: str | None = None) -> None:
    assert res.get("type") == "error", xml_str(res)
    assert error_condition(res) == condition, xml_str(res)
    if err_type is not None:
        err = res.find(f"{{{NS_CLIENT}}}error")
        assert err is not None and err.get("type") == err_type, xml_str(res)


def item_el(pres: ET.Element) -> ET.Element:
    x = muc_user(pres)
    assert x is not None, xml_str(pres)
    item = x.find(f"{{{NS_MUC_USER}}}item")
    assert item is not None, xml_str(pres)
    return item


def actor_and_reason(pres: ET.Element) -> tuple[str | None, str | None]:
    item = item_el(pres)
    actor = item.find(f"{{{NS_MUC_USER}}}actor")
    reason = item.find(f"{{{NS_MUC_USER}}}reason")
    return (None if actor is None else actor.get("nick"),
            None if reason is None else reason.text)


def unavailable(room: str, nick: str) -> Predicate:
    return is_presence(from_=f"{room}/{nick}", type_="unavailable")


def role_change(room: str, nick: str, role: str) -> Predicate:
    return all_of(is_presence(from_=f"{room}/{nick}", type_="available"),
                  lambda e: (muc_item(e) or {}).get("role") == role)


def disco_info(client: Client, to: str, node: str | None = None) -> ET.Element:
    node_attr = f" node='{node}'" if node else ""
    return run(client.iq(f"<iq type='get' to='{to}'><query xmlns='{NS_DISCO_INFO}'{node_attr}/>"
                         "</iq>"))


def disco_items(client: Client, to: str) -> list[str]:
    res = run(client.iq(f"<iq type='get' to='{to}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>"))
    assert_result(res)
    return [i.get("jid", "") for i in
            res.findall(f"{{{NS_DISCO_ITEMS}}}query/{{{NS_DISCO_ITEMS}}}item")]


def groupchat(client: Client, room: str, text: str) -> None:
    client.send_raw(f"<message to='{room}' type='groupchat'><body>{text}</body></message>")


@pytest.fixture(autouse=True)
def _master_alive(master: TwistdDaemon) -> Iterator[None]:
    yield
    assert master.running(), "dmuc-master died during the test"
    assert "Traceback" not in master.log_text(), master.log_text()[-4000:]


# ----------------------------------------------------------------------------------------------
# kick, ban


def test_kick_by_moderator(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("kick")
    wumpus, valdis, troy = cast("Wumpus", "Valdis", "Troy")
    populate(room, [(wumpus, "Wumpus"), (valdis, "Valdis"), (troy, "Troy")])
    # the owner makes Valdis a moderator (role only, no affiliation)
    assert_result(admin_iq(wumpus, room, "<item nick='Valdis' role='moderator'/>"))
    for c in (wumpus, valdis, troy):
        run(c.expect(role_change(room, "Valdis", "moderator")))

    res = admin_iq(valdis, room,
                   "<item nick='Troy' role='none'><reason>Stop flooding</reason></item>")
    assert_result(res)
    own = run(troy.expect(unavailable(room, "Troy")))
    assert {"307", "110"} <= status_codes(own), xml_str(own)
    assert actor_and_reason(own) == ("Valdis", "Stop flooding")
    assert muc_item(own)["role"] == "none"
    for other in (wumpus, valdis):
        seen = run(other.expect(unavailable(room, "Troy")))
        assert "307" in status_codes(seen) and "110" not in status_codes(seen), xml_str(seen)
        assert actor_and_reason(seen) == ("Valdis", "Stop flooding")
    # Troy is out: a groupchat message from him is refused, and he may come back (not banned)
    groupchat(troy, room, "still here?")
    err = run(troy.expect(is_error("message", room)))
    assert error_condition(err) == "not-acceptable"
    join(troy, room, "Troy", others=(wumpus, valdis))


def test_ban_by_admin(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("ban")
    wumpus, valdis, troy = cast("Wumpus", "Valdis", "Troy")
    populate(room, [(wumpus, "Wumpus"), (valdis, "Valdis"), (troy, "Troy")])
    assert_result(admin_iq(wumpus, room, f"<item jid='{bare('Valdis')}' affiliation='admin'/>"))
    for c in (wumpus, valdis, troy):
        pres = run(c.expect(role_change(room, "Valdis", "moderator")))
        assert muc_item(pres)["affiliation"] == "admin"

    res = admin_iq(valdis, room, f"<item jid='{bare('Troy')}' affiliation='outcast'>"
                                 "<reason>Spammer</reason></item>")
    assert_result(res)
    own = run(troy.expect(unavailable(room, "Troy")))
    assert {"301", "110"} <= status_codes(own), xml_str(own)
    assert muc_item(own)["affiliation"] == "outcast"
    assert actor_and_reason(own) == ("Valdis", "Spammer")
    for other in (wumpus, valdis):
        seen = run(other.expect(unavailable(room, "Troy")))
        assert "301" in status_codes(seen), xml_str(seen)
        assert actor_and_reason(seen) == ("Valdis", "Spammer")

    # banned: cannot rejoin (403 forbidden), under any nick
    for nick in ("Troy", "NotTroy"):
        send_join(troy, room, nick)
        err = run(troy.expect(is_error("presence", f"{room}/{nick}")))
        assert_error(err, "forbidden", "auth")
        assert err.find(f"{{{NS_CLIENT}}}error").get("code") == "403"
    run(wumpus.expect_none(is_presence(from_=f"{room}/NotTroy"), barrier_to=MUC_DOMAIN))


# ----------------------------------------------------------------------------------------------
# roles


def test_voice_in_moderated_room(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("voice")
    wumpus, efchen = cast("Wumpus", "Efchen")
    create(wumpus, room, "Wumpus", moderatedroom=True)
    pres = join(efchen, room, "Efchen", others=(wumpus,))
    assert muc_item(pres)["role"] == "visitor"

    groupchat(efchen, room, "can I speak?")
    err = run(efchen.expect(is_error("message", room)))
    assert_error(err, "forbidden")
    run(wumpus.expect_none(is_message(from_=f"{room}/Efchen"), barrier_to=MUC_DOMAIN))

    assert_result(admin_iq(wumpus, room, "<item nick='Efchen' role='participant'>"
                                         "<reason>Go ahead</reason></item>"))
    own = run(efchen.expect(role_change(room, "Efchen", "participant")))
    assert "110" in status_codes(own)
    seen = run(wumpus.expect(role_change(room, "Efchen", "participant")))
    assert actor_and_reason(seen) == ("Wumpus", "Go ahead")

    groupchat(efchen, room, "thanks")
    for c in (wumpus, efchen):
        msg = run(c.expect(is_message(from_=f"{room}/Efchen", type_="groupchat")))
        assert body(msg) == "thanks"

    assert_result(admin_iq(wumpus, room, "<item nick='Efchen' role='visitor'/>"))
    for c in (wumpus, efchen):
        run(c.expect(role_change(room, "Efchen", "visitor")))
    groupchat(efchen, room, "again?")
    assert_error(run(efchen.expect(is_error("message", room))), "forbidden")


def test_grant_moderator_only_by_admin_or_owner(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("modgrant")
    wumpus, valdis, troy, bigcheese = cast("Wumpus", "Valdis", "Troy", "BigCheese")
    populate(room, [(wumpus, "Wumpus"), (valdis, "Valdis"), (troy, "Troy"),
                    (bigcheese, "BigCheese")])
    everyone = (wumpus, valdis, troy, bigcheese)
    # a participant may not change roles at all
    assert_error(admin_iq(valdis, room, "<item nick='Troy' role='moderator'/>"), "forbidden",
                 "auth")
    # the owner may
    assert_result(admin_iq(wumpus, room, "<item nick='Valdis' role='moderator'/>"))
    for c in everyone:
        run(c.expect(role_change(room, "Valdis", "moderator")))
    # a moderator without admin affiliation may not grant (nor revoke) moderation
    assert_error(admin_iq(valdis, room, "<item nick='Troy' role='moderator'/>"), "not-allowed",
                 "cancel")
    # an admin may
    assert_result(admin_iq(wumpus, room,
                           f"<item jid='{bare('BigCheese')}' affiliation='admin'/>"))
    for c in everyone:
        run(c.expect(role_change(room, "BigCheese", "moderator")))
    assert_result(admin_iq(bigcheese, room, "<item nick='Troy' role='moderator'/>"))
    for c in everyone:
        pres = run(c.expect(role_change(room, "Troy", "moderator")))
        assert muc_item(pres)["affiliation"] == "none"
    assert_result(admin_iq(bigcheese, room, "<item nick='Troy' role='participant'/>"))
    for c in everyone:
        run(c.expect(role_change(room, "Troy", "participant")))
    # the moderator list, as the owner sees it
    res = admin_iq(wumpus, room, "<item role='moderator'/>", "get")
    assert_result(res)
    nicks = {i.get("nick") for i in res.iter(f"{{{NS_MUC_ADMIN}}}item")}
    assert nicks == {"Wumpus", "Valdis", "BigCheese"}


def test_moderator_cannot_kick_owner_or_admin(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("nokick")
    wumpus, valdis, troy = cast("Wumpus", "Valdis", "Troy")
    populate(room, [(wumpus, "Wumpus"), (valdis, "Valdis"), (troy, "Troy")])
    assert_result(admin_iq(wumpus, room, f"<item jid='{bare('Valdis')}' affiliation='admin'/>"))
    assert_result(admin_iq(wumpus, room, "<item nick='Troy' role='moderator'/>"))
    for c in (wumpus, valdis, troy):
        run(c.expect(role_change(room, "Valdis", "moderator")))
        run(c.expect(role_change(room, "Troy", "moderator")))
    for target in ("Wumpus", "Valdis"):
        res = admin_iq(troy, room, f"<item nick='{target}' role='none'/>")
        assert_error(res, "not-allowed", "cancel")
        # nor may he silence them
        assert_error(admin_iq(troy, room, f"<item nick='{target}' role='visitor'/>"),
                     "not-allowed")
    # nor may an admin kick the owner
    assert_error(admin_iq(valdis, room, "<item nick='Wumpus' role='none'/>"), "not-allowed")
    for c in (wumpus, valdis, troy):
        run(c.expect_none(lambda e: e.get("type") == "unavailable" or (
            e.tag.endswith("presence") and (muc_item(e) or {}).get("role") == "visitor"),
            barrier_to=MUC_DOMAIN))


# ----------------------------------------------------------------------------------------------
# affiliations


def test_member_and_outcast_lists(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("lists")
    wumpus, valdis = cast("Wumpus", "Valdis")
    create(wumpus, room, "Wumpus")
    res = admin_iq(wumpus, room,
                   f"<item jid='{bare('Valdis')}' affiliation='member'/>"
                   f"<item jid='{bare('WiZ')}' affiliation='member'><reason>ok</reason></item>"
                   f"<item jid='{bare('Troy')}' affiliation='outcast'>"
                   "<reason>Flooding</reason></item>")
    assert_result(res)
    # Valdis registers a nickname; the member list then carries it
    res = run(valdis.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_REGISTER}'>"
                        f"{form_xml(NS_MUC_REGISTER, {'muc#register_roomnick': 'Valdis'})}"
                        "</query></iq>"))
    assert_result(res)

    members = admin_list(wumpus, room, "member")
    assert set(members) == {bare("Valdis"), bare("WiZ")}
    assert members[bare("Valdis")] == {"jid": bare("Valdis"), "affiliation": "member",
                                       "nick": "Valdis"}
    assert members[bare("WiZ")] == {"jid": bare("WiZ"), "affiliation": "member"}
    outcasts = admin_list(wumpus, room, "outcast")
    assert outcasts == {bare("Troy"): {"jid": bare("Troy"), "affiliation": "outcast"}}
    owners = admin_list(wumpus, room, "owner")
    assert set(owners) == {bare("Wumpus")}
    # a plain member may not read the lists of an open room
    assert_error(admin_iq(valdis, room, "<item affiliation='member'/>", "get"), "forbidden")
    # removing: WiZ back to none, Troy unbanned
    assert_result(admin_iq(wumpus, room, f"<item jid='{bare('WiZ')}' affiliation='none'/>"
                                         f"<item jid='{bare('Troy')}' affiliation='none'/>"))
    assert set(admin_list(wumpus, room, "member")) == {bare("Valdis")}
    assert admin_list(wumpus, room, "outcast") == {}
    # an unknown affiliation is a bad request
    assert_error(admin_iq(wumpus, room, f"<item jid='{bare('WiZ')}' affiliation='king'/>"),
                 "bad-request")


def test_affiliation_change_broadcast(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("affbcast")
    wumpus, valdis, troy = cast("Wumpus", "Valdis", "Troy")
    populate(room, [(wumpus, "Wumpus"), (valdis, "Valdis"), (troy, "Troy")])
    everyone = (wumpus, valdis, troy)
    for affiliation, role in (("member", "participant"), ("admin", "moderator"),
                              ("none", "participant")):
        assert_result(admin_iq(wumpus, room, f"<item jid='{bare('Valdis')}' "
                                             f"affiliation='{affiliation}'/>"))
        for c in everyone:
            pres = run(c.expect(all_of(
                is_presence(from_=f"{room}/Valdis", type_="available"),
                lambda e, a=affiliation: (muc_item(e) or {}).get("affiliation") == a)))
            assert muc_item(pres)["role"] == role, xml_str(pres)
            # semi-anonymous: only moderators (and Valdis himself) see his real JID
            if c is troy:
                assert "jid" not in muc_item(pres), xml_str(pres)
            else:
                assert muc_item(pres)["jid"] == CAST["Valdis"], xml_str(pres)
            assert actor_and_reason(pres)[0] == "Wumpus", xml_str(pres)


def test_last_owner_cannot_give_up_ownership(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("lastowner")
    (wumpus,) = cast("Wumpus")
    create(wumpus, room, "Wumpus")
    for new in ("admin", "member", "none"):
        res = admin_iq(wumpus, room, f"<item jid='{bare('Wumpus')}' affiliation='{new}'/>")
        assert_error(res, "conflict", "cancel")
    assert set(admin_list(wumpus, room, "owner")) == {bare("Wumpus")}
    # with a second owner it works
    assert_result(admin_iq(wumpus, room, f"<item jid='{bare('Valdis')}' affiliation='owner'/>"))
    assert_result(admin_iq(wumpus, room, f"<item jid='{bare('Wumpus')}' affiliation='admin'/>"))
    pres = run(wumpus.expect(is_self_presence(room, "Wumpus")))
    assert muc_item(pres)["affiliation"] == "admin"
    # Wumpus (admin now) may not touch the remaining owner
    assert_error(admin_iq(wumpus, room, f"<item jid='{bare('Valdis')}' affiliation='member'/>"),
                 "not-allowed")


# ----------------------------------------------------------------------------------------------
# owner: configuration and destruction


def test_config_change_broadcasts_104_and_172(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("reconf")
    wumpus, troy = cast("Wumpus", "Troy")
    populate(room, [(wumpus, "Wumpus"), (troy, "Troy")])

    def status_msg(client: Client) -> set[str]:
        msg = run(client.expect(all_of(is_message(from_=room, type_="groupchat"),
                                       lambda e: muc_user(e) is not None)))
        return status_codes(msg)

    configure(wumpus, room, roomname="Wumpus' lair")
    assert status_msg(troy) == {"104"}
    assert status_msg(wumpus) == {"104"}
    configure(wumpus, room, whois="anyone")  # as mod_muc: its own code, no 104 with it
    assert status_msg(troy) == {"172"}
    assert status_msg(wumpus) == {"172"}
    configure(wumpus, room, whois="moderators")
    assert status_msg(troy) == {"173"}
    # an unchanged configuration announces nothing
    configure(wumpus, room, whois="moderators")
    run(troy.expect_none(is_message(from_=room), barrier_to=MUC_DOMAIN))
    # the owner form reflects the new state; a non-owner may not read it
    res = run(wumpus.iq(f"<iq type='get' to='{room}'><query xmlns='{NS_MUC_OWNER}'/></iq>"))
    assert_result(res)
    values = form_values(res.find(f"{{{NS_MUC_OWNER}}}query/{{{NS_DATA}}}x"))
    assert values["muc#roomconfig_roomname"] == ["Wumpus' lair"]
    assert values["muc#roomconfig_whois"] == ["moderators"]
    res = run(troy.iq(f"<iq type='get' to='{room}'><query xmlns='{NS_MUC_OWNER}'/></iq>"))
    assert_error(res, "forbidden", "auth")


def test_members_only_switch_removes_non_members(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("membersonly")
    wumpus, valdis, troy = cast("Wumpus", "Valdis", "Troy")
    populate(room, [(wumpus, "Wumpus"), (valdis, "Valdis"), (troy, "Troy")])
    assert_result(admin_iq(wumpus, room, f"<item jid='{bare('Valdis')}' affiliation='member'/>"))
    for c in (wumpus, valdis, troy):
        run(c.expect(all_of(is_presence(from_=f"{room}/Valdis"),
                            lambda e: (muc_item(e) or {}).get("affiliation") == "member")))
    configure(wumpus, room, membersonly=True)
    own = run(troy.expect(unavailable(room, "Troy")))
    assert {"322", "110"} <= status_codes(own), xml_str(own)
    for c in (wumpus, valdis):
        seen = run(c.expect(unavailable(room, "Troy")))
        assert "322" in status_codes(seen), xml_str(seen)
        assert "104" in status_codes(run(c.expect(is_message(from_=room, type_="groupchat"))))
    run(wumpus.expect_none(lambda e: e.get("type") == "unavailable", barrier_to=MUC_DOMAIN))
    # and Troy cannot come back
    send_join(troy, room, "Troy")
    assert_error(run(troy.expect(is_error("presence", f"{room}/Troy"))),
                 "registration-required", "auth")


def test_destroy_with_reason_and_alternate_venue(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("doomed")
    venue = room_jid("newhome")
    wumpus, valdis, troy = cast("Wumpus", "Valdis", "Troy")
    populate(room, [(wumpus, "Wumpus"), (valdis, "Valdis"), (troy, "Troy")])
    # only an owner may destroy
    res = run(troy.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_OWNER}'>"
                      f"<destroy jid='{venue}'/></query></iq>"))
    assert_error(res, "forbidden")
    res = run(wumpus.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_OWNER}'>"
                        f"<destroy jid='{venue}'><reason>Moving to a new home</reason></destroy>"
                        "</query></iq>"))
    assert_result(res)
    for client, nick in ((wumpus, "Wumpus"), (valdis, "Valdis"), (troy, "Troy")):
        pres = run(client.expect(unavailable(room, nick)))
        destroy = muc_user(pres).find(f"{{{NS_MUC_USER}}}destroy")
        assert destroy is not None, xml_str(pres)
        assert destroy.get("jid") == venue
        assert destroy.findtext(f"{{{NS_MUC_USER}}}reason") == "Moving to a new home"
        assert muc_item(pres) == {"affiliation": "none", "role": "none"}
    # the room is gone
    res = disco_info(troy, room)
    assert_error(res, "item-not-found")
    assert room not in disco_items(troy, MUC_DOMAIN)


# ----------------------------------------------------------------------------------------------
# invitations


def test_mediated_invitation_and_decline(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("invite")
    wumpus, bigcheese = cast("Wumpus", "BigCheese")
    create(wumpus, room, "Wumpus", passwordprotectedroom=True, roomsecret="cauliflower")
    wumpus.send_raw(f"<message to='{room}' id='inv-pw'><x xmlns='{NS_MUC_USER}'>"
                    f"<invite to='{bare('BigCheese')}'><reason>Join us, BigCheese</reason>"
                    "</invite></x></message>")
    msg = run(bigcheese.expect(all_of(is_message(from_=room),
                                      lambda e: muc_user(e) is not None)))
    x = muc_user(msg)
    invite = x.find(f"{{{NS_MUC_USER}}}invite")
    # as mod_muc 0.12: the inviting stanza's id, the inviter by occupant JID (the room is
    # semi-anonymous), the body naming the inviter the same way
    assert msg.get("id") == "inv-pw", xml_str(msg)
    assert invite is not None and invite.get("from") == f"{room}/Wumpus", xml_str(msg)
    assert body(msg) == f"{room}/Wumpus invited you to the room {room} (Join us, BigCheese)"
    assert invite.findtext(f"{{{NS_MUC_USER}}}reason") == "Join us, BigCheese"
    assert x.findtext(f"{{{NS_MUC_USER}}}password") == "cauliflower"
    conference = msg.find(f"{{{NS_CONFERENCE}}}x")
    assert conference is not None and conference.get("jid") == room, xml_str(msg)
    # the invitation opens the door only with the password
    send_join(bigcheese, room, "BigCheese")
    assert_error(run(bigcheese.expect(is_error("presence"))), "not-authorized")

    bigcheese.send_raw(f"<message to='{room}'><x xmlns='{NS_MUC_USER}'>"
                       f"<decline to='{CAST['Wumpus']}'><reason>Sorry, busy</reason></decline>"
                       "</x></message>")
    # (the room's 104 for the creation form came before, as on mod_muc: not this one)
    msg = run(wumpus.expect(all_of(
        is_message(from_=room),
        lambda e: muc_user(e) is not None
        and muc_user(e).find(f"{{{NS_MUC_USER}}}decline") is not None)))
    decline = muc_user(msg).find(f"{{{NS_MUC_USER}}}decline")
    assert decline is not None and decline.get("from") == CAST["BigCheese"], xml_str(msg)
    assert decline.findtext(f"{{{NS_MUC_USER}}}reason") == "Sorry, busy"


def test_members_only_invite_by_non_admin_forbidden(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("invitemo")
    wumpus, valdis, troy = cast("Wumpus", "Valdis", "Troy")
    create(wumpus, room, "Wumpus", membersonly=True)
    assert_result(admin_iq(wumpus, room, f"<item jid='{bare('Valdis')}' affiliation='member'/>"))
    join(valdis, room, "Valdis", others=(wumpus,))
    valdis.send_raw(f"<message to='{room}' id='inv1'><x xmlns='{NS_MUC_USER}'>"
                    f"<invite to='{bare('Troy')}'/></x></message>")
    err = run(valdis.expect(is_error("message", room)))
    assert_error(err, "forbidden", "auth")
    assert err.get("id") == "inv1"
    run(troy.expect_none(is_message(from_=room), barrier_to=MUC_DOMAIN))
    # an admin (here the owner) may invite, which makes the invitee a member
    wumpus.send_raw(f"<message to='{room}'><x xmlns='{NS_MUC_USER}'>"
                    f"<invite to='{bare('Troy')}'/></x></message>")
    run(troy.expect(all_of(is_message(from_=room), lambda e: muc_user(e) is not None)))
    assert bare("Troy") in admin_list(wumpus, room, "member")
    join(troy, room, "Troy", others=(wumpus, valdis))


# ----------------------------------------------------------------------------------------------
# registration (§7.10)


def test_registration_reserves_nick(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("register")
    wumpus, valdis, troy = cast("Wumpus", "Valdis", "Troy")
    create(wumpus, room, "Wumpus")
    get = f"<iq type='get' to='{room}'><query xmlns='{NS_REGISTER}'/></iq>"
    assert_error(run(troy.iq(get)), "registration-required", "auth")

    assert_result(admin_iq(wumpus, room, f"<item jid='{bare('Valdis')}' affiliation='member'/>"))
    res = run(valdis.iq(get))
    assert_result(res)
    form = res.find(f"{{{NS_REGISTER}}}query/{{{NS_DATA}}}x")
    assert form is not None, xml_str(res)
    values = form_values(form)
    assert values["FORM_TYPE"] == [NS_MUC_REGISTER]
    assert "muc#register_roomnick" in values

    submit = form_xml(NS_MUC_REGISTER, {"muc#register_roomnick": "Valdis"})
    assert_result(run(valdis.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_REGISTER}'>"
                                f"{submit}</query></iq>")))
    # registered: the get now says so
    res = run(valdis.iq(get))
    assert res.find(f"{{{NS_REGISTER}}}query/{{{NS_REGISTER}}}registered") is not None
    assert res.findtext(f"{{{NS_REGISTER}}}query/{{{NS_REGISTER}}}username") == "Valdis"
    # the reserved nick, by disco (§7.12)
    res = disco_info(valdis, room, "x-roomuser-item")
    assert_result(res)
    identity = res.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity")
    assert identity is not None and identity.get("name") == "Valdis", xml_str(res)
    assert identity.get("category") == "conference"
    # Troy has none
    res = disco_info(troy, room, "x-roomuser-item")
    assert res.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity") is None
    # someone else cannot join with it, nor register it
    send_join(troy, room, "Valdis")
    err = run(troy.expect(is_error("presence", f"{room}/Valdis")))
    assert_error(err, "conflict")
    assert err.find(f"{{{NS_CLIENT}}}error").get("code") == "409"
    assert_result(admin_iq(wumpus, room, f"<item jid='{bare('Troy')}' affiliation='member'/>"))
    assert_error(run(troy.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_REGISTER}'>"
                             f"{submit}</query></iq>")), "conflict")
    # Valdis himself may
    join(valdis, room, "Valdis", others=(wumpus,))


# ----------------------------------------------------------------------------------------------
# voice requests (§7.13, §8.6)


def test_voice_request_approved(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("voicereq")
    wumpus, efchen = cast("Wumpus", "Efchen")
    create(wumpus, room, "Wumpus", moderatedroom=True)
    join(efchen, room, "Efchen", others=(wumpus,))
    efchen.send_raw(f"<message to='{room}'>"
                    f"{form_xml(NS_MUC_REQUEST, {'muc#role': 'participant'})}</message>")
    msg = run(wumpus.expect(all_of(is_message(from_=room),
                                   lambda e: e.find(f"{{{NS_DATA}}}x") is not None)))
    values = form_values(msg.find(f"{{{NS_DATA}}}x"))
    assert values["FORM_TYPE"] == [NS_MUC_REQUEST]
    assert values["muc#jid"] == [CAST["Efchen"]]
    assert values["muc#roomnick"] == ["Efchen"]
    assert values["muc#role"] == ["participant"]
    # a visitor does not get the request
    run(efchen.expect_none(lambda e: e.find(f"{{{NS_DATA}}}x") is not None,
                           barrier_to=MUC_DOMAIN))

    values["muc#request_allow"] = ["true"]
    values.pop("FORM_TYPE")
    wumpus.send_raw(f"<message to='{room}'>{form_xml(NS_MUC_REQUEST, values)}</message>")
    own = run(efchen.expect(role_change(room, "Efchen", "participant")))
    assert "110" in status_codes(own)
    run(wumpus.expect(role_change(room, "Efchen", "participant")))
    groupchat(efchen, room, "I have a voice")
    assert body(run(wumpus.expect(is_message(from_=f"{room}/Efchen", type_="groupchat")))) \
        == "I have a voice"


# ----------------------------------------------------------------------------------------------
# discovery, ping


def test_disco_info_of_room(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("discoinfo")
    wumpus, troy = cast("Wumpus", "Troy")
    create(wumpus, room, "Wumpus", roomname="Avalon wallops", roomdesc="Talk about IRC",
           moderatedroom=True, whois="anyone", passwordprotectedroom=True, roomsecret="s3",
           publicroom=True)
    join(troy, room, "Troy", password="s3", others=(wumpus,))
    res = disco_info(troy, room)
    assert_result(res)
    query = res.find(f"{{{NS_DISCO_INFO}}}query")
    identity = query.find(f"{{{NS_DISCO_INFO}}}identity")
    assert identity.get("category") == "conference" and identity.get("type") == "text"
    assert identity.get("name") == "Avalon wallops"
    features = {f.get("var") for f in query.findall(f"{{{NS_DISCO_INFO}}}feature")}
    assert {NS_MUC, "muc_moderated", "muc_nonanonymous", "muc_passwordprotected",
            "muc_temporary", "muc_public", "muc_open"} <= features
    assert not {"muc_unmoderated", "muc_semianonymous", "muc_unsecured", "muc_persistent",
                "muc_hidden", "muc_membersonly"} & features
    form = query.find(f"{{{NS_DATA}}}x")
    assert form is not None and form.get("type") == "result", xml_str(res)
    values = form_values(form)
    assert values["FORM_TYPE"] == [NS_ROOMINFO]
    assert values["muc#roominfo_occupants"] == ["2"]
    assert values["muc#roominfo_description"] == ["Talk about IRC"]
    # changing the configuration changes the features
    configure(wumpus, room, moderatedroom=False, whois="moderators",
              passwordprotectedroom=False, membersonly=True)
    query = disco_info(wumpus, room).find(f"{{{NS_DISCO_INFO}}}query")
    features = {f.get("var") for f in query.findall(f"{{{NS_DISCO_INFO}}}feature")}
    assert {"muc_unmoderated", "muc_semianonymous", "muc_unsecured", "muc_membersonly"} \
        <= features
    # Troy is not a member: he was removed, and the count follows
    run(troy.expect(unavailable(room, "Troy")))
    values = form_values(disco_info(wumpus, room).find(f"{{{NS_DISCO_INFO}}}query/"
                                                       f"{{{NS_DATA}}}x"))
    assert values["muc#roominfo_occupants"] == ["1"]


def test_disco_items(cast: Callable[..., list[Client]]) -> None:
    public, hidden, locked = room_jid("lobby"), room_jid("backroom"), room_jid("unfinished")
    wumpus, valdis, troy = cast("Wumpus", "Valdis", "Troy")
    populate(public, [(wumpus, "Wumpus"), (valdis, "Valdis")], roomname="The Lobby")
    create(valdis, hidden, "Valdis", publicroom=False)
    pres = join(troy, locked, "Troy")  # created, never configured: locked
    assert "201" in status_codes(pres)

    res = run(troy.iq(f"<iq type='get' to='{MUC_DOMAIN}'><query xmlns='{NS_DISCO_ITEMS}'/>"
                      "</iq>"))
    assert_result(res)
    items = {i.get("jid"): i.get("name") for i in res.iter(f"{{{NS_DISCO_ITEMS}}}item")}
    assert items.get(public) == "The Lobby"
    assert hidden not in items and locked not in items
    # a public room lists its occupants to anyone; a hidden one only to its occupants
    assert sorted(disco_items(troy, public)) == [f"{public}/Valdis", f"{public}/Wumpus"]
    assert disco_items(troy, hidden) == []
    assert disco_items(valdis, hidden) == [f"{hidden}/Valdis"]
    # the service itself
    res = disco_info(troy, MUC_DOMAIN)
    assert_result(res)
    identity = res.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity")
    assert (identity.get("category"), identity.get("type")) == ("conference", "text")
    features = {f.get("var") for f in res.iter(f"{{{NS_DISCO_INFO}}}feature")}
    assert NS_MUC in features
    # a locked room is invisible to others: they cannot enter either
    send_join(valdis, locked, "Valdis")
    assert_error(run(valdis.expect(is_error("presence", f"{locked}/Valdis"))), "item-not-found")


def test_ping_service_and_room(cast: Callable[..., list[Client]]) -> None:
    room = room_jid("pingroom")
    (wiz,) = cast("WiZ")
    ping = f"<ping xmlns='{NS_PING}'/>"
    res = run(wiz.iq(f"<iq type='get' to='{MUC_DOMAIN}'>{ping}</iq>"))
    assert_result(res)
    assert res.get("from") == MUC_DOMAIN
    # no such room yet
    assert_error(run(wiz.iq(f"<iq type='get' to='{room}'>{ping}</iq>")), "item-not-found")
    create(wiz, room, "WiZ")
    res = run(wiz.iq(f"<iq type='get' to='{room}'>{ping}</iq>"))
    assert_result(res)
    assert res.get("from") == room
    # XEP-0410 self-ping through the occupant JID, answered by the room
    res = run(wiz.iq(f"<iq type='get' to='{room}/WiZ'>{ping}</iq>"))
    assert_result(res)
    assert res.get("from") == f"{room}/WiZ"
    assert is_iq(type_="result")(res)
