"""muc#owner: configuration form, status codes on change, destruction (XEP-0045 §10)."""

from __future__ import annotations

from dmuc import xmlns
from dmuc.outbox import AppendHistory, ClearHistory, DeleteRoom, SaveRoom
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import (
    ROOM,
    SERVICE,
    TROY,
    VALDIS,
    WIZ,
    WUMPUS,
    Harness,
    codes,
    error_condition,
    item,
)
from tests.unit.muc_steps import (
    admin_set,
    field_values,
    form_field,
    groupchat,
    iq,
    leave,
    messages,
    occ,
    one,
    owner_get,
    owner_submit,
    payload,
    presence_from,
    presences,
)

TROY_BARE = "troy@eris.dclxvii.irc"


def _room(**config: str) -> Harness:
    h = Harness()
    h.create_instant(WIZ, "wiz", **config)
    h.join(TROY, "troy")
    return h


def _form(h: Harness, who: str = WIZ):
    reply = one(owner_get(h, who).stanzas_for(who))
    assert reply["type"] == "result"
    form = stanzas.child(payload(reply), "x", xmlns.DATA_FORMS)
    assert form is not None
    return form


def _status_message(out, who):
    found = [m for m in messages(out, who) if m.getAttribute("from") == ROOM]
    assert len(found) <= 1
    return found[0] if found else None


def _result(out, who):
    reply = one([s for s in out.stanzas_for(who) if s.name == "iq"])
    assert reply["type"] == "result", reply.toXml()


def _error(out, who):
    reply = one([s for s in out.stanzas_for(who) if s.name == "iq"])
    assert reply["type"] == "error"
    return error_condition(reply)


# --- the form --------------------------------------------------------------------------------


def test_config_form_has_the_muc_roomconfig_fields_with_current_values():
    h = _room()
    form = _form(h)
    assert form["type"] == "form"
    assert stanzas.form_type(form) == xmlns.MUC_ROOMCONFIG
    assert form_field(form, "FORM_TYPE")["type"] == "hidden"
    expected_types = {
        "muc#roomconfig_roomname": "text-single",
        "muc#roomconfig_roomdesc": "text-single",
        "muc#roomconfig_persistentroom": "boolean",
        "muc#roomconfig_publicroom": "boolean",
        "muc#roomconfig_membersonly": "boolean",
        "muc#roomconfig_moderatedroom": "boolean",
        "muc#roomconfig_passwordprotectedroom": "boolean",
        "muc#roomconfig_roomsecret": "text-private",
        "muc#roomconfig_whois": "list-single",
        "muc#roomconfig_maxusers": "list-single",
        "muc#roomconfig_historylength": "text-single",
        "muc#roomconfig_allowpm": "list-single",
        "muc#roomconfig_changesubject": "boolean",
        "muc#roomconfig_presencebroadcast": "list-multi",
        "{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites": "boolean",
        "muc#roomconfig_defaulthistorymessages": "text-single",
        "muc#roomconfig_enablelogging": "boolean",
    }
    for var, ftype in expected_types.items():
        field = form_field(form, var)
        assert field is not None, var
        assert field["type"] == ftype, var
    # Prosody's defaults.
    assert field_values(form, "muc#roomconfig_persistentroom") == ["0"]
    assert field_values(form, "muc#roomconfig_publicroom") == ["1"]
    assert field_values(form, "muc#roomconfig_whois") == ["moderators"]
    assert field_values(form, "muc#roomconfig_allowpm") == ["visitor"]
    assert sorted(field_values(form, "muc#roomconfig_presencebroadcast")) == [
        "moderator", "participant", "visitor"]
    whois_options = [str(stanzas.child(o, "value"))
                     for o in stanzas.children(form_field(form, "muc#roomconfig_whois"),
                                               "option")]
    assert whois_options == ["moderators", "anyone"]


