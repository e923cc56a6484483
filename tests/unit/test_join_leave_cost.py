"""What one join or leave costs does not grow with the room (the cost bound: no
per-stanza work beyond the copies themselves), counted, not timed, in a room of 100 and
one of 10,000 occupants (names of the same length):

- the work: the Python function calls (sys.setprofile) the core makes handling it, with
  the JID cache emptied first: the same in both rooms, or, where XEP-0045 sends the
  newcomer the whole occupant list, the same per copy;
- what it makes the storage write, counted where the storage receives it: every storage
  op goes through the shell's one persistence path (CoreHandler.persist, its coalescing,
  then flush) into a store that measures each call's parameters (the JSON of the room
  state and of each row): the same rows and bytes in both rooms.
"""

from __future__ import annotations

import gc
import json
import sys
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.defer import Deferred

from benchmarks import memory
from dmuc import jids, xmlns
from dmuc.errors import StorageError
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from dmuc.records import OccupantRecord, RoomRecord
from dmuc.shell.daemon import CoreHandler
from dmuc.slave.service import SlaveService
from dmuc.slave.tracked import TrackedDict, TrackedSet

SERVICE, ROOM, SLAVE, SLAVE_DOMAIN, NOW = (memory.SERVICE, memory.ROOM, memory.SLAVE,
                                          memory.SLAVE_DOMAIN, memory.NOW)
SIZES = (100, 10_000)
PEAK_SLACK = 32 * 1024  # bytes
OPCODE_SLACK, CALL_SLACK = 100, 10


@dataclass
class Written:
    calls: int = 0
    rows: int = 0
    bytes: int = 0
    what: list[str] = field(default_factory=list)


class MeasuringStore:
    """A Storage that keeps nothing and measures what it is given."""

    def __init__(self) -> None:
        self.written = Written()
        self.failing = False  # room saves fail (a full disk)

    def _took(self, what: str, state: dict[str, Any] | None,
              rows: Sequence[OccupantRecord | tuple[str, str]] = ()) -> Deferred[None]:
        w = self.written
        w.calls += 1
        w.what.append(what)
        w.bytes += len(json.dumps(state)) if state is not None else 0
        for row in rows:
            w.rows += 1
            w.bytes += len(json.dumps([row.room_jid, row.nick, row.state])
                           if isinstance(row, OccupantRecord) else json.dumps(list(row)))
        return defer.succeed(None)

    def save_room(self, service: str, record: RoomRecord,
                  entries: Sequence[OccupantRecord | tuple[str, str]] = ()) -> Deferred[None]:
        if self.failing:
            return defer.fail(StorageError("disk full"))
        return self._took("save_room", record.state, entries)

    def save_occupants(self, service: str,
                       records: Sequence[OccupantRecord | tuple[str, str]]) -> Deferred[None]:
        return self._took("save_occupants", None, records)

    def __getattr__(self, name: str) -> Callable[..., Deferred[None]]:
        # every other write (history, archive, status, deletes): counted as a call
        return lambda *args, **kwargs: self._took(name, None)


@dataclass
class Cost:
    opcodes: int  # Python bytecode instructions the core ran handling the stanza
    calls: int  # Python and C function calls it made
    peak: int  # bytes allocated at the peak (a copy of the room made in C shows here)
    copies: int  # stanzas it sends (one per recipient)
    written: Written


def _written_by(handler: CoreHandler, store: MeasuringStore, out: Outbox) -> Written:
    store.written = Written()
    for op in out.storage:
        handler.persist(op)
    handler.flush()
    return store.written


def _work(receive: Callable[[], Outbox], opcodes_too: bool) -> tuple[int, int, int, Outbox]:
    """What handling takes, counted: bytecode instructions (a loop over the room in
    Python shows, comprehensions too; only if `opcodes_too`: tracing them is slow),
    function calls, and the allocation peak."""
    opcodes = calls = 0

    def trace(frame: Any, event: str, arg: object) -> Any:
        nonlocal opcodes
        frame.f_trace_opcodes = True
        if event == "opcode":
            opcodes += 1
        return trace

    def profile(frame: object, event: str, arg: object) -> None:
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    jids._prepare_cached.cache_clear()  # the same JIDs parsed in both rooms
    gc.collect()
    tracemalloc.start()
    if opcodes_too:
        sys.settrace(trace)
    sys.setprofile(profile)
    try:
        out = receive()
    finally:
        sys.setprofile(None)
        sys.settrace(None)
        peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.stop()
    return opcodes, calls, peak, out


