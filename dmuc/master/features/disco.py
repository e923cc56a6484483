"""Service discovery of rooms (XEP-0045 §6.3-§6.5, §7.10 reserved nick node)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.hooks import Hooks
from dmuc.master.features.roomconfig import Field
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room

RESERVED_NICK_NODE = "x-roomuser-item"


def features(room: Room) -> list[str]:
    """The room's disco#info features: the protocols here, then each setting's own
    (the room public or hidden, and the like) from its `room-disco-features` handler."""
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
    ]
    room.service.hooks.fire("room-disco-features", room=room, features=found)
    return sorted(set(found))


def info_form(room: Room) -> Element:
    """The muc#roominfo form: each field from a `room-disco-info` handler, in the order of
    their priorities."""
    fields: list[Field] = []
    room.service.hooks.fire("room-disco-info", room=room, fields=fields)
    return stanzas.form(xmlns.MUC_ROOMINFO, fields, kind="result")


def info_occupants(room: Room, fields: list[Field]) -> None:
    fields.append({"var": "muc#roominfo_occupants", "type": "text-single",
                   "label": "Number of occupants", "value": str(len(room.occupants))})


def setup(hooks: Hooks) -> None:
    hooks.add("room-disco-info", info_occupants, priority=90)


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
    identity.attributes.update({"category": "conference", "type": "text"})
    if room.config.name:  # as name.lib: no name when the room has none
        identity["name"] = room.config.name
    for var in features(room):
        reply.addElement("feature")["var"] = var
    reply.addChild(info_form(room))
    out.send(stanzas.iq_result(stanza, reply))


def room_items(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    """No items, to anyone, as mod_muc 0.12.3's get_disco_items (XEP-0045 §6.5 lets a
    room list its occupants; mod_muc never does, so no one learns the nicks of a room
    from outside)."""
    if stanza.getAttribute("type") != "get":
        out.send(stanzas.error_reply(stanza, "cancel", "bad-request"))
        return
    reply = stanzas.query(xmlns.DISCO_ITEMS, {"node": payload.getAttribute("node")})
    out.send(stanzas.iq_result(stanza, reply))
