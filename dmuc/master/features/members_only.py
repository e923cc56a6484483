"""Members-only rooms, as Prosody's members_only.lib: only members (and above) may enter;
switching it on removes the occupants who are not (status 322). Invitations to such a
room are restricted in invites.py; newcomers' roles in Room.default_role."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids
from dmuc.errors import Refusal
from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.model import AFFILIATION_RANK, RoomConfig
from dmuc.outbox import Outbox

if TYPE_CHECKING:
    from dmuc.master.room import Room


def pre_join(room: Room, stanza: Element, nick: str, sender: str) -> Refusal | None:
    affiliation = room.affiliation(jids.bare(sender))
    if room.config.members_only and AFFILIATION_RANK[affiliation] < AFFILIATION_RANK["member"]:
        return Refusal("auth", "registration-required", "This room is members-only")
    return None


def applied(room: Room, old: RoomConfig, out: Outbox) -> None:
    """Switched on: every occupant without a role in a members-only room leaves (322)."""
    if room.config.members_only and not old.members_only:
        for occupant in list(room.occupants.values()):
            if room.default_role(room.affiliation(occupant.bare_jid)) == "none":
                room.evict(occupant, ["322"], out)


def setup(hooks: Hooks) -> None:
    hooks.add("occupant-pre-join", pre_join, priority=30)
    roomconfig.hook_boolean(hooks, "muc#roomconfig_membersonly", "members_only",
                            "Only allow members to join", priority=87, submit_priority=120,
                            disco=("muc_membersonly", "muc_open"))
    hooks.add("room-config-applied", applied, priority=40)