def _cost(handler: CoreHandler, store: MeasuringStore, what: str,
          receive: Callable[[stanzas.Element, float], Outbox], stanza: stanzas.Element) -> Cost:
    # the newcomer's occupant list is O(room) by XEP-0045: its calls are counted per copy
    opcodes, calls, peak, out = _work(lambda: receive(stanza, NOW),
                                      opcodes_too="(gets the" not in what)
    copies = sum(1 if d.recipients is None else len(d.recipients) for d in out.deliveries)
    return Cost(opcodes, calls, peak, copies, _written_by(handler, store, out))


def _handler(store: MeasuringStore, jid: str) -> CoreHandler:
    return CoreHandler(lambda element, now: Outbox(now), store, jid,  # type: ignore[arg-type]
                       save_delay=0.2)


def _remote_presence(i: int) -> stanzas.Element:
    return stanzas.parse_stanza(
        f"<presence from='{ROOM}/nick{i:05d}' to='{SLAVE}'><show>away</show>"
        f"<occupant-id xmlns='urn:xmpp:occupant-id:0' id='oid{i:032d}'/>"
        f"<x xmlns='{xmlns.MUC_USER}'><item affiliation='none' role='participant'/></x>"
        "</presence>")


def _enter(i: int, leaving: bool = False) -> stanzas.Element:
    """The master's ENTER (or LEAVE) of local user i."""
    full = f"local{i:05d}@{SLAVE_DOMAIN}/r"
    kind, role, typed, extra = ("leave", "none", " type='unavailable'", "") if leaving \
        else ("enter", "participant", "", "<history maxstanzas='0'/>")
    return stanzas.parse_stanza(
        f"<presence from='{ROOM}/local{i:05d}' to='{SLAVE}'{typed}>"
        f"<x xmlns='{xmlns.MUC_USER}'>"
        f"<item affiliation='none' role='{role}' jid='{full}'/><status code='110'/></x>"
        f"<x xmlns='{xmlns.DMUC}'><{kind} jid='{full}'/>{extra}</x></presence>")


def _leave(i: int) -> stanzas.Element:
    return _enter(i, leaving=True)


def _local_join(i: int) -> stanzas.Element:
    return stanzas.parse_stanza(
        f"<presence from='local{i:05d}@{SLAVE_DOMAIN}/r' to='{ROOM}/local{i:05d}'>"
        f"<x xmlns='{xmlns.MUC}'/></presence>")


def _live_slave(occupants: int) -> tuple[SlaveService, Outbox]:
    """A slave whose mirror of the room has `occupants` remote occupants and one local,
    and the Outbox of the last of them (the writes of the whole room coalesce into its)."""
    slave = memory.registered_slave(_local_join(0))
    out = slave.receive(_enter(0), NOW)
    for i in range(occupants):
        out = slave.receive(_remote_presence(i), NOW)
    assert len(slave.rooms[ROOM].roster) == occupants
    return slave, out


def _slave_costs(occupants: int) -> dict[str, Cost]:
    store = MeasuringStore()
    handler = _handler(store, SLAVE)
    slave, filled = _live_slave(occupants)
    _written_by(handler, store, filled)  # the room as it is: written once
    unavailable = _remote_presence(occupants)
    unavailable["type"] = "unavailable"
    costs = {}
    for what, stanza in (("remote occupant joins", _remote_presence(occupants)),
                         ("local user joins", _local_join(1)),
                         ("local user enters (gets the roster)", _enter(1)),
                         ("local user leaves", _leave(1)),
                         ("remote occupant leaves", unavailable)):
        costs[what] = _cost(handler, store, what, slave.receive, stanza)
    return costs


