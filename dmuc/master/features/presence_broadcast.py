"""The roles whose presence the room broadcasts, as Prosody's presence_broadcast setting
(muc.lib): its form field. The rule itself is applied where presence is publicised (Room)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmuc.errors import Refusal
from dmuc.hooks import Hooks
from dmuc.master.features.roomconfig import Field, Values
from dmuc.master.model import BROADCAST_ROLES, PresenceChange, RoomConfig
from dmuc.outbox import Outbox

if TYPE_CHECKING:
    from dmuc.master.room import Room

VAR = "muc#roomconfig_presencebroadcast"
# every value mod_muc accepts: the roles, and "none" (no present occupant has it; mod_muc
# offers it as its presence_broadcast.lib's valid_roles do)
VALUES = ("none", *BROADCAST_ROLES)


def config_form(room: Room, fields: list[Field]) -> None:
    fields.append({"var": VAR, "type": "list-multi",
                   "label": "Roles for which presence is broadcast",
                   "value": list(room.config.presence_broadcast),
                   "options": [(r, r.capitalize()) for r in VALUES]})


def submitted(room: Room, values: Values, new: RoomConfig) -> None:
    roles = values.get(VAR)
    if roles is not None:
        if any(role not in VALUES for role in roles):
            raise Refusal("modify", "bad-request", f"{VAR}: unknown role")
        # a set of roles, as mod_muc keeps it: a value repeated 1,000 times is stored once
        new.presence_broadcast = list(dict.fromkeys(roles))


def applied(room: Room, old: RoomConfig, out: Outbox) -> None:
    """As mod_muc's set_presence_broadcast: the occupants of a role that is broadcast from
    now on are announced to the room; those of a role no longer broadcast are announced
    as gone (they stay, and see their own presence)."""
    for occupant in list(room.occupants.values()):
        shown_now = occupant.role in room.config.presence_broadcast
        if shown_now != (occupant.role in old.presence_broadcast):
            room.publicise(occupant, out, PresenceChange(hide=not shown_now))


def setup(hooks: Hooks) -> None:
    hooks.add("room-config-form", config_form, priority=63)
    hooks.add("room-config-submitted", submitted, priority=40)
    hooks.add("room-config-applied", applied, priority=5)
