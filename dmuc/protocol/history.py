"""Discussion history, as the master keeps it and as a slave keeps its copy: what is
stored, how it is trimmed, what a joining user asks for (XEP-0045 §7.2.15) and how an
entry is delivered (with its XEP-0203 delay). One set of rules for both sides."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.protocol import stanzas
from dmuc.storage.records import HistoryRecord


@dataclass
class HistoryEntry:
    stamp: float  # when the room received it (POSIX seconds)
    stanza: Element  # as broadcast: from room/nick, no 'to', without delay
    chars: int  # its serialised size, for maxchars
    xml: str = ""  # that serialisation, as stored

    def record(self) -> HistoryRecord:
        return HistoryRecord(self.stamp, self.xml or self.stanza.toXml())


def entry_for(message: Element, stamp: float) -> HistoryEntry:
    """A broadcast message as history keeps it: a copy without 'to', serialised once."""
    stored = stanzas.copy(message)
    stored.attributes.pop("to", None)
    xml = stored.toXml()
    return HistoryEntry(stamp, stored, len(xml), xml)


def stanza_id(message: Element, room_jid: str) -> str | None:
    """The XEP-0359 id the room gave a message."""
    for el in stanzas.children(message, "stanza-id", xmlns.STANZA_ID):
        if el.getAttribute("by") == room_jid:
            return el.getAttribute("id")
    return None


def is_historic(message: Element) -> bool:
    """Whether a groupchat message belongs in the join history and the room's archive:
    mod_muc's `muc-message-is-historic` (history.lib.lua 0.12.3), which mod_muc_mam's
    archiving follows too. XEP-0334 hints first (no-store / no-permanent-store: never;
    store: always), then a body, an XEP-0380 encryption or an XEP-0333 chat marker.
    Chat states, receipts and the like without a body are not. One rule for the master's
    history and archive and for a slave's history."""
    if (stanzas.child(message, "no-store", xmlns.HINTS) is not None
            or stanzas.child(message, "no-permanent-store", xmlns.HINTS) is not None):
        return False
    if stanzas.child(message, "store", xmlns.HINTS) is not None:
        return True
    if stanzas.child(message, "body") is not None:
        return True
    if stanzas.child(message, "encryption", xmlns.EME) is not None:
        return True
    return any(el.uri == xmlns.CHAT_MARKERS for el in message.elements())


def moderated_id(message: Element, room_jid: str) -> str | None:
    """The stanza-id a room's XEP-0425 announcement retracts (either form), if it is one:
    only the room itself (its bare JID) speaks for a moderator."""
    if message.getAttribute("from") != room_jid:
        return None
    retract = stanzas.child(message, "retract", xmlns.RETRACT_1)
    if retract is not None and stanzas.child(retract, "moderated", xmlns.MODERATE_1) is not None:
        return retract.getAttribute("id")
    apply_to = stanzas.child(message, "apply-to", xmlns.FASTEN)
    if apply_to is not None and stanzas.child(apply_to, "moderated",
                                              xmlns.MODERATE_0) is not None:
        return apply_to.getAttribute("id")
    return None


class History(list[HistoryEntry]):
    """A room's newest messages, oldest first."""

    def remove_id(self, sid: str, room_jid: str) -> bool:
        """Drop the message with stanza-id `sid` (moderated); whether it was here."""
        kept = [e for e in self if stanza_id(e.stanza, room_jid) != sid]
        if len(kept) == len(self):
            return False
        self[:] = kept
        return True

    def add(self, message: Element, stamp: float, limit: int) -> HistoryEntry | None:
        """Keep a broadcast message (a copy, without 'to'); None when `limit` keeps none."""
        if limit <= 0:
            return None
        return self.keep(entry_for(message, stamp), limit)

    def keep(self, entry: HistoryEntry, limit: int) -> HistoryEntry | None:
        if limit <= 0:
            return None
        self.append(entry)
        self.trim(limit)
        return entry

    def trim(self, limit: int) -> None:
        del self[:-limit if limit > 0 else len(self)]

    def load(self, records: Iterable[HistoryRecord]) -> None:
        """Entries read back from storage after a restart."""
        for record in records:
            self.append(HistoryEntry(record.stamp, stanzas.parse_xml(record.xml),
                                     len(record.xml), record.xml))

    def select(self, request: Element | None, now: float) -> list[HistoryEntry]:
        """The entries a join's <history/> asks for (maxstanzas, maxchars, seconds, since);
        a malformed limit is ignored, as Prosody does."""
        entries = list(self)
        if request is None:
            return entries
        since = None
        if request.getAttribute("since"):
            since = stanzas.parse_stamp(request["since"])
        seconds = _limit(request, "seconds")
        if seconds is not None:
            since = now - seconds if since is None else max(since, now - seconds)
        if since is not None:
            entries = [e for e in entries if e.stamp >= since]
        count = _limit(request, "maxstanzas")
        if count is not None:
            entries = entries[len(entries) - count:] if count else []
        budget = _limit(request, "maxchars")
        if budget is not None:
            chosen: list[HistoryEntry] = []
            for entry in reversed(entries):
                if entry.chars > budget:
                    break
                budget -= entry.chars
                chosen.append(entry)
            entries = list(reversed(chosen))
        return entries


def _limit(request: Element, name: str) -> int | None:
    """A non-negative limit of the request; None when absent or malformed (ignored)."""
    value = stanzas.parse_bounded_int(request.getAttribute(name), -(10**10), 10**10)
    return None if value is None else max(value, 0)


def delayed(entry: HistoryEntry, room_jid: str) -> Element:
    """A history entry as delivered to a user: with XEP-0203 delay from the room."""
    message = stanzas.copy(entry.stanza)
    message.addChild(stanzas.delay(entry.stamp, room_jid))
    return message


class Archive:
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

    def after(self, sid: str) -> list[HistoryEntry] | None:
        """Every message after the one with stanza-id `sid`; None if it is not (or no
        longer) here."""
        seq = self._seq_of.get(sid)
        if seq is None:
            return None
        start = seq - self._entries[0][0] + 1
        return [entry for _, _, entry in itertools.islice(self._entries, start, None)
                if entry is not None]

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
        the archive is whole is older than the room's life in this process (the master
        restarted): everything is sent. The flag says whether the gap was found (False:
        it is older than the window; only the newest are sent)."""
        if after is None:
            return self.last(at_least), True
        seq = self._seq_of.get(after) if after else -1
        if seq is None and self.whole:
            seq = -1
        return self._newest(at_least, seq), seq is not None