def _crowded_slave_costs(sessions: int) -> dict[str, Cost]:
    """A slave with `sessions` local users in the room (and ten remote occupants)."""
    store = MeasuringStore()
    handler = _handler(store, SLAVE)
    slave, _ = _live_slave(10)
    for i in range(1, sessions):
        slave.receive(_local_join(i), NOW)
        filled = slave.receive(_enter(i), NOW)
    assert len(slave.rooms[ROOM].local) == sessions
    _written_by(handler, store, filled)
    unavailable = _remote_presence(3)
    unavailable["type"] = "unavailable"
    costs = {}
    for what, stanza in (("local user joins", _local_join(sessions)),
                         ("local user enters (ten remote occupants)", _enter(sessions)),
                         ("local user leaves", _leave(5)),
                         ("remote occupant leaves (gets the copies: every local user)",
                          unavailable),
                         ("remote occupant joins (gets the copies: every local user)",
                          _remote_presence(sessions + 1))):
        costs[what] = _cost(handler, store, what, slave.receive, stanza)
    return costs


def _direct_join(i: int, domain: str = "efnet.irc") -> stanzas.Element:
    return stanzas.parse_stanza(
        f"<presence from='user{i:05d}@{domain}/r' to='{ROOM}/nick{i:05d}'>"
        f"<x xmlns='{xmlns.MUC}'><history maxstanzas='0'/></x><show>away</show></presence>")


def _master_costs(occupants: int) -> dict[str, Written]:
    """The bulk of the room joins through a slave (N direct joins cost N² copies), then
    one direct occupant joins and leaves: its row in the direct occupants' store."""
    store = MeasuringStore()
    handler = _handler(store, SERVICE)
    master = MUCService(ServiceSettings(jid=SERVICE, room_locking=False,
                                        slaves={SLAVE: frozenset({SLAVE_DOMAIN})}))
    master.receive(_direct_join(99_999, "avalon.irc"), NOW)  # the owner, direct
    master.receive(stanzas.parse_stanza(
        f"<iq type='set' id='r' from='{SLAVE}' to='{ROOM}'>"
        f"<register xmlns='{xmlns.DMUC}' keepalive='60' history='0'/></iq>"), NOW)
    for i in range(occupants):
        out = master.receive(_direct_join(i, SLAVE_DOMAIN), NOW)
    _written_by(handler, store, out)
    costs = {}
    for what, stanza in (
            ("occupant joins through a slave", _direct_join(occupants, SLAVE_DOMAIN)),
            ("occupant leaves through a slave", _unavailable(_direct_join(5, SLAVE_DOMAIN))),
            ("direct occupant joins (gets the occupant list)", _direct_join(occupants + 1)),
            ("direct occupant changes status", stanzas.parse_stanza(
                f"<presence from='user{occupants + 1:05d}@efnet.irc/r' to='{ROOM}/nick"
                f"{occupants + 1:05d}'><show>xa</show><status>back soon</status></presence>")),
            ("direct occupant leaves", _unavailable(_direct_join(occupants + 1)))):
        costs[what] = _cost(handler, store, what, master.receive, stanza)
    return costs


def _unavailable(presence: stanzas.Element) -> stanzas.Element:
    presence["type"] = "unavailable"
    return presence


@pytest.mark.parametrize("costs_of", [_slave_costs, _crowded_slave_costs, _master_costs],
                         ids=["slave", "slave with its users", "master"])
