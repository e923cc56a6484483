"""The room's name, description and language, as Prosody's name.lib, description.lib and
language.lib: their fields in the configuration form and in the muc#roominfo form."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.features.roomconfig import Field, Values
from dmuc.master.model import RoomConfig

if TYPE_CHECKING:
    from dmuc.master.room import Room

XML_NS = "http://www.w3.org/XML/1998/namespace"  # of xml:lang
NAME = "muc#roomconfig_roomname"
DESCRIPTION = "muc#roomconfig_roomdesc"
LANGUAGE = "muc#roomconfig_lang"
ATTRS = ((NAME, "name"), (DESCRIPTION, "description"), (LANGUAGE, "language"))


def config_form(room: Room, fields: list[Field]) -> None:
    c = room.config
    fields += [
        {"var": NAME, "type": "text-single", "label": "Title",
         "value": c.name or None},  # as name.lib: no value for a room without a name
        {"var": DESCRIPTION, "type": "text-single", "label": "Description",
         "value": c.description},
        {"var": LANGUAGE, "type": "text-single", "label": "Language tag", "value": c.language,
         "datatype": "xs:language"},  # as language.lib
    ]


def submitted(room: Room, values: Values, new: RoomConfig) -> None:
    for var, attr in ATTRS:
        value = roomconfig.text(values, var)
        if value is not None:
            setattr(new, attr, value)


def info_description(room: Room, fields: list[Field]) -> None:
    fields.append({"var": "muc#roominfo_description", "type": "text-single",
                   "label": "Description", "value": room.config.description})


def info_name(room: Room, fields: list[Field]) -> None:
    """No value when the room has no name, as name.lib."""
    title: Field = {"var": NAME, "type": "text-single", "label": "Title"}
    if room.config.name:
        title["value"] = room.config.name
    fields.append(title)


def info_language(room: Room, fields: list[Field]) -> None:
    if room.config.language:
        fields.append({"var": "muc#roominfo_lang", "type": "text-single",
                       "value": room.config.language})


def on_pre_create(room: Room, stanza: Element, **_: object) -> None:
    """A new room speaks the language of the join that creates it, unless the service's
    room defaults name one (mod_muc's set_room_defaults: the stanza's xml:lang, else
    muc_room_default_language)."""
    lang = stanza.getAttribute((XML_NS, "lang"))
    if lang and not room.config.language:
        room.config.language = lang


def setup(hooks: Hooks) -> None:
    hooks.add("room-pre-create", on_pre_create)
    hooks.add("room-config-form", config_form, priority=99)  # name.lib 99, 98, 97
    hooks.add("room-config-submitted", submitted, priority=170)
    hooks.add("room-disco-info", info_description, priority=100)
    hooks.add("room-disco-info", info_name, priority=80)
    hooks.add("room-disco-info", info_language, priority=30)
