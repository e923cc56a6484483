"""Hooks, service settings, storage operations and room state round trips."""

from __future__ import annotations

import sys
import types

import pytest

from dmuc import xmlns
from dmuc.errors import Refusal
from dmuc.hooks import Hooks, load_plugins
from dmuc.master.room import Room
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import AppendHistory, DeleteRoom, SaveOccupant, SaveRoom
from dmuc.protocol import stanzas
from dmuc.records import HistoryRecord, RoomRecord
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
    groupchat,
    iq,
    leave,
    messages,
    one,
    owner_submit,
    payload,
    presence_from,
)

TROY_BARE = "troy@eris.dclxvii.irc"


# --- hooks -------------------------------------------------------------------------------------


def test_hooks_priority_and_stop():
    hooks = Hooks()
    calls: list[str] = []
    hooks.add("ev", lambda **kw: calls.append("low"), priority=-1)
    hooks.add("ev", lambda **kw: calls.append("high"), priority=5)
    hooks.add("ev", lambda **kw: calls.append("mid"))
    assert hooks.fire("ev") is None
    assert calls == ["high", "mid", "low"]

    def stopper(**kw):
        return "stopped"

    hooks.add("ev", stopper, priority=1)
    calls.clear()
    assert hooks.fire("ev") == "stopped"
    assert calls == ["high"]
    hooks.remove("ev", stopper)
    calls.clear()
    assert hooks.fire("ev") is None
    assert calls == ["high", "mid", "low"]


def test_occupant_joined_and_left_hooks_fire():
    h = Harness()
    joined: list[tuple[str, str]] = []
    left: list[str] = []
    h.service.hooks.add("occupant-joined",
                        lambda room, occupant, session, out: joined.append((occupant.nick,
                                                                            session)))
    h.service.hooks.add("occupant-left", lambda room, occupant, out: left.append(occupant.nick))
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    assert joined == [("wiz", WIZ), ("troy", TROY)]
    leave(h, TROY, "troy")
    admin_set(h, WIZ, "<item nick='wiz' role='none'/>")  # cannot kick oneself (owner)
    assert left == ["troy"]


def test_occupant_pre_join_hook_can_refuse():
    h = Harness()

    def no_trolls(room, stanza, nick, sender):
        if nick.startswith("troll"):
            return Refusal("cancel", "not-allowed", "No trolls")
        return None

    h.service.hooks.add("occupant-pre-join", no_trolls)
    h.create_instant(WIZ, "wiz")
    out = h.join(TROY, "trollface")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error" and error_condition(reply) == "not-allowed"
    assert stanzas.child(reply, "x", xmlns.MUC) is not None
    assert out.stanzas_for(WIZ) == []
    assert "trollface" not in h.service.rooms[ROOM].occupants
    assert "110" in codes(one(presence_from(h.join(TROY, "troy"), TROY, "troy")))


def test_refused_creation_leaves_no_room_behind():
    h = Harness()
    h.service.hooks.add("occupant-pre-join",
                        lambda **kw: Refusal("auth", "forbidden", "Closed"))
    out = h.join(WIZ, "wiz")
    assert error_condition(one(out.stanzas_for(WIZ))) == "forbidden"
    assert ROOM not in h.service.rooms


def test_room_lifecycle_hooks():
    h = Harness()
    events: list[str] = []
    for name in ("room-created", "room-configured", "room-destroyed"):
        h.service.hooks.add(name, lambda name=name, **kw: events.append(name))
    h.create_instant(WIZ, "wiz")
    leave(h, WIZ, "wiz")
    assert events == ["room-created", "room-configured", "room-destroyed"]


def test_stanza_hook_may_swallow_stanzas():
    h = Harness()
    h.service.hooks.add("stanza", lambda stanza, out: True
                        if stanza.getAttribute("from") == TROY else None)
    h.create_instant(WIZ, "wiz")
    assert h.join(TROY, "troy").deliveries == []
    assert "troy" not in h.service.rooms[ROOM].occupants


