"""Discussion history: what a room keeps and what a joining user gets (XEP-0045 §7.2.15)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.master.model import HistoryEntry
from dmuc.outbox import AppendHistory, ClearHistory, Outbox
from dmuc.protocol import stanzas
from dmuc.storage import HistoryRecord

if TYPE_CHECKING:
    from dmuc.master.room import Room


def append(room: Room, message: Element, out: Outbox) -> None:
    """Keep a broadcast groupchat message (as broadcast, without 'to')."""
    keep = room.config.history_length
    if keep <= 0:
        return
    stored = stanzas.copy(message)
    stored.attributes.pop("to", None)
    xml = stored.toXml()
    room.history.append(HistoryEntry(out.now, stored, len(xml)))
    del room.history[:-keep]
    if room.config.persistent:
        out.store(AppendHistory(room.jid, HistoryRecord(out.now, xml), keep))


def trim(room: Room, out: Outbox) -> None:
    """Apply a changed history length."""
    keep = room.config.history_length
    if keep <= 0:
        room.history.clear()
        if room.config.persistent:
            out.store(ClearHistory(room.jid))
    else:
        del room.history[:-keep]


def select(room: Room, request: Element | None, now: float) -> list[HistoryEntry]:
    """The entries a join request asks for (maxstanzas, maxchars, seconds, since)."""
    entries = list(room.history)
    if request is None:
        return entries
    try:
        since = None
        if request.getAttribute("since"):
            since = stanzas.parse_stamp(request["since"])
        if request.getAttribute("seconds") is not None:
            seconds = int(request["seconds"])
            cutoff = now - seconds
            since = cutoff if since is None else max(since, cutoff)
        if since is not None:
            entries = [e for e in entries if e.stamp >= since]
        if request.getAttribute("maxstanzas") is not None:
            count = max(int(request["maxstanzas"]), 0)
            entries = entries[len(entries) - count:] if count else []
        if request.getAttribute("maxchars") is not None:
            budget = max(int(request["maxchars"]), 0)
            chosen: list[HistoryEntry] = []
            for entry in reversed(entries):
                if entry.chars > budget:
                    break
                budget -= entry.chars
                chosen.append(entry)
            entries = list(reversed(chosen))
    except ValueError:
        return entries  # a malformed limit is ignored, as Prosody does
    return entries


def stanza_for(room: Room, entry: HistoryEntry) -> Element:
    """A history entry as delivered: with XEP-0203 delay from the room."""
    msg = stanzas.copy(entry.stanza)
    msg.addChild(stanzas.delay(entry.stamp, room.jid))
    return msg


def send_on_join(room: Room, join: Element, session: str, out: Outbox) -> None:
    muc_x = stanzas.child(join, "x", xmlns.MUC)
    request = stanzas.child(muc_x, "history") if muc_x is not None else None
    for entry in select(room, request, out.now):
        out.broadcast(stanza_for(room, entry), [session])


def load(room: Room, records: list[HistoryRecord]) -> None:
    """Restore history read from storage after a restart."""
    for record in records:
        room.history.append(
            HistoryEntry(record.stamp, stanzas.parse_xml(record.xml), len(record.xml))
        )
