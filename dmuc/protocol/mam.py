"""The room archive's query rule (XEP-0313 MAM on the room JID), written once for the
master and for a slave that answers its own users from its copy of the archive: the search
form, how a query (its form's start / end / with / before-id / after-id / ids and its RSM
max / after / before / flip-page) becomes an ArchiveQuery, what a result message and the
<fin/> look like, and what is archived of a broadcast (the record and, after a XEP-0425
moderation, the tombstone). Who may query and where the page comes from are the caller's:
features/mam.py on the master, slave/archive.py on a slave (docs/protocol.md §4.17)."""

from __future__ import annotations

from dataclasses import dataclass

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.errors import ArchiveIdNotFound
from dmuc.outbox import Outbox
from dmuc.protocol import occupant_id, stanzas, xep0282
from dmuc.protocol.history import is_historic, moderated_id, stanza_id
from dmuc.records import ArchivePage, ArchiveQuery, ArchiveRecord

DEFAULT_MAX = 20  # messages a page when the query does not say (as mod_muc_mam)
# The largest RSM max we parse before capping it at the service's archive_max_results.
_MAX_PARSED = 10**9


class QueryRefused(Exception):
    def __init__(self, err_type: str, condition: str, text: str) -> None:
        super().__init__(text)
        self.err_type, self.condition, self.text = err_type, condition, text


@dataclass(frozen=True)
class Asker:
    """What the answering side knows of the room and of who asks: enough to parse."""

    room_jid: str
    max_results: int  # the service's archive_max_results
    sees_real_jids: bool  # may search by real JID ('with' a bare JID)


# --- what is archived -------------------------------------------------------------------


def archivable(message: Element, room_jid: str) -> bool:
    """Whether the room archives a groupchat it broadcast (with archiving on): what
    muc-message-is-historic accepts, and the room's own XEP-0425 announcements (a client
    syncing its archive learns of the retraction), if it has a stanza-id."""
    historic = is_historic(message) or moderated_id(message, room_jid) is not None
    return historic and stanza_id(message, room_jid) is not None


def record_of(message: Element, room_jid: str, stamp: float, nick: str,
              sender: str) -> ArchiveRecord | None:
    """The archive's record of a broadcast groupchat (as broadcast, with the id its
    sender gave it, without 'to', the room's delay or XEP-0282's element); None without a
    stanza-id of the room's."""
    sid = stanza_id(message, room_jid)
    if sid is None:
        return None
    stored = stanzas.copy(xep0282.for_users(message))
    # as the room built it: from, type, id (not the 'to' of a copy, nor the xml:lang a
    # server put on it on the way)
    stored.attributes = {k: v for k, v in stored.attributes.items()
                         if k in ("from", "type", "id")}
    stored.children = [c for c in stored.children if not (
        isinstance(c, Element) and c.uri in (xmlns.DELAY, xmlns.DMUC))]
    return ArchiveRecord(sid=sid, stamp=stamp, nick=nick, sender=sender, xml=stored.toXml())


def tombstone(room_jid: str, sid: str, original: Element, actor_nick: str,
              reason: str | None, now: float) -> Element:
    """What the archive keeps instead of a retracted message: its sender, id and
    stanza-id, without its content, marked retracted in both forms (XEP-0425 v0.2, v0.3).
    The id is the one its sender gave it, never a slave's handle on it (for_users)."""
    original = xep0282.for_users(original)
    stone = stanzas.new("message", {"from": original.getAttribute("from"),
                                    "type": "groupchat", "id": original.getAttribute("id")})
    stamp = stanzas.format_stamp(now)
    retracted = stone.addElement((xmlns.RETRACT_1, "retracted"))
    retracted["stamp"] = stamp
    retracted.addElement((xmlns.MODERATE_1, "moderated"))["by"] = actor_nick
    if reason:
        retracted.addElement("reason", content=reason)
    moderated = stone.addElement((xmlns.MODERATE_0, "moderated"))
    moderated["by"] = actor_nick
    moderated.addElement((xmlns.RETRACT_0, "retracted"))["stamp"] = stamp
    if reason:
        moderated.addElement("reason", content=reason)
    own = stone.addElement((xmlns.STANZA_ID, "stanza-id"))
    own["id"] = sid
    own["by"] = room_jid
    occupant_id.place(stone, occupant_id.of(original), own)  # whose message it was
    return stone


# --- queries -----------------------------------------------------------------------------


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


def form_reply(stanza: Element) -> Element:
    reply = Element((xmlns.MAM, "query"))
    reply.addChild(query_form())
    return stanzas.iq_result(stanza, reply)


def parse_query(payload: Element, asker: Asker) -> ArchiveQuery:
    """The query's form and RSM set as an ArchiveQuery; QueryRefused when malformed."""
    limit = asker.max_results
    query = ArchiveQuery(max=min(DEFAULT_MAX, limit))
    x = stanzas.child(payload, "x", xmlns.DATA_FORMS)
    if x is not None:
        _parse_form(x, query, asker)
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


def _parse_form(x: Element, query: ArchiveQuery, asker: Asker) -> None:
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
        if len(query.ids) > asker.max_results:
            raise QueryRefused("modify", "policy-violation",
                               f"At most {asker.max_results} ids in one query")
    with_jid = _text(values, "with")
    if with_jid is not None:
        _filter_with(query, with_jid, asker)


def _text(values: dict[str, list[str]], var: str) -> str | None:
    got = values.get(var)
    value = got[0] if got else None
    return value.strip() or None if value is not None else None


def _stamp(values: dict[str, list[str]], var: str) -> float | None:
    text = _text(values, var)
    if text is None:
        return None
    stamp = stanzas.parse_stamp(text)
    if stamp is None:
        raise QueryRefused("modify", "bad-request", "Invalid timestamp")
    return stamp


def _filter_with(query: ArchiveQuery, value: str, asker: Asker) -> None:
    """'with' in a room's archive: an occupant JID (room/nick) filters by nickname, the
    room's own JID by what the room itself said, a real JID by the sender's bare JID,
    which only someone who may see real JIDs may ask (or the nicknames leak them)."""
    parsed = jids.parse(value)
    if parsed is None:
        raise QueryRefused("modify", "bad-request", "'with' is not a JID")
    if parsed.userhost() == asker.room_jid:
        query.nick = parsed.resource or ""
        return
    if not asker.sees_real_jids:
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


def answer(stanza: Element, payload: Element, room_jid: str, whois: str,
           page: ArchivePage | Exception, out: Outbox) -> None:
    """The answer to a query once its page is read: the result messages (newest first
    with <flip-page/>), then the iq result with <fin/>; an unknown id is item-not-found,
    a failed read internal-server-error."""
    if isinstance(page, ArchiveIdNotFound):
        stanzas.refuse(out, stanza, "cancel", "item-not-found",
                       "No message with that id in the archive",
                       what=f"archive query to {room_jid}")
        return
    if isinstance(page, Exception):
        out.warn(f"archive query of {room_jid} failed: {page}")
        out.send(stanzas.error_reply(stanza, "wait", "internal-server-error"))
        return
    asker, queryid = stanza.getAttribute("from"), payload.getAttribute("queryid")
    results = [result_message(room_jid, asker, queryid, record, whois)
               for record in page.records]
    flip = stanzas.child(payload, "flip-page") is not None
    for message in reversed(results) if flip else results:
        out.send(message)
    out.send(stanzas.iq_result(stanza, fin(page)))
