"""What may stall the reactor, timed: the handling of one stanza, and CPython's full
garbage collections. No stanza may hold the reactor for more than ~100 ms; when one
does (or a collection does), the operator is told, in at most one line per interval so
that an overloaded daemon does not also fill its log. A stanza's line says how much of
that time the daemon was on the CPU, and how much of it was a full collection: a stall
with little CPU time is the machine (no CPU free, a blocking write), not the work."""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from dmuc.log import get_logger

log = get_logger("dmuc")

STALL_BOUND = 0.1  # seconds one stanza (or one collection) may hold the reactor
REPORT_INTERVAL = 10.0  # seconds between two stall lines at most


def freeze_startup_objects() -> None:
    """Move everything alive now (modules, classes, the configured service: objects that
    live as long as the process) out of the collector's reach, so that a full collection
    walks only what was made since. Called once, before the state is restored: restored
    rooms stay collectable when they are destroyed."""
    gc.collect()
    gc.freeze()


class StallWatch:
    """Counts what took longer than `bound`; reports the worst of each interval."""

    def __init__(self, bound: float = STALL_BOUND, interval: float = REPORT_INTERVAL,
                 clock: Callable[[], float] = time.monotonic,
                 timer: Callable[[], float] = time.perf_counter,
                 cpu_timer: Callable[[], float] = time.thread_time) -> None:
        self.bound = bound
        self.interval = interval
        self.clock = clock
        self.timer = timer  # what a stanza's handling is timed with
        self.cpu_timer = cpu_timer  # this thread's CPU time
        self.collecting = 0.0  # seconds spent in full collections (while watched)
        self.stalls = 0  # since the process started
        self.slowest = 0.0  # seconds, since the process started
        self._pending = 0  # stalls not yet reported
        self._worst = 0.0
        self._worst_what = ""
        self._reported_at: float | None = None
        self._gc_started = 0.0

    def observe(self, seconds: float, what: str) -> None:
        """One stanza's handling (or a collection) took `seconds`."""
        if seconds <= self.bound:
            return
        self.stalls += 1
        self.slowest = max(self.slowest, seconds)
        self._pending += 1
        if seconds > self._worst:
            self._worst, self._worst_what = seconds, what
        now = self.clock()
        if self._reported_at is not None and now - self._reported_at < self.interval:
            return
        more = (f" ({self._pending - 1} more over {self.bound * 1000:.0f} ms since the "
                "last report)" if self._pending > 1 else "")
        log.warn("the reactor was held {ms:.0f} ms by {what}{more}",
                 ms=self._worst * 1000, what=self._worst_what, more=more)
        self._reported_at = now
        self._pending, self._worst, self._worst_what = 0, 0.0, ""

    def begin(self) -> tuple[float, float, float]:
        """The start of a stanza's handling (for `end`)."""
        return self.timer(), self.cpu_timer(), self.collecting

    def end(self, began: tuple[float, float, float], what: str) -> None:
        """A stanza's handling, begun at `began`, is done: observed, and if it was a
        stall, told with its CPU time and the full collections within it."""
        seconds = self.timer() - began[0]
        if seconds <= self.bound:
            return
        cpu = self.cpu_timer() - began[1]
        detail = f"{cpu * 1000:.0f} ms of it on the CPU"
        collecting = self.collecting - began[2]
        if collecting > 0:
            detail += f", {collecting * 1000:.0f} ms in a full garbage collection"
        self.observe(seconds, f"{what} ({detail})")

    def watch_collections(self) -> None:
        """Time CPython's full (generation 2) collections from now on."""
        if self._on_collection not in gc.callbacks:
            gc.callbacks.append(self._on_collection)

    def stop_watching_collections(self) -> None:
        if self._on_collection in gc.callbacks:
            gc.callbacks.remove(self._on_collection)

    def _on_collection(self, phase: str, info: dict[str, Any]) -> None:
        if info.get("generation") != 2:
            return
        if phase == "start":
            self._gc_started = self.timer()
            return
        seconds = self.timer() - self._gc_started
        self.collecting += seconds
        self.observe(seconds, f"a full garbage collection ({info.get('collected', 0)} "
                     "objects freed)")