def test_a_join_or_leave_costs_the_same_whatever_the_size_of_the_room(
        costs_of: Callable[[int], dict[str, Cost]]) -> None:
    small, big = (costs_of(n) for n in SIZES)
    assert small.keys() == big.keys()
    for what in small:
        a, b = small[what], big[what]
        written = (b.written.calls, b.written.rows, b.written.what)
        assert written == (a.written.calls, a.written.rows, a.written.what), what
        assert b.written.bytes == a.written.bytes, \
            f"{what}: writes {a.written.bytes} bytes at {SIZES[0]}, {b.written.bytes} at {SIZES[1]}"
        if "(gets the copies" in what:  # the same per copy
            assert b.copies >= SIZES[1] > a.copies
            per_a, per_b = a.calls / a.copies, b.calls / b.copies
            assert per_b <= 1.05 * per_a, \
                f"{what}: {per_a:.1f} calls per copy at {SIZES[0]}, {per_b:.1f} at {SIZES[1]}"
            continue
        if "(gets the" in what:  # XEP-0045: the newcomer gets everyone: the same per copy
            assert b.copies > SIZES[1] > a.copies
            per_a, per_b = a.calls / a.copies, b.calls / b.copies
            assert per_b <= 1.05 * per_a, \
                f"{what}: {per_a:.1f} calls per copy at {SIZES[0]}, {per_b:.1f} at {SIZES[1]}"
            continue
        assert b.copies == a.copies, what
        # a loop over the room's 10,000 entries is 10,000s of opcodes; what a full bounded
        # structure does (forget its oldest entry) is a few
        assert b.opcodes <= a.opcodes + OPCODE_SLACK and b.calls <= a.calls + CALL_SLACK, \
            f"{what}: {a.opcodes} opcodes, {a.calls} calls at {SIZES[0]} occupants; " \
            f"{b.opcodes}, {b.calls} at {SIZES[1]}"
        # a C-level copy of 10,000 entries is 80 KB or more; dict resizes stay below
        assert b.peak <= a.peak + PEAK_SLACK, \
            f"{what}: allocation peak {a.peak} bytes at {SIZES[0]}, {b.peak} at {SIZES[1]}"
    # and the joins are written at all (a row each where the daemon keeps one)
    joined = next(c for what, c in small.items() if "joins" in what or "enters" in what)
    assert joined.written.rows >= 1 or any(c.written.rows for c in small.values())


def _dict_with(*keys: str) -> TrackedDict[str, int]:
    tracked: TrackedDict[str, int] = TrackedDict(set())
    dict.update(tracked, {k: 0 for k in keys})  # as stored: nothing changed yet
    return tracked


def _set_with(*items: str) -> TrackedSet[str]:
    return TrackedSet(set(), items)


@pytest.mark.parametrize(("make", "change", "changed"), [
    (_dict_with, lambda d: d.__setitem__("a", 1), {"a"}),
    (lambda: _dict_with("a"), lambda d: d.__delitem__("a"), {"a"}),
    (lambda: _dict_with("a"), lambda d: d.pop("a"), {"a"}),
    (lambda: _dict_with("a"), lambda d: d.pop("b", None), set()),
    (lambda: _dict_with("a"), lambda d: d.popitem(), {"a"}),
    (lambda: _dict_with("a"), lambda d: d.setdefault("a", 5), set()),
    (lambda: _dict_with("a"), lambda d: d.setdefault("b", 5), {"b"}),
    (lambda: _dict_with("a", "b"), lambda d: d.clear(), {"a", "b"}),
    (_dict_with, lambda d: d.update({"a": 1}, b=2), {"a", "b"}),
    (_dict_with, lambda d: d.__ior__({"c": 1}), {"c"}),
    (_set_with, lambda s: s.add("a"), {"a"}),
    (lambda: _set_with("a"), lambda s: s.add("a"), set()),
    (lambda: _set_with("a"), lambda s: s.discard("a"), {"a"}),
    (lambda: _set_with("a"), lambda s: s.remove("a"), {"a"}),
    (lambda: _set_with("a", "b"), lambda s: s.clear(), {"a", "b"}),
    (lambda: _set_with("a"), lambda s: s.__ior__({"b", "c"}), {"b", "c"}),
    (lambda: _set_with("a", "b"), lambda s: s.__isub__({"b", "z"}), {"b"}),
    (lambda: _set_with("a", "b"), lambda s: s.__iand__({"b"}), {"a"}),
])
def test_the_tracked_containers_note_every_change(make: Callable[[], Any],
                                                  change: Callable[[Any], object],
                                                  changed: set[str]) -> None:
    """The slave's roster, sessions, hidden and directed note what a save must write:
    every mutation, and nothing else."""
    container = make()
    change(container)
    assert container.changed == changed


def test_the_rows_of_a_failed_save_are_written_with_the_next() -> None:
    store = MeasuringStore()
    handler = _handler(store, SLAVE)
    slave, filled = _live_slave(3)
    store.failing = True
    assert _written_by(handler, store, filled).rows == 0  # 3 roster rows, 1 session: lost
    store.failing = False
    again = _written_by(handler, store, slave.receive(_remote_presence(3), NOW))
    assert again.rows == 4 + 1  # those, and the new occupant's
