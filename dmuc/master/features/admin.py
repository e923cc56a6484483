"""muc#admin: role and affiliation lists and edits (XEP-0045 §8, §9), with mod_muc's rules."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

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
        stanzas.refuse(out, stanza, refusal.err_type, refusal.condition, refusal.text,
                       what=f"muc#admin {stanza.getAttribute('type')} to {room.jid}")


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


def check_affiliation_change(actor_aff: str, target_aff: str, new_aff: str) -> None:
    """mod_muc's set_affiliation rights: owners change everything; admins handle members
    and outcasts below admin. (The last owner rule is checked on the whole request.)"""
    if actor_aff == "owner":
        return
    if actor_aff == "admin":
        if new_aff in ("owner", "admin") or AFFILIATION_RANK[target_aff] >= AFFILIATION_RANK[
            "admin"
        ]:
            raise Refusal("cancel", "not-allowed")
        return
    raise Refusal("auth", "forbidden")


@dataclass
class Change:
    """One <item/> of a muc#admin set: a role (target: the occupant) or an affiliation
    (target: a bare JID) to set."""

    kind: str
    target: Any
    value: str
    reason: str | None
    nick: str | None = None  # an affiliation item's nick: reserved for its JID (mod_muc)

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.target.nick if self.kind == "role" else self.target)


def _read_item(room: Room, item: Element) -> Change:
    """An item as a Change; raises Refusal when it is malformed or names nobody."""
    reason = stanzas.text_of(stanzas.child(item, "reason"))
    role = item.getAttribute("role")
    affiliation = item.getAttribute("affiliation")
    nick = None
    if item.getAttribute("nick") is not None:
        nick = jids.prep_nick(item["nick"])
        if nick is None:  # as mod_muc: resourceprep refused it
            raise Refusal("modify", "jid-malformed", "Invalid nickname")
    if role is not None and affiliation is None:
        if role not in ROLES:
            raise Refusal("modify", "bad-request", f"Unknown role {role}")
        if nick is None:
            raise Refusal("modify", "bad-request", "A role change needs a nick")
        target = room.occupants.get(nick)
        if target is None:
            raise Refusal("cancel", "item-not-found", f"No occupant {nick}")
        return Change("role", target, role, reason)
    if affiliation is not None:
        if affiliation not in AFFILIATIONS:
            raise Refusal("modify", "bad-request", f"Unknown affiliation {affiliation}")
        if item.getAttribute("jid") is not None:
            target_jid = jids.parse(item["jid"])
            if target_jid is None:  # as mod_muc: jid_prep refused it
                raise Refusal("modify", "jid-malformed")
        else:
            occupant = room.occupants.get(nick) if nick is not None else None
            target_jid = jids.parse(occupant.bare_jid) if occupant else None
        if target_jid is None:
            raise Refusal("modify", "bad-request", "An affiliation change needs a JID")
        return Change("affiliation", target_jid.userhost(), affiliation, reason, nick)
    raise Refusal("modify", "bad-request")


def _check_request(room: Room, actor_aff: str, actor_role: str | None,
                   changes: list[Change]) -> None:
    """The whole request against the state it would leave: each affiliation item against
    the affiliations the earlier items leave, each role item against the target's
    affiliation after all of them, and the room keeps an owner (mod_muc refuses the last
    owner's own demotion with cancel/conflict; one request of several items must not get
    round it). Raises Refusal; nothing has been changed then."""
    stored = dict(room.affiliations)

    def affiliation_of(bare_jid: str) -> str:  # room.affiliation, on the projected state
        if bare_jid in room.service.admins:
            return "owner"
        found = stored.get(bare_jid)
        if found is None and stored.get(jids.domain(bare_jid)) == "outcast":
            return "outcast"
        return found or "none"

    had_owner = "owner" in stored.values()
    for change in changes:
        if change.kind == "affiliation":
            check_affiliation_change(actor_aff, affiliation_of(change.target), change.value)
            if change.value == "none":
                stored.pop(change.target, None)
            else:
                stored[change.target] = change.value
    for change in changes:
        if change.kind == "role":
            check_role_change(room, actor_aff, actor_role,
                              affiliation_of(change.target.bare_jid), change.target.role,
                              change.value)
    if had_owner and "owner" not in stored.values():
        raise Refusal("cancel", "conflict", "A room needs at least one owner")


def _set(room: Room, stanza: Element, payload: Element, out: Outbox) -> None:
    """All items or none: every item is read and checked before the first is applied."""
    _, actor_aff, actor_role, actor_nick = _actor(room, stanza)
    items = stanzas.children(payload, "item")
    if not items:
        raise Refusal("modify", "bad-request")
    changes = [_read_item(room, item) for item in items]
    # An item repeated for the same target counts once, the last time: one request
    # cannot make a thousand broadcasts out of one change.
    last = {change.key: i for i, change in enumerate(changes)}
    changes = [change for i, change in enumerate(changes) if last[change.key] == i]
    _check_request(room, actor_aff, actor_role, changes)
    actor_jid = stanza.getAttribute("from")  # as mod_muc: the session that acted
    for change in changes:
        if change.kind == "role":
            if room.occupants.get(change.target.nick) is change.target:  # not evicted since
                room.set_role(change.target, change.value, out, reason=change.reason,
                              actor_nick=actor_nick, actor_jid=actor_jid)
        else:
            if change.nick is not None:
                _reserve_for(room, change.target, change.nick, out)
            room.set_affiliation(change.target, change.value, out, reason=change.reason,
                                 actor_nick=actor_nick, actor_jid=actor_jid,
                                 reserve_nick=change.nick)
    out.send(stanzas.iq_result(stanza))


def _reserve_for(room: Room, bare_jid: str, nick: str, out: Outbox) -> None:
    """As mod_muc 0.12: an affiliation item with a nick reserves that nick for the JID;
    someone else holding it in the room is kicked first ("This nickname is reserved")."""
    holder = room.occupants.get(nick)
    if holder is not None and holder.bare_jid != bare_jid:
        room.set_role(holder, "none", out, reason="This nickname is reserved")
    out.info(f"reserving {nick} in {room.jid} for {bare_jid}")
