"""The maximum number of occupants, as Prosody's occupant limit in muc.lib: a full room
refuses newcomers (admins and owners excepted); 0 means no limit."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids
from dmuc.errors import Refusal
from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.features.roomconfig import Field, Values
from dmuc.master.model import AFFILIATION_RANK, RoomConfig

if TYPE_CHECKING:
    from dmuc.master.room import Room

VAR = "muc#roomconfig_maxusers"
# "none" for no limit, as XEP-0045's examples: an option with an empty value crashes
# real clients (profanity 0.13 segfaults on it when an owner opens the form)
NO_LIMIT = "none"
OPTIONS = ("5", "10", "20", "30", "50", "100", "150", "200", "500", "1000")


def pre_join(room: Room, stanza: Element, nick: str, sender: str) -> Refusal | None:
    limit = room.config.max_users
    if (
        limit
        and nick not in room.occupants  # another session of an occupant takes no place
        and len(room.occupants) >= limit
        and AFFILIATION_RANK[room.affiliation(jids.bare(sender))] < AFFILIATION_RANK["admin"]
    ):
        return Refusal("wait", "service-unavailable", "This room is full")
    return None


def config_form(room: Room, fields: list[Field]) -> None:
    limit = room.config.max_users
    options = [(NO_LIMIT, "No limit")] + [(v, v) for v in OPTIONS]
    if limit and str(limit) not in OPTIONS:
        options.append((str(limit), str(limit)))
    fields.append({"var": VAR, "type": "list-single", "label": "Maximum number of occupants",
                   "value": str(limit) if limit else NO_LIMIT, "options": options})


def submitted(room: Room, values: Values, new: RoomConfig) -> None:
    value = roomconfig.text(values, VAR)
    if value is not None:
        new.max_users = 0 if value.strip() in ("", NO_LIMIT) else roomconfig.count(value, VAR)


def setup(hooks: Hooks) -> None:
    hooks.add("occupant-pre-join", pre_join, priority=10)
    hooks.add("room-config-form", config_form, priority=85)  # with access
    hooks.add("room-config-submitted", submitted, priority=80)