def test_form_reflects_submitted_values():
    h = _room()
    _result(owner_submit(h, WIZ, {
        "muc#roomconfig_roomname": "Wallops",
        "muc#roomconfig_roomdesc": "Operator chatter",
        "muc#roomconfig_persistentroom": "1",
        "muc#roomconfig_moderatedroom": "true",
        "muc#roomconfig_whois": "anyone",
        "muc#roomconfig_maxusers": "30",
        "muc#roomconfig_historylength": "7",
        "muc#roomconfig_presencebroadcast": ["moderator", "participant"],
    }), WIZ)
    form = _form(h)
    assert field_values(form, "muc#roomconfig_roomname") == ["Wallops"]
    assert field_values(form, "muc#roomconfig_roomdesc") == ["Operator chatter"]
    assert field_values(form, "muc#roomconfig_persistentroom") == ["1"]
    assert field_values(form, "muc#roomconfig_moderatedroom") == ["1"]
    assert field_values(form, "muc#roomconfig_whois") == ["anyone"]
    assert field_values(form, "muc#roomconfig_maxusers") == ["30"]
    assert field_values(form, "muc#roomconfig_historylength") == ["7"]
    assert field_values(form, "muc#roomconfig_presencebroadcast") == ["moderator", "participant"]
    c = h.service.rooms[ROOM].config
    assert (c.name, c.persistent, c.moderated, c.whois, c.max_users, c.history_length) == (
        "Wallops", True, True, "anyone", 30, 7)


def test_non_owner_may_neither_read_nor_submit_the_form():
    h = _room()
    admin_set(h, WIZ, f"<item affiliation='admin' jid='{TROY_BARE}'/>")
    assert _error(owner_get(h, TROY), TROY) == "forbidden"
    out = owner_submit(h, TROY, {"muc#roomconfig_roomname": "Mine"})
    assert _error(out, TROY) == "forbidden"
    assert h.service.rooms[ROOM].config.name == ""


def test_bad_values_are_refused_and_nothing_changes():
    h = _room()
    for fields in ({"muc#roomconfig_whois": "everybody"},
                   {"muc#roomconfig_maxusers": "lots"},
                   {"muc#roomconfig_historylength": "-3"},
                   {"muc#roomconfig_persistentroom": "maybe"},
                   {"muc#roomconfig_allowpm": "friends"},
                   {"muc#roomconfig_presencebroadcast": ["kings"]}):
        out = owner_submit(h, WIZ, {"muc#roomconfig_roomname": "Changed", **fields})
        assert _error(out, WIZ) == "bad-request", fields
        assert messages(out, TROY) == []
    assert h.service.rooms[ROOM].config.name == ""


def test_wrong_form_type_is_refused():
    h = _room()
    out = iq(h, WIZ, ROOM, "set",
             "<query xmlns='http://jabber.org/protocol/muc#owner'>"
             "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
             "<value>urn:example:other</value></field></x></query>")
    assert _error(out, WIZ) == "bad-request"
    out = iq(h, WIZ, ROOM, "set", "<query xmlns='http://jabber.org/protocol/muc#owner'/>")
    assert _error(out, WIZ) == "bad-request"


def test_history_length_is_capped_by_the_service():
    h = Harness(max_history_length=10)
    h.create_instant(WIZ, "wiz", historylength="500")
    assert h.service.rooms[ROOM].config.history_length == 10


# --- status codes on change --------------------------------------------------------------------


def test_config_change_sends_104_to_occupants():
    h = _room()
    out = owner_submit(h, WIZ, {"muc#roomconfig_roomname": "Wallops"})
    _result(out, WIZ)
    for who in (WIZ, TROY):
        msg = _status_message(out, who)
        assert msg is not None and msg["type"] == "groupchat"
        assert codes(msg) == {"104"}
        assert stanzas.child(msg, "body") is None


def test_unchanged_config_sends_no_104():
    h = _room()
    out = owner_submit(h, WIZ, {"muc#roomconfig_roomname": ""})
    _result(out, WIZ)
    assert _status_message(out, TROY) is None


def test_whois_change_sends_172_then_173():
    h = _room()
    out = owner_submit(h, WIZ, {"muc#roomconfig_whois": "anyone"})
    # as mod_muc: the whois change has its own code, no 104 with it
    assert codes(_status_message(out, TROY)) == {"172"}
    # The room is non-anonymous from now on.
    out = h.join(WUMPUS, "wumpus")
    assert "100" in codes(one(presence_from(out, WUMPUS, "wumpus")))
    assert item(one(presence_from(out, TROY, "wumpus")))["jid"] == WUMPUS
    out = owner_submit(h, WIZ, {"muc#roomconfig_whois": "moderators"})
    assert codes(_status_message(out, TROY)) == {"173"}
    out = owner_submit(h, WIZ, {"muc#roomconfig_whois": "anyone",
                                "muc#roomconfig_roomname": "Renamed"})
    assert codes(_status_message(out, TROY)) == {"104", "172"}


