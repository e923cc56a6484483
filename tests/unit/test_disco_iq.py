"""Service discovery of the service and of rooms, and IQs to the room itself (§6)."""

from __future__ import annotations

from dmuc import xmlns
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import (
    PHAEDRUS,
    ROOM,
    SERVICE,
    TROY,
    WIZ,
    WUMPUS,
    Harness,
    error_condition,
)
from tests.unit.muc_steps import field_values, iq, occ, one, owner_submit, payload

OTHER = "lobby@channel.avalon.irc"
HIDDEN = "secret@channel.avalon.irc"
LOCKED = "pending@channel.avalon.irc"

DISCO_INFO = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
DISCO_ITEMS = "<query xmlns='http://jabber.org/protocol/disco#items'/>"


def _result(out, who):
    reply = one(out.stanzas_for(who))
    assert reply["type"] == "result", reply.toXml()
    return reply


def _features(reply) -> set[str]:
    return {f["var"] for f in stanzas.children(payload(reply), "feature")}


def _room_info(h: Harness, who: str = PHAEDRUS, room: str = ROOM):
    return _result(iq(h, who, room, "get", DISCO_INFO), who)


# --- the service -------------------------------------------------------------------------------


def test_service_disco_info():
    h = Harness(name="Avalon chatrooms")
    reply = _result(iq(h, TROY, SERVICE, "get", DISCO_INFO), TROY)
    assert reply["from"] == SERVICE
    identity = stanzas.child(payload(reply), "identity")
    assert (identity["category"], identity["type"], identity["name"]) == (
        "conference", "text", "Avalon chatrooms")
    # as mod_muc 0.12 with mod_muc_unique (a dependency) and mod_muc_mam
    assert {xmlns.MUC, xmlns.DISCO_INFO, xmlns.DISCO_ITEMS, xmlns.MUC_UNIQUE,
            xmlns.MAM} <= _features(reply)


def test_the_service_is_named_as_mod_muc_by_default_and_makes_unique_names():
    h = Harness()
    reply = _result(iq(h, TROY, SERVICE, "get", DISCO_INFO), TROY)
    assert stanzas.child(payload(reply), "identity")["name"] == "Prosody Chatrooms"
    names = set()
    for _ in range(2):
        out = h.send(f"<iq type='get' id='u' from='{TROY}' to='{SERVICE}'>"
                     f"<unique xmlns='{xmlns.MUC_UNIQUE}'/></iq>")
        [answer] = out.deliveries
        assert answer.stanza["type"] == "result"
        unique = stanzas.child(answer.stanza, "unique", xmlns.MUC_UNIQUE)
        assert unique is not None and str(unique).islower() and len(str(unique)) >= 16
        names.add(str(unique))
    assert len(names) == 2


def test_service_disco_items_lists_public_unlocked_rooms_only():
    h = Harness()
    h.create_instant(WIZ, "wiz", roomname="Wallops")
    h.create_instant(WIZ, "wiz", room=OTHER)
    h.create_instant(WIZ, "wiz", room=HIDDEN, publicroom="0")
    h.join(WIZ, "wiz", room=LOCKED)
    reply = _result(iq(h, TROY, SERVICE, "get", DISCO_ITEMS), TROY)
    listed = {i["jid"]: i.getAttribute("name") for i in stanzas.children(payload(reply), "item")}
    assert listed == {ROOM: "Wallops", OTHER: "lobby"}


def test_service_ping_and_unknown_iq():
    h = Harness()
    assert _result(iq(h, TROY, SERVICE, "get", "<ping xmlns='urn:xmpp:ping'/>"), TROY)
    out = iq(h, TROY, SERVICE, "get", "<query xmlns='jabber:iq:version'/>")
    assert error_condition(one(out.stanzas_for(TROY))) == "service-unavailable"
    out = h.send(f"<message from='{TROY}' to='{SERVICE}'><body>hi</body></message>")
    assert error_condition(one(out.stanzas_for(TROY))) == "service-unavailable"


def test_iq_to_missing_room_is_item_not_found():
    h = Harness()
    out = iq(h, TROY, ROOM, "get", DISCO_INFO)
    assert error_condition(one(out.stanzas_for(TROY))) == "item-not-found"
    assert ROOM not in h.service.rooms


# --- disco#info of a room -------------------------------------------------------------------------


def test_room_disco_info_default_features_and_roominfo():
    h = Harness()
    h.create_instant(WIZ, "wiz", roomdesc="Operators only")
    h.join(TROY, "troy")
    reply = _room_info(h)
    query = payload(reply)
    identity = stanzas.child(query, "identity")
    # no name when the room has none, as mod_muc's name.lib
    assert (identity["category"], identity["type"], identity.getAttribute("name")) == (
        "conference", "text", None)
    features = _features(reply)
    assert {xmlns.MUC, xmlns.MUC_STABLE_ID, xmlns.MUC_SELF_PING, xmlns.MUC_REQUEST,
            xmlns.REGISTER, xmlns.DISCO_INFO} <= features
    assert {"muc_public", "muc_temporary", "muc_open", "muc_unmoderated",
            "muc_semianonymous", "muc_unsecured"} <= features
    assert not {"muc_hidden", "muc_persistent", "muc_membersonly", "muc_moderated",
                "muc_nonanonymous", "muc_passwordprotected"} & features
    form = stanzas.child(query, "x", xmlns.DATA_FORMS)
    assert form["type"] == "result"
    assert stanzas.form_type(form) == xmlns.MUC_ROOMINFO
    assert field_values(form, "muc#roominfo_occupants") == ["2"]
    assert field_values(form, "muc#roominfo_description") == ["Operators only"]


