"""After the process was stopped, what waited in the socket is read before the timers run.

A daemon stopped (SIGSTOP, a suspended VM, a host stuck in swap) and resumed finds two
things due at once: its one-second timer, and the stanzas that queued in its component
socket meanwhile. Twisted runs a due timer before it reads, so the core's timer would
judge the silence first: keepalives look unanswered (they are in the backlog), a split is
declared, and the messages that were said during the stop are then held, stamped with the
time of the resume instead of the time they were said (issue 16). A stopped process did
not hear silence: it heard nothing at all. So after a gap in the ticks the core's timer
waits until the backlog is read (the socket has nothing more to read and nothing parsed
waits for its turn), for at most MAX_WAIT seconds (a peer that never stops writing does
not hold the timers off for ever). Sans-I/O: the shell says whether a backlog is left.
"""

from __future__ import annotations

# Ticks come every second (Daemon.TICK_SECONDS): a silence this long means the process
# was not running (or its reactor was held), and its socket may hold a backlog.
GAP_AFTER = 2.0
MAX_WAIT = 5.0  # seconds the timers wait for the backlog at most
RETRY_EVERY = 0.05  # seconds between two looks at the backlog while the timers wait


class TickGate:
    """Whether the core's timer may run now: not after a gap in the ticks while the
    backlog that gap left is still being read."""

    def __init__(self, gap_after: float = GAP_AFTER, max_wait: float = MAX_WAIT) -> None:
        self.gap_after = gap_after
        self.max_wait = max_wait
        self.last: float | None = None  # the last time the shell asked (its reactor ran)
        self.resumed_at: float | None = None  # a gap found; the backlog is being read

    def due(self, now: float, backlog: bool) -> bool:
        """Asked at each tick (and again every RETRY_EVERY while it says no)."""
        if self.last is not None and now - self.last > self.gap_after:
            self.resumed_at = now
        self.last = now
        if self.resumed_at is None:
            return True
        if backlog and now - self.resumed_at < self.max_wait:
            return False
        self.resumed_at = None
        return True
