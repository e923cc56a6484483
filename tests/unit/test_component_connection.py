"""The component connection's attempts without Prosody: each logged delay is the delay the
reconnection was scheduled with (whatever Twisted's version does with factory.delay), and
a refusal no retry cures (not-authorized, host-unknown, conflict) ends the daemon after
PERMANENT_ATTEMPTS attempts with one line naming the fix, while others keep the backoff."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from twisted.internet import task
from twisted.internet.error import ConnectionRefusedError, NotConnectingError
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.error import StreamError

from dmuc.shell.daemon import PERMANENT_ATTEMPTS, RECONNECT_MAX_DELAY, ComponentConnection

JID = "channel.avalon.irc"


class Connector:
    def __init__(self) -> None:
        self.attempts = 0

    def connect(self) -> None:
        self.attempts += 1

    def stopConnecting(self) -> None:  # noqa: N802 - Twisted's name
        raise NotConnectingError()


@pytest.fixture
def lines() -> Iterator[list[str]]:
    seen: list[str] = []

    def observer(event: dict) -> None:
        if event.get("log_namespace") == "dmuc":
            seen.append(formatEvent(event))

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


def connection(permanent: list[str] | None = None) -> tuple[ComponentConnection, task.Clock]:
    conn = ComponentConnection("127.0.0.1", 5347, JID, "secret",
                               on_permanent=None if permanent is None else permanent.append)
    clock = task.Clock()
    conn.factory.clock = clock
    conn.running = True
    return conn, clock


def logged_delay(line: str) -> float:
    found = re.search(r"retrying in ([0-9.]+) s", line)
    assert found is not None, line
    return float(found.group(1))


def test_each_logged_delay_is_the_scheduled_delay(lines: list[str]) -> None:
    conn, clock = connection()
    connector = Connector()
    conn.factory.jitter = 0  # the delays below are then exact
    for attempt in range(6):
        conn.factory.clientConnectionFailed(connector, Failure(ConnectionRefusedError()))
        (call,) = clock.getDelayedCalls()
        assert logged_delay(lines[-1]) == pytest.approx(call.getTime() - clock.seconds(),
                                                        abs=0.05)
        clock.advance(call.getTime() - clock.seconds())
        assert connector.attempts == attempt + 1
    delays = [logged_delay(line) for line in lines]
    assert delays[0] == pytest.approx(0.5, abs=0.05)
    # growing, up to the bound: Prosody is local, an attempt every few seconds at most
    assert all(b > a or b == RECONNECT_MAX_DELAY for a, b in zip(delays, delays[1:]))
    assert len(lines) == 6 and max(delays) == pytest.approx(RECONNECT_MAX_DELAY, abs=0.05)


def refuse(conn: ComponentConnection, clock: task.Clock, condition: str) -> None:
    """One attempt that Prosody answers with a stream error, then closes."""
    conn._stream_error(Failure(StreamError(condition)))
    conn.factory.clientConnectionLost(Connector(), Failure(ConnectionRefusedError()))
    for call in clock.getDelayedCalls():
        clock.advance(call.getTime() - clock.seconds())


@pytest.mark.parametrize(("condition", "fix"), [
    ("not-authorized", "check component.secret"),
    ("host-unknown", f"Prosody has no Component block for {JID}"),
    ("conflict", f"another process is already connected to Prosody as {JID}"),
])
def test_a_permanent_refusal_ends_after_a_few_attempts(lines: list[str], condition: str,
                                                       fix: str) -> None:
    permanent: list[str] = []
    conn, clock = connection(permanent)
    for attempt in range(1, PERMANENT_ATTEMPTS):
        refuse(conn, clock, condition)
        assert len(lines) == attempt and not permanent  # one line per attempt
        assert condition in lines[-1] and fix in lines[-1], lines[-1]
        assert f"{attempt} of {PERMANENT_ATTEMPTS} attempts" in lines[-1]
    refuse(conn, clock, condition)
    assert len(permanent) == 1 and len(lines) == PERMANENT_ATTEMPTS - 1
    assert condition in permanent[0] and fix in permanent[0], permanent[0]
    assert not conn.factory.continueTrying  # no further attempt


def test_other_refusals_keep_the_backoff(lines: list[str]) -> None:
    permanent: list[str] = []
    conn, clock = connection(permanent)
    for _ in range(PERMANENT_ATTEMPTS * 2):
        refuse(conn, clock, "remote-connection-failed")
    assert not permanent and conn.factory.continueTrying
    assert len(lines) == PERMANENT_ATTEMPTS * 2
    assert all("refused the stream: remote-connection-failed; retrying in" in line
               for line in lines)
