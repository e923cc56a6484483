"""muc#owner: the room configuration form and room destruction (XEP-0045 §10).

The protocol only: the form's fields, the reading of a submission and what a changed
setting implies come from each setting's module through the room-config-* events."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.errors import Refusal
from dmuc.master.features.history import LENGTH
from dmuc.master.features.roomconfig import Field
from dmuc.master.model import RoomConfig
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room


def config_form(room: Room) -> Element:
    """The configuration form: each field from a `room-config-form` handler, in the order
    of their priorities (the settings' modules, then operators' plugins)."""
    fields: list[Field] = []
    room.service.hooks.fire("room-config-form", room=room, fields=fields)
    return stanzas.form(xmlns.MUC_ROOMCONFIG, fields, title="Configuration for " + room.jid,
                        instructions="Complete and submit this form to configure the room.")


def apply_form(room: Room, values: dict[str, list[str]]) -> RoomConfig:
    """A new configuration from a submitted form, each setting read by its
    `room-config-submitted` handler; raises the first Refusal (returned or raised) of a
    handler on a bad value, and then nothing is applied."""
    new = RoomConfig.from_dict(room.config.to_dict())
    refusal = room.service.hooks.fire("room-config-submitted", room=room, values=values,
                                      new=new)
    if isinstance(refusal, Refusal):
        raise refusal
    return new


def handle(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    sender = stanza.getAttribute("from")
    what = f"muc#owner {stanza.getAttribute('type')} to {room.jid}"
    if room.affiliation(jids.bare(sender)) != "owner":  # (in mod_muc's words)
        stanzas.refuse(out, stanza, "auth", "forbidden", "Only owners can configure rooms",
                       what=what)
        return
    if stanza.getAttribute("type") == "get":
        out.send(stanzas.iq_result(stanza, _query_with(config_form(room))))
        return
    destroy = stanzas.child(payload, "destroy")
    if destroy is not None:
        out.send(stanzas.iq_result(stanza))
        room.destroy(out, reason=stanzas.text_of(stanzas.child(destroy, "reason")),
                     alternate=destroy.getAttribute("jid"),
                     password=stanzas.text_of(stanzas.child(destroy, "password")))
        out.info(f"{sender} destroyed {room.jid}")
        return
    form = stanzas.child(payload, "x", xmlns.DATA_FORMS)
    if form is None:
        stanzas.refuse(out, stanza, "modify", "bad-request", "Expected a data form", what=what)
        return
    kind = form.getAttribute("type")
    if kind == "cancel":
        out.send(stanzas.iq_result(stanza))
        if room.locked:
            room.destroy(out)  # XEP-0045 §10.1.2: cancelling the initial form
        return
    if kind != "submit":
        stanzas.refuse(out, stanza, "modify", "bad-request", "Expected type submit", what=what)
        return
    values = stanzas.parse_form(form)
    declared = values.get("FORM_TYPE")
    if declared and declared[0] != xmlns.MUC_ROOMCONFIG:
        stanzas.refuse(out, stanza, "modify", "bad-request", "Wrong FORM_TYPE", what=what)
        return
    try:
        new = apply_form(room, values)
    except Refusal as refusal:
        stanzas.refuse(out, stanza, refusal.err_type, refusal.condition, refusal.text, what=what)
        return
    out.send(stanzas.iq_result(stanza))
    # as history.lib 0.12.3, whose setter always reports a change: a submitted history
    # length means 104 (clients submit the whole form, so nearly always)
    reconfigure(room, new, out, changed=LENGTH in values)


def _query_with(el: Element) -> Element:
    q = stanzas.query(xmlns.MUC_OWNER)
    q.addChild(el)
    return q


def reconfigure(room: Room, new: RoomConfig, out: Outbox, changed: bool = False) -> None:
    """Put a new configuration in place: what a changed setting implies is done by the
    `room-config-applied` handlers (322 evictions, history trim, storage, slaves), then
    the occupants get the status codes (104, 170-173; 104 also when `changed`), the
    creator of a locked room too (as mod_muc), and `room-configured` fires."""
    old = room.config
    was_locked = room.locked
    room.locked = False
    room.config = new
    codes: list[str] = []
    # as mod_muc: 104 for a change of any setting but these two, which have their own
    # codes, and the default history (history.lib's setter reports no change)
    if changed or dataclasses.replace(new, whois=old.whois, logging=old.logging,
                                      default_history_messages=old.default_history_messages
                                      ) != old:
        codes.append("104")
    if new.whois != old.whois:
        codes.append("172" if new.whois == "anyone" else "173")
    if new.logging != old.logging:
        codes.append("170" if new.logging else "171")
    if new.archiving != old.archiving and ("170" if new.archiving else "171") not in codes:
        codes.append("170" if new.archiving else "171")  # as mod_muc_mam
    room.service.hooks.fire("room-config-applied", room=room, old=old, out=out)
    if codes and room.occupants:
        room.broadcast_groupchat(stanzas.status_message(room.jid, codes), out)
    out.info(f"{room.jid} configured" + (" (unlocked)" if was_locked else ""))
    room.service.hooks.fire("room-configured", room=room, old=old, out=out)
    room.service.close_if_empty(room, out)
