"""After a stop, the backlog is read before the timers judge the silence (dmuc.shell.resume):
the gate's rule as a table, and the shell's look at its socket."""

from __future__ import annotations

import socket

import pytest

from dmuc.shell.daemon import CoreHandler
from dmuc.shell.resume import GAP_AFTER, MAX_WAIT, TickGate

# (asked at, backlog left) in a row -> whether each tick may run
CASES = {
    "ticks every second run": ([(0.0, False), (1.0, True), (2.0, True)], [True, True, True]),
    "a gap with nothing waiting runs at once": ([(0.0, False), (20.0, False)], [True, True]),
    "a gap waits for the backlog": (
        [(0.0, False), (20.0, True), (20.05, True), (20.1, False), (21.0, True)],
        [True, False, False, True, True]),
    "the wait is bounded": (
        [(0.0, False), *[(20.0 + t, True) for t in range(int(MAX_WAIT))],
         (20.0 + MAX_WAIT, True), (21.0 + MAX_WAIT, True)],
        [True, *[False] * int(MAX_WAIT), True, True]),
    "a gap just under the bound is a tick": (
        [(0.0, False), (GAP_AFTER - 0.01, True)], [True, True]),
    "the first tick runs": ([(100.0, True)], [True]),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_tick_gate(case: str) -> None:
    asks, expected = CASES[case]
    gate = TickGate()
    assert [gate.due(now, backlog) for now, backlog in asks] == expected


class FakeTransport:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def fileno(self) -> int:
        return self.sock.fileno()


class FakeStream:
    def __init__(self, sock: socket.socket) -> None:
        self.transport = FakeTransport(sock)


def test_backlog_sees_unread_bytes_and_queued_stanzas() -> None:
    handler = CoreHandler(lambda element, now: None, None, "x.example")  # type: ignore[arg-type]
    assert not handler.backlog()  # not connected
    ours, theirs = socket.socketpair()
    try:
        handler.xmlstream = FakeStream(ours)
        assert not handler.backlog()
        theirs.sendall(b"<message/>")
        assert handler.backlog()
        ours.recv(100)
        assert not handler.backlog()
        handler.turns.push(("a", "a"), object())
        assert handler.backlog()
    finally:
        ours.close()
        theirs.close()
