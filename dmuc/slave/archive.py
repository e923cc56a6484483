"""The room archive at the edge (docs/protocol.md §4.17): a slave keeps its own copy of
each mirrored room's XEP-0313 archive, as the master assigned it (the master's stanza-ids
and stamps, its tombstones after a XEP-0425 retraction, trimmed by the room's retention),
and answers its local occupants' queries from it with the master's own rule
(dmuc.protocol.mam): no round trip, and an answer during a netsplit.

Filled two ways: every broadcast the master sends is archived as the master archived it
(the same rule, dmuc.protocol.mam.archivable, with the room's archiving setting the master
tells); and at each registration (the first, and every netjoin) the slave asks the master
for what its archive has after the newest message the slave has (<archive/> iq, a page at
a time). Until that fill is complete, broadcasts are kept aside (then appended: the
archive's order is the master's) and queries go to the master. Sans-I/O: storage is
reached through the Outbox as on the master (AppendArchive, QueryArchive...)."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.outbox import (
    AppendArchive,
    DeleteArchive,
    ExpireArchive,
    Outbox,
    QueryArchive,
    RetractArchived,
)
from dmuc.protocol import mam, stanzas, visibility, xep0282
from dmuc.protocol.history import moderated_id
from dmuc.records import ArchivePage, ArchiveQuery, ArchiveRecord

if TYPE_CHECKING:
    from dmuc.slave.room import SlaveRoom

FILL_PAGE = 100  # messages a fill page asks for (the master caps its answer's size too)
EXPIRE_EVERY = 3600.0  # seconds between two trims of a room's copy
# Broadcasts kept aside while a fill runs; past this the fill starts over after them.
MAX_ASIDE = 20_000


@dataclass
class ArchiveCopy:
    """A slave's copy of one room's archive: the room's settings as the master told them,
    where the copy stands, and what waits for a fill to end."""

    settings: xep0282.ArchiveSettings = field(
        default_factory=lambda: xep0282.ArchiveSettings(False, 50, None))
    last: str | None = None  # stanza-id of the newest message in the copy
    # the copy equals the master's archive as of the last fill, and every broadcast since
    # was kept in order: queries are answered here
    filled: bool = False
    filling: bool = False  # a fill runs: broadcasts wait in `aside`
    aside: list[ArchiveRecord] = field(default_factory=list, repr=False)
    next_trim: float | None = None

    def to_state(self) -> dict[str, Any]:
        s = self.settings
        return {"archiving": s.archiving, "archive_max": s.max_results,
                "archive_expires": s.expires_after, "archive_last": self.last,
                "archive_filled": self.filled and not self.filling}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ArchiveCopy:
        expires = state.get("archive_expires")
        settings = xep0282.ArchiveSettings(bool(state.get("archiving", False)),
                                           int(state.get("archive_max", 50)),
                                           float(expires) if expires is not None else None)
        return cls(settings, state.get("archive_last"), bool(state.get("archive_filled")))


# --- filling ------------------------------------------------------------------------------


def keep(room: SlaveRoom, message: Element, stamp: float, key: str, out: Outbox) -> None:
    """A groupchat the master broadcast (the copy without XEP-0282's element), archived as
    the master archived it: if the room archives and the rule takes it."""
    copy = room.archive
    if not copy.settings.archiving or not mam.archivable(message, room.jid):
        return
    nick = message.getAttribute("from", "").partition("/")[2]
    record = mam.record_of(message, room.jid, stamp, nick, _sender(room, nick))
    if record is None:
        return
    if copy.filling:
        copy.aside.append(record)
        if len(copy.aside) > MAX_ASIDE:
            copy.aside.clear()  # the fill (from `last`) will bring them all
        return
    out.store(AppendArchive(key, record))
    copy.last = record.sid


def _sender(room: SlaveRoom, nick: str) -> str:
    """The sender's bare JID when the master showed it to us (§4.7), else ''."""
    entry = room.roster.get(nick) if nick else None
    jid = entry.jid if entry is not None else None
    return jid.partition("/")[0] if jid else ""


def retract(room: SlaveRoom, notice: Element, sid: str, stamp: float, key: str,
            out: Outbox) -> None:
    """A moderator retracted `sid` (the room's XEP-0425 announcement `notice`): the copy
    replaces it with the tombstone the master made (same rule, same time)."""
    if not room.archive.settings.archiving:
        return
    retraction = stanzas.child(notice, "retract", xmlns.RETRACT_1)
    moderated = stanzas.child(retraction, "moderated", xmlns.MODERATE_1) \
        if retraction is not None else None
    actor = moderated.getAttribute("by", room.jid) if moderated is not None else room.jid
    reason = stanzas.text_of(stanzas.child(retraction, "reason")) \
        if retraction is not None else None

    def found(page: ArchivePage | Exception, later: Outbox) -> None:
        if isinstance(page, Exception) or not page.records or page.records[0].retracted:
            return  # not here (yet): a fill brings the master's tombstone
        original = stanzas.parse_xml(page.records[0].xml)
        stone = mam.tombstone(room.jid, sid, original, actor, reason, stamp)
        later.store(RetractArchived(key, sid, stone.toXml()))

    out.store(QueryArchive(key, ArchiveQuery(max=1, ids=[sid]), found))


def registered(room: SlaveRoom, settings: xep0282.ArchiveSettings | None) -> None:
    """A registration was answered: the room's settings, and a fill follows the snapshot
    (broadcasts wait until it ends, the copy answers nothing meanwhile). A master that
    names no archive settings (an older one, or without an archive) gets no fill, and
    every query goes to it."""
    copy = room.archive
    copy.filled, copy.filling = False, settings is not None
    if settings is not None:
        copy.settings = settings
    else:
        copy.aside.clear()


def settings_changed(room: SlaveRoom, settings: xep0282.ArchiveSettings | None) -> None:
    if settings is not None:
        room.archive.settings = replace(settings)


def fill_iq(room: SlaveRoom, slave_jid: str, iq_id: str) -> Element:
    return xep0282.archive_fill_iq(slave_jid, room.jid, iq_id, room.archive.last, FILL_PAGE)


def fill_answered(room: SlaveRoom, answer: Element, key: str, out: Outbox) -> bool:
    """A fill page came: stored in order; whether to ask for the next one. An unknown
    `after` (expired at the master meanwhile): the copy starts over from the master's
    oldest. Any other failure leaves the fill to the next registration."""
    copy = room.archive
    if not copy.filling:
        return False
    if answer.getAttribute("type") == "error":
        if stanzas.error_condition(answer) == "item-not-found" and copy.last is not None:
            out.info(f"{room.jid}: the newest archived message we had is gone from the "
                     "master's archive; copying the archive afresh")
            out.store(DeleteArchive(key))
            copy.last = None
            return True
        out.warn(f"{room.jid}: the master refused the archive copy "
                 f"({stanzas.error_condition(answer)}); queries go to the master")
        return False
    parsed = xep0282.parse_archive_fill(answer)
    if parsed is None:
        out.warn(f"{room.jid}: malformed archive page from the master; queries go to it")
        return False
    records, complete = parsed
    for record in records:
        out.store(AppendArchive(key, record))
        _retraction_in(room, record, key, out)
    if records:
        copy.last = records[-1].sid
    if not complete:
        return True
    for record in copy.aside:  # what came meanwhile; the fill's copies of it are kept
        out.store(AppendArchive(key, record))
        copy.last = record.sid
    copy.aside.clear()
    copy.filling, copy.filled = False, True
    out.info(f"{room.jid}: archive copy complete (newest {copy.last})")
    return False


def _retraction_in(room: SlaveRoom, record: ArchiveRecord, key: str, out: Outbox) -> None:
    """A copied announcement of a retraction (missed in a split) applies to the copy too:
    the message it retracts may be one the copy had before."""
    if xmlns.RETRACT_1 not in record.xml:
        return
    notice = stanzas.parse_xml(record.xml)
    sid = moderated_id(notice, room.jid)
    if sid is not None:
        retract(room, notice, sid, record.stamp, key, out)


def trim(room: SlaveRoom, key: str, now: float, out: Outbox) -> None:
    """The room's retention, applied to the copy (every EXPIRE_EVERY seconds)."""
    copy = room.archive
    expires = copy.settings.expires_after
    if expires is None or (copy.next_trim is not None and now < copy.next_trim):
        return
    copy.next_trim = now + EXPIRE_EVERY
    out.store(ExpireArchive(now - expires, key))


# --- answering ---------------------------------------------------------------------------


def answer_query(room: SlaveRoom, stanza: Element, payload: Element, split: bool, key: str,
                 out: Outbox) -> bool:
    """A local user's urn:xmpp:mam:2 query to the room: answered here if the user is in
    the room and the copy is filled; False: it goes to the master (a user who is not in the
    room, a copy being filled, a search by real JID, which the copy may lack). During a
    netsplit (`split`) a page walking forwards never says complete: the newest messages
    are at the master (messages held here are not in the archive: the master has not
    given them their ids yet)."""
    asker = stanza.getAttribute("from", "")
    nick = room.local.get(asker)
    if nick is None or not room.archive.filled:
        return False
    if stanza.getAttribute("type") == "get":
        out.send(mam.form_reply(stanza))
        return True
    sees = visibility.sees_real_jids(room.whois, room.role_of(nick))
    try:
        query = mam.parse_query(payload, mam.Asker(room.jid, room.archive.settings.max_results,
                                                   sees))
    except mam.QueryRefused as refused:
        stanzas.refuse(out, stanza, refused.err_type, refused.condition, refused.text,
                       what=f"archive query to {room.jid}")
        return True
    if query.sender is not None:
        return False
    whois, forwards = room.whois, query.before is None and not query.last

    def answer(page: ArchivePage | Exception, later: Outbox) -> None:
        if split and forwards and isinstance(page, ArchivePage):
            page = ArchivePage(page.records, page.count, False)
        mam.answer(stanza, payload, room.jid, whois, page, later)

    out.store(QueryArchive(key, query, answer))
    return True