def test_room_disco_info_features_follow_the_config():
    h = Harness()
    h.create_instant(WIZ, "wiz", roomname="Wallops", persistentroom="1", publicroom="0",
                     membersonly="1", moderatedroom="1", whois="anyone",
                     passwordprotectedroom="1", roomsecret="pw")
    reply = _room_info(h)
    features = _features(reply)
    assert {"muc_hidden", "muc_persistent", "muc_membersonly", "muc_moderated",
            "muc_nonanonymous", "muc_passwordprotected"} <= features
    assert not {"muc_public", "muc_temporary", "muc_open", "muc_unmoderated",
                "muc_semianonymous", "muc_unsecured"} & features
    assert stanzas.child(payload(reply), "identity")["name"] == "Wallops"
    form = stanzas.child(payload(reply), "x", xmlns.DATA_FORMS)
    assert field_values(form, "muc#roomconfig_roomname") == ["Wallops"]


def test_room_disco_info_never_tells_the_subject():
    """mod_muc 0.12.3 sends no muc#roominfo_subject: a stranger asking a hidden or
    members-only room must not read it."""
    h = Harness()
    h.create_instant(WIZ, "wiz", membersonly="1", publicroom="0")
    h.send(f"<message from='{WIZ}' to='{ROOM}' type='groupchat'><subject>Netsplit</subject>"
           "</message>")
    reply = _room_info(h)
    assert "Netsplit" not in reply.toXml()
    form = stanzas.child(payload(reply), "x", xmlns.DATA_FORMS)
    assert field_values(form, "muc#roomconfig_changesubject") == []  # as mod_muc: no value


def test_room_disco_info_with_unknown_node_is_item_not_found():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = iq(h, TROY, ROOM, "get",
             "<query xmlns='http://jabber.org/protocol/disco#info' node='nonsense'/>")
    assert error_condition(one(out.stanzas_for(TROY))) == "item-not-found"


def test_room_disco_set_is_bad_request():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = iq(h, TROY, ROOM, "set", DISCO_INFO)
    assert error_condition(one(out.stanzas_for(TROY))) == "bad-request"


# --- disco#items of a room ------------------------------------------------------------------


def test_room_disco_items_lists_occupants():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    reply = _result(iq(h, PHAEDRUS, ROOM, "get", DISCO_ITEMS), PHAEDRUS)
    listed = {(i["jid"], i["name"]) for i in stanzas.children(payload(reply), "item")}
    assert listed == {(occ("wiz"), "wiz"), (occ("troy"), "troy")}
    assert "eris" not in reply.toXml()


def test_hidden_room_items_only_to_occupants():
    h = Harness()
    h.create_instant(WIZ, "wiz", publicroom="0")
    h.join(TROY, "troy")
    reply = _result(iq(h, PHAEDRUS, ROOM, "get", DISCO_ITEMS), PHAEDRUS)
    assert stanzas.children(payload(reply), "item") == []
    reply = _result(iq(h, TROY, ROOM, "get", DISCO_ITEMS), TROY)
    assert len(stanzas.children(payload(reply), "item")) == 2


# --- other IQs to the room ---------------------------------------------------------------------


def test_ping_to_room():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    reply = _result(iq(h, TROY, ROOM, "get", "<ping xmlns='urn:xmpp:ping'/>", "pr"), TROY)
    assert reply["id"] == "pr" and reply["from"] == ROOM


def test_unknown_namespace_to_room_is_service_unavailable():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = iq(h, TROY, ROOM, "get", "<query xmlns='jabber:iq:version'/>")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error" and error_condition(reply) == "service-unavailable"


def test_results_and_errors_to_the_room_are_dropped():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    assert h.send(f"<iq type='result' id='x' from='{TROY}' to='{ROOM}'/>").deliveries == []
    assert h.send(f"<iq type='error' id='x' from='{TROY}' to='{ROOM}'/>").deliveries == []


def test_iq_without_payload_is_bad_request():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = h.send(f"<iq type='get' id='e' from='{TROY}' to='{ROOM}'/>")
    assert error_condition(one(out.stanzas_for(TROY))) == "bad-request"


def test_room_iqs_while_locked_go_to_the_owner_only():
    h = Harness()
    h.join(WIZ, "wiz")
    out = iq(h, WUMPUS, ROOM, "get", "<query xmlns='http://jabber.org/protocol/muc#owner'/>")
    assert error_condition(one(out.stanzas_for(WUMPUS))) == "forbidden"
    owner_submit(h, WIZ)
    assert not h.service.rooms[ROOM].locked


def test_a_new_room_speaks_the_language_of_the_join_that_created_it():
    """As mod_muc's set_room_defaults: the creating stanza's xml:lang."""
    h = Harness()
    h.send(f"<presence xml:lang='fi' from='{WIZ}' to='{ROOM}/wiz'>"
           "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
    form = stanzas.child(payload(_room_info(h)), "x", xmlns.DATA_FORMS)
    assert field_values(form, "muc#roominfo_lang") == ["fi"]
