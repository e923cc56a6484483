"""XEP-0425 message moderation, as prosody-modules' mod_muc_moderation: a moderator
retracts an occupant's groupchat message by its stanza-id. Both forms the clients of
2023-2025 send are understood: v0.2 (`<apply-to xmlns='urn:xmpp:fasten:0'>` around
`<moderate xmlns='urn:xmpp:message-moderate:0'>`) and v0.3+ (`<moderate
xmlns='urn:xmpp:message-moderate:1'>` with `<retract xmlns='urn:xmpp:message-retract:1'/>`).

The room then broadcasts one announcement carrying both forms (XEP-0424 retract:1 and the
fastened retract:0), replaces the archived message with a tombstone, and drops it from the
history joiners get. Slaves get the announcement like any broadcast and drop the message
from their own history (dmuc.slave.fanout); a slave split meanwhile gets the history
without it in its netjoin snapshot, and the announcement among the missed messages."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.hooks import Hooks
from dmuc.master.features import history, mam
from dmuc.master.features import occupant_id as occupant_ids
from dmuc.outbox import Outbox, QueryArchive, RetractArchived
from dmuc.protocol import mam as archive_rule
from dmuc.protocol import occupant_id, stanzas
from dmuc.protocol.history import entry_for, stanza_id
from dmuc.records import ArchivePage, ArchiveQuery

if TYPE_CHECKING:
    from dmuc.master.room import Room


def handle_iq(room: Room, stanza: Element, payload: Element, out: Outbox) -> bool | None:
    """A `room-iq` handler for both request forms."""
    if payload.uri == xmlns.FASTEN and payload.name == "apply-to":
        moderate = stanzas.child(payload, "moderate", xmlns.MODERATE_0)
        if moderate is None:
            return None  # another kind of fastening: not ours
        retract = stanzas.child(moderate, "retract", xmlns.RETRACT_0)
    elif payload.uri == xmlns.MODERATE_1 and payload.name == "moderate":
        moderate = payload
        retract = stanzas.child(moderate, "retract", xmlns.RETRACT_1)
    else:
        return None
    sid = payload.getAttribute("id")
    if stanza.getAttribute("type") != "set" or retract is None or not sid:
        _refuse(room, stanza, out, "modify", "bad-request",
                "A moderation is a set with the stanza-id and <retract/>")
        return True
    actor = stanza.getAttribute("from")
    occupant = room.occupant_by_session(actor)
    role = occupant.role if occupant is not None else room.default_role(
        room.affiliation(jids.bare(actor)))
    if role != "moderator":
        _refuse(room, stanza, out, "auth", "forbidden",
                "You need a role of at least 'moderator'")
        return True
    if occupant is not None:
        actor_nick = room.occupant_jid(occupant.nick)
    else:
        reserved = room.reserved_nicks.get(jids.bare(actor))
        actor_nick = room.occupant_jid(reserved) if reserved else room.jid
    reason = stanzas.text_of(stanzas.child(moderate, "reason"))
    kept = room.service.hooks.fire("recent-message", room=room, sid=sid)
    if kept is not None:
        retract_message(room, stanza, sid, kept.stanza, actor_nick, reason, out)
        return True
    if not room.config.archiving:
        _not_found(room, stanza, out)
        return True

    def found(page: ArchivePage | Exception, later: Outbox) -> None:
        if isinstance(page, Exception) or not page.records:
            if isinstance(page, Exception):
                later.warn(f"moderation in {room.jid}: archive read failed: {page}")
            _not_found(room, stanza, later)
            return
        original = stanzas.parse_xml(page.records[0].xml)
        retract_message(room, stanza, sid, original, actor_nick, reason, later)

    out.store(QueryArchive(room.jid, ArchiveQuery(max=1, ids=[sid]), found))
    return True


def retract_message(room: Room, request: Element, sid: str, original: Element,
                    actor_nick: str, reason: str | None, out: Outbox) -> None:
    """Tombstone in the archive, gone from history, announced to the room, answered."""
    if room.destroyed:
        _not_found(room, request, out)
        return
    if room.config.archiving:
        out.store(RetractArchived(room.jid, sid, archive_rule.tombstone(
            room.jid, sid, original, actor_nick, reason, out.now).toXml()))
    history.retract(room, sid, out)
    moderator_id = occupant_ids.compute(jids.bare(request.getAttribute("from")),
                                        occupant_ids.room_salt(room))
    notice = announcement(room.jid, sid, actor_nick, reason, moderator_id)
    room.broadcast_groupchat(notice, out)
    mam.archive(room, notice, None, out)  # a client syncing its archive learns of it
    room.service.hooks.fire("message-kept", room=room, entry=entry_for(notice, out.now),
                            sid=stanza_id(notice, room.jid))
    out.send(stanzas.iq_result(request))
    because = f" ({stanzas.one_line(reason, 100)})" if reason else ""
    out.info(f"{request.getAttribute('from')} retracted message {sid} in {room.jid}{because}")


def announcement(room_jid: str, sid: str, actor_nick: str, reason: str | None,
                 moderator_id: str | None = None) -> Element:
    """The broadcast: XEP-0424 <retract id/> with <moderated/> (v0.3+, with the moderator's
    XEP-0421 occupant-id), and the v0.2 form fastened to the message, as
    mod_muc_moderation sends both; a stanza-id of its own."""
    message = stanzas.new("message", {"from": room_jid, "type": "groupchat",
                                      "id": uuid.uuid4().hex})
    retract = message.addElement((xmlns.RETRACT_1, "retract"))
    retract["id"] = sid
    by = retract.addElement((xmlns.MODERATE_1, "moderated"))
    by["by"] = actor_nick
    occupant_id.place(by, moderator_id)
    if reason:
        retract.addElement("reason", content=reason)
    apply_to = message.addElement((xmlns.FASTEN, "apply-to"))
    apply_to["id"] = sid
    moderated = apply_to.addElement((xmlns.MODERATE_0, "moderated"))
    moderated["by"] = actor_nick
    moderated.addElement((xmlns.RETRACT_0, "retract"))
    if reason:
        moderated.addElement("reason", content=reason)
    own = message.addElement((xmlns.STANZA_ID, "stanza-id"))
    own["id"] = str(uuid.uuid4())
    own["by"] = room_jid
    return message


def _not_found(room: Room, stanza: Element, out: Outbox) -> None:
    _refuse(room, stanza, out, "modify", "item-not-found", "No message with that stanza-id")


def _refuse(room: Room, stanza: Element, out: Outbox, err_type: str, condition: str,
            text: str) -> None:
    stanzas.refuse(out, stanza, err_type, condition, text, what=f"moderation in {room.jid}")


def disco_features(room: Room, features: list[str]) -> None:
    features.extend((xmlns.MODERATE_0, xmlns.MODERATE_1))


def setup(hooks: Hooks) -> None:
    hooks.add("room-iq", handle_iq)
    hooks.add("room-disco-features", disco_features)
