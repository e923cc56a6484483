"""The toolkit of room settings (muc#roomconfig): reading a submitted form in a
`room-config-submitted` handler, and hooking a plain boolean setting in one call.

`values` maps each submitted field's var to its values, as stanzas.parse_form gives them;
a bad value raises a Refusal (bad-request) that names the field.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dmuc.errors import Refusal
from dmuc.hooks import Hooks
from dmuc.master.model import RoomConfig
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room

# The largest integer a form field may hold (xs:int); more digits are refused unread.
MAX_FORM_INT = 2**31 - 1

Values = dict[str, list[str]]
Field = dict[str, Any]  # a field spec for stanzas.form: var, type, label, value, options


def text(values: Values, var: str) -> str | None:
    """The field's first value; "" for a field sent without a value; None if absent."""
    got = values.get(var)
    return got[0] if got else ("" if got == [] else None)


def boolean(values: Values, var: str) -> bool | None:
    """The field as a boolean ("1"/"true", "0"/"false"); None if absent."""
    try:
        return stanzas.parse_bool(values.get(var))
    except ValueError as exc:
        raise Refusal("modify", "bad-request", f"{var}: not a boolean") from exc


def count(value: str, var: str) -> int:
    """A number from 0 to MAX_FORM_INT in ASCII digits, bounded before int() sees it."""
    number = stanzas.parse_bounded_int(value, 0, MAX_FORM_INT)
    if number is None:
        raise Refusal("modify", "bad-request", f"{var}: not a number from 0 to {MAX_FORM_INT}")
    return number


def hook_boolean(hooks: Hooks, var: str, attr: str, label: str, *, priority: int,
                 submit_priority: int | None = None,
                 disco: tuple[str, str] | None = None) -> None:
    """Hook a boolean setting kept in RoomConfig.<attr>: its field in the form (at
    `priority`), its submission (at `submit_priority`, by default the same) and, given
    `disco` (when on, when off), the disco#info feature that shows it."""

    def form(room: Room, fields: list[Field]) -> None:
        fields.append({"var": var, "type": "boolean", "label": label,
                       "value": getattr(room.config, attr)})

    def submitted(room: Room, values: Values, new: RoomConfig) -> None:
        value = boolean(values, var)
        if value is not None:
            setattr(new, attr, value)

    hooks.add("room-config-form", form, priority=priority)
    hooks.add("room-config-submitted", submitted,
              priority=priority if submit_priority is None else submit_priority)
    if disco is not None:
        on, off = disco

        def disco_features(room: Room, features: list[str]) -> None:
            features.append(on if getattr(room.config, attr) else off)

        hooks.add("room-disco-features", disco_features)
