"""Out-of-room notice of an affiliation change (XEP-0045 §9, status 101), as Prosody's
affiliation_notify.lib: a user not in the room learns of its new affiliation."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmuc.hooks import Hooks
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room


def notify(room: Room, jid: str, affiliation: str, out: Outbox) -> None:
    if "@" not in jid or room.occupants_of(jid):
        return  # a whole domain, or a user in the room (who saw the presence change)
    out.send(stanzas.affiliation_notice(room.jid, jid, affiliation))


def setup(hooks: Hooks) -> None:
    hooks.add("affiliation-changed", notify)