def test_logging_change_sends_170_and_171():
    h = _room()
    assert codes(_status_message(owner_submit(h, WIZ, {"muc#roomconfig_enablelogging": "1"}),
                                 TROY)) == {"170"}
    assert codes(_status_message(owner_submit(h, WIZ, {"muc#roomconfig_enablelogging": "0"}),
                                 TROY)) == {"171"}


def test_change_to_members_only_removes_non_members_with_322():
    h = _room()
    h.join(WUMPUS, "wumpus")
    admin_set(h, WIZ, "<item affiliation='member' jid='argl@killrc.oulubox.irc'/>")
    out = owner_submit(h, WIZ, {"muc#roomconfig_membersonly": "1"})
    _result(out, WIZ)
    own = one(presences(out, TROY))
    assert own["type"] == "unavailable"
    assert {"322", "110"} <= codes(own)
    for who in (WIZ, WUMPUS):
        seen = one(presence_from(out, who, "troy"))
        assert "322" in codes(seen) and seen["type"] == "unavailable"
    room = h.service.rooms[ROOM]
    assert set(room.occupants) == {"wiz", "wumpus"}
    assert codes(_status_message(out, WUMPUS)) == {"104"}
    assert error_condition(one(h.join(TROY, "troy").stanzas_for(TROY))) == \
        "registration-required"


def test_password_set_and_removed_through_form():
    h = _room()
    owner_submit(h, WIZ, {"muc#roomconfig_passwordprotectedroom": "1",
                          "muc#roomconfig_roomsecret": "brazen"})
    assert error_condition(one(h.join(WUMPUS, "wumpus").stanzas_for(WUMPUS))) == \
        "not-authorized"
    owner_submit(h, WIZ, {"muc#roomconfig_passwordprotectedroom": "0"})
    assert h.service.rooms[ROOM].config.password == ""
    assert "110" in codes(one(presence_from(h.join(WUMPUS, "wumpus"), WUMPUS, "wumpus")))


def test_presence_broadcast_limits_whose_presence_is_seen():
    h = Harness()
    h.create_instant(WIZ, "wiz", moderatedroom="1")
    owner_submit(h, WIZ, {"muc#roomconfig_presencebroadcast": ["moderator", "participant"]})
    out = h.join(TROY, "troy")  # a visitor
    assert presence_from(out, WIZ, "troy") == []
    assert "110" in codes(one(presence_from(out, TROY, "troy")))
    out = h.join(WUMPUS, "wumpus")
    assert presence_from(out, WUMPUS, "troy") == []
    assert one(presence_from(out, WUMPUS, "wiz"))


def test_shrinking_history_length_trims_history():
    h = _room()
    for i in range(5):
        groupchat(h, TROY, f"m{i}")
    owner_submit(h, WIZ, {"muc#roomconfig_historylength": "2"})
    assert [str(stanzas.child(e.stanza, "body")) for e in h.service.rooms[ROOM].history] == [
        "m3", "m4"]


# --- persistence -------------------------------------------------------------------------------


def test_config_of_persistent_room_is_saved():
    h = _room()
    out = owner_submit(h, WIZ, {"muc#roomconfig_persistentroom": "1",
                                "muc#roomconfig_roomname": "Wallops"})
    saved = [op for op in out.storage if isinstance(op, SaveRoom)]
    assert len(saved) == 1
    assert saved[0].room_jid == ROOM
    assert saved[0].state["config"]["name"] == "Wallops"
    assert saved[0].state["config"]["persistent"] is True
    assert saved[0].state["affiliations"] == {"squit@eris.dclxvii.irc": "owner"}


def test_temporary_room_config_is_saved_only_while_direct_occupants_are_kept():
    """A temporary room is stored only with the occupants the master keeps across a crash
    (reached directly, features/direct_occupants.py); without them, nothing."""
    h = _room()
    out = owner_submit(h, WIZ, {"muc#roomconfig_roomname": "Wallops"})
    (saved,) = [op for op in out.storage if isinstance(op, SaveRoom)]
    assert saved.state["config"]["name"] == "Wallops"
    h.service.rooms[ROOM].keeps_occupants = False
    out = owner_submit(h, WIZ, {"muc#roomconfig_roomname": "Other"})
    assert [op for op in out.storage if isinstance(op, SaveRoom)] == []


