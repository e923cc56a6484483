"""What one join or leave makes the daemons write does not grow with the room (the cost
bound: no per-stanza work beyond the copies themselves). Counted where the storage
receives it: every storage op the core returns goes through the shell's one persistence
path (CoreHandler.persist, its coalescing, then flush), into a store that measures each
call's parameters (the JSON of the room state and of each row). A room of 100 and one of
10,000 must write the same number of rows and (names of the same length) the same bytes.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.defer import Deferred

from dmuc import xmlns
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from dmuc.records import OccupantRecord, RoomRecord
from dmuc.shell.daemon import CoreHandler
from dmuc.slave.service import SlaveService, SlaveSettings
from dmuc.slave.tracked import TrackedDict, TrackedSet

SERVICE = "channel.avalon.irc"
ROOM = f"wallops@{SERVICE}"
SLAVE = "dmuc.vesa.yeggmaex.irc"
SLAVE_DOMAIN = "vesa.yeggmaex.irc"
NOW = 1_000_000.0
SIZES = (100, 10_000)


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
        return self._took("save_room", record.state, entries)

    def save_occupants(self, service: str,
                       records: Sequence[OccupantRecord | tuple[str, str]]) -> Deferred[None]:
        return self._took("save_occupants", None, records)

    def __getattr__(self, name: str) -> Callable[..., Deferred[None]]:
        # every other write (history, archive, status, deletes): counted as a call
        return lambda *args, **kwargs: self._took(name, None)


def _written_by(handler: CoreHandler, store: MeasuringStore, out: Outbox) -> Written:
    store.written = Written()
    for op in out.storage:
        handler.persist(op)
    handler.flush()
    return store.written


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
    slave = SlaveService(SlaveSettings(jid=SLAVE, domains=frozenset({SLAVE_DOMAIN}),
                                       masters=frozenset({SERVICE}), keepalive=3600))
    out = slave.receive(_local_join(0), NOW)
    register = next(d.stanza for d in out.deliveries if d.stanza.name == "iq")
    for xml in (f"<iq type='result' from='{ROOM}' to='{SLAVE}' id='{register['id']}'>"
                f"<registered xmlns='{xmlns.DMUC}' keepalive='3600' history='20' "
                "whois='moderators'/></iq>",
                f"<presence from='{ROOM}' to='{SLAVE}'><x xmlns='{xmlns.DMUC}'><resync/></x>"
                "</presence>",
                f"<presence from='{ROOM}' to='{SLAVE}'><x xmlns='{xmlns.DMUC}'><synced/></x>"
                "</presence>"):
        slave.receive(stanzas.parse_stanza(xml), NOW)
    out = slave.receive(_enter(0), NOW)
    for i in range(occupants):
        out = slave.receive(_remote_presence(i), NOW)
    assert len(slave.rooms[ROOM].roster) == occupants
    return slave, out


def _slave_costs(occupants: int) -> dict[str, Written]:
    store = MeasuringStore()
    handler = _handler(store, SLAVE)
    slave, filled = _live_slave(occupants)
    _written_by(handler, store, filled)  # the room as it is: written once
    costs = {"remote occupant joins": _written_by(
        handler, store, slave.receive(_remote_presence(occupants), NOW))}
    _written_by(handler, store, slave.receive(_local_join(1), NOW))
    costs["local user enters"] = _written_by(handler, store, slave.receive(_enter(1), NOW))
    costs["local user leaves"] = _written_by(handler, store, slave.receive(_leave(1), NOW))
    unavailable = _remote_presence(occupants)
    unavailable["type"] = "unavailable"
    costs["remote occupant leaves"] = _written_by(handler, store,
                                                  slave.receive(unavailable, NOW))
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
    costs = {"occupant joins through a slave": _written_by(
        handler, store, master.receive(_direct_join(occupants, SLAVE_DOMAIN), NOW))}
    costs["direct occupant joins"] = _written_by(
        handler, store, master.receive(_direct_join(occupants + 1), NOW))
    leave = _direct_join(occupants + 1)
    leave["type"] = "unavailable"
    costs["direct occupant leaves"] = _written_by(handler, store, master.receive(leave, NOW))
    return costs


@pytest.mark.parametrize("costs_of", [_slave_costs, _master_costs], ids=["slave", "master"])
def test_a_join_or_leave_writes_the_same_whatever_the_size_of_the_room(
        costs_of: Callable[[int], dict[str, Written]]) -> None:
    small, big = (costs_of(n) for n in SIZES)
    assert small.keys() == big.keys()
    for what in small:
        a, b = small[what], big[what]
        assert (b.calls, b.rows, b.what) == (a.calls, a.rows, a.what), what
        assert b.bytes == a.bytes, f"{what}: {a.bytes} bytes at {SIZES[0]}, {b.bytes} at {SIZES[1]}"
    # and the joins are written at all (a row each where the daemon keeps one)
    assert small["direct occupant joins" if "direct occupant joins" in small
                 else "local user enters"].rows >= 1


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
