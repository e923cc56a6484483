"""The master's room features, one concern a module, around the room core (as Prosody's
plugins/muc/*.lib.lua around muc.lib.lua). Each room setting lives in one module, whose
`setup(hooks)` hooks the room events it takes part in (dmuc.hooks lists them); the
service calls every one of them, in BUILTIN_FEATURES' order, before operators' plugins
are loaded."""

from __future__ import annotations

from types import ModuleType

from dmuc.hooks import Hooks
from dmuc.master.features import (
    affiliation_notify,
    allow_pm,
    config_sections,
    disco,
    history,
    invites,
    mam,
    max_users,
    members_only,
    moderated,
    moderation,
    occupancy_log,
    occupant_id,
    password,
    persistent,
    presence_broadcast,
    public,
    room_logging,
    roominfo,
    subject,
    unique,
    vcard,
    voice,
    whois,
)

BUILTIN_FEATURES: tuple[ModuleType, ...] = (
    config_sections,  # the form's section headers
    roominfo,  # name, description, language
    persistent,
    public,
    members_only,
    moderated,
    password,
    whois,
    max_users,
    history,
    allow_pm,
    subject,
    presence_broadcast,
    invites,
    voice,  # voice requests (muc#request)
    room_logging,
    mam,  # the room's archive (XEP-0313) and its setting
    moderation,  # XEP-0425
    disco,  # the occupant count in muc#roominfo
    affiliation_notify,
    occupant_id,  # XEP-0421
    vcard,  # the room's vCard and avatar (XEP-0486)
    unique,  # XEP-0307 unique room names on the service
    occupancy_log,  # joins and leaves: a debug line each, an info summary a minute
)


def setup_builtin(hooks: Hooks) -> None:
    """Hook every built-in feature's handlers."""
    for feature in BUILTIN_FEATURES:
        feature.setup(hooks)
