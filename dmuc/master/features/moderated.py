"""Moderated rooms, as Prosody's moderated.lib: newcomers without an affiliation enter
as visitors (Room.default_role) and only occupants with voice may speak."""

from __future__ import annotations

from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig


def setup(hooks: Hooks) -> None:
    roomconfig.hook_boolean(hooks, "muc#roomconfig_moderatedroom", "moderated",
                            "Moderated (only participants with voice may speak)", priority=77,
                            submit_priority=110,
                            disco=("muc_moderated", "muc_unmoderated"))
