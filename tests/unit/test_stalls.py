"""The shell's stall watch: what held the reactor over the bound is reported, at most one
line per interval, with the worst of the interval and how many more there were."""

from __future__ import annotations

import gc

import pytest
from twisted.logger import formatEvent, globalLogPublisher

from dmuc.shell.stalls import StallWatch, freeze_startup_objects


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def lines():
    seen: list[str] = []

    def observer(event: dict) -> None:
        text = formatEvent(event)
        if "reactor was held" in text:
            seen.append(text)

    globalLogPublisher.addObserver(observer)
    yield seen
    globalLogPublisher.removeObserver(observer)


# (time, seconds, what) observed in order -> the lines expected after all of them
CASES = [
    ("under the bound: nothing", [(0, 0.05, "a"), (1, 0.1, "b")], []),
    ("one stall: one line", [(0, 0.25, "<presence>")],
     ["the reactor was held 250 ms by <presence>"]),
    ("within the interval: one line, the rest counted in the next",
     [(0, 0.2, "a"), (1, 0.3, "b"), (2, 0.15, "c"), (11, 0.12, "d")],
     ["the reactor was held 200 ms by a",
      "the reactor was held 300 ms by b (2 more over 100 ms since the last report)"]),
]


@pytest.mark.parametrize("observed, expected", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_stall_lines(lines, observed, expected) -> None:
    clock = Clock()
    watch = StallWatch(bound=0.1, interval=10.0, clock=clock)
    for at, seconds, what in observed:
        clock.now = at
        watch.observe(seconds, what)
    assert lines == expected
    assert watch.stalls == sum(1 for _, s, _ in observed if s > 0.1)


def test_full_collections_are_timed(lines) -> None:
    watch = StallWatch(bound=0.0)  # every full collection counts
    watch.watch_collections()
    try:
        gc.collect()
    finally:
        watch.stop_watching_collections()
    assert watch.stalls == 1
    assert lines and "a full garbage collection" in lines[0]
    gc.collect()
    assert watch.stalls == 1  # no longer watched


def test_frozen_objects_are_not_walked() -> None:
    kept = [[i] for i in range(20_000)]  # tracked containers alive "since start-up"
    try:
        freeze_startup_objects()
        assert gc.get_freeze_count() >= len(kept)
        assert all(id(x) != id(kept[0]) for x in gc.get_objects(2))
    finally:
        gc.unfreeze()


class Timers:
    """A stanza's wall and CPU time, as the test sets them."""

    def __init__(self) -> None:
        self.wall = self.cpu = 0.0


@pytest.mark.parametrize(("wall", "cpu", "collecting", "expected"), [
    (0.05, 0.05, 0.0, []),
    (0.816, 0.012, 0.0,  # waited for the machine: the line says so
     ["the reactor was held 816 ms by <presence> (12 ms of it on the CPU)"]),
    (0.5, 0.49, 0.3,
     ["the reactor was held 500 ms by <presence> (490 ms of it on the CPU, 300 ms in a "
      "full garbage collection)"]),
])
def test_a_stanzas_stall_says_its_cpu_time_and_collections(lines, wall, cpu, collecting,
                                                           expected) -> None:
    timers = Timers()
    watch = StallWatch(bound=0.1, clock=Clock(), timer=lambda: timers.wall,
                       cpu_timer=lambda: timers.cpu)
    began = watch.begin()
    timers.wall, timers.cpu = wall, cpu
    watch.collecting += collecting  # as a full collection within the stanza adds
    watch.end(began, "<presence>")
    assert lines == expected
