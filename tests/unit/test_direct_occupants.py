"""The occupants a master reaches directly survive its crash (docs/protocol.md §4.11.5):
stored as they change, restored in their rooms, asked at connect whether they are still
there; what mod_dmuc_hold held for the master keeps its time once the module announced
itself (features/direct_occupants.py)."""

from __future__ import annotations

from typing import Any

import pytest

from dmuc import xmlns
from dmuc.master.features import direct_occupants
from dmuc.outbox import DeleteRoom, ForgetOccupants, Outbox, SaveOccupant, SaveRoom
from dmuc.protocol import stanzas
from dmuc.records import OccupantRecord, RoomRecord
from tests.unit.muc_helpers import BIGCHEESE, ROOM, SERVICE, TROY, WIZ, WUMPUS, Harness, codes


class Store:
    """The storage ops of an Outbox applied as the shell applies them (snapshots read at
    write time)."""

    def __init__(self) -> None:
        self.rooms: dict[str, dict[str, Any]] = {}
        self.occupants: dict[tuple[str, str], dict[str, Any]] = {}
        self.pending: list[SaveOccupant] = []

    def take(self, out: Outbox) -> Outbox:
        for op in out.storage:
            if isinstance(op, SaveRoom):
                self.rooms[op.room_jid] = op.state
            elif isinstance(op, DeleteRoom):
                self.rooms.pop(op.room_jid, None)
            elif isinstance(op, SaveOccupant):
                self.pending.append(op)
            elif isinstance(op, ForgetOccupants):
                self.write()
                for key in [k for k in self.occupants if k[0] == op.room_jid]:
                    del self.occupants[key]
        return out

    def write(self) -> None:
        for op in self.pending:
            state = op.snapshot()
            if state is None:
                self.occupants.pop((op.room_jid, op.nick), None)
            else:
                self.occupants[(op.room_jid, op.nick)] = state
        self.pending = []

    def restart(self) -> tuple[Harness, Outbox]:
        """A new master on what was written (the crash loses nothing written)."""
        self.write()
        h = Harness()
        h.now = 2_000_000.0
        for jid, state in self.rooms.items():
            h.service.restore_room(RoomRecord(jid, state), [])
        records = [OccupantRecord(room, nick, state)
                   for (room, nick), state in sorted(self.occupants.items())]
        return h, h.service.restore_occupants(records, h.now)


def room_with_three(store: Store) -> Harness:
    h = Harness()
    store.take(h.join(WIZ, "wiz"))
    store.take(h.create_instant(WIZ, "wiz"))
    store.take(h.join(TROY, "troy"))
    store.take(h.join(BIGCHEESE, "cheese"))
    store.take(h.send(f"<presence from='{TROY}' to='{ROOM}/troy'><show>away</show>"
                      "</presence>"))
    return h


def test_a_restarted_master_has_its_direct_occupants_back_as_they_were() -> None:
    store = Store()
    before = room_with_three(store)
    room = before.service.rooms[ROOM]
    ids = {nick: o.occupant_id for nick, o in room.occupants.items()}
    h, restored = store.restart()
    assert restored.deliveries == []  # nobody is told anything: nothing changed for them
    again = h.service.rooms[ROOM]
    assert not again.config.persistent
    assert {n: (o.bare_jid, o.role, o.occupant_id, list(o.sessions))
            for n, o in again.occupants.items()} == {
        n: (o.bare_jid, o.role, ids[n], list(o.sessions)) for n, o in room.occupants.items()}
    assert stanzas.text_of(stanzas.child(again.occupants["troy"].presence, "show")) == "away"
    out = h.send(f"<message from='{TROY}' to='{ROOM}' type='groupchat' id='m1'>"
                 "<body>still here</body></message>")
    got = {who for who in (WIZ, BIGCHEESE, TROY)
           if [m.name for m in out.stanzas_for(who)] == ["message"]}
    assert got == {WIZ, BIGCHEESE, TROY}
    (copy,) = out.stanzas_for(WIZ)
    occupant_id = stanzas.child(copy, "occupant-id", xmlns.OCCUPANT_ID)
    assert occupant_id is not None and occupant_id["id"] == ids["troy"]


