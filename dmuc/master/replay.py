"""The master's replay window (XEP-0282 §4.11.2): the room's recent messages by
stanza-id, kept beyond the history length so that a slave that was split (or restarted)
gets exactly what it missed. Master-only; not the XEP-0313 archive (features/mam.py)."""

from __future__ import annotations

from collections import deque

from dmuc.protocol.history import HistoryEntry


class ReplayWindow:
    """The room's recent messages by stanza-id, beyond the history length: what a slave
    that was split (or restarted) missed is replayed from here, exactly the gap
    (§4.11.2). Bounded by `window` messages; O(1) to append, O(gap) to replay."""

    def __init__(self, window: int) -> None:
        self.window = window
        # a retracted message keeps its place (a slave's `last` may name it) without entry
        self._entries: deque[tuple[int, str | None, HistoryEntry | None]] = deque()
        self._seq_of: dict[str, int] = {}
        self._next = 0
        # Whether it holds every message the room said in this process: nothing dropped
        # off the window, nothing restored from storage (a slave may have had some of
        # those). Then a `last` it does not know predates the room's life here (a master
        # restart), and the slave has missed all of it.
        self.whole = True

    def __len__(self) -> int:
        return len(self._entries)

    def add(self, entry: HistoryEntry, sid: str | None, restored: bool = False) -> None:
        if self.window <= 0:
            return
        if restored:
            self.whole = False
        self._entries.append((self._next, sid, entry))
        if sid is not None:
            self._seq_of[sid] = self._next
        self._next += 1
        while len(self._entries) > self.window:
            _, old_sid, _ = self._entries.popleft()
            self.whole = False
            if old_sid is not None:
                self._seq_of.pop(old_sid, None)

    def last(self, count: int) -> list[HistoryEntry]:
        return self._newest(count, None)

    def _newest(self, at_least: int, after_seq: int | None) -> list[HistoryEntry]:
        """Every message after position `after_seq` (None: none), and at least the
        `at_least` newest, oldest first; retracted ones left out."""
        chosen: list[HistoryEntry] = []
        for seq, _, entry in reversed(self._entries):
            if len(chosen) >= at_least and (after_seq is None or seq <= after_seq):
                break
            if entry is not None:
                chosen.append(entry)
        chosen.reverse()
        return chosen

    def get(self, sid: str) -> HistoryEntry | None:
        """The message with that stanza-id, if it is here and not retracted."""
        seq = self._seq_of.get(sid)
        return None if seq is None else self._entries[seq - self._entries[0][0]][2]

    def retract(self, sid: str) -> None:
        """A moderated message is no longer replayed to slaves (XEP-0425)."""
        seq = self._seq_of.get(sid)
        if seq is not None:
            index = seq - self._entries[0][0]
            self._entries[index] = (seq, sid, None)

    def newest_id(self) -> str:
        """The stanza-id of the newest message ("" when there is none)."""
        for _, sid, _ in reversed(self._entries):
            if sid is not None:
                return sid
        return ""

    def replay(self, after: str | None, at_least: int) -> tuple[list[HistoryEntry], bool]:
        """What a (re)registering slave gets: everything after `after` ("" means it had
        seen none: everything kept), and never fewer than the `at_least` newest (its
        history). None: a first registration, the newest alone. A `last` not here while
        the window is whole is older than the room's life in this process (the master
        restarted): everything is sent. The flag says whether the gap was found (False:
        it is older than the window; only the newest are sent)."""
        if after is None:
            return self.last(at_least), True
        seq = self._seq_of.get(after) if after else -1
        if seq is None and self.whole:
            seq = -1
        return self._newest(at_least, seq), seq is not None
