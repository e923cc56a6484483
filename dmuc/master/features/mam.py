"""The room's own archive (XEP-0313 MAM on the room JID), as Prosody 0.12's mod_muc_mam:
every historic groupchat message the room broadcasts (a body, a marker, not a chat state
nor what XEP-0334 hints keep out) is archived (when the room's archiving setting is on)
under the XEP-0359 stanza-id the room gave it; a query (RSM max / after / before, the
form's start / end / with / before-id / after-id / ids) is a storage read the shell runs
(Outbox QueryArchive) and whose page it hands back here to answer; archived messages
expire after the service's retention (a periodic ExpireArchive from the timers).

Users behind a slave query the same room JID: the slave forwards the query unchanged
(§4.8) and the master answers them directly, so they get the same archive with the same
stanza-ids (docs/protocol.md, "The room archive")."""

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
from dmuc.protocol import stanzas, visibility, xep0282
from dmuc.protocol.history import is_historic, stanza_id
from dmuc.records import ArchivePage, ArchiveQuery, ArchiveRecord

if TYPE_CHECKING:
    from dmuc.master.room import Room
    from dmuc.master.service import ServiceSettings

ENABLE = "muc#roomconfig_enablearchiving"
DEFAULT_MAX = 20  # messages a page when the query does not say (as mod_muc_mam)
# The largest RSM max we parse before capping it at the service's archive_max_results.
_MAX_PARSED = 10**9


class QueryRefused(Exception):
    def __init__(self, err_type: str, condition: str, text: str) -> None:
        super().__init__(text)
        self.err_type, self.condition, self.text = err_type, condition, text


# --- archiving -----------------------------------------------------------------------


def archive(room: Room, message: Element, occupant: Occupant | None, out: Outbox,
            stamp: float | None = None) -> None:
    """Archive a groupchat message the room broadcast (as broadcast, without 'to' and
    without a delay: the archive's own stamp is when it was said), one the caller found
    historic (dmuc.protocol.history.is_historic, as mod_muc_mam archives only what
    muc-message-is-historic accepts). `occupant`: its sender, None for the room itself."""
    if not room.config.archiving:
        return
    sid = stanza_id(message, room.jid)
    if sid is None:
        return
    stored = stanzas.copy(xep0282.for_users(message))  # the id its sender gave it
    stored.attributes.pop("to", None)
    out.store(AppendArchive(room.jid, ArchiveRecord(
        sid=sid, stamp=out.now if stamp is None else stamp,
        nick=occupant.nick if occupant is not None else "",
        sender=occupant.bare_jid if occupant is not None else "",
        xml=stored.toXml())))


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


# --- queries -------------------------------------------------------------------------


def query_form() -> Element:
    """The search form a client gets for an iq get (XEP-0313 §5)."""
    return stanzas.form(xmlns.MAM, [
        {"var": "with", "type": "jid-single"},
        {"var": "start", "type": "text-single"},
        {"var": "end", "type": "text-single"},
        {"var": "before-id", "type": "text-single"},
        {"var": "after-id", "type": "text-single"},
        {"var": "ids", "type": "list-multi"},
    ])


def handle_iq(room: Room, stanza: Element, payload: Element, out: Outbox) -> bool | None:
    """A `room-iq` handler: urn:xmpp:mam:2 <query/> to the room."""
    if payload.uri != xmlns.MAM or payload.name != "query":
        return None
    if stanza.getAttribute("type") == "get":
        reply = Element((xmlns.MAM, "query"))
        reply.addChild(query_form())
        out.send(stanzas.iq_result(stanza, reply))
        return True
    asker = stanza.getAttribute("from")
    affiliation = room.affiliation(jids.bare(asker))
    if affiliation == "outcast" or (room.config.members_only and affiliation == "none"):
        _refuse(room, stanza, out, "auth", "forbidden",
                "You are not allowed to read this room's archive")
        return True
    try:
        query = parse_query(room, payload, asker)
    except QueryRefused as refused:
        _refuse(room, stanza, out, refused.err_type, refused.condition, refused.text)
        return True
    queryid = payload.getAttribute("queryid")
    flip = stanzas.child(payload, "flip-page") is not None
    whois = room.config.whois

    def answer(page: ArchivePage | Exception, reply_out: Outbox) -> None:
        if isinstance(page, ArchiveIdNotFound):
            _refuse(room, stanza, reply_out, "cancel", "item-not-found",
                    "No message with that id in the archive")
            return
        if isinstance(page, Exception):
            reply_out.warn(f"archive query of {room.jid} failed: {page}")
            reply_out.send(stanzas.error_reply(stanza, "wait", "internal-server-error"))
            return
        results = [result_message(room.jid, asker, queryid, record, whois)
                   for record in page.records]
        for message in reversed(results) if flip else results:
            reply_out.send(message)
        reply_out.send(stanzas.iq_result(stanza, fin(page)))

    out.store(QueryArchive(room.jid, query, answer))
    return True


