"""Who may send private messages in the room, as Prosody's muc.lib allowpm setting: its
form field (with mod_muc's older value names accepted; no muc#roominfo field, as 0.12.3).
The rule itself is applied where private messages are routed (Room)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmuc.errors import Refusal
from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.features.roomconfig import Field, Values
from dmuc.master.model import ALLOW_PM_VALUES, RoomConfig

if TYPE_CHECKING:
    from dmuc.master.room import Room

VAR = "muc#roomconfig_allowpm"
LABEL = "Allow private messages from"
LABELS = {"visitor": "Everyone", "participant": "Participants", "moderator": "Moderators",
          "affiliated": "Members", "none": "No one"}
# the values older mod_muc versions used
LEGACY = {"anyone": "visitor", "participants": "participant", "moderators": "moderator",
          "members": "affiliated"}


def config_form(room: Room, fields: list[Field]) -> None:
    fields.append({"var": VAR, "type": "list-single", "label": LABEL,
                   "value": room.config.allow_pm,
                   "options": [(v, LABELS[v]) for v in ALLOW_PM_VALUES]})


def submitted(room: Room, values: Values, new: RoomConfig) -> None:
    allow_pm = roomconfig.text(values, VAR)
    if allow_pm is not None:
        allow_pm = LEGACY.get(allow_pm, allow_pm)
        if allow_pm not in ALLOW_PM_VALUES:
            raise Refusal("modify", "bad-request", f"{VAR}: unknown value")
        new.allow_pm = allow_pm


def setup(hooks: Hooks) -> None:
    hooks.add("room-config-form", config_form, priority=75)  # with permissions
    hooks.add("room-config-submitted", submitted, priority=60)
