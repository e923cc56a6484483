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
from dmuc.protocol import stanzas, xep0282
from dmuc.protocol.history import delayed, entry_for, is_historic, stanza_id, with_default
from dmuc.records import HistoryRecord

if TYPE_CHECKING:
    from dmuc.master.room import Room

LENGTH = "muc#roomconfig_historylength"
DEFAULT = "muc#roomconfig_defaulthistorymessages"


def replayable(message: Element) -> bool:
    """Whether a slave split from the room gets the message at its netjoin: what users
    read (a body), and whatever is historic (is_historic: a marker, say)."""
    return stanzas.child(message, "body") is not None or is_historic(message)


def append(room: Room, message: Element, out: Outbox, stamp: float | None = None) -> None:
    """Keep a broadcast groupchat message (as broadcast, without 'to'): (`message-kept`)
    in the window a slave's catch-up is replayed from, with the id it came in with (its
    slave's handle on it), and, if it is historic, in the history joiners get, with the
    id its sender gave it (xep0282.for_users). `stamp`: when it was sent, if not now
    (held by a slave through a netsplit)."""
    keep = room.config.history_length
    when = out.now if stamp is None else stamp
    on_link = entry_for(message, when)
    room.service.hooks.fire("message-kept", room=room, entry=on_link,
                            sid=stanza_id(message, room.jid))
    if not is_historic(message):
        return
    shown = xep0282.for_users(message)
    entry = on_link if shown is message else entry_for(shown, when)
    if room.history.keep(entry, keep) is not None and room.config.persistent:
        out.store(AppendHistory(room.jid, entry.record(), keep))


def trim(room: Room, out: Outbox) -> None:
    """Apply a changed history length."""
    room.history.trim(room.config.history_length)
    if not room.history and room.config.persistent:
        out.store(ClearHistory(room.jid))


def retract(room: Room, sid: str, out: Outbox) -> None:
    """A moderated message (XEP-0425) leaves the history joiners get and
    (`message-retracted`) the window slaves are replayed from; stored history is
    rewritten without it (it is short)."""
    room.service.hooks.fire("message-retracted", room=room, sid=sid)
    if room.history.remove_id(sid, room.jid) and room.config.persistent:
        out.store(ClearHistory(room.jid))
        store_all(room, out)


def store_all(room: Room, out: Outbox) -> None:
    """The room became persistent: what it kept so far goes to storage too."""
    for entry in room.history:
        out.store(AppendHistory(room.jid, entry.record(), room.config.history_length))


def send_on_join(room: Room, join: Element, session: str, out: Outbox) -> None:
    for entry in room.history.select(requested(room, join), out.now):
        out.broadcast(delayed(entry, room.jid), [session])


def requested(room: Room, join: Element) -> Element:
    """The history a join asks for; the room's default number if it sets no limit."""
    muc_x = stanzas.child(join, "x", xmlns.MUC)
    request = stanzas.child(muc_x, "history") if muc_x is not None else None
    return with_default(request, room.config.default_history_messages)


def on_broadcast(room: Room, stanza: Element, out: Outbox, stamp: float, **_: object) -> None:
    """A broadcast message is kept (history.lib's muc-broadcast-message), for joiners if
    it is historic."""
    if replayable(stanza):
        append(room, stanza, out, stamp)


def load(room: Room, records: list[HistoryRecord]) -> None:
    """Restore history read from storage after a restart (the replay window starts
    from it)."""
    room.history.load(records)
    for entry in room.history:
        room.service.hooks.fire("message-kept", room=room, entry=entry,
                                sid=stanza_id(entry.stanza, room.jid), restored=True)


# --- the history length setting -----------------------------------------------------------


def config_form(room: Room, fields: list[Field]) -> None:
    """As history.lib 0.12.3: the length, and how many a join without limits gets."""
    fields += [
        {"var": LENGTH, "type": "text-single", "datatype": "xs:integer",
         "label": "Maximum number of history messages returned by room",
         "desc": "Specify the maximum number of previous messages that should be sent to "
                 "users when they join the room",
         "value": str(room.config.history_length)},
        {"var": DEFAULT, "type": "text-single", "datatype": "xs:integer",
         "label": "Default number of history messages returned by room",
         "desc": "Specify the number of previous messages sent to new users when they join "
                 "the room",
         "value": str(room.config.default_history_messages)},
    ]


def submitted(room: Room, values: Values, new: RoomConfig) -> None:
    """An empty value keeps the setting; the length is capped by the service's maximum,
    the default number by the length (as mod_muc)."""
    value = roomconfig.text(values, LENGTH)
    if value is not None and value.strip() != "":
        new.history_length = min(roomconfig.count(value, LENGTH),
                                 room.service.settings.max_history_length)
    value = roomconfig.text(values, DEFAULT)
    if value is not None and value.strip() != "":
        new.default_history_messages = min(roomconfig.count(value, DEFAULT),
                                           new.history_length)


def applied(room: Room, old: RoomConfig, out: Outbox) -> None:
    if room.config.history_length != old.history_length:
        trim(room, out)


def setup(hooks: Hooks) -> None:
    hooks.add("room-config-form", config_form, priority=65)
    hooks.add("room-config-submitted", submitted, priority=70)
    hooks.add("room-config-applied", applied, priority=30)
    # after the features that decorate the message (at 0 and above)
    hooks.add("message-broadcast", on_broadcast, priority=-1)
    hooks.add("occupant-session-new",
              lambda room, session, stanza, out, **_: send_on_join(room, stanza, session, out),
              priority=50)