def test_message_broadcast_hook_sees_the_stanza():
    h = Harness()
    seen: list[str] = []

    def tag(room, stanza, occupant, out, stamp):
        stanza.addElement(("urn:example:tag", "tag"))
        seen.append(occupant.nick)

    h.service.hooks.add("message-broadcast", tag)
    h.create_instant(WIZ, "wiz")
    out = groupchat(h, WIZ, "tagged")
    assert seen == ["wiz"]
    assert stanzas.child(one(messages(out, WIZ)), "tag", "urn:example:tag") is not None


def test_message_broadcast_carries_when_the_message_was_said():
    h = Harness()
    stamps: list[float] = []
    h.service.hooks.add("message-broadcast",
                        lambda stamp, **kw: stamps.append(stamp))
    h.create_instant(WIZ, "wiz")
    groupchat(h, WIZ, "now")
    assert stamps == [h.now]


def test_an_occupant_groupchat_handler_takes_a_message_over():
    """As mod_muc's muc-occupant-groupchat: a true result and the room broadcasts
    nothing, keeps nothing; a handler after the subject's still sees subject changes
    handled by it."""
    h = Harness()
    taken: list[str] = []

    def take(room, occupant, stanza, out):
        taken.append(stanzas.text_of(stanzas.child(stanza, "body")) or "")
        return True

    h.service.hooks.add("occupant-groupchat", take, priority=15)
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = groupchat(h, WIZ, "swallowed")
    assert taken == ["swallowed"]
    assert messages(out, TROY) == [] and messages(out, WIZ) == []
    assert not [op for op in out.storage if isinstance(op, AppendHistory)]
    subject = h.send(f"<message from='{WIZ}' to='{ROOM}' type='groupchat' id='s1'>"
                     "<subject>news</subject></message>")
    assert taken == ["swallowed"]  # the subject (priority 20) came first
    assert stanzas.text_of(stanzas.child(one(messages(subject, TROY)), "subject")) == "news"


def test_a_session_new_handler_sees_each_new_session_after_history_and_subject():
    h = Harness()
    seen: list[tuple[str, str, int]] = []

    def note(room, occupant, session, stanza, self_codes, out):
        seen.append((occupant.nick, session, len(out.deliveries)))

    h.service.hooks.add("occupant-session-new", note)
    h.create_instant(WIZ, "wiz")
    out = h.join(TROY, "troy")
    assert [(nick, session) for nick, session, _ in seen] == [("wiz", WIZ), ("troy", TROY)]
    # the subject, the last thing a direct session gets, went out before the handler ran
    last = messages(out, TROY)[-1]
    assert stanzas.child(last, "subject") is not None
    assert seen[-1][2] == len(out.deliveries)


def test_disco_feature_hooks():
    h = Harness()
    h.service.hooks.add("room-disco-features", lambda room, features: features.append("x-room"))
    h.service.hooks.add("service-disco-features", lambda features: features.append("x-svc"))
    h.create_instant(WIZ, "wiz")
    room_info = one(iq(h, TROY, ROOM, "get",
                       "<query xmlns='http://jabber.org/protocol/disco#info'/>")
                    .stanzas_for(TROY))
    assert "x-room" in {f["var"] for f in stanzas.children(payload(room_info), "feature")}
    svc_info = one(iq(h, TROY, SERVICE, "get",
                      "<query xmlns='http://jabber.org/protocol/disco#info'/>")
                   .stanzas_for(TROY))
    assert "x-svc" in {f["var"] for f in stanzas.children(payload(svc_info), "feature")}


def test_room_iq_hook_can_handle_a_namespace():
    h = Harness()

    def version(room, stanza, payload, out):
        if payload.uri == "jabber:iq:version":
            out.send(stanzas.iq_result(stanza))
            return True
        return None

    h.service.hooks.add("room-iq", version)
    h.create_instant(WIZ, "wiz")
    out = iq(h, TROY, ROOM, "get", "<query xmlns='jabber:iq:version'/>")
    assert one(out.stanzas_for(TROY))["type"] == "result"


