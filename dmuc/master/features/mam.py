"""The room's own archive (XEP-0313 MAM on the room JID), as Prosody 0.12's mod_muc_mam:
every historic groupchat message the room broadcasts (a body, a marker, not a chat state
nor what XEP-0334 hints keep out) is archived (when the room's archiving setting is on)
under the XEP-0359 stanza-id the room gave it; a query (RSM max / after / before, the
form's start / end / with / before-id / after-id / ids) is a storage read the shell runs
(Outbox QueryArchive) and whose page it hands back here to answer; archived messages
expire after the service's retention (a periodic ExpireArchive from the timers).

The query rule (the form, RSM, the result messages, <fin/>) is dmuc.protocol.mam's, which
a slave answering its own users from its copy of the archive uses too (dmuc/slave/
archive.py, docs/protocol.md §4.17): same stanza-ids, same stamps, same pages."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.errors import ArchiveIdNotFound
from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.features.roomconfig import Field
from dmuc.master.model import Occupant, RoomConfig
from dmuc.outbox import AppendArchive, DeleteArchive, ExpireArchive, Outbox, QueryArchive
from dmuc.protocol import mam, stanzas, visibility, xep0282
from dmuc.protocol.history import is_historic
from dmuc.records import ArchivePage, ArchiveQuery

if TYPE_CHECKING:
    from dmuc.master.room import Room
    from dmuc.master.service import ServiceSettings

ENABLE = "muc#roomconfig_enablearchiving"


# --- archiving -----------------------------------------------------------------------


def archive(room: Room, message: Element, occupant: Occupant | None, out: Outbox,
            stamp: float | None = None) -> None:
    """Archive a groupchat message the room broadcast (as broadcast, without 'to' and
    without a delay: the archive's own stamp is when it was said), one the caller found
    archivable (dmuc.protocol.mam.archivable). `occupant`: its sender, None for the room
    itself."""
    if not room.config.archiving:
        return
    record = mam.record_of(message, room.jid, out.now if stamp is None else stamp,
                           occupant.nick if occupant is not None else "",
                           occupant.bare_jid if occupant is not None else "")
    if record is not None:
        out.store(AppendArchive(room.jid, record))


def on_broadcast(room: Room, stanza: Element, occupant: Occupant, out: Outbox,
                 stamp: float, **_: object) -> None:
    """A broadcast message is archived if it is historic, as mod_muc_mam archives what
    muc-message-is-historic accepts (the same rule as the join history)."""
    if is_historic(stanza):
        archive(room, stanza, occupant, out, stamp)


@dataclass
class Retention:
    """The retention timer (muc_log_expires_after, muc_log_cleanup_interval): every
    `archive_cleanup_interval` seconds, one ExpireArchive for everything older than
    `archive_expires_after` (None: kept for ever), read from the service's settings each
    time (a reload applies them). Run from the service's tick, never per stanza."""

    next_run: float | None = None

    def tick(self, settings: ServiceSettings, now: float, out: Outbox) -> None:
        if settings.archive_expires_after is None:
            return
        if self.next_run is not None and now < self.next_run:
            return
        self.next_run = now + settings.archive_cleanup_interval
        out.store(ExpireArchive(now - settings.archive_expires_after))


# --- queries (the rule is dmuc.protocol.mam's; who may ask is the room's) -------------


def handle_iq(room: Room, stanza: Element, payload: Element, out: Outbox) -> bool | None:
    """A `room-iq` handler: urn:xmpp:mam:2 <query/> to the room."""
    if payload.uri != xmlns.MAM or payload.name != "query":
        return None
    if stanza.getAttribute("type") == "get":
        out.send(mam.form_reply(stanza))
        return True
    asker = stanza.getAttribute("from")
    affiliation = room.affiliation(jids.bare(asker))
    if affiliation == "outcast" or (room.config.members_only and affiliation == "none"):
        _refuse(room, stanza, out, "auth", "forbidden",
                "You are not allowed to read this room's archive")
        return True
    try:
        query = parse_query(room, payload, asker)
    except mam.QueryRefused as refused:
        _refuse(room, stanza, out, refused.err_type, refused.condition, refused.text)
        return True
    whois = room.config.whois

    def answer(page: ArchivePage | Exception, reply_out: Outbox) -> None:
        mam.answer(stanza, payload, room.jid, whois, page, reply_out)

    out.store(QueryArchive(room.jid, query, answer))
    return True


def parse_query(room: Room, payload: Element, asker: str) -> ArchiveQuery:
    """The query's form and RSM set as an ArchiveQuery; QueryRefused when malformed."""
    sees = visibility.sees_real_jids(room.config.whois, room.role_of_session(asker))
    return mam.parse_query(payload, mam.Asker(
        room.jid, room.service.settings.archive_max_results, sees))


# --- a slave's copy (docs/protocol.md §4.17) -------------------------------------------

FILL_MAX = 100  # messages a page of a slave's copy
FILL_BYTES = 256 * 1024  # and about this much XML, under Prosody's s2s stanza size limit


def slave_settings(room: Room, **_: object) -> xep0282.ArchiveSettings:
    """What a slave keeps its copy of this room's archive by."""
    settings = room.service.settings
    return xep0282.ArchiveSettings(room.config.archiving, settings.archive_max_results,
                                   settings.archive_expires_after)


def fill_slave(room: Room, stanza: Element, payload: Element, with_senders: bool,
               out: Outbox, **_: object) -> bool:
    """A page of the archive for a slave's copy: what follows its newest message."""
    wanted = stanzas.parse_bounded_int(payload.getAttribute("max") or "", 1, FILL_MAX)
    query = ArchiveQuery(max=wanted or FILL_MAX, after=payload.getAttribute("after") or None)

    def answer(page: ArchivePage | Exception, reply_out: Outbox) -> None:
        if isinstance(page, ArchiveIdNotFound):
            _refuse(room, stanza, reply_out, "cancel", "item-not-found",
                    "That message is no longer in the archive")
            return
        if isinstance(page, Exception):
            reply_out.warn(f"archive copy of {room.jid} failed: {page}")
            reply_out.send(stanzas.error_reply(stanza, "wait", "internal-server-error"))
            return
        records, size = [], 0
        for record in page.records:
            size += len(record.xml)
            if records and size > FILL_BYTES:
                break
            records.append(record)
        complete = page.complete and len(records) == len(page.records)
        reply_out.send(xep0282.archive_fill_result(stanza, records, complete, with_senders))

    out.store(QueryArchive(room.jid, query, answer))
    return True


def _refuse(room: Room, stanza: Element, out: Outbox, err_type: str, condition: str,
            text: str) -> None:
    stanzas.refuse(out, stanza, err_type, condition, text,
                   what=f"archive query to {room.jid}")


# --- the setting and what the room announces -------------------------------------------


def config_form(room: Room, fields: list[Field]) -> None:
    fields.append({"var": ENABLE, "type": "boolean", "label": "Archive chat on server",
                   "value": room.config.archiving})


def submitted(room: Room, values: roomconfig.Values, new: RoomConfig) -> None:
    value = roomconfig.boolean(values, ENABLE)
    if value is not None:
        new.archiving = value


def disco_features(room: Room, features: list[str]) -> None:
    if room.config.archiving:
        features.extend((xmlns.MAM, xmlns.MAM_EXTENDED))


def destroyed(room: Room, out: Outbox) -> None:
    out.store(DeleteArchive(room.jid))  # as mod_muc_mam: the archive goes with the room


def setup(hooks: Hooks) -> None:
    hooks.add("room-config-form", config_form, priority=61)
    hooks.add("room-config-submitted", submitted, priority=102)
    hooks.add("room-disco-features", disco_features)
    hooks.add("room-iq", handle_iq)
    hooks.add("room-destroyed", destroyed)
    hooks.add("slave-archive-settings", slave_settings)
    hooks.add("slave-archive-fill", fill_slave)
    hooks.add("message-broadcast", on_broadcast, priority=-2)  # after history
