"""Password-protected rooms, as Prosody's password.lib: the password a join must carry
(owners too, as in mod_muc), its two form fields and its disco feature; the password
an invitation carries (`invite`) and the one a creating join sets (`room-pre-create`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.errors import Refusal
from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.features.roomconfig import Field, Values
from dmuc.master.model import RoomConfig
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room

PROTECTED = "muc#roomconfig_passwordprotectedroom"
SECRET = "muc#roomconfig_roomsecret"


def join_password(stanza: Element) -> str | None:
    """The password in a join presence (<x xmlns='muc'><password/>), if any."""
    muc_x = stanzas.child(stanza, "x", xmlns.MUC)
    return stanzas.text_of(stanzas.child(muc_x, "password")) if muc_x is not None else None


def pre_join(room: Room, stanza: Element, nick: str, sender: str) -> Refusal | None:
    if room.config.password and join_password(stanza) != room.config.password:
        return Refusal("auth", "not-authorized", "A password is required to enter")
    return None


def config_form(room: Room, fields: list[Field]) -> None:
    password = room.config.password
    fields += [
        {"var": PROTECTED, "type": "boolean", "label": "Password protected",
         "value": bool(password)},
        {"var": SECRET, "type": "text-private", "label": "Password", "value": password},
    ]


def submitted(room: Room, values: Values, new: RoomConfig) -> None:
    secret = roomconfig.text(values, SECRET)
    if secret is not None:
        new.password = secret
    if roomconfig.boolean(values, PROTECTED) is False:
        new.password = ""


def disco_features(room: Room, features: list[str]) -> None:
    features.append("muc_passwordprotected" if room.config.password else "muc_unsecured")


def on_invite(room: Room, stanza: Element, out: Outbox) -> None:
    """An invitation carries the room's password (password.lib's muc-invite)."""
    x = stanzas.child(stanza, "x", xmlns.MUC_USER)
    if room.config.password and x is not None:
        x.addElement("password", content=room.config.password)


def on_pre_create(room: Room, stanza: Element, out: Outbox) -> None:
    """A password in the creating join protects the new room (password.lib's
    muc-room-pre-create)."""
    room.config.password = join_password(stanza) or room.config.password


def setup(hooks: Hooks) -> None:
    hooks.add("occupant-pre-join", pre_join, priority=20)
    hooks.add("invite", on_invite)
    hooks.add("room-pre-create", on_pre_create)
    hooks.add("room-config-form", config_form, priority=88)
    hooks.add("room-config-submitted", submitted, priority=100)
    hooks.add("room-disco-features", disco_features)