def test_load_plugins_calls_setup():
    module = types.ModuleType("dmuc_test_plugin")
    calls = []
    module.setup = lambda hooks, service: calls.append((hooks, service))  # type: ignore[attr-defined]
    sys.modules["dmuc_test_plugin"] = module
    broken = types.ModuleType("dmuc_test_broken_plugin")
    sys.modules["dmuc_test_broken_plugin"] = broken
    try:
        hooks = Hooks()
        service = MUCService(ServiceSettings(jid=SERVICE), hooks)
        load_plugins(["dmuc_test_plugin"], hooks, service)
        assert calls == [(hooks, service)]
        with pytest.raises(ImportError):
            load_plugins(["dmuc_test_broken_plugin"], hooks, service)
    finally:
        del sys.modules["dmuc_test_plugin"]
        del sys.modules["dmuc_test_broken_plugin"]


# --- settings ----------------------------------------------------------------------------------


def test_room_defaults_apply_to_new_rooms():
    h = Harness(room_defaults={"persistent": True, "whois": "anyone", "history_length": 500},
                max_history_length=40)
    h.create_instant(WIZ, "wiz")
    c = h.service.rooms[ROOM].config
    assert c.persistent and c.whois == "anyone"
    assert c.history_length == 40


def test_room_locking_can_be_disabled():
    h = Harness(room_locking=False)
    out = h.join(WIZ, "wiz")
    assert "201" in codes(one(presence_from(out, WIZ, "wiz")))
    assert not h.service.rooms[ROOM].locked
    assert "110" in codes(one(presence_from(h.join(TROY, "troy"), TROY, "troy")))


def test_groupchat_1_0_join_creates_an_unlocked_room():
    # Prosody's lock.lib: a creating presence without the MUC element (the older
    # groupchat protocol) gets an instant room; XEP-0045 §7.1.1 / §10.1.1.
    h = Harness()
    h.send(f"<presence from='{WIZ}' to='{ROOM}/wiz'/>")
    assert not h.service.rooms[ROOM].locked
    assert "110" in codes(one(presence_from(h.join(TROY, "troy"), TROY, "troy")))


def test_invalid_nick_is_refused():
    h = Harness()
    out = h.join(WIZ, "x" * 1100)  # longer than a resource may be
    reply = one(out.stanzas_for(WIZ))
    assert reply["type"] == "error" and error_condition(reply) == "jid-malformed"
    assert ROOM not in h.service.rooms


# --- storage operations ---------------------------------------------------------------------------


