"""muc#owner: the room configuration form and room destruction (XEP-0045 §10)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.errors import Refusal
from dmuc.master.features import history
from dmuc.master.model import ALLOW_PM_VALUES, BROADCAST_ROLES, WHOIS_VALUES, RoomConfig
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room

# The largest integer a form field may hold (xs:int); more digits are refused unread.
MAX_FORM_INT = 2**31 - 1
MAX_USERS_OPTIONS = ("5", "10", "20", "30", "50", "100", "150", "200", "500", "1000")
ALLOW_PM_LABELS = {"visitor": "Everyone", "participant": "Participants",
                   "moderator": "Moderators", "affiliated": "Members", "none": "No one"}


def config_form(room: Room) -> Element:
    c = room.config
    max_users_options = [("", "No limit")] + [(v, v) for v in MAX_USERS_OPTIONS]
    if c.max_users and str(c.max_users) not in MAX_USERS_OPTIONS:
        max_users_options.append((str(c.max_users), str(c.max_users)))
    fields = [
        {"var": "muc#roomconfig_roomname", "type": "text-single", "label": "Title",
         "value": c.name},
        {"var": "muc#roomconfig_roomdesc", "type": "text-single", "label": "Description",
         "value": c.description},
        {"var": "muc#roomconfig_lang", "type": "text-single", "label": "Language tag",
         "value": c.language},
        {"var": "muc#roomconfig_persistentroom", "type": "boolean",
         "label": "Persistent (room should remain even when it is empty)", "value": c.persistent},
        {"var": "muc#roomconfig_publicroom", "type": "boolean",
         "label": "Include room information in public lists", "value": c.public},
        {"var": "muc#roomconfig_membersonly", "type": "boolean",
         "label": "Only allow members to join", "value": c.members_only},
        {"var": "muc#roomconfig_moderatedroom", "type": "boolean",
         "label": "Moderated (only participants with voice may speak)", "value": c.moderated},
        {"var": "muc#roomconfig_passwordprotectedroom", "type": "boolean",
         "label": "Password protected", "value": bool(c.password)},
        {"var": "muc#roomconfig_roomsecret", "type": "text-private", "label": "Password",
         "value": c.password},
        {"var": "muc#roomconfig_whois", "type": "list-single",
         "label": "Addresses (JIDs) of room occupants may be viewed by", "value": c.whois,
         "options": [("moderators", "Moderators only"), ("anyone", "Anyone")]},
        {"var": "muc#roomconfig_maxusers", "type": "list-single",
         "label": "Maximum number of occupants",
         "value": str(c.max_users) if c.max_users else "", "options": max_users_options},
        {"var": "muc#roomconfig_historylength", "type": "text-single",
         "label": "Maximum number of history messages", "value": str(c.history_length)},
        {"var": "muc#roomconfig_allowpm", "type": "list-single",
         "label": "Allow private messages from", "value": c.allow_pm,
         "options": [(v, ALLOW_PM_LABELS[v]) for v in ALLOW_PM_VALUES]},
        {"var": "muc#roomconfig_changesubject", "type": "boolean",
         "label": "Allow anyone to set the room's subject", "value": c.change_subject},
        {"var": "muc#roomconfig_presencebroadcast", "type": "list-multi",
         "label": "Roles for which presence is broadcast", "value": list(c.presence_broadcast),
         "options": [(r, r.capitalize()) for r in BROADCAST_ROLES]},
        {"var": "muc#roomconfig_allowinvites", "type": "boolean",
         "label": "Allow members to invite new members", "value": c.allow_member_invites},
        {"var": "muc#roomconfig_enablelogging", "type": "boolean",
         "label": "Store and show the room's history to new occupants (logged)",
         "value": c.logging},
    ]
    return stanzas.form(xmlns.MUC_ROOMCONFIG, fields, title="Configuration for " + room.jid,
                        instructions="Complete and submit this form to configure the room.")


def apply_form(room: Room, values: dict[str, list[str]]) -> RoomConfig:
    """A new configuration from a submitted form; raises Refusal on a bad value."""
    new = RoomConfig.from_dict(room.config.to_dict())

    def single(var: str) -> str | None:
        got = values.get(var)
        return got[0] if got else ("" if got == [] else None)

    def boolean(var: str) -> bool | None:
        try:
            return stanzas.parse_bool(values.get(var))
        except ValueError as exc:
            raise Refusal("modify", "bad-request", f"{var}: not a boolean") from exc

    for var, attr in (("muc#roomconfig_roomname", "name"),
                      ("muc#roomconfig_roomdesc", "description"),
                      ("muc#roomconfig_lang", "language")):
        value = single(var)
        if value is not None:
            setattr(new, attr, value)
    for var, attr in (("muc#roomconfig_persistentroom", "persistent"),
                      ("muc#roomconfig_publicroom", "public"),
                      ("muc#roomconfig_membersonly", "members_only"),
                      ("muc#roomconfig_moderatedroom", "moderated"),
                      ("muc#roomconfig_changesubject", "change_subject"),
                      ("muc#roomconfig_allowinvites", "allow_member_invites"),
                      ("muc#roomconfig_enablelogging", "logging")):
        value = boolean(var)
        if value is not None:
            setattr(new, attr, value)
    secret = single("muc#roomconfig_roomsecret")
    if secret is not None:
        new.password = secret
    protected = boolean("muc#roomconfig_passwordprotectedroom")
    if protected is False:
        new.password = ""
    whois = single("muc#roomconfig_whois")
    if whois is not None:
        if whois not in WHOIS_VALUES:
            raise Refusal("modify", "bad-request", "muc#roomconfig_whois: unknown value")
        new.whois = whois
    max_users = single("muc#roomconfig_maxusers")
    if max_users is not None:
        if max_users.strip() in ("", "none"):
            new.max_users = 0
        else:
            # ASCII digits only, bounded before int() (5,000 digits made int() raise)
            count = stanzas.parse_bounded_int(max_users, 0, MAX_FORM_INT)
            if count is None:
                raise Refusal("modify", "bad-request",
                              f"muc#roomconfig_maxusers: not a number from 0 to {MAX_FORM_INT}")
            new.max_users = count
    history_length = single("muc#roomconfig_historylength")
    if history_length is not None and history_length.strip() != "":
        length = stanzas.parse_bounded_int(history_length, 0, MAX_FORM_INT)
        if length is None:
            raise Refusal("modify", "bad-request",
                          f"muc#roomconfig_historylength: not a number from 0 to {MAX_FORM_INT}")
        new.history_length = min(length, room.service.settings.max_history_length)
    allow_pm = single("muc#roomconfig_allowpm")
    if allow_pm is not None:
        legacy = {"anyone": "visitor", "participants": "participant",
                  "moderators": "moderator", "members": "affiliated"}
        allow_pm = legacy.get(allow_pm, allow_pm)
        if allow_pm not in ALLOW_PM_VALUES:
            raise Refusal("modify", "bad-request", "muc#roomconfig_allowpm: unknown value")
        new.allow_pm = allow_pm
    broadcast = values.get("muc#roomconfig_presencebroadcast")
    if broadcast is not None:
        if any(role not in BROADCAST_ROLES for role in broadcast):
            raise Refusal("modify", "bad-request", "muc#roomconfig_presencebroadcast: unknown role")
        # a set of roles, as mod_muc keeps it: a value repeated 1,000 times is stored once
        new.presence_broadcast = list(dict.fromkeys(broadcast))
    return new


def handle(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    sender = stanza.getAttribute("from")
    what = f"muc#owner {stanza.getAttribute('type')} to {room.jid}"
    if room.affiliation(jids.bare(sender)) != "owner":
        stanzas.refuse(out, stanza, "auth", "forbidden", "Only owners may configure the room",
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
    reconfigure(room, new, out)


def _query_with(el: Element) -> Element:
    q = stanzas.query(xmlns.MUC_OWNER)
    q.addChild(el)
    return q


def reconfigure(room: Room, new: RoomConfig, out: Outbox) -> None:
    old = room.config
    was_locked = room.locked
    room.locked = False
    room.config = new
    codes: list[str] = []
    if new != old:
        codes.append("104")
    if new.whois != old.whois:
        codes.append("172" if new.whois == "anyone" else "173")
    if new.logging != old.logging:
        codes.append("170" if new.logging else "171")
    if new.members_only and not old.members_only:
        for occupant in list(room.occupants.values()):
            if room.default_role(room.affiliation(occupant.bare_jid)) == "none":
                room.evict(occupant, ["322"], out)
    if new.history_length != old.history_length:
        history.trim(room, out)
    if old.persistent and not new.persistent:
        room.service.forget_room(room, out)
    if new.persistent:
        room.save(out)
        if not old.persistent:
            history.store_all(room, out)
    if new.whois != old.whois:
        room.service.distribution.whois_changed(room, out)
    if codes and not was_locked and room.occupants:
        room.broadcast_groupchat(stanzas.status_message(room.jid, codes), out)
    out.info(f"{room.jid} configured" + (" (unlocked)" if was_locked else ""))
    room.service.hooks.fire("room-configured", room=room, old=old, out=out)
    room.service.room_maybe_empty(room, out)
