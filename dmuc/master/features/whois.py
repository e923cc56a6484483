"""Who may see occupants' real JIDs, as Prosody's whois.lib: its form field and disco
feature, and the slaves told when it changes. The rule itself (who sees what) is
dmuc.protocol.visibility's; the status codes 172/173 are sent by owner.reconfigure."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmuc.errors import Refusal
from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.features.roomconfig import Field, Values
from dmuc.master.model import WHOIS_VALUES, RoomConfig

if TYPE_CHECKING:
    from dmuc.master.room import Room

VAR = "muc#roomconfig_whois"


def config_form(room: Room, fields: list[Field]) -> None:
    fields.append({"var": VAR, "type": "list-single",
                   "label": "Addresses (JIDs) of room occupants may be viewed by",
                   "value": room.config.whois,
                   "options": [("moderators", "Moderators only"), ("anyone", "Anyone")]})


def submitted(room: Room, values: Values, new: RoomConfig) -> None:
    whois = roomconfig.text(values, VAR)
    if whois is not None:
        if whois not in WHOIS_VALUES:
            raise Refusal("modify", "bad-request", f"{VAR}: unknown value")
        new.whois = whois


def disco_features(room: Room, features: list[str]) -> None:
    features.append("muc_nonanonymous" if room.config.whois == "anyone"
                    else "muc_semianonymous")


def setup(hooks: Hooks) -> None:
    hooks.add("room-config-form", config_form, priority=76)
    hooks.add("room-config-submitted", submitted, priority=90)
    hooks.add("room-disco-features", disco_features)
