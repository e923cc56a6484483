"""The shell's fair turns between senders (dmuc.shell.fairness), on a fake clock."""

from __future__ import annotations

import re
from collections import deque

import pytest
from twisted.internet import task
from twisted.words.xish.domish import Element

from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from dmuc.shell import daemon
from dmuc.shell.daemon import CoreHandler
from dmuc.shell.fairness import FairQueue, link_peer, sender_key


class Clock:
    """Each reading advances by `step` seconds: every handled item costs one step."""

    def __init__(self, step: float) -> None:
        self.now = 0.0
        self.step = step

    def __call__(self) -> float:
        self.now += self.step
        return self.now


@pytest.mark.parametrize(("sender", "key"), [
    ("dmuc.vesa.yeggmaex.irc", ("dmuc.vesa.yeggmaex.irc", "dmuc.vesa.yeggmaex.irc")),
    ("User@Efnet.irc/phone", ("efnet.irc", "user@efnet.irc")),
    ("user@efnet.irc", ("efnet.irc", "user@efnet.irc")),
    ("efnet.irc/admin", ("efnet.irc", "efnet.irc")),
    (None, ("", "")),
])
def test_sender_key_is_the_server_then_the_bare_jid(sender: str | None,
                                                    key: tuple[str, str]) -> None:
    assert sender_key(sender) == key


SLAVE_TURNS = {"dmuc.vesa.irc": "dmuc.vesa.irc", "vesa.irc": "dmuc.vesa.irc"}


@pytest.mark.parametrize(("sender", "key"), [
    ("dmuc.vesa.irc", ("dmuc.vesa.irc", "dmuc.vesa.irc")),
    ("user@vesa.irc/phone", ("dmuc.vesa.irc", "dmuc.vesa.irc")),
    ("User@Efnet.irc/phone", ("efnet.irc", "user@efnet.irc")),
])
def test_a_slave_and_its_users_share_one_turn(sender: str, key: tuple[str, str]) -> None:
    assert sender_key(sender, SLAVE_TURNS) == key


def test_what_a_slave_sends_keeps_its_order_across_jids() -> None:
    """A slave's ENTERs (from its own JID) and its users' forwarded messages (from their
    JIDs) are handled in the order they came, whatever else is queued: a user's first
    message never overtakes its ENTER."""
    queue: FairQueue[str] = FairQueue(Clock(0.001), budget=1.0)
    for i in range(100):
        queue.push(sender_key("dmuc.vesa.irc", SLAVE_TURNS), f"enter{i}")
    queue.push(sender_key("user99@vesa.irc/r", SLAVE_TURNS), "message99")
    queue.push(sender_key("pinger@efnet.irc/r", SLAVE_TURNS), "ping")
    handled: list[str] = []
    queue.run(handled.append)
    assert handled.index("ping") == 1
    assert handled.index("message99") == handled.index("enter99") + 1


def test_a_servers_burst_of_many_users_takes_one_turn_a_round() -> None:
    """10,000 users of one server rejoining (a slave's restart) hold another server's
    stanza for one of theirs, however many users they are."""
    queue: FairQueue[str] = FairQueue(Clock(0.001), budget=1.0)
    for i in range(10_000):
        queue.push(sender_key(f"user{i}@vesa.irc/r"), f"enter{i}")
    queue.push(sender_key("pinger@efnet.irc/r"), "ping")
    handled: list[str] = []
    queue.run(handled.append)
    assert handled[:3] == ["enter0", "ping", "enter1"]


def test_within_a_server_its_users_take_turns() -> None:
    queue: FairQueue[str] = FairQueue(Clock(0.0), budget=1.0)
    for n in range(3):
        queue.push(sender_key("flood@efnet.irc/r"), f"flood{n}")
    queue.push(sender_key("pinger@efnet.irc/r"), "ping")
    queue.push(sender_key("other@vesa.irc/r"), "other")
    handled: list[str] = []
    queue.run(handled.append)
    assert handled == ["flood0", "other", "ping", "flood1", "flood2"]


def test_a_burst_does_not_hold_another_sender() -> None:
    """A stanza of another sender queued behind 10,000 of a burst is handled second."""
    queue: FairQueue[str] = FairQueue(Clock(0.001), budget=1.0)
    for i in range(10_000):
        queue.push(("slave", "slave"), f"enter{i}")
    queue.push(("pinger", "pinger"), "ping")
    handled: list[str] = []
    queue.run(handled.append)
    assert handled.index("ping") == 1
    assert handled[:3] == ["enter0", "ping", "enter1"]


def test_each_senders_order_is_kept_and_nothing_is_dropped() -> None:
    queue: FairQueue[tuple[str, int]] = FairQueue(Clock(0.001), budget=0.0095)
    pushed = {"a": 500, "b": 37, "c": 1, "d": 250}
    for n in range(max(pushed.values())):
        for sender, count in pushed.items():
            if n < count:
                queue.push((sender, sender), (sender, n))
    handled: list[tuple[str, int]] = []
    turns = 0
    while queue.run(handled.append):
        turns += 1
    assert queue.pending == 0
    assert sorted(handled) == sorted((s, n) for s, c in pushed.items() for n in range(c))
    for sender, count in pushed.items():
        assert [n for s, n in handled if s == sender] == list(range(count))
    assert turns == len(handled) // 10  # ten items per 10 ms turn at 1 ms each