def test_becoming_persistent_stores_existing_history():
    h = _room()
    groupchat(h, TROY, "before")
    out = owner_submit(h, WIZ, {"muc#roomconfig_persistentroom": "1"})
    appended = [op for op in out.storage if isinstance(op, AppendHistory)]
    assert len(appended) == 1 and "before" in appended[0].record.xml


def test_becoming_temporary_forgets_the_room_and_empty_room_ends():
    h = _room(persistentroom="1")
    out = owner_submit(h, WIZ, {"muc#roomconfig_persistentroom": "0"})
    assert any(isinstance(op, DeleteRoom) for op in out.storage)
    leave(h, TROY, "troy")
    leave(h, WIZ, "wiz")
    assert ROOM not in h.service.rooms


def test_disabling_history_of_persistent_room_clears_it():
    h = _room(persistentroom="1")
    groupchat(h, TROY, "x")
    out = owner_submit(h, WIZ, {"muc#roomconfig_historylength": "0"})
    assert any(isinstance(op, ClearHistory) for op in out.storage)
    assert h.service.rooms[ROOM].history == []


# --- destruction ------------------------------------------------------------------------------


def _destroy(h: Harness, who: str, inner: str = "", jid: str | None = None):
    attr = f" jid='{jid}'" if jid else ""
    return iq(h, who, ROOM, "set",
              f"<query xmlns='http://jabber.org/protocol/muc#owner'><destroy{attr}>{inner}"
              "</destroy></query>", "d1")


def test_destroy_with_reason_and_alternate_venue():
    h = _room(persistentroom="1")
    h.join(WUMPUS, "wumpus")
    alt = "lobby@channel.avalon.irc"
    out = _destroy(h, WIZ, "<reason>Moving on</reason><password>pw</password>", jid=alt)
    _result(out, WIZ)
    for who, nick in ((WIZ, "wiz"), (TROY, "troy"), (WUMPUS, "wumpus")):
        pres = one(presence_from(out, who, nick))
        assert pres["type"] == "unavailable"
        assert item(pres) == {"affiliation": "none", "role": "none"}
        destroy = stanzas.child(stanzas.child(pres, "x", xmlns.MUC_USER), "destroy")
        assert destroy["jid"] == alt
        assert str(stanzas.child(destroy, "reason")) == "Moving on"
        assert str(stanzas.child(destroy, "password")) == "pw"
    assert ROOM not in h.service.rooms
    assert DeleteRoom(ROOM) in out.storage
    # Nobody is in any room any more: the name can be created afresh.
    out = h.join(TROY, "troy")
    assert "201" in codes(one(presence_from(out, TROY, "troy")))


def test_destroy_without_reason():
    h = _room()
    out = _destroy(h, WIZ)
    pres = one(presence_from(out, TROY, "troy"))
    destroy = stanzas.child(stanzas.child(pres, "x", xmlns.MUC_USER), "destroy")
    assert destroy is not None and destroy.getAttribute("jid") is None
    assert stanzas.child(destroy, "reason") is None


def test_only_owner_may_destroy():
    h = _room()
    admin_set(h, WIZ, f"<item affiliation='admin' jid='{TROY_BARE}'/>")
    out = _destroy(h, TROY, "<reason>mine</reason>")
    assert _error(out, TROY) == "forbidden"
    assert ROOM in h.service.rooms
    assert presences(out, WIZ) == []


def test_messages_to_a_destroyed_room_get_item_not_found():
    h = _room()
    _destroy(h, WIZ)
    out = groupchat(h, TROY, "anyone?")
    assert error_condition(one(out.stanzas_for(TROY))) == "item-not-found"
    out = iq(h, VALDIS, SERVICE, "get", "<query xmlns='http://jabber.org/protocol/disco#items'/>")
    assert stanzas.children(payload(one(out.stanzas_for(VALDIS))), "item") == []


def test_owner_get_leaves_occupants_alone():
    h = _room()
    out = owner_get(h, WIZ)
    assert out.stanzas_for(TROY) == []
    assert occ("troy") not in {s.getAttribute("from") for s in out.stanzas_for(WIZ)}
