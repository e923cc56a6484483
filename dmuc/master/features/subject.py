"""Room subject changes (XEP-0045 §8.1): moderators, or participants when allowed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc.master.model import Occupant
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room


def may_change(room: Room, occupant: Occupant) -> bool:
    if occupant.role == "moderator":
        return True
    return room.config.change_subject and occupant.role == "participant"


def change(room: Room, stanza: Element, occupant: Occupant, out: Outbox) -> None:
    if not may_change(room, occupant):
        out.send(stanzas.error_reply(stanza, "auth", "forbidden",
                                     "You are not allowed to change the subject"))
        return
    room.subject = stanzas.text_of(stanzas.child(stanza, "subject")) or ""
    room.subject_from = occupant.nick
    msg = stanzas.new("message", {"from": room.occupant_jid(occupant.nick), "type": "groupchat",
                                  "id": stanza.getAttribute("id")})
    for el in stanza.elements():
        msg.addChild(stanzas.copy(el))
    room.broadcast_groupchat(msg, out)
    room.save(out)
    out.info(f"{occupant.nick} changed the subject of {room.jid}")
