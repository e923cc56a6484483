"""muc#admin: role and affiliation lists and edits (XEP-0045 §8, §9), with mod_muc's rules."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.errors import Refusal
from dmuc.master.model import AFFILIATION_RANK, AFFILIATIONS, ROLES
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room


def handle(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    try:
        if stanza.getAttribute("type") == "get":
            reply = _get(room, stanza, payload)
            out.send(stanzas.iq_result(stanza, reply))
        else:
            _set(room, stanza, payload, out)
    except Refusal as refusal:
        out.send(stanzas.error_reply(stanza, refusal.err_type, refusal.condition, refusal.text))


def _actor(room: Room, stanza: Element) -> tuple[str, str, str | None, str | None]:
    """(bare JID, affiliation, role, nick) of whoever sent `stanza`."""
    sender = stanza.getAttribute("from")
    bare = jids.bare(sender)
    occupant = room.occupant_by_session(sender)
    return (bare, room.affiliation(bare), occupant.role if occupant else None,
            occupant.nick if occupant else None)


def _get(room: Room, stanza: Element, payload: Element) -> Element:
    items = stanzas.children(payload, "item")
    if len(items) != 1:
        raise Refusal("modify", "bad-request", "Ask for one list at a time")
    wanted_aff = items[0].getAttribute("affiliation")
    wanted_role = items[0].getAttribute("role")
    _, affiliation, role, _ = _actor(room, stanza)
    reply = stanzas.query(xmlns.MUC_ADMIN)
    if wanted_aff is not None:
        if wanted_aff not in AFFILIATIONS or wanted_aff == "none":
            raise Refusal("modify", "bad-request")
        # As Prosody 0.12: admins and owners see the lists up to their own rank (an admin
        # not the owners); members see them only in a members-only room that shows real
        # JIDs anyway (CVE-2021-37601).
        rank = AFFILIATION_RANK[affiliation]
        may_see = (rank >= AFFILIATION_RANK["admin"] and rank >= AFFILIATION_RANK[wanted_aff]) or (
            room.config.members_only and not room.is_anonymous()
            and rank >= AFFILIATION_RANK["member"]
        )
        if not may_see:
            raise Refusal("auth", "forbidden")
        for bare, aff in sorted(room.affiliations.items()):
            if aff == wanted_aff:
                item = reply.addElement("item")
                item["affiliation"] = aff
                item["jid"] = bare
                if room.reserved_nicks.get(bare):
                    item["nick"] = room.reserved_nicks[bare]
        return reply
    if wanted_role is not None:
        if wanted_role not in ROLES or wanted_role == "none":
            raise Refusal("modify", "bad-request")
        if role != "moderator":
            raise Refusal("auth", "forbidden")
        for occupant in room.occupants.values():
            if occupant.role == wanted_role:
                item = reply.addElement("item")
                item["role"] = occupant.role
                item["nick"] = occupant.nick
                item["affiliation"] = room.affiliation(occupant.bare_jid)
                item["jid"] = occupant.primary
        return reply
    raise Refusal("modify", "bad-request")


def check_role_change(room: Room, actor_aff: str, actor_role: str | None, target_aff: str,
                      target_role: str, new_role: str) -> None:
    """mod_muc's can_set_role: moderators handle voice and kicks of non-admins; only
    admins and owners grant or revoke moderation; nobody changes an admin's or owner's role."""
    if actor_role != "moderator" and AFFILIATION_RANK[actor_aff] < AFFILIATION_RANK["admin"]:
        raise Refusal("auth", "forbidden")
    if AFFILIATION_RANK[target_aff] >= AFFILIATION_RANK["admin"]:
        raise Refusal("cancel", "not-allowed", "Cannot change the role of an admin or owner")
    if (new_role == "moderator" or target_role == "moderator") and AFFILIATION_RANK[
        actor_aff
    ] < AFFILIATION_RANK["admin"]:
        raise Refusal("cancel", "not-allowed", "Only admins and owners change moderation")


def check_affiliation_change(room: Room, actor_bare: str, actor_aff: str, target: str,
                             new_aff: str) -> None:
    """Owners change everything; admins handle members and outcasts below admin."""
    target_aff = room.affiliation(target)
    if actor_aff == "owner":
        if target == actor_bare and new_aff != "owner":
            owners = [j for j, a in room.affiliations.items() if a == "owner"]
            if owners == [actor_bare]:
                raise Refusal("cancel", "conflict", "A room needs at least one owner")
        return
    if actor_aff == "admin":
        if new_aff in ("owner", "admin") or AFFILIATION_RANK[target_aff] >= AFFILIATION_RANK[
            "admin"
        ]:
            raise Refusal("cancel", "not-allowed")
        return
    raise Refusal("auth", "forbidden")


def _set(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    actor_bare, actor_aff, actor_role, actor_nick = _actor(room, stanza)
    items = stanzas.children(payload, "item")
    if not items:
        raise Refusal("modify", "bad-request")
    changes: list[tuple[str, object, str, str | None]] = []
    for item in items:
        reason = stanzas.text_of(stanzas.child(item, "reason"))
        role = item.getAttribute("role")
        affiliation = item.getAttribute("affiliation")
        if role is not None and affiliation is None:
            if role not in ROLES:
                raise Refusal("modify", "bad-request", f"Unknown role {role}")
            nick = item.getAttribute("nick")
            if nick is None:
                raise Refusal("modify", "bad-request", "A role change needs a nick")
            target = room.occupants.get(nick)
            if target is None:
                raise Refusal("cancel", "item-not-found", f"No occupant {nick}")
            check_role_change(room, actor_aff, actor_role, room.affiliation(target.bare_jid),
                              target.role, role)
            changes.append(("role", target, role, reason))
        elif affiliation is not None:
            if affiliation not in AFFILIATIONS:
                raise Refusal("modify", "bad-request", f"Unknown affiliation {affiliation}")
            target_jid = jids.parse(item.getAttribute("jid"))
            if target_jid is None and item.getAttribute("nick"):
                occupant = room.occupants.get(item["nick"])
                target_jid = jids.parse(occupant.bare_jid) if occupant else None
            if target_jid is None:
                raise Refusal("modify", "bad-request", "An affiliation change needs a JID")
            bare = target_jid.userhost()
            check_affiliation_change(room, actor_bare, actor_aff, bare, affiliation)
            changes.append(("affiliation", bare, affiliation, reason))
        else:
            raise Refusal("modify", "bad-request")
    for kind, target, value, reason in changes:
        if kind == "role":
            if target.nick in room.occupants:  # an earlier item may have removed it
                room.set_role(target, value, out, reason=reason, actor_nick=actor_nick)
        else:
            room.set_affiliation(target, value, out, reason=reason, actor_nick=actor_nick)
    out.send(stanzas.iq_result(stanza))
