"""Public rooms, as Prosody's hidden.lib: a public room is listed in the service's
disco#items and shows its occupants to anyone who asks."""

from __future__ import annotations

from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig


def setup(hooks: Hooks) -> None:
    roomconfig.hook_boolean(hooks, "muc#roomconfig_publicroom", "public",
                            "Include room information in public lists", priority=91,
                            submit_priority=130,
                            disco=("muc_public", "muc_hidden"))