def parse_query(room: Room, payload: Element, asker: str) -> ArchiveQuery:
    """The query's form and RSM set as an ArchiveQuery; QueryRefused when malformed."""
    limit = room.service.settings.archive_max_results
    query = ArchiveQuery(max=min(DEFAULT_MAX, limit))
    x = stanzas.child(payload, "x", xmlns.DATA_FORMS)
    if x is not None:
        if stanzas.form_type(x) != xmlns.MAM:
            raise QueryRefused("modify", "bad-request",
                               f"Unexpected FORM_TYPE, expected '{xmlns.MAM}'")
        values = stanzas.parse_form(x)
        query.start = _stamp(values, "start")
        query.end = _stamp(values, "end")
        query.before = _text(values, "before-id")
        query.after = _text(values, "after-id")
        if "ids" in values:
            query.ids = [v for v in values["ids"] if v]
            if len(query.ids) > limit:
                raise QueryRefused("modify", "policy-violation",
                                   f"At most {limit} ids in one query")
        with_jid = _text(values, "with")
        if with_jid is not None:
            _filter_with(room, query, with_jid, asker)
    rsm = stanzas.child(payload, "set", xmlns.RSM)
    if rsm is not None:
        max_el = stanzas.child(rsm, "max")
        if max_el is not None:
            value = stanzas.parse_bounded_int(str(max_el).strip(), 0, _MAX_PARSED)
            if value is None:
                raise QueryRefused("modify", "bad-request", "RSM max must be a number")
            query.max = min(value, limit)
        after = stanzas.child(rsm, "after")
        if after is not None and str(after):
            query.after = str(after)
        before = stanzas.child(rsm, "before")
        if before is not None:
            if str(before):
                query.before = str(before)
            else:
                query.last = True  # an empty <before/>: the last page
    return query


def _text(values: roomconfig.Values, var: str) -> str | None:
    value = roomconfig.text(values, var)
    return value.strip() or None if value is not None else None


def _stamp(values: roomconfig.Values, var: str) -> float | None:
    text = _text(values, var)
    if text is None:
        return None
    stamp = stanzas.parse_stamp(text)
    if stamp is None:
        raise QueryRefused("modify", "bad-request", "Invalid timestamp")
    return stamp


def _filter_with(room: Room, query: ArchiveQuery, value: str, asker: str) -> None:
    """'with' in a room's archive: an occupant JID (room/nick) filters by nickname, the
    room's own JID by what the room itself said, a real JID by the sender's bare JID,
    which only someone who may see real JIDs may ask (or the nicknames leak them)."""
    parsed = jids.parse(value)
    if parsed is None:
        raise QueryRefused("modify", "bad-request", "'with' is not a JID")
    if parsed.userhost() == room.jid:
        query.nick = parsed.resource or ""
        return
    if not visibility.sees_real_jids(room.config.whois, room.role_of_session(asker)):
        raise QueryRefused("auth", "forbidden",
                           "Only moderators may search this room's archive by real JID")
    query.sender = parsed.userhost()


def result_message(room_jid: str, to: str, queryid: str | None, record: ArchiveRecord,
                   whois: str) -> Element:
    """One archived message as a MAM result (XEP-0313 §4.2): forwarded with the time it
    was said; in a non-anonymous room with the sender's real JID, as mod_muc_mam."""
    message = stanzas.new("message", {"from": room_jid, "to": to})
    result = message.addElement((xmlns.MAM, "result"))
    if queryid is not None:
        result["queryid"] = queryid
    result["id"] = record.sid
    forwarded = result.addElement((xmlns.FORWARD, "forwarded"))
    delay = forwarded.addElement((xmlns.DELAY, "delay"))
    delay["stamp"] = stanzas.format_stamp(record.stamp)
    archived = stanzas.parse_xml(record.xml)
    archived.attributes.pop("to", None)
    archived.children = [c for c in archived.children if not (
        isinstance(c, Element) and c.uri == xmlns.MUC_USER and c.name == "x")]
    if whois == "anyone" and record.sender:
        x = archived.addElement((xmlns.MUC_USER, "x"))
        x.addElement("item")["jid"] = record.sender
    forwarded.addChild(_in_client_namespace(archived))
    return message


def _in_client_namespace(message: Element) -> Element:
    """The forwarded message says its namespace (jabber:client), as XEP-0297 requires; so
    do its children that had none (a stanza's own namespace is implied on the wire)."""
    pending = [message]
    while pending:
        el = pending.pop()
        if not el.uri:
            el.uri = xmlns.CLIENT
            el.defaultUri = xmlns.CLIENT
        pending.extend(el.elements())
    return message


def fin(page: ArchivePage) -> Element:
    """<fin/> with complete='true' when the page reaches the end, and the RSM set."""
    el = Element((xmlns.MAM, "fin"))
    if page.complete:
        el["complete"] = "true"
    rsm = el.addElement((xmlns.RSM, "set"))
    if page.records:
        rsm.addElement("first", content=page.records[0].sid)["index"] = "0"
        rsm.addElement("last", content=page.records[-1].sid)
    rsm.addElement("count", content=str(page.count))
    return el


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
    hooks.add("message-broadcast", on_broadcast, priority=-2)  # after history
