"""Groupchat, private messages and IQs between occupants (XEP-0045 §7.4-§7.5, XEP-0410)."""

from __future__ import annotations

from dmuc import xmlns
from dmuc.outbox import AppendHistory
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import (
    PHAEDRUS,
    ROOM,
    TROY,
    VALDIS,
    WIZ,
    WUMPUS,
    Harness,
    error_condition,
)
from tests.unit.muc_steps import (
    admin_set,
    groupchat,
    iq,
    iqs,
    messages,
    occ,
    one,
    owner_submit,
    private,
)

HAMMER = "troy@eris.dclxvii.irc/hammer"


def _room(**config: str) -> Harness:
    h = Harness()
    h.create_instant(WIZ, "wiz", **config)
    h.join(TROY, "troy")
    h.join(WUMPUS, "wumpus")
    return h


def _stanza_ids(msg):
    return stanzas.children(msg, "stanza-id", xmlns.STANZA_ID)


# --- groupchat ---------------------------------------------------------------------------------


def test_groupchat_is_broadcast_to_every_occupant_with_a_stanza_id():
    h = _room()
    out = groupchat(h, TROY, "hello all", mid="m-1")
    delivery = one([d for d in out.deliveries if d.stanza.name == "message"])
    assert sorted(delivery.recipients) == sorted([WIZ, TROY, WUMPUS])
    msg = delivery.stanza
    assert msg.getAttribute("to") is None
    assert msg["from"] == occ("troy")
    assert msg["type"] == "groupchat"
    assert msg["id"] == "m-1"
    assert str(stanzas.child(msg, "body")) == "hello all"
    sid = one(_stanza_ids(msg))
    assert sid["by"] == ROOM and sid["id"]
    # Every message gets its own id.
    other = one(messages(groupchat(h, TROY, "again"), WIZ))
    assert one(_stanza_ids(other))["id"] != sid["id"]


def test_forged_stanza_id_is_stripped():
    h = _room()
    out = groupchat(h, TROY, "trust me", extra=(
        f"<stanza-id xmlns='urn:xmpp:sid:0' by='{ROOM}' id='forged'/>"
        "<origin-id xmlns='urn:xmpp:sid:0' id='origin-1'/>"))
    msg = one(messages(out, WIZ))
    sid = one(_stanza_ids(msg))
    assert sid["by"] == ROOM and sid["id"] != "forged"
    assert stanzas.child(msg, "origin-id", xmlns.STANZA_ID)["id"] == "origin-1"
    # History keeps the room's id, not the forged one.
    kept = h.service.rooms[ROOM].history[-1].stanza
    assert [s["id"] for s in _stanza_ids(kept)] == [sid["id"]]


def test_client_supplied_delay_is_not_relayed():
    h = _room()
    out = groupchat(h, TROY, "from the past",
                    extra="<delay xmlns='urn:xmpp:delay' stamp='2002-09-10T23:08:25Z'/>")
    assert stanzas.child(one(messages(out, WIZ)), "delay", xmlns.DELAY) is None


def test_groupchat_from_non_occupant_is_not_acceptable():
    h = _room()
    out = groupchat(h, PHAEDRUS, "let me in")
    reply = one(out.stanzas_for(PHAEDRUS))
    assert reply["type"] == "error"
    assert error_condition(reply) == "not-acceptable"
    assert reply["from"] == ROOM
    assert out.stanzas_for(WIZ) == []


def test_visitor_in_moderated_room_may_not_speak():
    h = _room(moderatedroom="1")
    out = groupchat(h, TROY, "can you hear me")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error" and error_condition(reply) == "forbidden"
    assert stanzas.child(reply, "error")["type"] == "auth"
    assert out.stanzas_for(WIZ) == []
    # With voice they can.
    admin_set(h, WIZ, "<item nick='troy' role='participant'/>")
    assert messages(groupchat(h, TROY, "now?"), WIZ)


def test_message_without_body_is_relayed_but_not_kept():
    h = _room()
    out = groupchat(h, TROY, None,
                    extra="<composing xmlns='http://jabber.org/protocol/chatstates'/>")
    assert messages(out, WIZ)
    assert h.service.rooms[ROOM].history == []


def test_non_groupchat_message_to_room_is_bad_request():
    h = _room()
    out = h.send(f"<message from='{TROY}' to='{ROOM}' type='chat'><body>x</body></message>")
    assert error_condition(one(out.stanzas_for(TROY))) == "bad-request"


