"""The keepalive schedule (XEP-0282 §4.10), the same on both ends of a link: after
`keepalive` seconds without traffic one side asks; while the link is split it asks four
times as often, so that the netjoin is noticed soon."""

from __future__ import annotations

MIN_KEEPALIVE = 5
MAX_KEEPALIVE = 3600


def clamp(keepalive: int) -> int:
    """The keepalive a master accepts from a slave's proposal."""
    return min(max(keepalive, MIN_KEEPALIVE), MAX_KEEPALIVE)


def interval(keepalive: int, split: bool) -> int:
    return max(keepalive // 4, 1) if split else keepalive


def due(now: float, last_heard: float, last_sent: float, keepalive: int, split: bool) -> bool:
    """Whether the next keepalive should go out now."""
    return now - max(last_heard, last_sent) >= interval(keepalive, split)
