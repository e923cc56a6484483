"""Mediated invitations and declines (XEP-0045 §7.8.2, §7.8.3), and the setting that lets
members invite to a members-only room (its form and muc#roominfo fields)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.features.roomconfig import Field
from dmuc.master.model import AFFILIATION_RANK, ROLE_RANK, Occupant, RoomConfig
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room

ALLOW_INVITES = "muc#roomconfig_allowinvites"
LABEL = "Allow members to invite new members"
# mod_muc's own name for the setting, in muc#roominfo next to the XEP's allowinvites
PROSODY_ALLOW_MEMBER_INVITES = "{http://prosody.im/protocol/muc}roomconfig_allowmemberinvites"


def on_message(room: Room, stanza: Element, occupant: Occupant | None,
               out: Outbox) -> bool | None:
    """A message to the room carrying an invitation or a decline (mod_muc's mediated
    invitation)."""
    muc_user = stanzas.child(stanza, "x", xmlns.MUC_USER)
    if muc_user is None or (stanzas.child(muc_user, "invite") is None
                            and stanzas.child(muc_user, "decline") is None):
        return None
    handle(room, stanza, muc_user, occupant, out)
    return True


def handle(room: Room, stanza: Element, muc_user: Element, occupant: Occupant | None,
           out: Outbox) -> None:
    """Relay the first <invite/> or <decline/> of the message, as mod_muc does (it reads
    the first child of the muc#user x): one stanza never fans out into many invitations."""
    found = [el for el in muc_user.elements() if el.name in ("invite", "decline")]
    if not found:
        return
    if len(found) > 1:
        out.info(f"{stanza.getAttribute('from')} sent {len(found)} invitations or declines "
                 f"to {room.jid} in one message; only the first is relayed")
    if found[0].name == "invite":
        _invite(room, stanza, found[0], occupant, out)
    else:
        _decline(room, stanza, found[0], out)


def _invite(room: Room, stanza: Element, invite: Element, occupant: Occupant | None,
            out: Outbox) -> None:
    sender = stanza.getAttribute("from")
    what = f"invitation to {room.jid}"
    if occupant is None:
        stanzas.refuse(out, stanza, "cancel", "not-acceptable",
                       "You are not currently connected to this chat", what=what)
        return
    invitee = jids.parse(invite.getAttribute("to"))
    if invitee is None:
        stanzas.refuse(out, stanza, "cancel", "jid-malformed", what=what)  # as mod_muc
        return
    if ROLE_RANK[occupant.role] <= ROLE_RANK["visitor"]:
        # mod_muc's muc-pre-invite: a visitor may not invite
        stanzas.refuse(out, stanza, "auth", "forbidden", what=what)
        return
    affiliation = room.affiliation(occupant.bare_jid)
    if room.config.members_only:
        may = AFFILIATION_RANK[affiliation] >= AFFILIATION_RANK["admin"] or (
            room.config.allow_member_invites and affiliation == "member"
        )
        if not may:
            stanzas.refuse(out, stanza, "auth", "forbidden",
                           "Only admins may invite to this members-only room", what=what)
            return
    invitee_jid = invitee.full()
    reason = stanzas.text_of(stanzas.child(invite, "reason")) or ""
    msg = _relayed(room, stanza, invitee_jid)
    x = msg.addElement((xmlns.MUC_USER, "x"))
    forwarded = x.addElement("invite")
    forwarded["from"] = _inviter_as_seen_by(room, occupant, sender, invitee.userhost())
    forwarded.addElement("reason", content=reason)  # always there, as mod_muc's
    room.service.hooks.fire("invite", room=room, stanza=msg, out=out)  # e.g. the password
    # jabber:x:conference with the reason as its text, as mod_muc's "COMPAT" hook adds it
    conference = msg.addElement((xmlns.CONFERENCE, "x"), content=reason)
    conference["jid"] = room.jid
    if stanzas.child(msg, "body") is None:  # the inviter's own text wins
        msg.addElement("body", content=f"{forwarded['from']} invited you to the room "
                                       f"{room.jid}" + (f" ({reason})" if reason else ""))
    out.send(msg)
    out.info(f"{sender} invited {invitee_jid} to {room.jid}")
    if room.config.members_only and room.affiliation(invitee.userhost()) == "none":
        room.set_affiliation(invitee.userhost(), "member", out,
                             reason=f"Invited by {forwarded['from']}")


def _relayed(room: Room, stanza: Element, to: str) -> Element:
    """The stanza relayed from the room, as mod_muc relays it: the same message (its id,
    type and any other payload, e.g. a body of the sender's) without its MUC elements."""
    msg = stanzas.copy(stanza)
    msg.children = [c for c in msg.children
                    if not (isinstance(c, Element) and c.uri in (xmlns.MUC, xmlns.MUC_USER))]
    msg["from"] = room.jid
    msg["to"] = to
    return msg


def _inviter_as_seen_by(room: Room, occupant: Occupant, sender: str, invitee: str) -> str:
    """mod_muc's whois rule for invitations: the inviter by occupant JID in a
    semi-anonymous room, unless the invitee would enter as a moderator; else its real JID."""
    if room.config.whois == "moderators" and \
            room.default_role(room.affiliation(invitee)) != "moderator":
        return room.occupant_jid(occupant.nick)
    return sender


def _decline(room: Room, stanza: Element, decline: Element, out: Outbox) -> None:
    inviter = jids.parse(decline.getAttribute("to"))
    if inviter is None:
        stanzas.refuse(out, stanza, "cancel", "jid-malformed", what=f"decline to {room.jid}")
        return
    sender = stanza.getAttribute("from")
    reason = stanzas.text_of(stanzas.child(decline, "reason")) or ""
    msg = _relayed(room, stanza, inviter.full())
    x = msg.addElement((xmlns.MUC_USER, "x"))
    forwarded = x.addElement("decline")
    forwarded["from"] = sender  # mod_muc masks the inviter, not the one who declines
    forwarded.addElement("reason", content=reason)
    if stanzas.child(msg, "body") is None:
        msg.addElement("body", content=f"{sender} declined your invite to the room "
                                       f"{room.jid}" + (f" ({reason})" if reason else ""))
    out.send(msg)
    out.info(f"{sender} declined an invitation to {room.jid} from {inviter.full()}")


def info(room: Room, fields: list[Field]) -> None:
    """As members_only.lib 0.12.3: whether members may invite, and whether an occupant's
    invitation is relayed at all (always in an open room)."""
    members_invite = room.config.allow_member_invites
    fields += [
        {"var": PROSODY_ALLOW_MEMBER_INVITES, "type": "boolean", "label": LABEL,
         "value": members_invite},
        {"var": ALLOW_INVITES, "type": "boolean", "label": "Allow users to invite other users",
         "value": not room.config.members_only or members_invite},
    ]


def submitted(room: Room, values: roomconfig.Values, new: RoomConfig) -> None:
    """The form's field is Prosody's; XEP-0045's muc#roomconfig_allowinvites (which this
    form used to carry) is still read, Prosody's taking precedence."""
    for var in (ALLOW_INVITES, PROSODY_ALLOW_MEMBER_INVITES):
        value = roomconfig.boolean(values, var)
        if value is not None:
            new.allow_member_invites = value


def setup(hooks: Hooks) -> None:
    # In the form as members_only.lib puts it, after members-only (87); read with the
    # other booleans, before the password (the order of submission).
    roomconfig.hook_boolean(hooks, PROSODY_ALLOW_MEMBER_INVITES, "allow_member_invites",
                            LABEL, priority=86, submit_priority=104)
    hooks.add("room-config-submitted", submitted, priority=104)
    hooks.add("room-disco-info", info, priority=50)
    hooks.add("message-to-room", on_message, priority=20)
