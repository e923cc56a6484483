"""Discussion history, as the master keeps it and as a slave keeps its copy: what is
stored, how it is trimmed, what a joining user asks for (XEP-0045 §7.2.15) and how an
entry is delivered (with its XEP-0203 delay). One set of rules for both sides."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.protocol import stanzas
from dmuc.records import HistoryRecord


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


def with_default(request: Element | None, default: int) -> Element:
    """The history a join asks for, as mod_muc's send_history reads it: a <history/>
    without any limit (or none at all) asks for the room's default number of messages
    (its default_history_messages). One rule for the master's direct joins and the
    ENTER it sends a slave (§4.5), so the slave selects as the master would."""
    if request is not None and (
            any(_limit(request, name) is not None for name in ("maxchars", "maxstanzas",
                                                               "seconds"))
            or stanzas.parse_stamp(request.getAttribute("since") or "") is not None):
        return request
    asked = Element((xmlns.MUC, "history"))
    asked["maxstanzas"] = str(default)
    return asked


def _limit(request: Element, name: str) -> int | None:
    """A non-negative limit of the request; None when absent or malformed (ignored)."""
    value = stanzas.parse_bounded_int(request.getAttribute(name), -(10**10), 10**10)
    return None if value is None else max(value, 0)


def delayed(entry: HistoryEntry, room_jid: str) -> Element:
    """A history entry as delivered to a user: with XEP-0203 delay from the room."""
    message = stanzas.copy(entry.stanza)
    message.addChild(stanzas.delay(entry.stamp, room_jid))
    return message
