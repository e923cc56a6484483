"""Room registration and reserved nicknames (XEP-0045 §7.10), as Prosody's register.lib."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room


def registration_form() -> Element:
    return stanzas.form(
        xmlns.MUC_REGISTER,
        [{"var": "muc#register_roomnick", "type": "text-single", "label": "Nickname",
          "required": True}],  # as mod_muc's register.lib (no title)
    )


def handle(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    user = jids.bare(stanza.getAttribute("from"))
    what = f"registration {stanza.getAttribute('type')} to {room.jid}"
    affiliation = room.affiliation(user)
    if affiliation == "outcast":
        stanzas.refuse(out, stanza, "auth", "forbidden", what=what)
        return
    if affiliation == "none" and not room.service.settings.allow_unaffiliated_register:
        stanzas.refuse(out, stanza, "auth", "registration-required",
                       "Only members may register a nickname in this room", what=what)
        return
    registered = room.reserved_nicks.get(user)
    if stanza.getAttribute("type") == "get":
        reply = stanzas.query(xmlns.REGISTER)
        if registered:
            reply.addElement("registered")
            reply.addElement("username", content=registered)
        else:
            reply.addChild(registration_form())
        out.send(stanzas.iq_result(stanza, reply))
        return
    if stanzas.child(payload, "remove") is not None:
        # as mod_muc: the membership goes, a higher affiliation stays (announced again)
        room.reserved_nicks.pop(user, None)
        room.set_affiliation(user, "none" if affiliation == "member" else affiliation, out)
        out.send(stanzas.iq_result(stanza))
        return
    form = stanzas.child(payload, "x", xmlns.DATA_FORMS)
    if form is None or stanzas.form_type(form) != xmlns.MUC_REGISTER:
        stanzas.refuse(out, stanza, "modify", "bad-request", "Missing dataform", what=what)
        return
    wanted = (stanzas.parse_form(form).get("muc#register_roomnick") or [""])[0]
    nick = jids.prep_nick(wanted)
    if nick is None:
        stanzas.refuse(out, stanza, "modify", "bad-request", "Invalid Nickname", what=what)
        return
    holder = room.occupants.get(nick)
    reserver = room.reserved_by(nick)
    if (holder is not None and holder.bare_jid != user) or (reserver not in (None, user)):
        stanzas.refuse(out, stanza, "cancel", "conflict", what=what)
        return
    if registered != nick:
        # as mod_muc: the affiliation set again with the nick, and announced so
        room.set_affiliation(user, "member" if affiliation == "none" else affiliation, out,
                             reserve_nick=nick)
        out.info(f"{user} registered the nickname {nick} in {room.jid}")
    out.send(stanzas.iq_result(stanza))
