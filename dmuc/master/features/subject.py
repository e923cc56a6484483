"""Room subject changes (XEP-0045 §8.1): moderators, or participants when allowed; that
setting (its form field and its muc#roominfo field), as Prosody's subject.lib."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.features.roomconfig import Field
from dmuc.master.model import Occupant
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room

CHANGE_SUBJECT = "muc#roomconfig_changesubject"
LABEL = "Allow anyone to set the room's subject"


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
    room.subject_time = out.now
    msg = stanzas.new("message", {"from": room.occupant_jid(occupant.nick), "type": "groupchat",
                                  "id": stanza.getAttribute("id")})
    for el in stanza.elements():
        msg.addChild(stanzas.copy(el))
    room.broadcast_groupchat(msg, out)
    room.save(out)
    out.info(f"{occupant.nick} changed the subject of {room.jid}")


def on_groupchat(room: Room, occupant: Occupant, stanza: Element, out: Outbox) -> bool | None:
    """A groupchat with a subject and no body changes the subject (subject.lib's
    muc-occupant-groupchat)."""
    if stanzas.child(stanza, "subject") is None or stanzas.child(stanza, "body") is not None:
        return None
    change(room, stanza, occupant, out)
    return True


def send_on_join(room: Room, session: str, out: Outbox) -> None:
    """The subject goes to a new session after the history (subject.lib's
    muc-occupant-session-new)."""
    out.send(room.subject_stanza(session))


def info(room: Room, fields: list[Field]) -> None:
    """As subject.lib 0.12.3: whether anyone may set it, never the subject itself (a
    stranger asking a hidden or members-only room must not read it)."""
    field: Field = {"var": CHANGE_SUBJECT, "type": "boolean"}
    if room.config.change_subject:  # as 0.12.3: no value at all when not allowed
        field["value"] = True
    fields.append(field)


def setup(hooks: Hooks) -> None:
    # Checked with the other booleans, before the password (the order of submission).
    roomconfig.hook_boolean(hooks, CHANGE_SUBJECT, "change_subject", LABEL, priority=79,
                            submit_priority=105)
    hooks.add("room-disco-info", info, priority=70)
    hooks.add("occupant-groupchat", on_groupchat, priority=20)
    hooks.add("occupant-session-new",
              lambda room, session, out, **_: send_on_join(room, session, out), priority=20)
