"""The keepalive schedule (XEP-0282 §4.10), the same on both ends of a link: after
`keepalive` seconds without traffic one side asks; while the link is split it asks four
times as often, so that the netjoin is noticed soon. A question still unanswered when
nothing was heard for two intervals means the link is split (§4.11.1), even if nothing
bounced: a link that silently stops carrying packets is detected within 2 x keepalive."""

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


def due(now: float, last_heard: float, last_sent: float, keepalive: int, split: bool) -> bool:
    """Whether the next keepalive should go out now."""
    return now - max(last_heard, last_sent) >= interval(keepalive, split)


def expired(now: float, last_heard: float, last_sent: float, keepalive: int) -> bool:
    """Whether an unanswered keepalive marks the link split: one was sent after the last
    thing heard, and nothing was heard for two intervals."""
    return last_sent > last_heard and now - last_heard >= 2 * keepalive