def test_round_robin_one_item_per_sender_per_round() -> None:
    queue: FairQueue[str] = FairQueue(Clock(0.0), budget=1.0)
    for item in ("a1", "a2", "a3"):
        queue.push(("a", "a"), item)
    for item in ("b1", "b2"):
        queue.push(("b", "b"), item)
    queue.push(("c", "c"), "c1")
    handled: list[str] = []
    assert queue.run(handled.append) is False
    assert handled == ["a1", "b1", "c1", "a2", "b2", "a3"]


def test_the_budget_ends_a_turn_after_at_least_one_item() -> None:
    queue: FairQueue[int] = FairQueue(Clock(1.0), budget=0.5)
    for n in range(3):
        queue.push(("a", "a"), n)
    handled: list[int] = []
    assert queue.run(handled.append) is True
    assert handled == [0]
    assert queue.pending == 2


def test_high_and_low_water() -> None:
    queue: FairQueue[int] = FairQueue(Clock(0.001), budget=0.0015, high_water=10,
                                      low_water=4)
    for n in range(9):
        queue.push(("a", "a"), n)
    assert not queue.full and not queue.drained
    queue.push(("a", "a"), 9)
    assert queue.full
    handled: list[int] = []
    queue.run(handled.append)  # two items within the 1.5 ms budget
    assert (len(handled), queue.full, queue.drained) == (2, False, False)
    while not queue.drained:
        queue.run(handled.append)
    assert queue.pending == 4
    assert handled == list(range(6))


# --- the output lanes: what goes to the link's peer is not queued behind the bulk ---------

MASTER = "channel.avalon.irc"


@pytest.mark.parametrize(("to", "peer"), [
    ("wallops@channel.avalon.irc", True),
    ("wallops@Channel.Avalon.irc/Wumpus", True),
    ("channel.avalon.irc", True),
    ("rubenro@vesa.yeggmaex.irc/shaver", False),
    ("vesa.yeggmaex.irc", False),
    ("channel.avalon.irc@evil.example", False),
    (None, False),
])
def test_link_peer_is_the_recipients_server(to: str | None, peer: bool) -> None:
    assert link_peer(to, frozenset({MASTER})) is peer


def _stanza(to: str, ident: str) -> Element:
    return stanzas.new("message", {"to": to, "from": "x@y", "id": ident})


def _ids(sent: list[str]) -> list[str]:
    return [ident for chunk in sent for ident in re.findall(r"id='([^']*)'", chunk)]


def test_the_links_stanzas_overtake_the_queued_bulk_and_each_lane_keeps_its_order() -> None:
    handler = CoreHandler(lambda element, now: Outbox(now), None, "dmuc.vesa.yeggmaex.irc")  # type: ignore[arg-type]
    sent: list[str] = []
    handler.send = sent.append  # type: ignore[method-assign]
    handler.one_turn = {MASTER: MASTER}

    def write(*deliveries: tuple[str, str]) -> None:
        out = Outbox(0.0)
        for to, ident in deliveries:
            out.send(_stanza(to, ident))
        handler.write(out)

    write(("u1@vesa.yeggmaex.irc", "b1"))
    assert _ids(sent) == ["b1"]  # nothing waits: at once
    handler.pauseProducing()  # the transport's buffer is full
    write(("u1@vesa.yeggmaex.irc", "b2"), ("r@channel.avalon.irc", "k1"))
    write(("u2@vesa.yeggmaex.irc", "b3"))
    out = Outbox(0.0)
    out.broadcast(_stanza("", "m1"), ["u1@vesa.yeggmaex.irc", "r@channel.avalon.irc/n"])
    handler.write(out)
    assert _ids(sent) == ["b1", "k1", "m1"]  # the master's copy of m1 went, u1's waits
    handler.resumeProducing()
    assert _ids(sent) == ["b1", "k1", "m1", "b2", "b3", "m1"]
    assert handler.lanes.bulk == deque()
    handler.pauseProducing()
    write(("u1@vesa.yeggmaex.irc", "b4"))
    handler.stopProducing()  # the stream is gone: so is what was queued for it
    assert handler.lanes.bulk == deque() and _ids(sent)[-1] == "m1"


def test_the_cores_own_work_goes_out_a_slice_a_turn(monkeypatch: pytest.MonkeyPatch) -> None:
    """What the core queued for later turns (a slave's held stanzas, SlaveService.work)
    is asked for after each turn, one slice a turn, until it has none."""
    clock = task.Clock()
    monkeypatch.setattr(daemon, "reactor", clock)
    slices = [["w1", "w2"], ["w3"]]

    def more_work(now: float) -> Outbox | None:
        if not slices:
            return None
        out = Outbox(now)
        for ident in slices.pop(0):
            out.send(_stanza(f"{MASTER}", ident))
        return out

    handler = CoreHandler(lambda element, now: Outbox(now), None, "dmuc.vesa.yeggmaex.irc")  # type: ignore[arg-type]
    sent: list[str] = []
    handler.send = sent.append  # type: ignore[method-assign]
    handler.more_work = more_work
    handler._take_turn()
    assert _ids(sent) == ["w1", "w2"] and len(clock.getDelayedCalls()) == 1
    clock.advance(0)  # the next turns: the second slice, then one that finds none
    assert _ids(sent) == ["w1", "w2", "w3"]
    assert clock.getDelayedCalls() == [] and slices == []  # nothing left: no more turns
