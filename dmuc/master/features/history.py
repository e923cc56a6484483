"""The room's discussion history (XEP-0045 §7.2.15): what the room keeps and stores, and
what a joining user gets; and its length setting, as Prosody's history.lib (form field,
trim on change; no muc#roominfo field, as 0.12.3). The rules themselves (trim, selection, delay) are
shared with the slave in dmuc.protocol.history."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.features.roomconfig import Field, Values
from dmuc.master.model import RoomConfig
from dmuc.outbox import AppendHistory, ClearHistory, Outbox
from dmuc.protocol import stanzas
from dmuc.protocol.history import delayed, entry_for, is_historic, stanza_id
from dmuc.storage.records import HistoryRecord

if TYPE_CHECKING:
    from dmuc.master.room import Room

LENGTH = "muc#roomconfig_historylength"


def replayable(message: Element) -> bool:
    """Whether a slave split from the room gets the message at its netjoin: what users
    read (a body), and whatever is historic (is_historic: a marker, say)."""
    return stanzas.child(message, "body") is not None or is_historic(message)


def append(room: Room, message: Element, out: Outbox, stamp: float | None = None,
           on_link: Element | None = None) -> None:
    """Keep a broadcast groupchat message (as broadcast, without 'to'): in the archive a
    slave's catch-up is replayed from (as `on_link`, with the link's id, if given), and,
    if it is historic, in the history joiners get. `stamp`: when it was sent, if not now
    (held by a slave through a netsplit)."""
    keep = room.config.history_length
    when = out.now if stamp is None else stamp
    entry = entry_for(message, when)
    replayed = entry if on_link is None or on_link is message else entry_for(on_link, when)
    room.archive.add(replayed, stanza_id(message, room.jid))
    if not is_historic(message):
        return
    if room.history.keep(entry, keep) is not None and room.config.persistent:
        out.store(AppendHistory(room.jid, entry.record(), keep))


def trim(room: Room, out: Outbox) -> None:
    """Apply a changed history length."""
    room.history.trim(room.config.history_length)
    if not room.history and room.config.persistent:
        out.store(ClearHistory(room.jid))


def retract(room: Room, sid: str, out: Outbox) -> None:
    """A moderated message (XEP-0425) leaves the history joiners get and the archive
    slaves are replayed from; stored history is rewritten without it (it is short)."""
    room.archive.retract(sid)
    if room.history.remove_id(sid, room.jid) and room.config.persistent:
        out.store(ClearHistory(room.jid))
        store_all(room, out)


def store_all(room: Room, out: Outbox) -> None:
    """The room became persistent: what it kept so far goes to storage too."""
    for entry in room.history:
        out.store(AppendHistory(room.jid, entry.record(), room.config.history_length))


def send_on_join(room: Room, join: Element, session: str, out: Outbox) -> None:
    muc_x = stanzas.child(join, "x", xmlns.MUC)
    request = stanzas.child(muc_x, "history") if muc_x is not None else None
    for entry in room.history.select(request, out.now):
        out.broadcast(delayed(entry, room.jid), [session])


def load(room: Room, records: list[HistoryRecord]) -> None:
    """Restore history read from storage after a restart (the archive starts from it)."""
    room.history.load(records)
    for entry in room.history:
        room.archive.add(entry, stanza_id(entry.stanza, room.jid), restored=True)


# --- the history length setting -----------------------------------------------------------


def config_form(room: Room, fields: list[Field]) -> None:
    fields.append({"var": LENGTH, "type": "text-single",
                   "label": "Maximum number of history messages",
                   "value": str(room.config.history_length)})


def submitted(room: Room, values: Values, new: RoomConfig) -> None:
    """An empty value keeps the length; any is capped by the service's maximum."""
    value = roomconfig.text(values, LENGTH)
    if value is not None and value.strip() != "":
        new.history_length = min(roomconfig.count(value, LENGTH),
                                 room.service.settings.max_history_length)


def applied(room: Room, old: RoomConfig, out: Outbox) -> None:
    if room.config.history_length != old.history_length:
        trim(room, out)


def setup(hooks: Hooks) -> None:
    hooks.add("room-config-form", config_form, priority=70)
    hooks.add("room-config-submitted", submitted, priority=70)
    hooks.add("room-config-applied", applied, priority=30)
