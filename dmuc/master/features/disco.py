"""Service discovery of rooms (XEP-0045 §6.3-§6.5, §7.10 reserved nick node)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room

RESERVED_NICK_NODE = "x-roomuser-item"


def features(room: Room) -> list[str]:
    c = room.config
    found = [
        xmlns.MUC,
        xmlns.MUC_STABLE_ID,
        xmlns.MUC_SELF_PING,
        xmlns.MUC_REQUEST,
        xmlns.REGISTER,
        xmlns.STANZA_ID,
        xmlns.DISCO_INFO,
        xmlns.DISCO_ITEMS,
        xmlns.PING,
        "muc_public" if c.public else "muc_hidden",
        "muc_persistent" if c.persistent else "muc_temporary",
        "muc_membersonly" if c.members_only else "muc_open",
        "muc_moderated" if c.moderated else "muc_unmoderated",
        "muc_nonanonymous" if c.whois == "anyone" else "muc_semianonymous",
        "muc_passwordprotected" if c.password else "muc_unsecured",
    ]
    room.service.hooks.fire("room-disco-features", room=room, features=found)
    return sorted(set(found))


def info_form(room: Room) -> Element:
    c = room.config
    fields = [
        {"var": "muc#roominfo_description", "label": "Description", "value": c.description},
        {"var": "muc#roominfo_occupants", "label": "Number of occupants",
         "value": str(len(room.occupants))},
        {"var": "muc#roomconfig_roomname", "label": "Title", "value": c.name},
        {"var": "muc#roominfo_subject", "label": "Subject", "value": room.subject},
        {"var": "muc#roominfo_subjectmod", "type": "boolean",
         "label": "Allow anyone to set the room's subject", "value": c.change_subject},
        {"var": "muc#roomconfig_changesubject", "type": "boolean",
         "label": "Allow anyone to set the room's subject", "value": c.change_subject},
        {"var": "muc#maxhistoryfetch", "label": "Maximum number of history messages returned",
         "value": str(c.history_length)},
        {"var": "muc#roomconfig_allowinvites", "type": "boolean",
         "label": "Allow members to invite new members", "value": c.allow_member_invites},
        {"var": "muc#roomconfig_allowpm", "type": "list-single",
         "label": "Allow private messages from", "value": c.allow_pm},
    ]
    if c.language:
        fields.append({"var": "muc#roominfo_lang", "label": "Language", "value": c.language})
    return stanzas.form(xmlns.MUC_ROOMINFO, fields, kind="result")


def room_info(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    if stanza.getAttribute("type") != "get":
        out.send(stanzas.error_reply(stanza, "cancel", "bad-request"))
        return
    node = payload.getAttribute("node")
    reply = stanzas.query(xmlns.DISCO_INFO, {"node": node})
    if node == RESERVED_NICK_NODE:
        nick = room.reserved_nicks.get(jids.bare(stanza.getAttribute("from")))
        if nick:
            identity = reply.addElement("identity")
            identity.attributes.update({"category": "conference", "type": "text", "name": nick})
        out.send(stanzas.iq_result(stanza, reply))
        return
    if node:
        out.send(stanzas.error_reply(stanza, "cancel", "item-not-found"))
        return
    identity = reply.addElement("identity")
    identity.attributes.update(
        {"category": "conference", "type": "text", "name": room.config.name or jids.bare(
            room.jid).split("@")[0]}
    )
    for var in features(room):
        reply.addElement("feature")["var"] = var
    reply.addChild(info_form(room))
    out.send(stanzas.iq_result(stanza, reply))


def room_items(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    """Occupants of a public room, or of any room to its own occupants (XEP-0045 §6.5)."""
    if stanza.getAttribute("type") != "get":
        out.send(stanzas.error_reply(stanza, "cancel", "bad-request"))
        return
    reply = stanzas.query(xmlns.DISCO_ITEMS, {"node": payload.getAttribute("node")})
    asker = stanza.getAttribute("from")
    if room.config.public or room.occupant_by_session(asker) is not None:
        for nick in room.occupants:
            item = reply.addElement("item")
            item["jid"] = room.occupant_jid(nick)
            item["name"] = nick
    out.send(stanzas.iq_result(stanza, reply))
