"""Fair turns between senders (sans-I/O: it takes stanzas and a clock, never a reactor).

Every stanza reaches a daemon through Prosody's one component stream, in order. Handled
as it is parsed, a burst from one sender (a slave's 10,000 ENTERs after its restart)
holds every stanza behind it until the whole burst is handled. Instead the shell parses
what has arrived, queues it per sender, and handles the queues round-robin (per server,
then per bare JID) within a time budget per reactor turn: a stanza from another server
waits for at most one stanza of each busy server, plus what the component socket
delivers ahead of it. Each sender's
stanzas keep their order exactly; nothing is dropped (the shell stops reading the socket
while more than `high_water` stanzas wait, and reads again below `low_water`).

The output has two lanes (OutputLanes): what goes to the other end of an XEP-0282 link
first, the bulk as the transport drains."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping
from typing import Generic, TypeVar

Item = TypeVar("Item")

TURN_BUDGET = 0.010  # seconds of handling per reactor turn, before others get the reactor
HIGH_WATER = 20_000  # queued stanzas at which the shell stops reading the socket
LOW_WATER = 5_000  # ... and at which it reads again


def sender_key(sender: str | None,
               one_turn: Mapping[str, str] | None = None) -> tuple[str, str]:
    """Whose turn a stanza takes: its sender's server, then its bare JID within that
    server's turn. A burst comes from one server (a slave's users rejoining after its
    restart arrive from 10,000 JIDs of one domain); a user's resources share one turn.

    `one_turn` maps domains whose senders must keep their order among themselves to the
    one queue they share: everything a slave sends the master (its own stanzas and its
    users' forwarded ones: an ENTER before the user's first message), everything a master
    sends a slave (its service JID and its rooms: a registration before the snapshot)."""
    bare = (sender or "").split("/", 1)[0].lower()
    server = bare.rpartition("@")[2]
    if one_turn:
        owner = one_turn.get(server)
        if owner is not None:
            return owner, owner
    return server, bare


class FairQueue(Generic[Item]):
    """Per-sender FIFO queues served round-robin in two levels: one item per server per
    round, taken in turn from that server's senders."""

    def __init__(self, clock: Callable[[], float], budget: float = TURN_BUDGET,
                 high_water: int = HIGH_WATER, low_water: int = LOW_WATER) -> None:
        self.clock = clock
        self.budget = budget
        self.high_water = high_water
        self.low_water = low_water
        # server -> its senders -> their items; insertion order is the round (the one at
        # the front goes next)
        self._servers: dict[str, dict[str, deque[Item]]] = {}
        self.pending = 0

    def push(self, sender: tuple[str, str], item: Item) -> None:
        server, bare = sender
        senders = self._servers.get(server)
        if senders is None:
            senders = self._servers[server] = {}
        queue = senders.get(bare)
        if queue is None:
            queue = senders[bare] = deque()
        queue.append(item)
        self.pending += 1

    def pop(self) -> Item:
        """The next item in round-robin order (the queue must not be empty)."""
        server = next(iter(self._servers))
        senders = self._servers.pop(server)
        bare = next(iter(senders))
        queue = senders.pop(bare)
        item = queue.popleft()
        if queue:
            senders[bare] = queue  # back of its server's round
        if senders:
            self._servers[server] = senders  # back of the round
        self.pending -= 1
        return item

    def run(self, handle: Callable[[Item], None]) -> bool:
        """Handle items round-robin until the budget is spent (at least one item, so the
        queues always drain); True while items are left for a later turn."""
        began = self.clock()
        while self.pending:
            handle(self.pop())
            if self.clock() - began >= self.budget:
                break
        return self.pending > 0

    @property
    def full(self) -> bool:
        return self.pending >= self.high_water

    @property
    def drained(self) -> bool:
        return self.pending <= self.low_water


def link_peer(to: str | None, peers: frozenset[str]) -> bool:
    """Whether a stanza goes to the other end of an XEP-0282 link (a master's service and
    rooms for a slave, a slave's JID for the master): it takes the link lane."""
    return (to or "").split("/", 1)[0].rpartition("@")[2].lower() in peers


class OutputLanes:
    """What a daemon writes to its one component stream, in two lanes (sans-I/O: the shell
    writes what it is given and says when the transport's buffer is full or drained).

    Behind a flood, a slave's output is mostly fan-out to its local users, which its
    Prosody consumes at the pace of the c2s deliveries; a keepalive answer or a forward
    to the master written behind a megabyte of it would wait seconds, and the master
    would take the loaded link for a dead one (issue 19). So what goes to the link's
    peer is written at once, and the bulk only while the transport's buffer is not full:
    the rest waits here, in order, and goes as the buffer drains. Each lane keeps its
    order; a recipient is always in the same lane, so no recipient sees a reordering."""

    def __init__(self) -> None:
        self.peers: frozenset[str] = frozenset()
        self.bulk: deque[str] = deque()
        self.full = False  # the transport's buffer is over its bound

    def now_or_later(self, data: str) -> str | None:
        """Bulk output: returned if it may be written now, else kept for `drain`."""
        if self.full or self.bulk:
            self.bulk.append(data)
            return None
        return data

    def next_bulk(self) -> str | None:
        """The next bulk item to write, while the transport takes more."""
        return self.bulk.popleft() if self.bulk and not self.full else None

    def reset(self) -> None:
        """The stream is gone: what was queued for it goes with it (as would what its
        transport held); the next stream starts empty."""
        self.bulk.clear()
        self.full = False