def test_message_to_missing_room_is_item_not_found():
    h = Harness()
    out = h.send(f"<message from='{TROY}' to='nosuch@channel.avalon.irc' type='groupchat'>"
                 "<body>x</body></message>")
    assert error_condition(one(out.stanzas_for(TROY))) == "item-not-found"


# --- private messages ---------------------------------------------------------------------------


def test_private_message_reaches_every_session_of_the_target():
    h = _room()
    h.join(HAMMER, "troy")
    out = private(h, WUMPUS, "troy", "psst", mid="pm1")
    for session in (TROY, HAMMER):
        msg = one(messages(out, session))
        assert msg["from"] == occ("wumpus")
        assert msg["type"] == "chat"
        assert msg["id"] == "pm1"
        assert str(stanzas.child(msg, "body")) == "psst"
        assert stanzas.child(msg, "x", xmlns.MUC_USER) is not None
    assert out.stanzas_for(WUMPUS) == []
    assert out.stanzas_for(WIZ) == []
    # The sender's real JID appears nowhere in what is delivered.
    assert "killrc" not in one(messages(out, TROY)).toXml()


def test_private_message_of_type_groupchat_is_bad_request():
    h = _room()
    out = private(h, WUMPUS, "troy", mtype="groupchat")
    reply = one(out.stanzas_for(WUMPUS))
    assert error_condition(reply) == "bad-request"
    assert out.stanzas_for(TROY) == []


def test_private_message_to_unknown_nick_is_item_not_found():
    h = _room()
    out = private(h, WUMPUS, "nobody")
    reply = one(out.stanzas_for(WUMPUS))
    assert error_condition(reply) == "item-not-found"
    assert reply["from"] == occ("nobody")


def test_private_message_from_non_occupant_is_not_acceptable():
    h = _room()
    out = private(h, PHAEDRUS, "troy")
    assert error_condition(one(out.stanzas_for(PHAEDRUS))) == "not-acceptable"
    assert out.stanzas_for(TROY) == []


def test_allowpm_none_blocks_everyone():
    h = _room(allowpm="none")
    for sender in (WUMPUS, WIZ):
        out = private(h, sender, "troy")
        reply = one(out.stanzas_for(sender))
        assert error_condition(reply) == "policy-violation"
        assert out.stanzas_for(TROY) == []


def test_allowpm_participant_blocks_visitors():
    h = _room(allowpm="participant", moderatedroom="1")
    out = private(h, WUMPUS, "troy")  # wumpus is a visitor here
    assert error_condition(one(out.stanzas_for(WUMPUS))) == "policy-violation"
    out = private(h, WIZ, "troy")
    assert one(messages(out, TROY))["from"] == occ("wiz")


def test_allowpm_moderator_only_moderators_send():
    h = _room(allowpm="moderator")
    assert error_condition(one(private(h, WUMPUS, "troy").stanzas_for(WUMPUS))) == \
        "policy-violation"
    assert messages(private(h, WIZ, "troy"), TROY)


def test_allowpm_affiliated_only_members_send():
    h = _room(allowpm="affiliated")
    assert error_condition(one(private(h, WUMPUS, "troy").stanzas_for(WUMPUS))) == \
        "policy-violation"
    admin_set(h, WIZ, "<item affiliation='member' jid='argl@killrc.oulubox.irc'/>")
    assert messages(private(h, WUMPUS, "troy"), TROY)


def test_allowpm_legacy_value_is_accepted():
    h = _room()
    owner_submit(h, WIZ, {"muc#roomconfig_allowpm": "moderators"})
    assert h.service.rooms[ROOM].config.allow_pm == "moderator"


# --- IQs between occupants ----------------------------------------------------------------------


VERSION = "<query xmlns='jabber:iq:version'/>"


def test_iq_to_occupant_is_forwarded_and_answer_routed_back():
    h = _room()
    out = iq(h, WUMPUS, occ("troy"), "get", VERSION, iq_id="v1")
    forwarded = one(iqs(out, TROY))
    assert forwarded["from"] == occ("wumpus")
    assert forwarded["type"] == "get"
    assert forwarded["id"] != "v1"
    assert stanzas.child(forwarded, "query", "jabber:iq:version") is not None
    assert "killrc" not in forwarded.toXml()
    out = h.send(f"<iq type='result' id='{forwarded['id']}' from='{TROY}' to='{occ('wumpus')}'>"
                 "<query xmlns='jabber:iq:version'><name>screwdriver</name></query></iq>")
    answer = one(out.stanzas_for(WUMPUS))
    assert answer["id"] == "v1"
    assert answer["type"] == "result"
    assert answer["from"] == occ("troy")
    assert answer["to"] == WUMPUS
    assert "screwdriver" in answer.toXml()
    # The same answer a second time goes nowhere.
    out = h.send(f"<iq type='result' id='{forwarded['id']}' from='{TROY}' to='{occ('wumpus')}'/>")
    assert out.deliveries == []


