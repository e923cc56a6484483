"""Joins and leaves in the log at a bounded cost (dmuc.protocol.occupancy): a debug line
each, and at info level one summary per room and minute, on the master and on the slave."""

from __future__ import annotations

import pytest

from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import Outbox
from dmuc.protocol.occupancy import SUMMARY_EVERY, OccupancyLog
from tests.unit.test_join_leave_cost import (
    NOW,
    ROOM,
    SERVICE,
    _direct_join,
    _enter,
    _leave,
    _live_slave,
    _local_join,
)

A, B = "a@muc.example", "b@muc.example"


def _info(out: Outbox) -> list[str]:
    return [line for level, line in out.log if level == "info"]


@pytest.mark.parametrize(("events", "at", "lines"), [
    ([], SUMMARY_EVERY, []),
    ([("j", A, 0.0)], SUMMARY_EVERY - 1, []),  # not a minute yet
    ([("j", A, 0.0)], SUMMARY_EVERY, [f"{A}: 1 joined, 0 left in the last 60 s; 1 occupants now"]),
    ([("j", A, 0.0), ("j", A, 1.0), ("l", A, 2.0), ("j", B, 3.0)], SUMMARY_EVERY + 5,
     [f"{A}: 2 joined, 1 left in the last 65 s; 1 occupants now",
      f"{B}: 1 joined, 0 left in the last 65 s; 1 occupants now"]),
    ([("j", A, 30.0)], SUMMARY_EVERY + 29, []),  # the minute starts at the first coming
])
def test_one_summary_per_room_and_minute(events: list[tuple[str, str, float]], at: float,
                                         lines: list[str]) -> None:
    log, present = OccupancyLog(), {A: 0, B: 0}
    for kind, room, when in events:
        present[room] += 1 if kind == "j" else -1
        (log.joined if kind == "j" else log.left)(room, present[room], when)
    out = Outbox(at)
    log.tick(out)
    assert _info(out) == lines
    again = Outbox(at + SUMMARY_EVERY)
    log.tick(again)
    if lines:
        assert _info(again) == []  # nothing came since: nothing to say
    else:  # what was not said yet is said at the end of its minute
        assert len(_info(again)) == len({room for _, room, _ in events})


def test_a_burst_of_joins_on_the_master_is_one_info_line() -> None:
    master = MUCService(ServiceSettings(jid=SERVICE, room_locking=False))
    outs = [master.receive(_direct_join(i), NOW) for i in range(200)]
    leave = _direct_join(0)
    leave["type"] = "unavailable"
    outs.append(master.receive(leave, NOW + 1))
    assert not any(" joined " in line or " left " in line
                   for out in outs for line in _info(out))
    debug = [line for out in outs for level, line in out.log if level == "debug"]
    assert sum(" joined " in line for line in debug) == 200
    assert sum(line == f"user00000@efnet.irc/r left {ROOM}" for line in debug) == 1
    tick = master.tick(NOW + SUMMARY_EVERY)
    assert [line for line in _info(tick) if line.startswith(ROOM)] == [
        f"{ROOM}: 200 joined, 1 left in the last 60 s; 199 occupants now"]


def test_local_users_entering_a_slave_are_one_info_line() -> None:
    slave, _ = _live_slave(10)  # local00000 entered at NOW
    outs = []
    for i in range(1, 6):
        outs.append(slave.receive(_local_join(i), NOW))
        outs.append(slave.receive(_enter(i), NOW))
    outs.append(slave.receive(_leave(1), NOW))
    assert not any("entered" in line or " left " in line for out in outs for line in _info(out))
    debug = [line for out in outs for level, line in out.log if level == "debug"]
    assert sum(f"entered {ROOM} as" in line for line in debug) == 5
    tick = slave.tick(NOW + SUMMARY_EVERY)
    assert [line for line in _info(tick) if line.startswith(ROOM)] == [
        f"{ROOM}: 6 joined, 1 left in the last 60 s; 5 local sessions now"]
