"""The master's replay window (dmuc.master.replay, XEP-0282 §4.11.2), as one table."""

from __future__ import annotations

import pytest

from dmuc.master.replay import ReplayWindow
from dmuc.protocol import stanzas
from dmuc.protocol.history import HistoryEntry

# What a (re)registering slave is replayed from the master's replay window (§4.11.2):
# (window, restored entries, new entries, the slave's last, its history) ->
# (replayed ids, gap found)
REPLAYS = [
    ("first registration: the newest", 100, 0, 5, None, 2, ["n3", "n4"], True),
    ("seen none: everything", 100, 0, 5, "", 2, ["n0", "n1", "n2", "n3", "n4"], True),
    ("exactly the gap", 100, 0, 5, "n1", 1, ["n2", "n3", "n4"], True),
    ("at least its history", 100, 0, 5, "n4", 2, ["n3", "n4"], True),
    ("a last from before a master restart: all since", 100, 0, 5, "old", 2,
     ["n0", "n1", "n2", "n3", "n4"], True),
    ("older than a trimmed window: the newest only", 3, 0, 5, "old", 2, ["n3", "n4"], False),
    ("unknown, after a restore from storage: the newest only", 100, 2, 3, "old", 2,
     ["n1", "n2"], False),
]


@pytest.mark.parametrize("window, restored, added, last, history, replayed, found",
                         [c[1:] for c in REPLAYS], ids=[c[0] for c in REPLAYS])
def test_replay_window(window: int, restored: int, added: int, last: str | None,
                        history: int, replayed: list[str], found: bool) -> None:
    kept = ReplayWindow(window)
    for n in range(restored):
        kept.add(HistoryEntry(float(n), stanzas.new("message", {"id": f"r{n}"}), 0),
                    f"r{n}", restored=True)
    for n in range(added):
        kept.add(HistoryEntry(float(n), stanzas.new("message", {"id": f"n{n}"}), 0), f"n{n}")
    entries, was_found = kept.replay(last, history)
    assert [e.stanza["id"] for e in entries] == replayed
    assert was_found is found
