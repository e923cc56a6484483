"""Dispatch of IQs addressed to a room's bare JID to the feature that owns the namespace."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.master.features import admin, disco, owner, register
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room

RoomIQHandler = Callable[["Room", Element, Element, Outbox], None]


def _ping(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    if stanza.getAttribute("type") != "get":
        out.send(stanzas.error_reply(stanza, "cancel", "bad-request"))
        return
    out.send(stanzas.iq_result(stanza))


HANDLERS: dict[str, RoomIQHandler] = {
    xmlns.DISCO_INFO: disco.room_info,
    xmlns.DISCO_ITEMS: disco.room_items,
    xmlns.MUC_ADMIN: admin.handle,
    xmlns.MUC_OWNER: owner.handle,
    xmlns.REGISTER: register.handle,
    xmlns.PING: _ping,
}


def handle_room_iq(room: Room, stanza: Element, out: Outbox) -> None:
    itype = stanza.getAttribute("type")
    if itype not in ("get", "set"):
        return  # results and errors addressed to the room itself end here
    payload = next(stanza.elements(), None)
    if payload is None:
        out.send(stanzas.error_reply(stanza, "modify", "bad-request"))
        return
    if room.service.hooks.fire("room-iq", room=room, stanza=stanza, payload=payload, out=out):
        return
    handler = HANDLERS.get(payload.uri)
    if handler is None:
        out.send(stanzas.error_reply(stanza, "cancel", "service-unavailable"))
        return
    handler(room, stanza, payload, out)
