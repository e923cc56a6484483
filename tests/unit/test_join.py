"""Room creation, entering, presence, nick changes and leaving (XEP-0045 §7.1-§7.7, §10.1)."""

from __future__ import annotations

from dmuc import xmlns
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import (
    BIGCHEESE,
    PHAEDRUS,
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


def _error(stanza):
    return stanzas.child(stanza, "error")


def _service_items(h: Harness) -> list[str]:
    out = iq(h, TROY, SERVICE, "get", "<query xmlns='http://jabber.org/protocol/disco#items'/>")
    reply = one(out.stanzas_for(TROY))
    return [i["jid"] for i in stanzas.children(payload(reply), "item")]


def _assert_join_error(out, who, nick, condition, err_type, code):
    reply = one(out.stanzas_for(who))
    assert reply.name == "presence"
    assert reply["type"] == "error"
    assert reply["from"] == occ(nick)
    assert error_condition(reply) == condition
    assert _error(reply)["type"] == err_type
    assert _error(reply).getAttribute("code") == code
    assert stanzas.child(reply, "x", xmlns.MUC) is not None


# --- creation and locking ------------------------------------------------------------------


def test_instant_room_is_created_locked_with_201():
    h = Harness()
    out = h.join(WIZ, "wiz")
    own = one(presences(out, WIZ))
    assert own["from"] == occ("wiz")
    assert {"110", "201"} <= codes(own)
    assert item(own)["affiliation"] == "owner"
    assert item(own)["role"] == "moderator"
    assert item(own)["jid"] == WIZ
    assert h.service.rooms[ROOM].locked
    # Others are kept out of a locked room as if it did not exist.
    _assert_join_error(h.join(TROY, "troy"), TROY, "troy", "item-not-found", "cancel", "404")
    assert ROOM not in _service_items(h)
    # Submitting the (empty) instant-room form unlocks it.
    out = owner_submit(h, WIZ)
    result = one(out.stanzas_for(WIZ))
    assert result.name == "iq" and result["type"] == "result" and result["id"] == "os"
    assert not h.service.rooms[ROOM].locked
    out = h.join(TROY, "troy")
    assert "110" in codes(one(presence_from(out, TROY, "troy")))
    assert ROOM in _service_items(h)


def test_first_join_gets_201_only_once():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    leave(h, WIZ, "wiz")  # temporary room: gone
    assert ROOM not in h.service.rooms
    out = h.join(WIZ, "wiz")
    assert "201" in codes(one(presence_from(out, WIZ, "wiz")))
    owner_submit(h, WIZ, {"muc#roomconfig_persistentroom": "1"})
    leave(h, WIZ, "wiz")
    assert ROOM in h.service.rooms
    out = h.join(WIZ, "wiz")
    assert "201" not in codes(one(presence_from(out, WIZ, "wiz")))


def test_reserved_room_owner_gets_form_and_submission_unlocks():
    h = Harness()
    h.join(WIZ, "wiz")
    out = owner_get(h, WIZ)
    reply = one(out.stanzas_for(WIZ))
    assert reply["type"] == "result"
    query = payload(reply)
    assert query.uri == xmlns.MUC_OWNER
    form = stanzas.child(query, "x", xmlns.DATA_FORMS)
    assert form["type"] == "form"
    assert stanzas.form_type(form) == xmlns.MUC_ROOMCONFIG
    assert h.service.rooms[ROOM].locked  # getting the form does not unlock
    out = owner_submit(h, WIZ, {"muc#roomconfig_roomname": "Wallops",
                                "muc#roomconfig_whois": "anyone"})
    assert [s.name for s in out.stanzas_for(WIZ)] == ["iq", "message"]
    assert one([s for s in out.stanzas_for(WIZ) if s.name == "iq"])["type"] == "result"
    room = h.service.rooms[ROOM]
    assert not room.locked
    assert room.config.name == "Wallops"
    # As mod_muc's process_form: the configuration that unlocks the room is announced
    # like any other (104 for the name, 172 for whois).
    assert [codes(m) for m in messages(out, WIZ)] == [{"104", "172"}]


def test_a_submitted_history_length_is_announced_as_a_change_as_mod_muc():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = owner_submit(h, WIZ, {"muc#roomconfig_historylength": "20"})  # unchanged
    assert [codes(m) for m in messages(out, WIZ)] == [{"104"}]
    out = owner_submit(h, WIZ, {"muc#roomconfig_roomname": ""})  # unchanged
    assert messages(out, WIZ) == []


def test_cancelling_the_initial_form_destroys_the_room():
    h = Harness()
    h.join(WIZ, "wiz")
    out = owner_submit(h, WIZ, form_type="cancel")
    got = out.stanzas_for(WIZ)
    assert got[0].name == "iq" and got[0]["type"] == "result"
    gone = one(presences(out, WIZ))
    assert gone["type"] == "unavailable"
    assert ROOM not in h.service.rooms
    # The name is free again: the next presence creates a new room.
    out = h.join(TROY, "troy")
    assert "201" in codes(one(presence_from(out, TROY, "troy")))


def test_cancelling_the_form_of_an_unlocked_room_changes_nothing():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = owner_submit(h, WIZ, form_type="cancel")
    assert one(out.stanzas_for(WIZ))["type"] == "result"
    assert ROOM in h.service.rooms


def test_room_creation_can_be_restricted():
    h = Harness(create_rooms="admins", admins=frozenset({"rubenro@vesa.yeggmaex.irc"}))
    _assert_join_error(h.join(TROY, "troy"), TROY, "troy", "not-allowed", "cancel", "405")
    assert ROOM not in h.service.rooms
    out = h.join(BIGCHEESE, "bigcheese")
    assert "201" in codes(one(presence_from(out, BIGCHEESE, "bigcheese")))

    h = Harness(create_rooms=["eris.dclxvii.irc"])
    assert error_condition(one(h.join(WUMPUS, "wumpus").stanzas_for(WUMPUS))) == "not-allowed"
    assert "201" in codes(one(presence_from(h.join(TROY, "troy"), TROY, "troy")))


def test_presence_to_bare_room_jid_is_jid_malformed():
    h = Harness()
    out = h.send(f"<presence from='{TROY}' to='{ROOM}'/>")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error" and error_condition(reply) == "jid-malformed"
    h.create_instant(WIZ, "wiz")
    out = h.send(f"<presence from='{TROY}' to='{ROOM}'/>")
    assert error_condition(one(out.stanzas_for(TROY))) == "jid-malformed"


# --- entering --------------------------------------------------------------------------------


def test_join_order_occupants_then_self_then_history_then_subject():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    groupchat(h, TROY, "first")
    h.send(f"<message from='{WIZ}' to='{ROOM}' type='groupchat'><subject>Wallops</subject>"
           "</message>")
    out = h.join(WUMPUS, "wumpus")
    got = out.stanzas_for(WUMPUS)
    assert [s.name for s in got] == ["presence", "presence", "presence", "message", "message"]
    assert {got[0]["from"], got[1]["from"]} == {occ("wiz"), occ("troy")}
    assert got[2]["from"] == occ("wumpus") and "110" in codes(got[2])
    history = got[3]
    assert str(stanzas.child(history, "body")) == "first"
    assert history["from"] == occ("troy")
    delay = stanzas.child(history, "delay", xmlns.DELAY)
    assert delay is not None and delay["from"] == ROOM and delay["stamp"].endswith("Z")
    subject = got[4]
    assert str(stanzas.child(subject, "subject")) == "Wallops"
    assert subject["from"] == occ("wiz")
    assert stanzas.child(subject, "body") is None
    # The others learn of the new occupant; the newcomer's 110 is its own only.
    for other in (WIZ, TROY):
        pres = one(presence_from(out, other, "wumpus"))
        assert "110" not in codes(pres)


def test_empty_subject_is_sent_from_the_room_on_join():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = h.join(TROY, "troy")
    subject = one(messages(out, TROY))
    assert subject["from"] == ROOM
    assert subject["type"] == "groupchat"
    assert stanzas.child(subject, "subject") is not None
    assert str(stanzas.child(subject, "subject")) == ""


def test_join_presence_payload_is_relayed_without_muc_element():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = h.send(f"<presence from='{TROY}' to='{ROOM}/troy'><show>away</show>"
                 "<status>brb</status><x xmlns='http://jabber.org/protocol/muc'/></presence>")
    pres = one(presence_from(out, WIZ, "troy"))
    assert str(stanzas.child(pres, "show")) == "away"
    assert str(stanzas.child(pres, "status")) == "brb"
    assert stanzas.child(pres, "x", xmlns.MUC) is None


def test_semi_anonymous_room_hides_jids_from_participants_only():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.join(WUMPUS, "wumpus")
    assert "jid" not in item(one(presence_from(out, TROY, "wumpus")))
    assert item(one(presence_from(out, WIZ, "wumpus")))["jid"] == WUMPUS
    assert "jid" not in item(one(presence_from(out, WUMPUS, "troy")))
    assert "jid" not in item(one(presence_from(out, WUMPUS, "wiz")))
    own = one(presence_from(out, WUMPUS, "wumpus"))
    assert item(own)["jid"] == WUMPUS
    assert "100" not in codes(own)


def test_non_anonymous_room_sends_100_and_shows_jids():
    h = Harness()
    h.create_instant(WIZ, "wiz", whois="anyone")
    h.join(TROY, "troy")
    out = h.join(WUMPUS, "wumpus")
    own = one(presence_from(out, WUMPUS, "wumpus"))
    assert {"100", "110"} <= codes(own)
    assert item(one(presence_from(out, WUMPUS, "troy")))["jid"] == TROY
    assert item(one(presence_from(out, TROY, "wumpus")))["jid"] == WUMPUS
    assert "100" not in codes(one(presence_from(out, TROY, "wumpus")))


def test_logged_room_sends_170_on_join():
    h = Harness()
    h.create_instant(WIZ, "wiz", enablelogging="1")
    out = h.join(TROY, "troy")
    assert {"110", "170"} <= codes(one(presence_from(out, TROY, "troy")))
    assert "170" not in codes(one(presence_from(out, WIZ, "troy")))
    h2 = Harness()
    h2.create_instant(WIZ, "wiz")
    assert "170" not in codes(one(presence_from(h2.join(TROY, "troy"), TROY, "troy")))


def test_nick_normalised_by_resourceprep_gets_210():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = h.join(TROY, "\uff34\uff52\uff4f\uff59")  # fullwidth "Troy"
    own = presences(out, TROY)[-1]
    assert own["from"] == occ("Troy")
    assert {"110", "210"} <= codes(own)
    assert "Troy" in h.service.rooms[ROOM].occupants
    assert "210" not in codes(one(presence_from(out, WIZ, "Troy")))


def test_plain_join_has_no_210():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    assert "210" not in codes(one(presence_from(h.join(TROY, "troy"), TROY, "troy")))


def test_enforced_reserved_nick_rewrites_with_210():
    h = Harness(enforce_reserved_nicks=True)
    h.create_instant(WIZ, "wiz")
    room = h.service.rooms[ROOM]
    room.affiliations["troy@eris.dclxvii.irc"] = "member"
    room.reserved_nicks["troy@eris.dclxvii.irc"] = "Troy"
    out = h.join(TROY, "notroy")
    own = presences(out, TROY)[-1]
    assert own["from"] == occ("Troy")
    assert {"110", "210"} <= codes(own)
    assert presence_from(out, WIZ, "notroy") == []
    assert one(presence_from(out, WIZ, "Troy"))
    # Changing to another nick is refused.
    out = h.send(f"<presence from='{TROY}' to='{ROOM}/other'/>")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error" and reply["from"] == occ("other")
    assert "Troy" in room.occupants


def test_reserved_nicks_are_not_enforced_by_default():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    room = h.service.rooms[ROOM]
    room.affiliations["troy@eris.dclxvii.irc"] = "member"
    room.reserved_nicks["troy@eris.dclxvii.irc"] = "Troy"
    own = one(presence_from(h.join(TROY, "notroy"), TROY, "notroy"))
    assert own["from"] == occ("notroy")
    assert "210" not in codes(own)


def test_password_protected_room():
    h = Harness()
    h.create_instant(WIZ, "wiz", passwordprotectedroom="1", roomsecret="cauldronburn")
    _assert_join_error(h.join(TROY, "troy"), TROY, "troy", "not-authorized", "auth", "401")
    _assert_join_error(h.join(TROY, "troy", extra="<password>wrong</password>"), TROY, "troy",
                       "not-authorized", "auth", "401")
    assert "troy" not in h.service.rooms[ROOM].occupants
    out = h.join(TROY, "troy", extra="<password>cauldronburn</password>")
    assert "110" in codes(one(presence_from(out, TROY, "troy")))


def test_members_only_room():
    h = Harness()
    h.create_instant(WIZ, "wiz", membersonly="1")
    _assert_join_error(h.join(TROY, "troy"), TROY, "troy", "registration-required", "auth",
                       "407")
    admin_set(h, WIZ, "<item affiliation='member' jid='troy@eris.dclxvii.irc'/>")
    out = h.join(TROY, "troy")
    own = one(presence_from(out, TROY, "troy"))
    assert item(own)["affiliation"] == "member"
    assert item(own)["role"] == "participant"


def test_banned_user_cannot_enter():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    admin_set(h, WIZ, "<item affiliation='outcast' jid='troy@eris.dclxvii.irc'/>")
    _assert_join_error(h.join(TROY, "troy"), TROY, "troy", "forbidden", "auth", "403")
    # Every resource of the banned bare JID is refused.
    other = "troy@eris.dclxvii.irc/hammer"
    _assert_join_error(h.join(other, "troy2"), other, "troy2", "forbidden", "auth", "403")


def test_max_users_refuses_with_503_but_admins_are_exempt():
    h = Harness()
    h.create_instant(WIZ, "wiz", maxusers="2")
    admin_set(h, WIZ, "<item affiliation='admin' jid='valdis@killrc.oulubox.irc'/>")
    h.join(TROY, "troy")
    _assert_join_error(h.join(WUMPUS, "wumpus"), WUMPUS, "wumpus", "service-unavailable",
                       "wait", "503")
    out = h.join(VALDIS, "valdis")
    own = one(presence_from(out, VALDIS, "valdis"))
    assert item(own)["role"] == "moderator"
    assert len(h.service.rooms[ROOM].occupants) == 3
    # Another session of someone already inside does not count as a new occupant.
    out = h.join("troy@eris.dclxvii.irc/hammer", "troy")
    assert "110" in codes(one(presence_from(out, "troy@eris.dclxvii.irc/hammer", "troy")))


def test_nick_conflict_is_409():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    _assert_join_error(h.join(WUMPUS, "troy"), WUMPUS, "troy", "conflict", "cancel", "409")
    assert h.service.rooms[ROOM].occupants["troy"].bare_jid == "troy@eris.dclxvii.irc"


def test_unknown_presence_types_are_ignored():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = h.send(f"<presence type='subscribe' from='{TROY}' to='{ROOM}/troy'/>")
    assert out.deliveries == []
    out = leave(h, TROY, "troy")  # unavailable from a non-occupant
    assert out.deliveries == []


# --- history -----------------------------------------------------------------------------


def _room_with_history(n: int = 5) -> Harness:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    for i in range(n):
        groupchat(h, WIZ, f"message {i}", mid=f"m{i}")
    return h


def _history(out, who):
    return [str(stanzas.child(m, "body")) for m in messages(out, who)
            if stanzas.child(m, "body") is not None]


def test_history_default_is_everything_kept():
    h = _room_with_history(5)
    assert _history(h.join(TROY, "troy"), TROY) == [f"message {i}" for i in range(5)]


def test_a_join_without_limits_gets_the_default_number_of_messages():
    """mod_muc's default_history_messages: a join asking no limit gets that many (20 by
    default, at most the history length); one asking a number gets it."""
    h = Harness()
    h.create_instant(WIZ, "wiz", historylength="30", defaulthistorymessages="2")
    assert h.service.rooms[ROOM].config.default_history_messages == 2
    for i in range(5):
        groupchat(h, WIZ, f"message {i}")
    assert _history(h.join(TROY, "troy"), TROY) == ["message 3", "message 4"]
    out = h.join(WUMPUS, "wumpus", extra="<history maxstanzas='4'/>")
    assert _history(out, WUMPUS) == [f"message {i}" for i in range(1, 5)]
    owner_submit(h, WIZ, {"muc#roomconfig_historylength": "3",
                          "muc#roomconfig_defaulthistorymessages": "50"})
    assert h.service.rooms[ROOM].config.default_history_messages == 3


def test_history_is_limited_by_the_room_history_length():
    h = Harness()
    h.create_instant(WIZ, "wiz", historylength="3")
    for i in range(5):
        groupchat(h, WIZ, f"message {i}")
    assert _history(h.join(TROY, "troy"), TROY) == ["message 2", "message 3", "message 4"]


def test_history_maxstanzas():
    h = _room_with_history(5)
    out = h.join(TROY, "troy", extra="<history maxstanzas='2'/>")
    assert _history(out, TROY) == ["message 3", "message 4"]
    out = h.join(WUMPUS, "wumpus", extra="<history maxstanzas='0'/>")
    assert _history(out, WUMPUS) == []
    # The subject still follows.
    assert stanzas.child(messages(out, WUMPUS)[-1], "subject") is not None


def test_history_maxchars():
    h = _room_with_history(3)
    room = h.service.rooms[ROOM]
    assert _history(h.join(TROY, "troy", extra="<history maxchars='0'/>"), TROY) == []
    one_entry = room.history[-1].chars
    out = h.join(WUMPUS, "wumpus", extra=f"<history maxchars='{one_entry}'/>")
    assert _history(out, WUMPUS) == ["message 2"]
    out = h.join(VALDIS, "valdis", extra="<history maxchars='100000'/>")
    assert len(_history(out, VALDIS)) == 3


def test_history_seconds_and_since():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.now += 1000
    groupchat(h, WIZ, "old")
    h.now += 1000
    groupchat(h, WIZ, "new")
    out = h.join(TROY, "troy", extra="<history seconds='100'/>")
    assert _history(out, TROY) == ["new"]
    since = stanzas.format_stamp(h.now - 500)
    out = h.join(WUMPUS, "wumpus", extra=f"<history since='{since}'/>")
    assert _history(out, WUMPUS) == ["new"]
    since = stanzas.format_stamp(h.now - 5000)
    out = h.join(VALDIS, "valdis", extra=f"<history since='{since}' maxstanzas='1'/>")
    assert _history(out, VALDIS) == ["new"]


def test_history_delay_stamp_is_the_time_the_room_got_the_message():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    groupchat(h, WIZ, "stamped")
    sent_at = h.now
    out = h.join(TROY, "troy")
    msg = messages(out, TROY)[0]
    assert stanzas.child(msg, "delay", xmlns.DELAY)["stamp"] == stanzas.format_stamp(sent_at)
    # The copy kept in the room stays without delay.
    assert stanzas.child(h.service.rooms[ROOM].history[0].stanza, "delay", xmlns.DELAY) is None


# --- subject -------------------------------------------------------------------------------


def _subject(h: Harness, who: str, text: str):
    return h.send(f"<message from='{who}' to='{ROOM}' type='groupchat' id='s1'>"
                  f"<subject>{text}</subject></message>")


def test_moderator_changes_subject_and_newcomers_get_it():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = _subject(h, WIZ, "Lights out")
    for who in (WIZ, TROY):
        msg = one(messages(out, who))
        assert msg["from"] == occ("wiz")
        assert str(stanzas.child(msg, "subject")) == "Lights out"
        assert stanzas.child(msg, "body") is None
    out = h.join(WUMPUS, "wumpus")
    subject = messages(out, WUMPUS)[-1]
    assert str(stanzas.child(subject, "subject")) == "Lights out"
    assert subject["from"] == occ("wiz")
    # A subject change is not history.
    assert h.service.rooms[ROOM].history == []


def test_participant_may_not_change_subject_unless_allowed():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = _subject(h, TROY, "mine now")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error" and error_condition(reply) == "forbidden"
    assert h.service.rooms[ROOM].subject == ""
    owner_submit(h, WIZ, {"muc#roomconfig_changesubject": "1"})
    out = _subject(h, TROY, "mine now")
    assert str(stanzas.child(one(messages(out, WIZ)), "subject")) == "mine now"


def test_visitor_may_not_change_subject_even_when_allowed():
    h = Harness()
    h.create_instant(WIZ, "wiz", moderatedroom="1", changesubject="1")
    h.join(TROY, "troy")
    out = _subject(h, TROY, "nope")
    assert error_condition(one(out.stanzas_for(TROY))) == "forbidden"


# --- presence changes, nick changes, leaving --------------------------------------------------


def test_presence_change_is_broadcast():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.send(f"<presence from='{TROY}' to='{ROOM}/troy'><show>dnd</show>"
                 "<status>screwing</status></presence>")
    for who in (WIZ, TROY):
        pres = one(presence_from(out, who, "troy"))
        assert pres.getAttribute("type") is None
        assert str(stanzas.child(pres, "show")) == "dnd"
        assert str(stanzas.child(pres, "status")) == "screwing"
    assert "110" in codes(one(presence_from(out, TROY, "troy")))
    assert "110" not in codes(one(presence_from(out, WIZ, "troy")))
    # Newcomers see the latest presence.
    out = h.join(WUMPUS, "wumpus")
    assert str(stanzas.child(one(presence_from(out, WUMPUS, "troy")), "show")) == "dnd"


def test_nick_change_sends_303_then_new_presence():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.send(f"<presence from='{TROY}' to='{ROOM}/Troy2'/>")
    for who in (WIZ, TROY):
        got = presences(out, who)
        assert len(got) == 2
        gone, back = got
        assert gone["from"] == occ("troy") and gone["type"] == "unavailable"
        assert "303" in codes(gone)
        assert item(gone)["nick"] == "Troy2"
        assert back["from"] == occ("Troy2") and back.getAttribute("type") is None
    assert "110" in codes(presences(out, TROY)[0])
    assert "110" in codes(presences(out, TROY)[1])
    assert "110" not in codes(presences(out, WIZ)[0])
    room = h.service.rooms[ROOM]
    assert "troy" not in room.occupants and "Troy2" in room.occupants
    # Messages now come from the new nick.
    out = groupchat(h, TROY, "renamed")
    assert one(messages(out, WIZ))["from"] == occ("Troy2")


def test_nick_change_to_a_taken_nick_is_409():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.send(f"<presence from='{TROY}' to='{ROOM}/wiz'/>")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error" and error_condition(reply) == "conflict"
    assert reply["from"] == occ("wiz")
    assert out.stanzas_for(WIZ) == []


def test_leaving_sends_unavailable_with_110_to_self():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = leave(h, TROY, "troy", status="gone fishing")
    own = one(presences(out, TROY))
    assert own["type"] == "unavailable" and "110" in codes(own)
    assert item(own)["role"] == "none"
    assert str(stanzas.child(own, "status")) == "gone fishing"
    seen = one(presence_from(out, WIZ, "troy"))
    assert seen["type"] == "unavailable" and "110" not in codes(seen)
    assert str(stanzas.child(seen, "status")) == "gone fishing"
    assert "troy" not in h.service.rooms[ROOM].occupants
    # No longer an occupant: groupchat is refused.
    assert error_condition(one(groupchat(h, TROY).stanzas_for(TROY))) == "not-acceptable"


def test_temporary_room_is_destroyed_when_the_last_occupant_leaves():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    leave(h, WIZ, "wiz")
    assert ROOM in h.service.rooms
    leave(h, TROY, "troy")
    assert ROOM not in h.service.rooms


def test_persistent_room_survives_being_empty():
    h = Harness()
    h.create_instant(WIZ, "wiz", persistentroom="1")
    leave(h, WIZ, "wiz")
    assert ROOM in h.service.rooms
    out = h.join(TROY, "troy")
    assert "201" not in codes(one(presence_from(out, TROY, "troy")))


# --- multiple sessions ----------------------------------------------------------------------


HAMMER = "troy@eris.dclxvii.irc/hammer"


def test_second_session_joins_same_nick():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.join(HAMMER, "troy")
    assert "110" in codes(one(presence_from(out, HAMMER, "troy")))
    assert one(presence_from(out, HAMMER, "wiz"))
    # The other session sees its own occupant updated (still 110), the room sees one occupant.
    assert "110" in codes(one(presence_from(out, TROY, "troy")))
    assert "110" not in codes(one(presence_from(out, WIZ, "troy")))
    room = h.service.rooms[ROOM]
    assert len(room.occupants) == 2
    assert set(room.occupants["troy"].sessions) == {TROY, HAMMER}
    # Messages reach both sessions; private messages too.
    out = groupchat(h, WIZ, "both of you")
    assert messages(out, TROY) and messages(out, HAMMER)
    out = h.send(f"<message from='{WIZ}' to='{ROOM}/troy' type='chat'><body>hi</body></message>")
    assert one(messages(out, TROY))["from"] == occ("wiz")
    assert one(messages(out, HAMMER))["from"] == occ("wiz")


def test_one_session_leaving_keeps_the_occupant():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    h.join(HAMMER, "troy")
    out = leave(h, HAMMER, "troy")
    own = one(presences(out, HAMMER))
    assert own["type"] == "unavailable" and "110" in codes(own)
    for pres in presence_from(out, WIZ, "troy"):
        assert pres.getAttribute("type") is None
    room = h.service.rooms[ROOM]
    assert set(room.occupants["troy"].sessions) == {TROY}
    out = leave(h, TROY, "troy")
    assert one(presence_from(out, WIZ, "troy"))["type"] == "unavailable"
    assert "troy" not in room.occupants


def test_other_user_cannot_share_a_nick():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.join(PHAEDRUS, "troy")
    assert error_condition(one(out.stanzas_for(PHAEDRUS))) == "conflict"


# --- probes and errors ------------------------------------------------------------------------


def test_presence_probe_to_occupant_is_answered():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    h.send(f"<presence from='{WIZ}' to='{ROOM}/wiz'><show>xa</show></presence>")
    out = h.send(f"<presence type='probe' from='{TROY}' to='{ROOM}/wiz'/>")
    pres = one(out.stanzas_for(TROY))
    assert pres["from"] == occ("wiz")
    assert pres.getAttribute("type") is None
    assert str(stanzas.child(pres, "show")) == "xa"
    assert item(pres)["role"] == "moderator"
    assert "jid" not in item(pres)
    assert out.stanzas_for(WIZ) == []
    out = h.send(f"<presence type='probe' from='{TROY}' to='{ROOM}/nobody'/>")
    assert one(out.stanzas_for(TROY))["type"] == "unavailable"


def test_a_probe_of_a_registered_nick_nobody_holds_names_its_member():
    """As mod_muc's build_unavailable_presence: a probe of a nick a member registered,
    while no occupant holds it, gets an unavailable presence with the member's
    affiliation, role none, the nick, and the member's real JID to whom may see it (a
    moderator in a semi-anonymous room), not to a participant."""
    h = Harness()
    h.create_instant(WIZ, "wiz")
    room = h.service.rooms[ROOM]
    room.affiliations["troy@eris.dclxvii.irc"] = "member"
    room.reserved_nicks["troy@eris.dclxvii.irc"] = "Troy"
    h.join(VALDIS, "valdis")
    for prober, jid in ((WIZ, "troy@eris.dclxvii.irc"), (VALDIS, None)):
        answer = one(h.send(f"<presence type='probe' from='{prober}' to='{ROOM}/Troy'/>")
                     .stanzas_for(prober))
        assert answer["from"] == occ("Troy") and answer["type"] == "unavailable"
        assert item(answer) == {"affiliation": "member", "role": "none", "nick": "Troy",
                                **({"jid": jid} if jid else {})}
        assert "110" not in codes(answer)
    # a nick nobody registered: a bare unavailable (mod_muc: no answer at all)
    answer = one(h.send(f"<presence type='probe' from='{WIZ}' to='{ROOM}/nobody'/>")
                 .stanzas_for(WIZ))
    assert answer["type"] == "unavailable" and stanzas.muc_item(answer) is None


def test_a_probe_is_answered_whatever_the_roles_broadcast():
    """mod_muc answers a probe with the occupant's current presence even when its role's
    presence is not broadcast (presence_broadcast, "none" accepted); a moderator sees
    the real JID; someone not in the room gets not-acceptable."""
    h = Harness()
    h.create_instant(WIZ, "wiz", moderatedroom="1")
    owner_submit(h, WIZ, {"muc#roomconfig_presencebroadcast": ["moderator", "none"]})
    assert h.service.rooms[ROOM].config.presence_broadcast == ["moderator", "none"]
    h.join(TROY, "troy")  # a visitor in a moderated room: not broadcast
    out = h.send(f"<presence type='probe' from='{WIZ}' to='{ROOM}/troy'/>")
    pres = one(out.stanzas_for(WIZ))
    assert pres["from"] == occ("troy") and pres.getAttribute("type") is None
    assert item(pres)["role"] == "visitor" and item(pres)["jid"] == TROY
    out = h.send(f"<presence type='probe' from='{VALDIS}' to='{ROOM}/troy'/>")
    assert error_condition(one(out.stanzas_for(VALDIS))) == "not-acceptable"


def test_error_presence_from_occupant_removes_it():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.send(f"<presence type='error' from='{TROY}' to='{ROOM}/troy'>"
                 "<error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                 "</error></presence>")
    seen = one(presence_from(out, WIZ, "troy"))
    assert seen["type"] == "unavailable"
    assert {"307", "333"} <= codes(seen)
    assert "troy" not in h.service.rooms[ROOM].occupants


def test_error_message_bounced_by_occupant_server_removes_it():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.send(f"<message type='error' from='{TROY}' to='{ROOM}'>"
                 "<error type='cancel'><remote-server-not-found "
                 "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    assert {"307", "333"} <= codes(one(presence_from(out, WIZ, "troy")))
    assert "troy" not in h.service.rooms[ROOM].occupants


def test_nick_change_normalised_by_resourceprep_gets_210():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.send(f"<presence from='{TROY}' to='{ROOM}/\uff34\uff52\uff4f\uff59'/>")
    gone, back = presence_from(out, TROY, "troy") + presence_from(out, TROY, "Troy")
    assert item(gone)["nick"] == "Troy"
    assert {"110", "210"} <= codes(back)
    assert "210" not in codes(one(presence_from(out, WIZ, "Troy")))


def test_a_room_never_configured_is_destroyed_after_five_minutes():
    from tests.unit.muc_helpers import ROOM, WUMPUS, Harness

    h = Harness()
    h.join(WUMPUS, "Wumpus")
    assert h.service.rooms[ROOM].locked
    out = h.service.tick(h.now + 301)
    assert ROOM not in h.service.rooms
    [gone] = out.stanzas_for(WUMPUS)
    assert gone["type"] == "unavailable"


def test_presence_update_to_the_bare_room_jid_is_an_update():
    from tests.unit.muc_helpers import ROOM, VALDIS, WUMPUS, Harness

    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")
    h.join(VALDIS, "Valdis")
    out = h.send(f"<presence from='{VALDIS}' to='{ROOM}'><show>away</show></presence>")
    [seen] = out.stanzas_for(WUMPUS)
    assert seen["from"] == f"{ROOM}/Valdis" and str(seen.firstChildElement()) == "away"


def test_an_owner_joining_a_semi_anonymous_room_sees_real_jids_in_the_occupant_list():
    from tests.unit.muc_helpers import ROOM, VALDIS, WUMPUS, Harness, item

    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")  # creates the room: Wumpus owns it
    h.join(VALDIS, "Valdis")
    h.send(f"<presence from='{WUMPUS}' to='{ROOM}/Wumpus' type='unavailable'/>")
    out = h.join(WUMPUS, "Wumpus")  # the owner comes back: a moderator from the start
    listed = [p for p in out.stanzas_for(WUMPUS) if p["from"] == f"{ROOM}/Valdis"]
    assert listed and item(listed[0])["jid"] == VALDIS


def test_one_session_changing_nick_moves_alone_as_in_mod_muc():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    h.join(HAMMER, "troy")
    out = h.send(f"<presence from='{HAMMER}' to='{ROOM}/hammer'/>")
    own = presences(out, HAMMER)
    assert own[0]["type"] == "unavailable" and {"303", "110"} <= codes(own[0])
    assert item(own[0])["nick"] == "hammer"
    assert own[-1]["from"] == occ("hammer") and "110" in codes(own[-1])
    # the others see a new occupant; the old one stays (its other session is still in)
    seen = presence_from(out, WIZ, "hammer")
    assert seen and seen[0].getAttribute("type") is None
    assert not [p for p in presence_from(out, WIZ, "troy") if p.getAttribute("type")]
    room = h.service.rooms[ROOM]
    assert set(room.occupants["troy"].sessions) == {TROY}
    assert set(room.occupants["hammer"].sessions) == {HAMMER}


def test_a_session_may_move_into_a_nick_its_user_holds():
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    h.join(HAMMER, "hammer")
    out = h.send(f"<presence from='{HAMMER}' to='{ROOM}/troy'/>")
    room = h.service.rooms[ROOM]
    assert set(room.occupants["troy"].sessions) == {TROY, HAMMER}
    assert "hammer" not in room.occupants
    gone = [p for p in presence_from(out, WIZ, "hammer") if p.getAttribute("type")]
    assert gone and "303" in codes(gone[0])