@pytest.mark.parametrize(("change", "stored"), [
    (f"<presence from='{TROY}' to='{ROOM}/troy' type='unavailable'/>", {"wiz", "cheese"}),
    (f"<presence from='{TROY}' to='{ROOM}/trey'/>", {"wiz", "cheese", "trey"}),
    (f"<iq from='{WIZ}' to='{ROOM}' type='set' id='k'>"
     "<query xmlns='http://jabber.org/protocol/muc#admin'>"
     "<item nick='troy' role='none'/></query></iq>", {"wiz", "cheese"}),
])
def test_storage_follows_each_change(change: str, stored: set[str]) -> None:
    store = Store()
    h = room_with_three(store)
    store.take(h.send(change))
    store.write()
    assert {nick for (_, nick) in store.occupants} == stored


def test_a_temporary_room_ends_in_storage_with_its_last_occupant() -> None:
    store = Store()
    h = room_with_three(store)
    for who, nick in ((WIZ, "wiz"), (TROY, "troy"), (BIGCHEESE, "cheese")):
        store.take(h.send(f"<presence from='{who}' to='{ROOM}/{nick}' type='unavailable'/>"))
    store.write()
    assert store.rooms == {} and store.occupants == {}


def test_a_temporary_room_without_occupants_is_not_restored() -> None:
    store = Store()
    room_with_three(store)
    store.write()
    store.occupants.clear()  # as if they had all gone (e.g. rows of an older master)
    h, out = store.restart()
    assert ROOM not in h.service.rooms
    assert DeleteRoom(ROOM) in out.storage


