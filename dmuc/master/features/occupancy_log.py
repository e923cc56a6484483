"""Who joins and leaves, in the log (dmuc.protocol.occupancy): the room core writes each
join and leave as a debug line; this feature counts them per room and writes one info
summary per room and minute, so that a burst of joins costs no info line each."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmuc.hooks import Hooks
from dmuc.master.model import Occupant
from dmuc.outbox import Outbox
from dmuc.protocol.occupancy import OccupancyLog

if TYPE_CHECKING:
    from dmuc.master.room import Room


def setup(hooks: Hooks) -> OccupancyLog:
    tally = OccupancyLog("occupants")

    def joined(room: Room, occupant: Occupant, session: str, out: Outbox) -> None:
        tally.joined(room.jid, len(room.occupants), out.now)

    def left(room: Room, occupant: Occupant, out: Outbox) -> None:
        tally.left(room.jid, len(room.occupants), out.now)

    def tick(now: float, out: Outbox) -> None:
        tally.tick(out)

    hooks.add("occupant-joined", joined)
    hooks.add("occupant-left", left)
    hooks.add("tick", tick)
    return tally
