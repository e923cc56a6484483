"""Voice requests in moderated rooms (XEP-0045 §7.13, §8.6), as Prosody's request.lib."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.hooks import Hooks
from dmuc.master.model import Occupant
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room


def request_form(requester: str, nick: str) -> Element:
    return stanzas.form(
        xmlns.MUC_REQUEST,
        [
            {"var": "muc#role", "type": "list-single", "label": "Requested role",
             "value": "participant",
             "options": [(r, r) for r in ("none", "visitor", "participant", "moderator")]},
            {"var": "muc#jid", "type": "jid-single", "label": "User ID", "value": requester},
            {"var": "muc#roomnick", "type": "text-single", "label": "Room nickname",
             "value": nick},
            {"var": "muc#request_allow", "type": "boolean",
             "label": "Grant voice to this person?", "value": False},
        ],
        title="Voice Request",
    )


def on_message(room: Room, stanza: Element, occupant: Occupant | None,
               out: Outbox) -> bool | None:
    """A message to the room carrying a muc#request form (request.lib)."""
    data_form = stanzas.child(stanza, "x", xmlns.DATA_FORMS)
    if data_form is None or stanzas.form_type(data_form) != xmlns.MUC_REQUEST:
        return None
    handle(room, stanza, data_form, occupant, out)
    return True


def handle(room: Room, stanza: Element, data_form: Element, occupant: Occupant | None,
           out: Outbox) -> None:
    if occupant is None:
        stanzas.refuse(out, stanza, "cancel", "not-acceptable",
                       "You are not currently connected to this chat",
                       what=f"voice request to {room.jid}")
        return
    fields = stanzas.parse_form(data_form)
    if occupant.role == "moderator":
        _response(room, stanza, fields, occupant, out)
        return
    if occupant.role != "visitor":
        return  # already has voice
    msg = stanzas.new("message", {"from": room.jid, "type": "normal"})
    msg.addChild(request_form(stanza.getAttribute("from"), occupant.nick))
    out.broadcast(msg, room.sessions_with_role("moderator"))
    out.info(f"{occupant.nick} requested voice in {room.jid}")


def _response(room: Room, stanza: Element, fields: dict[str, list[str]], moderator: Occupant,
              out: Outbox) -> None:
    try:
        allow = stanzas.parse_bool(fields.get("muc#request_allow"))
    except ValueError:
        stanzas.refuse(out, stanza, "modify", "bad-request", "Invalid form",
                       what=f"voice request approval to {room.jid}")
        return
    if not allow:
        return
    # single-valued fields: the first value counts (as Prosody's util.dataforms)
    target = None
    jid = (fields.get("muc#jid") or [None])[0]
    if jid is not None:
        target = room.occupant_by_session(jid)
    nick = (fields.get("muc#roomnick") or [None])[0]
    if target is None and nick is not None:
        target = room.occupants.get(nick)
    if target is None or target.role != "visitor":
        return
    room.set_role(target, "participant", out, reason="Voice granted", actor_nick=moderator.nick,
                  actor_jid=stanza.getAttribute("from"))


def setup(hooks: Hooks) -> None:
    hooks.add("message-to-room", on_message, priority=10)  # after invitations
