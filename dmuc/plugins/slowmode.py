"""Slow mode: a per-room minimum interval between one occupant's messages.

The room's owner sets it in the configuration form (`dmuc#slowmode`, seconds,
0: off; `[muc.room_defaults.extra] slowmode = N` for new rooms); it is kept in
`RoomConfig.extra["slowmode"]`, so it is stored with the room. A groupchat message sent
sooner than that after the same user's previous one is refused as mod_muc_limits refuses
an overactive sender: wait/policy-violation, with the body sent back, and one log line.
Moderators are not slowed down; messages a slave replays after a netsplit were charged
when they were first sent. Enable with `muc.plugins = ["dmuc.plugins.slowmode"]`.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from twisted.words.xish.domish import Element

from dmuc.hooks import Hooks
from dmuc.master.features import roomconfig
from dmuc.master.features.roomconfig import Field, Values
from dmuc.master.model import Occupant, RoomConfig
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas, xep0282

if TYPE_CHECKING:
    from dmuc.master.room import Room

VAR = "dmuc#slowmode"
KEY = "slowmode"  # in RoomConfig.extra
LABEL = "Slow mode: minimum seconds between one occupant's messages (0: off)"


def interval(room: Room) -> int:
    value = room.config.extra.get(KEY, 0)
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


class SlowMode:
    def __init__(self) -> None:
        # room JID -> bare JID -> when its last message went through; an entry goes when
        # the occupant leaves or the room is destroyed
        self.last: dict[str, dict[str, float]] = {}

    def config_form(self, room: Room, fields: list[Field]) -> None:
        fields.append({"var": VAR, "type": "text-single", "label": LABEL,
                       "value": str(interval(room))})

    def submitted(self, room: Room, values: Values, new: RoomConfig) -> None:
        value = roomconfig.text(values, VAR)
        if value is not None:
            new.extra = {**new.extra, KEY: roomconfig.count(value.strip() or "0", VAR)}

    def groupchat(self, room: Room, occupant: Occupant, stanza: Element,
                  out: Outbox) -> bool | None:
        seconds = interval(room)
        if not seconds or occupant.role == "moderator" or xep0282.is_replay(stanza):
            return None
        said = self.last.setdefault(room.jid, {})
        previous = said.get(occupant.bare_jid)
        if previous is not None and out.now - previous < seconds:
            self._refuse(room, stanza, seconds, seconds - (out.now - previous), out)
            return True
        said[occupant.bare_jid] = out.now
        return None

    @staticmethod
    def _refuse(room: Room, stanza: Element, seconds: int, early: float,
                out: Outbox) -> None:
        text = (f"This room is in slow mode (one message every {seconds} s): wait "
                f"{math.ceil(early)} s")
        reply = stanzas.error_reply(stanza, "wait", "policy-violation", text, by=room.jid)
        body = stanzas.child(stanza, "body")
        if body is not None:  # as mod_muc_limits: the client can show what was not sent
            reply.children.insert(0, stanzas.copy(body))
        out.send(reply)
        out.info(stanzas.one_line(f"slow mode: refused a message from {stanza['from']} to "
                                  f"{room.jid}: {early:.1f} s early (one every {seconds} s)"))

    def left(self, room: Room, occupant: Occupant, out: Outbox) -> None:
        self.last.get(room.jid, {}).pop(occupant.bare_jid, None)

    def destroyed(self, room: Room, out: Outbox) -> None:
        self.last.pop(room.jid, None)


def setup(hooks: Hooks, service: Any) -> SlowMode:
    feature = SlowMode()
    hooks.add("room-config-form", feature.config_form)
    hooks.add("room-config-submitted", feature.submitted)
    hooks.add("occupant-groupchat", feature.groupchat)
    hooks.add("occupant-left", feature.left)
    hooks.add("room-destroyed", feature.destroyed)
    return feature
