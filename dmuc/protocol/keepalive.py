"""The keepalive schedule (XEP-0282 §4.10) and the liveness rule (§4.11.1), the same on
both ends of a link (the master per slave and room, the slave per room).

Liveness is anything received from the peer on that link, not only the answers to our
keepalives: a slave's forwards and keepalives, the master's broadcasts and pings. A link
is split when a question of ours is still unanswered and nothing at all was heard for two
intervals, so a link that silently stops carrying packets is detected within
2 x keepalive. A loaded link is not a dead one: when a flood keeps the peer's queues
(its Prosody's, ours) full, an answer to our question waits behind it, but so does the
rest of the peer's traffic, which keeps arriving. So each side also makes itself heard:
when the peer has gone on talking for half an interval since we last said anything to it
(we only receive), we send a keepalive of our own; it reaches the peer one way (through
the queues once, not a round trip), well within the peer's bound, while the peer's
question may still wait in the flood. What a daemon writes to the link's peer is not
queued behind its own bulk output either (dmuc/shell/fairness.py, OutputLanes).

While the link is split a side asks four times as often, so that the netjoin is noticed
soon."""

from __future__ import annotations

# 2 s lets a test network (or a LAN that wants splits found within seconds) detect a
# split within 4 s; the default stays 60 s
MIN_KEEPALIVE = 2
MAX_KEEPALIVE = 3600


def clamp(keepalive: int) -> int:
    """The keepalive a master accepts from a slave's proposal."""
    return min(max(keepalive, MIN_KEEPALIVE), MAX_KEEPALIVE)


def interval(keepalive: int, split: bool) -> int:
    return max(keepalive // 4, 1) if split else keepalive


def due(now: float, last_heard: float, last_asked: float, last_said: float, keepalive: int,
        split: bool) -> bool:
    """Whether the next keepalive should go out now: nothing heard from the peer and
    nothing asked for an interval (is it there?), or the peer went on talking for half an
    interval since we last said anything to it (it must hear us: its question to us may
    be queued behind what it sends). `last_said` is anything we sent the peer on this link."""
    every = interval(keepalive, split)
    if split:  # looking for the way back: whatever else still arrives (a stalled link's
        return now - last_asked >= every  # backlog), ask every keepalive/4
    if now - max(last_heard, last_asked) >= every:
        return True
    # the peer went on talking for half an interval after we last said anything (an
    # answer to our own question comes at once: an idle link is not this); twice an
    # interval, the peer's bound (2 intervals of silence) leaves our keepalive 1.5
    # intervals to get through its queues
    return last_heard - max(last_said, last_asked) >= max(every / 2, 1)


def expired(now: float, last_heard: float, last_asked: float, keepalive: int) -> bool:
    """Whether the link is split: we asked after the last thing heard from the peer (of
    any kind), and nothing was heard for two intervals."""
    return last_asked > last_heard and now - last_heard >= 2 * keepalive
