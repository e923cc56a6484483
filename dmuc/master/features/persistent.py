"""Persistent rooms, as Prosody's persistent.lib: a persistent room outlives its last
occupant and is kept in storage, with what it keeps of its history."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmuc.hooks import Hooks
from dmuc.master.features import history, roomconfig
from dmuc.master.model import RoomConfig
from dmuc.outbox import Outbox

if TYPE_CHECKING:
    from dmuc.master.room import Room


def applied(room: Room, old: RoomConfig, out: Outbox) -> None:
    """Storage follows the setting: a room that stops being persistent is forgotten; a
    persistent one is saved, with its history when it has just become persistent."""
    if old.persistent and not room.config.persistent:
        room.service.forget_room(room, out)
    if room.config.persistent:
        room.save(out)
        if not old.persistent:
            history.store_all(room, out)


def setup(hooks: Hooks) -> None:
    roomconfig.hook_boolean(hooks, "muc#roomconfig_persistentroom", "persistent",
                            "Persistent (room should remain even when it is empty)",
                            priority=95, submit_priority=140,
                            disco=("muc_persistent", "muc_temporary"))
    hooks.add("room-config-applied", applied, priority=20)