def test_storage_ops_for_a_persistent_room():
    h = Harness()
    out = h.create_instant(WIZ, "wiz", persistentroom="1")
    saves = [op for op in out.storage if isinstance(op, SaveRoom)]
    assert saves and saves[-1].room_jid == ROOM
    out = groupchat(h, WIZ, "kept")
    (append,) = [op for op in out.storage if isinstance(op, AppendHistory)]
    assert append.key == ROOM and append.record.stamp == h.now
    out = h.send(f"<message from='{WIZ}' to='{ROOM}' type='groupchat'><subject>S</subject>"
                 "</message>")
    assert [op.state["subject"] for op in out.storage if isinstance(op, SaveRoom)] == ["S"]
    out = iq(h, WIZ, ROOM, "set", "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                                  "<destroy/></query>")
    assert DeleteRoom(ROOM) in out.storage
    assert [op for op in out.storage if isinstance(op, SaveRoom)] == []


def test_temporary_room_stores_no_history_only_its_direct_occupants():
    """A temporary room keeps no history in storage; its state is stored while an
    occupant reached directly is in it (so that a master crash does not lose them)."""
    h = Harness()
    ops = list(h.join(WIZ, "wiz").storage)
    ops += h.create_instant(WIZ, "wiz").storage
    ops += groupchat(h, WIZ, "x").storage
    ops += admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>").storage
    assert [op for op in ops if isinstance(op, AppendHistory)] == []
    assert {op.room_jid for op in ops if isinstance(op, SaveRoom)} == {ROOM}
    assert {(op.room_jid, op.nick) for op in ops if isinstance(op, SaveOccupant)} == {
        (ROOM, "wiz")}


# --- state round trips ---------------------------------------------------------------------------


def _configured_room() -> Harness:
    h = Harness(allow_unaffiliated_register=True)
    h.create_instant(WIZ, "wiz", persistentroom="1", roomname="Wallops", membersonly="1",
                     whois="anyone", historylength="5")
    admin_set(h, WIZ, f"<item affiliation='admin' jid='{TROY_BARE}'/>"
                      "<item affiliation='outcast' jid='argl@killrc.oulubox.irc'/>")
    iq(h, TROY, ROOM, "set",
       "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
       "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value></field>"
       "<field var='muc#register_roomnick'><value>Troy</value></field></x></query>")
    h.send(f"<message from='{WIZ}' to='{ROOM}' type='groupchat'><subject>Ops</subject>"
           "</message>")
    return h


def test_room_state_round_trip():
    h = _configured_room()
    room = h.service.rooms[ROOM]
    state = room.to_state()
    copy = Room.from_state(h.service, ROOM, state)
    assert copy.to_state() == state
    assert copy.config == room.config
    assert copy.affiliations == {"squit@eris.dclxvii.irc": "owner", TROY_BARE: "admin",
                                 "argl@killrc.oulubox.irc": "outcast"}
    assert copy.reserved_nicks == {TROY_BARE: "Troy"}
    assert (copy.subject, copy.subject_from) == ("Ops", "wiz")
    assert not copy.locked and copy.occupants == {}


def test_state_is_json_compatible():
    import json

    state = _configured_room().service.rooms[ROOM].to_state()
    assert json.loads(json.dumps(state)) == state


def test_restore_room_with_history():
    h = _configured_room()
    groupchat(h, WIZ, "before the restart")
    room = h.service.rooms[ROOM]
    records = [HistoryRecord(e.stamp, e.stanza.toXml()) for e in room.history]
    stamp = room.history[-1].stamp
    state = room.to_state()

    h2 = Harness(allow_unaffiliated_register=True)
    restored = h2.service.restore_room(RoomRecord(ROOM, state), records)
    assert h2.service.rooms[ROOM] is restored
    assert restored.config.name == "Wallops"
    out = h2.join(TROY, "Troy")
    own = one(presence_from(out, TROY, "Troy"))
    assert item(own)["affiliation"] == "admin"
    assert "201" not in codes(own)
    got = messages(out, TROY)
    history = [m for m in got if stanzas.child(m, "body") is not None]
    assert len(history) == 1
    msg = history[0]
    assert str(stanzas.child(msg, "body")) == "before the restart"
    assert msg["from"] == f"{ROOM}/wiz"
    assert stanzas.child(msg, "stanza-id", xmlns.STANZA_ID)["by"] == ROOM
    delay = stanzas.child(msg, "delay", xmlns.DELAY)
    assert delay["stamp"] == stanzas.format_stamp(stamp)
    assert str(stanzas.child(got[-1], "subject")) == "Ops"
    # The restored rules still hold.
    # banned, in a members-only room: as any non-member (mod_muc's order)
    assert error_condition(one(h2.join(WUMPUS, "wumpus").stanzas_for(WUMPUS))) == \
        "registration-required"
    assert error_condition(one(h2.join(VALDIS, "valdis").stanzas_for(VALDIS))) == \
        "registration-required"
    assert error_condition(one(h2.join(WIZ, "Troy").stanzas_for(WIZ))) == "conflict"
    # History respects the restored length and the new messages join it.
    for i in range(6):
        groupchat(h2, TROY, f"after {i}")
    assert len(restored.history) == 5


def test_restored_room_stays_after_everyone_leaves():
    h = Harness()
    h.service.restore_room(RoomRecord(ROOM, {"config": {"persistent": True},
                                             "affiliations": {"squit@eris.dclxvii.irc": "owner"}}),
                           [])
    h.join(TROY, "troy")
    leave(h, TROY, "troy")
    assert ROOM in h.service.rooms
    out = owner_submit(h, WIZ, {"muc#roomconfig_roomname": "x"})
    assert one(out.stanzas_for(WIZ))["type"] == "result"
