"""XEP-0421 occupant-id, as Prosody 0.12's plugins/muc/occupant_id.lib.lua.

Each occupant's id is base64(HMAC-SHA256(key = its bare JID, message = the room's salt)),
the salt a random UUID kept with the room (room.data, so it survives a restart): stable
per user and room, different across rooms, and no one can tell the JID from it. The id
goes on every presence the room sends about an occupant (joins, changes, nick changes,
leaves, the occupant list, the copies to slaves), on its groupchat messages (so in
history too) and on its private messages; whatever occupant-id a client sent is removed
first (forgery). Subject changes and the room's own messages carry none, as in Prosody.

Users behind a XEP-0282 slave get the master's ids: the slave relays these stanzas
unchanged and never computes an id of its own (docs/protocol.md §4.7, §4.9).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import uuid
from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.hooks import Hooks
from dmuc.master.model import Occupant
from dmuc.outbox import Outbox
from dmuc.protocol.occupant_id import place

if TYPE_CHECKING:
    from dmuc.master.room import Room

SALT_KEY = "occupant_id_salt"  # in room.data, as Prosody's room._data.occupant_id_salt


def room_salt(room: Room) -> str:
    salt = room.data.get(SALT_KEY)
    if not isinstance(salt, str) or not salt:
        salt = room.data[SALT_KEY] = str(uuid.uuid4())
    return salt


def compute(bare_jid: str, salt: str) -> str:
    """Prosody's b64encode(hmac_sha256(bare_jid, salt))."""
    digest = hmac.new(bare_jid.encode(), salt.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode("ascii")


def occupant_id(room: Room, occupant: Occupant) -> str:
    """The occupant's id, computed once per occupant (as Prosody's occupant.stable_id)."""
    if not occupant.occupant_id:
        occupant.occupant_id = compute(occupant.bare_jid, room_salt(room))
    return occupant.occupant_id


def on_presence(room: Room, occupant: Occupant, stanza: Element) -> None:
    # As Prosody: after the user's payload, before the room's muc#user x.
    muc_user = next((c for c in stanza.elements() if c.uri == xmlns.MUC_USER), None)
    place(stanza, occupant_id(room, occupant), muc_user)


def on_groupchat(room: Room, stanza: Element, occupant: Occupant, out: Outbox,
                 stamp: float) -> None:
    # As Prosody: after the message's payload, before the room's stanza-id.
    sid = next((c for c in stanza.elements() if c.uri == xmlns.STANZA_ID
                and c.getAttribute("by") == room.jid), None)
    place(stanza, occupant_id(room, occupant), sid)


def on_private(room: Room, stanza: Element, occupant: Occupant, out: Outbox) -> None:
    place(stanza, occupant_id(room, occupant))


def on_created(room: Room, out: Outbox) -> None:
    room_salt(room)  # a new room has its salt from the start, so its first save keeps it


def disco_features(room: Room, features: list[str]) -> None:
    features.append(xmlns.OCCUPANT_ID)


def service_features(features: list[str]) -> None:
    features.append(xmlns.OCCUPANT_ID)  # Prosody's module:add_feature on the service


def setup(hooks: Hooks) -> None:
    hooks.add("occupant-presence", on_presence)
    hooks.add("message-broadcast", on_groupchat)
    hooks.add("private-message", on_private)
    hooks.add("room-created", on_created)
    hooks.add("room-disco-features", disco_features)
    hooks.add("service-disco-features", service_features)
