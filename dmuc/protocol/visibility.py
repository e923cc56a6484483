"""Who may see an occupant's real JID, and the copies of a presence that follow from it.

One rule for master and slave (XEP-0045 §7.2.3/§7.2.4, XEP-0282 §4.7): in a non-anonymous
room (whois = anyone) everyone sees real JIDs; in a semi-anonymous room only moderators
do; a slave receives them only while one of its local occupants is a moderator; an
occupant's own copy of its presence carries status 110 and its own real JID (and, as it
enters a non-anonymous room, 100); the actor of a change (kick, role, affiliation) is
named by its real JID too to those who see real JIDs, never in the occupant's own copy.
And whether the others see a presence change at all (mod_muc's presence_broadcast):
presence_shown decides it on the master, hides_occupant reads the result on the slave.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import NamedTuple

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

SELF_PRESENCE = stanzas.SELF_PRESENCE
NON_ANONYMOUS = "100"


def sees_real_jids(whois: str, viewer_role: str) -> bool:
    """Whether an occupant with `viewer_role` may see the other occupants' real JIDs."""
    return whois == "anyone" or viewer_role == "moderator"


def slave_sees_real_jids(whois: str, has_local_moderator: bool) -> bool:
    """§4.7: "the master MUST NOT send the full jid of the user to any slaves without
    members that are moderators" (unless everyone may see them)."""
    return whois == "anyone" or has_local_moderator


def self_status_codes(extra: Iterable[str] = ()) -> list[str]:
    """Status codes of the copy an occupant gets of its own presence."""
    return [SELF_PRESENCE, *extra]


def entering_status_codes(whois: str) -> list[str]:
    """What an occupant is told once, as it enters (XEP-0045 §7.2.3; mod_muc sends 100 on
    entering only): that everyone may see its real JID."""
    return [NON_ANONYMOUS] if whois == "anyone" else []


def hides_occupant(presence: Element) -> bool:
    """Whether a presence announces an occupant whose role the room no longer broadcasts
    (mod_muc's presence_broadcast): unavailable, but with a role (one that leaves has
    none) and no nick change (303). The occupant stays in the room: the others are told
    it is gone, its own sessions are not (they get their own presence with 110 instead,
    from the master, §4.7)."""
    if presence.getAttribute("type") != "unavailable" or stanzas.has_status(presence, "303"):
        return False
    item = stanzas.muc_item(presence)
    return item is not None and item.getAttribute("role", "none") != "none"


class PresenceShown(NamedTuple):
    visible: bool  # the others get the change (else only the occupant's own sessions)
    hiding: bool  # the others are told it is gone, though it stays in the room


def presence_shown(role: str, prev_role: str | None, broadcast: Collection[str], *,
                   hide: bool, nick_change: bool, probe: bool) -> PresenceShown:
    """mod_muc's presence_broadcast, the room's half (hides_occupant reads the result):
    whether the others see an occupant's presence change. `role` is its role now ("none":
    it leaves), `prev_role` before the change (None: unchanged), `broadcast` the roles the
    room broadcasts; `hide`: the setting changed and its role is no longer broadcast;
    `nick_change`: an unavailable 303; `probe`: the answer to one session's probe."""
    # a role no longer broadcast (`hide`, or a new role that is not while the old one
    # was): the others are told it is gone
    hiding = not probe and role != "none" and role not in broadcast \
        and (hide or prev_role in broadcast)
    if role == "none":
        # a leaving occupant's unavailable goes out if the room showed it (or broadcasts
        # role "none")
        visible = prev_role is None or prev_role in broadcast or "none" in broadcast
    else:
        # a nick change (303) goes out whatever the role: each relay must learn the new
        # nick of its own users (mod_muc tells no one of a hidden occupant's)
        visible = hiding or role in broadcast or nick_change
    # a probe's answer shows the occupant whatever its role, as mod_muc
    return PresenceShown(visible or probe, hiding)


def deliver_presence(
    out: Outbox,
    variant: Callable[[str], Element | None],
    recipients: Iterable[tuple[str, str]],
    own: Collection[str],
    whois: str,
) -> None:
    """Send one presence change to `recipients` (session, role of its occupant): each
    group gets one copy, built once by `variant(kind)` with kind "with_jid",
    "without_jid" or "self" (for the occupant's own sessions, `own`); a kind whose
    variant is None gets nothing."""
    with_jid: list[str] = []
    without_jid: list[str] = []
    own_sessions: list[str] = []
    for session, role in recipients:
        if session in own:
            own_sessions.append(session)
        elif sees_real_jids(whois, role):
            with_jid.append(session)
        else:
            without_jid.append(session)
    for kind, sessions in (("with_jid", with_jid), ("without_jid", without_jid),
                           ("self", own_sessions)):
        copy = variant(kind) if sessions else None
        if copy is not None:
            out.broadcast(copy, sessions)


def without_real_jid(presence: Element) -> Element:
    """§4.7: the occupant's presence without its real JID (nor its actor's), for
    non-moderators."""
    copy = stanzas.copy(presence)
    item = stanzas.muc_item(copy)
    if item is not None:
        item.attributes.pop("jid", None)
        _drop_actor_jid(item)
    return copy


def _drop_actor_jid(item: Element) -> None:
    """The actor's real JID out of an item (an empty actor goes too)."""
    actor = stanzas.child(item, "actor")
    if actor is not None:
        actor.attributes.pop("jid", None)
        if not actor.attributes:
            item.children.remove(actor)


def with_self_status(presence: Element, real_jid: str | None = None) -> Element:
    """The copy an occupant gets of its own presence: status 110, and its own real JID
    `real_jid` in the item if the presence came without one (as mod_muc: an occupant
    always sees its own real JID, whichever way it entered; a slave gets a presence
    without it when it has no moderator, §4.7, but knows its own user)."""
    copy = stanzas.copy(presence)
    item = stanzas.muc_item(copy)
    if real_jid is not None and item is not None and not item.getAttribute("jid"):
        item["jid"] = real_jid
    if item is not None:
        _drop_actor_jid(item)  # as mod_muc: an occupant's own copy names its actor by nick
    x = stanzas.child(copy, "x", xmlns.MUC_USER)
    if x is None:
        x = copy.addElement((xmlns.MUC_USER, "x"))
    present = {s.getAttribute("code") for s in stanzas.children(x, "status")}
    for code in self_status_codes():
        if code not in present:
            x.addElement("status")["code"] = code
    return copy