def test_at_connect_each_direct_session_is_asked_and_the_gone_ones_removed() -> None:
    store = Store()
    room_with_three(store)
    h, _ = store.restart()
    out = h.service.connected(h.now)
    asked = {d.stanza["to"]: d.stanza["id"] for d in out.deliveries if d.stanza.name == "iq"}
    assert set(asked) == {WIZ, TROY, BIGCHEESE}
    assert all(i.startswith(direct_occupants.CHECK_PREFIX) for i in asked.values())
    out = h.send(f"<iq from='{WIZ}' to='{ROOM}' type='result' id='{asked[WIZ]}'/>")
    assert out.deliveries == []
    out = h.send(f"<iq from='{TROY}' to='{ROOM}' type='error' id='{asked[TROY]}'>"
                 "<error type='cancel'><service-unavailable "
                 "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    assert set(h.service.rooms[ROOM].occupants) == {"wiz", "cheese"}
    (gone,) = [p for p in out.stanzas_for(WIZ) if p.name == "presence"]
    assert gone["type"] == "unavailable" and {"307", "333"} <= codes(gone)
    # an answer from someone else, or a second one, changes nothing
    out = h.send(f"<iq from='{WIZ}' to='{ROOM}' type='error' id='{asked[BIGCHEESE]}'>"
                 "<error type='cancel'><service-unavailable "
                 "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    assert set(h.service.rooms[ROOM].occupants) == {"wiz", "cheese"}


ANNOUNCE = (f"<message from='{SERVICE}' to='{SERVICE}'>"
            f"<hold xmlns='{xmlns.DMUC}'/></message>")


def said_marker(when: float) -> str:
    """mod_dmuc_hold's mark on what it held: dmuc's one "when said" marker."""
    return f"<x xmlns='{xmlns.DMUC}'><said stamp='{stanzas.format_stamp(when)}'/></x>"


@pytest.mark.parametrize(("announced", "age", "marker", "kept"), [
    (True, 30.0, "said", True),  # held by our Prosody: said 30 s ago
    (False, 30.0, "said", False),  # no module announced: a client may have written it
    (True, 30.0, "delay", False),  # an XEP-0203 delay, even from our JID: not the marker
    (True, 2 * 86_400.0, "said", False),  # older than a day: not believed
    (True, -60.0, "said", False),  # in the future
])
def test_a_held_direct_message_keeps_its_time_only_from_the_hold_module(
        announced: bool, age: float, marker: str, kept: bool) -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    h.service.connected(h.now)
    if announced:
        assert h.send(ANNOUNCE).deliveries == []
    said = h.now + 1 - age
    mark = (said_marker(said) if marker == "said" else
            f"<delay xmlns='{xmlns.DELAY}' from='{SERVICE}' "
            f"stamp='{stanzas.format_stamp(said)}'/>")
    out = h.send(f"<message from='{TROY}' to='{ROOM}' type='groupchat' id='h1'>"
                 f"<body>held</body>{mark}</message>")
    (copy,) = out.stanzas_for(WIZ)
    delays = stanzas.children(copy, "delay", xmlns.DELAY)
    assert stanzas.children(copy, "x", xmlns.DMUC) == []  # the marker stays with us
    if kept:
        assert [(d["from"], d["stamp"]) for d in delays] == [
            (ROOM, stanzas.format_stamp(said))]
    else:
        assert delays == []


@pytest.mark.parametrize(("who", "kind", "announced", "held", "answer"), [
    (WUMPUS, "groupchat", True, True, "dropped"),  # the slave submits it again
    (WUMPUS, "chat", True, True, "remote-server-timeout"),  # its slave learns of the split
    (WUMPUS, "groupchat", False, True, "not-acceptable"),  # no module: not a held stanza
    (WUMPUS, "groupchat", True, False, "not-acceptable"),  # not held: a user out of the room
    (TROY, "groupchat", True, True, None),  # a direct user: held, then taken (as above)
])
def test_what_our_prosody_held_from_a_slaves_domain_is_left_to_its_slave(
        who: str, kind: str, announced: bool, held: bool, answer: str | None) -> None:
    """After a master restart its Prosody hands it what a slave had forwarded meanwhile;
    the slave, not the master, knows what to submit again (§4.11.2): a groupchat is a
    second copy of what it submits again, anything else gets the answer the master's
    absence gave before, which mod_dmuc_slave passes to it."""
    h = Harness(slaves={"dmuc.killrc.oulubox.irc": frozenset({"killrc.oulubox.irc"})})
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    h.service.connected(h.now)
    if announced:
        h.send(ANNOUNCE)
    delay = said_marker(h.now) if held else ""
    to = ROOM if kind == "groupchat" else f"{ROOM}/wiz"
    out = h.send(f"<message from='{who}' to='{to}' type='{kind}' id='s1'>"
                 f"<body>forwarded</body>{delay}</message>")
    errors = [m for m in out.stanzas_for(who) if m.getAttribute("type") == "error"]
    if answer == "dropped":
        assert out.deliveries == [] and h.service.distribution.duplicates == {ROOM: 1}
        return
    if answer is None:
        assert errors == [] and len(out.stanzas_for(WIZ)) == 1
        return
    (error,) = errors
    assert stanzas.error_condition(error) == answer and out.stanzas_for(WIZ) == []
    if answer == "remote-server-timeout":
        assert stanzas.child(error, "error")["by"] == SERVICE


@pytest.mark.parametrize(("who", "kind", "numbered", "answer"), [
    # forwarded by its slave before the slave heard our <restarted/>: it submits it again
    (WUMPUS, "groupchat", True, "dropped"),
    (WUMPUS, "groupchat", False, "not-acceptable"),  # not forwarded by a slave: answered
    (WUMPUS, "chat", True, "not-acceptable"),  # not kept in flight by the slave: answered
    ("stranger@elsewhere.example/x", "groupchat", True, "not-acceptable"),  # no slave there
])
def test_what_a_slave_forwarded_before_it_registered_again_is_left_to_it(
        who: str, kind: str, numbered: bool, answer: str) -> None:
    """Between a master's restart and its slaves' new registrations a slave still forwards
    its users' groupchat (it has not yet read <restarted/>); it submits again each whose
    broadcast it did not see once registered (§4.11.2). Answering the first copy "not in
    the room" would tell its sender of an error about a message delivered all the same."""
    h = Harness(slaves={"dmuc.killrc.oulubox.irc": frozenset({"killrc.oulubox.irc"})})
    h.create_instant(WIZ, "wiz")
    h.service.connected(h.now)
    seq = f"<x xmlns='{xmlns.DMUC}' seq='7'/>" if numbered else ""
    to = ROOM if kind == "groupchat" else f"{ROOM}/wiz"
    out = h.send(f"<message from='{who}' to='{to}' type='{kind}' id='s1'>"
                 f"<body>forwarded</body>{seq}</message>")
    if answer == "dropped":
        assert out.deliveries == [] and h.service.distribution.duplicates == {ROOM: 1}
        return
    (error,) = [m for m in out.stanzas_for(who) if m.getAttribute("type") == "error"]
    assert stanzas.error_condition(error) == answer and out.stanzas_for(WIZ) == []
    assert h.service.distribution.duplicates == {}


# --- our Prosody stopping (mod_dmuc_hold's <stopping/>, §4.11.5) ------------------------

STOPPING = (f"<message from='{SERVICE}' to='{SERVICE}'>"
            f"<stopping xmlns='{xmlns.DMUC}'/></message>")


def groupchat(who: str, stanza_id: str) -> str:
    return (f"<message from='{who}' to='{ROOM}' type='groupchat' id='{stanza_id}'>"
            f"<body>{stanza_id}</body></message>")


def ids_to(out: Outbox, jid: str) -> list[str | None]:
    return [m.getAttribute("id") for m in out.stanzas_for(jid) if m.name == "message"]


def test_copies_for_direct_sessions_wait_while_our_prosody_stops() -> None:
    """Prosody asks before it closes its links; the master answers (after everything it
    wrote before) and keeps each copy for a direct session until the stream is up again,
    then sends them first, in order; nothing is lost, nothing sent twice."""
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    h.service.connected(h.now)
    assert ids_to(h.send(groupchat(TROY, "m0")), WIZ) == ["m0"]  # not stopping: at once
    answer = h.send(STOPPING)
    (ack,) = [d.stanza for d in answer.deliveries]
    assert (ack["from"], ack["to"]) == (SERVICE, SERVICE)
    assert stanzas.child(ack, "stopping", xmlns.DMUC) is not None
    said = [h.send(groupchat(TROY, "m1")), h.send(groupchat(WIZ, "m2"))]
    assert all(out.deliveries == [] for out in said)
    assert h.service.direct_occupants.withheld_copies == 4
    back = h.service.connected(h.now)
    assert ids_to(back, WIZ)[:2] == ids_to(back, TROY)[:2] == ["m1", "m2"]
    first = [d.stanza["id"] for d in back.deliveries[:2]]
    assert first == ["m1", "m2"]  # before the restarted notices and the checks
    assert h.service.direct_occupants.withheld_copies == 0
    assert ids_to(h.send(groupchat(WIZ, "m3")), TROY) == ["m3"]  # and live again
    assert ids_to(h.service.connected(h.now), WIZ) == []  # sent once


SLAVE = "dmuc.killrc.oulubox.irc"


@pytest.mark.parametrize(("recipients", "to", "sent_now", "kept"), [
    ([SLAVE, WIZ, TROY], None, [SLAVE], [WIZ, TROY]),  # a broadcast: the slave's copy goes
    ([WIZ], None, [], [WIZ]),
    ([SLAVE], None, [SLAVE], []),
    (None, WIZ, [], [WIZ]),  # an answer to a user
    (None, SLAVE, [SLAVE], []),  # a keepalive to a slave: its link recovers by itself
    (None, SERVICE, [SERVICE], []),  # the answer to <stopping/> itself
])
def test_while_our_prosody_stops_only_users_copies_wait(
        recipients: list[str] | None, to: str | None, sent_now: list[str],
        kept: list[str]) -> None:
    h = Harness()
    h.send(STOPPING)
    message = stanzas.parse_stanza(f"<message from='{ROOM}/wiz' id='x'"
                                   + (f" to='{to}'" if to else "") + "><body>x</body></message>")
    out = Outbox(h.now)
    if recipients is None:
        out.send(message)
    else:
        out.broadcast(message, recipients)
    h.service.direct_occupants.withhold(out)
    assert [r for d in out.deliveries for r in (d.recipients or [d.stanza["to"]])] == sent_now
    back = Outbox(h.now)
    h.service.direct_occupants.release(back)
    assert [r for d in back.deliveries for r in (d.recipients or [d.stanza["to"]])] == kept


def test_what_waits_for_our_prosody_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(direct_occupants, "MAX_WITHHELD", 3)
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    h.send(STOPPING)
    outs = [h.send(groupchat(TROY, f"m{n}")) for n in range(3)]  # 2 copies each
    assert [line for out in outs for line in out.log if line[0] == "warn"] == [
        ("warn", "our Prosody is still away: dropped the 1 oldest stanzas kept for direct "
                 "sessions (more than 3 copies)")] * 2
    back = h.service.connected(h.now)
    assert ids_to(back, WIZ)[:1] == ["m2"]
