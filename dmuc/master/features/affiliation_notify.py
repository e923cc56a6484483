"""An affiliation change of a user who is not in the room (XEP-0045 §9).

As mod_muc 0.12 (muc.lib.lua's set_affiliation): the room is told with a message from the
room JID carrying the item (XEP-0045 example 195), to its moderators only when the room is
semi-anonymous, to every occupant otherwise. Optionally (`muc.affiliation_notify`, off by
default, as Prosody's affiliation_notify.lib) the user is told too, with status 101.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dmuc.hooks import Hooks
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas, visibility

if TYPE_CHECKING:
    from dmuc.master.room import Room


def announce(room: Room, jid: str, affiliation: str, in_room: bool, reason: str | None,
             out: Outbox, **_: object) -> None:
    """Example 195: the room's moderators (everyone, if non-anonymous) learn of it. Sent
    to each session itself, through a slave or not: it is not a broadcast to all."""
    if in_room:
        return
    role = room.default_role(room.affiliation(jid))
    codes = [] if role != "none" else ["301" if affiliation == "outcast" else "321"]
    notice = stanzas.new("message", {"from": room.jid})
    notice.addChild(stanzas.muc_user_x([{"affiliation": affiliation, "jid": jid}], codes,
                                       reason=reason))
    recipients = [session for occupant in room.occupants.values()
                  if visibility.sees_real_jids(room.config.whois, occupant.role)
                  for session in occupant.sessions]
    out.broadcast(notice, recipients)


def notify(room: Room, jid: str, affiliation: str, in_room: bool, out: Outbox,
           **_: object) -> None:
    """The user outside the room learns of its new affiliation (status 101)."""
    if "@" not in jid or in_room:
        return  # a whole domain, or a user in the room (who saw the presence change)
    if room.service.settings.affiliation_notify:
        out.send(stanzas.affiliation_notice(room.jid, jid, affiliation))


def setup(hooks: Hooks) -> None:
    hooks.add("affiliation-changed", announce)
    hooks.add("affiliation-changed", notify)
