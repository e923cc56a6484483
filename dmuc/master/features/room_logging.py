"""Logged rooms (the `logging` setting; named so as not to read like the stdlib's
logging): occupants are told with status 170 on join and 170/171 when it changes."""

from __future__ import annotations

from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig


def setup(hooks: Hooks) -> None:
    # Checked with the other booleans, before the password (the order of submission).
    roomconfig.hook_boolean(hooks, "muc#roomconfig_enablelogging", "logging",
                            "Store and show the room's history to new occupants (logged)",
                            priority=62, submit_priority=103)