def test_iq_error_answer_is_routed_back():
    h = _room()
    forwarded = one(iqs(iq(h, WUMPUS, occ("troy"), "get", VERSION, iq_id="v2"), TROY))
    out = h.send(f"<iq type='error' id='{forwarded['id']}' from='{TROY}' to='{occ('wumpus')}'>"
                 "<error type='cancel'><service-unavailable "
                 "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    answer = one(out.stanzas_for(WUMPUS))
    assert answer["type"] == "error" and answer["id"] == "v2"
    assert error_condition(answer) == "service-unavailable"


def test_answer_from_someone_else_is_dropped():
    h = _room()
    forwarded = one(iqs(iq(h, WUMPUS, occ("troy"), "get", VERSION), TROY))
    out = h.send(f"<iq type='result' id='{forwarded['id']}' from='{WIZ}' to='{occ('wumpus')}'/>")
    assert out.deliveries == []


def test_vcard_iq_to_occupant_goes_to_bare_jid():
    h = _room()
    out = iq(h, WUMPUS, occ("troy"), "get", "<vCard xmlns='vcard-temp'/>", iq_id="vc")
    forwarded = one(iqs(out, "troy@eris.dclxvii.irc"))
    assert forwarded["from"] == occ("wumpus")
    out = h.send(f"<iq type='result' id='{forwarded['id']}' from='troy@eris.dclxvii.irc' "
                 f"to='{occ('wumpus')}'><vCard xmlns='vcard-temp'><FN>Troy</FN></vCard></iq>")
    answer = one(out.stanzas_for(WUMPUS))
    assert answer["id"] == "vc"
    assert answer["from"] == occ("troy")


def test_iq_to_unknown_nick_is_item_not_found():
    h = _room()
    out = iq(h, WUMPUS, occ("nobody"), "get", VERSION)
    assert error_condition(one(out.stanzas_for(WUMPUS))) == "item-not-found"


def test_iq_from_non_occupant_is_not_acceptable():
    h = _room()
    out = iq(h, PHAEDRUS, occ("troy"), "get", VERSION)
    assert error_condition(one(out.stanzas_for(PHAEDRUS))) == "not-acceptable"
    assert out.stanzas_for(TROY) == []


PING = "<ping xmlns='urn:xmpp:ping'/>"


def test_self_ping_is_answered_by_the_room():
    h = _room()
    out = iq(h, TROY, occ("troy"), "get", PING, iq_id="sp")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "result" and reply["id"] == "sp"
    assert reply["from"] == occ("troy")
    assert len(out.deliveries) == 1


def test_self_ping_from_non_occupant_is_not_acceptable():
    h = _room()
    out = iq(h, VALDIS, occ("troy"), "get", PING)
    reply = one(out.stanzas_for(VALDIS))
    assert reply["type"] == "error" and error_condition(reply) == "not-acceptable"
    # After leaving, the old nick tells the client it is no longer joined.
    h.send(f"<presence type='unavailable' from='{TROY}' to='{occ('troy')}'/>")
    out = iq(h, TROY, occ("troy"), "get", PING)
    assert error_condition(one(out.stanzas_for(TROY))) == "not-acceptable"


def test_ping_to_another_occupant_is_forwarded():
    h = _room()
    out = iq(h, WUMPUS, occ("troy"), "get", PING, iq_id="op")
    forwarded = one(iqs(out, TROY))
    assert forwarded["from"] == occ("wumpus")
    assert out.stanzas_for(WUMPUS) == []


def test_history_is_stored_for_persistent_rooms_only():
    h = _room()
    out = groupchat(h, TROY, "ephemeral")
    assert [op for op in out.storage if isinstance(op, AppendHistory)] == []
    h = _room(persistentroom="1")
    out = groupchat(h, TROY, "kept")
    op = one_op(out.storage)
    assert op.key == ROOM
    assert "kept" in op.record.xml
    assert op.keep == h.service.rooms[ROOM].config.history_length


def one_op(ops):
    found = [op for op in ops if isinstance(op, AppendHistory)]
    assert len(found) == 1, found
    return found[0]
