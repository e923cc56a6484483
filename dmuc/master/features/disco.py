"""Service discovery of rooms (XEP-0045 §6.3-§6.5, §7.10 reserved nick node)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.hooks import Hooks
from dmuc.master.features.roomconfig import Field
from dmuc.master.model import BROADCAST_ROLES
from dmuc.outbox import Outbox
from dmuc.protocol import roominfo, stanzas

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
    fields.append({"var": roominfo.OCCUPANTS_FIELD, "type": "text-single",
                   "label": "Number of occupants", "value": str(len(room.occupants))})


def setup(hooks: Hooks) -> None:
    hooks.add("room-disco-info", info_occupants, priority=90)
    hooks.add("slave-room-mirror", slave_mirror)


def info_query(room: Room) -> Element:
    """The room's disco#info query (no node), as every asker gets it (mod_muc 0.12.3's
    get_disco_info depends on nobody's affiliation): the one a slave answers from."""
    reply = stanzas.query(xmlns.DISCO_INFO)
    identity = reply.addElement("identity")
    identity.attributes.update({"category": "conference", "type": "text"})
    if room.config.name:  # as name.lib: no name when the room has none
        identity["name"] = room.config.name
    for var in features(room):
        reply.addElement("feature")["var"] = var
    reply.addChild(info_form(room))
    return reply


def room_info(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    if stanza.getAttribute("type") != "get":
        out.send(stanzas.error_reply(stanza, "cancel", "bad-request"))
        return
    node = payload.getAttribute("node")
    if node is None:
        out.send(roominfo.info_answer(stanza, info_query(room), len(room.occupants)))
        return
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
    reply = info_query(room)
    reply["node"] = node
    out.send(roominfo.info_answer(stanza, reply, len(room.occupants)))


def slave_mirror(room: Room, settings: Element, **_: object) -> None:
    """§4.18: the disco#info query a slave answers its users from, when its roster counts
    every occupant (every role's presence is broadcast); else it asks the master."""
    if set(BROADCAST_ROLES) <= set(room.config.presence_broadcast):
        settings.addElement("info").addChild(info_query(room))


def room_items(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    """Occupants of a public room, or of any room to its own occupants (XEP-0045 §6.5;
    mod_muc 0.12.3 lists none: docs/mod_muc-parity.md says why ours does)."""
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
