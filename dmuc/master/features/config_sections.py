"""The section headers of the configuration form, as Prosody's
config_form_sections.lib: `fixed` fields the settings' own fields fall between by their
priorities (room information 100, access 90, permissions 80, other options 70)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmuc.hooks import Hooks
from dmuc.master.features.roomconfig import Field

if TYPE_CHECKING:
    from dmuc.master.room import Room

SECTIONS = (
    (100, "Room information"),
    (90, "Access to the room"),
    (80, "Permissions in the room"),
    (70, "Other options"),
)


def _header(title: str):  # noqa: ANN202 (a handler)
    def add(room: Room, fields: list[Field]) -> None:
        fields.append({"type": "fixed", "value": title})
    return add


def setup(hooks: Hooks) -> None:
    for priority, title in SECTIONS:
        hooks.add("room-config-form", _header(title), priority=priority)
