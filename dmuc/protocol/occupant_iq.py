"""An IQ get/set to an occupant JID (room@service/nick), as mod_muc's
handle_iq_to_occupant decides it, in its order: a sender who is no occupant is refused
(not-acceptable: how a XEP-0410 client learns it is no longer joined), a nick nobody has
is item-not-found, a ping to one's own occupant JID is answered by the room (XEP-0410
self-ping), anything else is relayed to the occupant. The master's rule for every such IQ,
and the slave's for its own users: it answers the self-pings of its local occupants and
the IQs of local users who are not in the room itself (during a netsplit too), and hands
the rest to the master."""

from __future__ import annotations

from enum import Enum

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.protocol import stanzas

# The answer to a stanza that needs its sender in the room (as mod_muc).
NOT_IN_ROOM = ("cancel", "not-acceptable", "You are not currently connected to this chat")


class OccupantIq(Enum):
    NOT_IN_ROOM = "not-in-room"  # the sender is no occupant: NOT_IN_ROOM
    NO_RECIPIENT = "no-recipient"  # no occupant has that nick: item-not-found
    SELF_PING = "self-ping"  # a ping to the sender's own occupant JID: a result
    RELAY = "relay"  # to the occupant, from the sender's occupant JID


def is_ping(stanza: Element) -> bool:
    return stanza.getAttribute("type") == "get" \
        and stanzas.child(stanza, "ping", xmlns.PING) is not None


def verdict(stanza: Element, sender_nick: str | None, target_nick: str,
            target_present: bool) -> OccupantIq:
    """What the room does with an IQ get/set from the occupant `sender_nick` (None: the
    sender's session is not in the room) to the occupant JID of `target_nick`."""
    if sender_nick is None:
        return OccupantIq.NOT_IN_ROOM
    if not target_present:
        return OccupantIq.NO_RECIPIENT
    if sender_nick == target_nick and is_ping(stanza):
        return OccupantIq.SELF_PING
    return OccupantIq.RELAY

