"""The room's vCard and avatar (vcard-temp on the room JID, XEP-0486 MUC Avatars), as
Prosody 13's plugins/muc/vcard.lib.lua with its mod_vcard.

* vcard-temp get on the room JID: the room's vCard, to anyone; item-not-found if none.
* vcard-temp set on the room JID: owners only (others: forbidden); the vCard is stored
  with the room (room.data, written with every save of the room) and may be at most
  MAX_VCARD_CHARS characters, a photo of about 96 KB (Prosody is bounded only by its
  stanza size limit, 256 KiB on c2s): over that, not-acceptable.
* disco#info: feature vcard-temp and the field muc#roominfo_avatarhash (the SHA-1, in
  hex, of the PHOTO's decoded BINVAL; no value without a photo).
* The avatar's hash as XEP-0153 presence from the room JID
  (`<x xmlns='vcard-temp:x:update'><photo>hash</photo></x>`): to each occupant as it
  joins (when the room has an avatar), and to everyone with a status 104 message when
  the vCard changes (Prosody's default, muc_avatar_advertise_hashes unset).

Users behind a XEP-0282 slave: the slave answers their vcard-temp and disco#info gets
from its mirror (the vCard and the query go to each slave in its snapshot and when they
change, docs/protocol.md §4.18); a set crosses to the room (§4.8). The avatar presence
goes to each slave once, and in each snapshot, and the slave gives it to its entering
users (§4.13).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.hooks import Hooks
from dmuc.master.features.roomconfig import Field
from dmuc.master.model import Occupant
from dmuc.outbox import Outbox
from dmuc.protocol import roominfo, stanzas

if TYPE_CHECKING:
    from dmuc.master.room import Room

VCARD_KEY = "vcard"  # in room.data: the vCard, serialised
HASH_KEY = "avatar_hash"  # in room.data: the photo's SHA-1 (hex), when it has one
MAX_VCARD_CHARS = 128 * 1024
AVATAR_HASH_FIELD = "muc#roominfo_avatarhash"


def stored_vcard(room: Room) -> Element | None:
    xml = room.data.get(VCARD_KEY)
    return stanzas.parse_xml(xml) if isinstance(xml, str) and xml else None


def avatar_hash(room: Room) -> str | None:
    value = room.data.get(HASH_KEY)
    return value if isinstance(value, str) and value else None


def photo_hash(vcard: Element) -> str | None:
    """SHA-1 (hex) of the PHOTO's BINVAL, decoded; None without one. ValueError if the
    BINVAL is not base64."""
    photo = stanzas.child(vcard, "PHOTO")
    binval = stanzas.child(photo, "BINVAL") if photo is not None else None
    text = "".join(str(binval).split()) if binval is not None else ""
    if not text:
        return None
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("PHOTO BINVAL is not base64") from exc
    return hashlib.sha1(data).hexdigest()  # noqa: S324 - XEP-0153 names SHA-1


def avatar_presence(room: Room) -> Element:
    """XEP-0153 presence from the room JID with its avatar's hash (empty: no avatar)."""
    presence = stanzas.new("presence", {"from": room.jid})
    x = presence.addElement((xmlns.VCARD_UPDATE, "x"))
    photo = x.addElement("photo")
    value = avatar_hash(room)
    if value:
        photo.addContent(value)
    return presence


def handle_iq(room: Room, stanza: Element, payload: Element, out: Outbox) -> bool | None:
    """room-iq: vcard-temp on the room JID."""
    if payload.uri != xmlns.VCARD:
        return None
    what = f"vcard-temp {stanza.getAttribute('type')} to {room.jid}"
    if payload.name != "vCard":
        stanzas.refuse(out, stanza, "cancel", "service-unavailable", what=what)
        return True
    if stanza.getAttribute("type") == "get":
        out.send(roominfo.vcard_answer(stanza, stored_vcard(room)))
        return True
    sender = stanza.getAttribute("from") or ""
    if room.affiliation(jids.bare(sender)) != "owner":
        stanzas.refuse(out, stanza, "auth", "forbidden",
                       "Only owners may change the room's vCard", what=what)
        return True
    size = stanzas.measure(payload, max_chars=MAX_VCARD_CHARS)
    if size.chars > MAX_VCARD_CHARS:
        stanzas.refuse(out, stanza, "modify", "not-acceptable",
                       f"The vCard is larger than {MAX_VCARD_CHARS} characters", what=what)
        return True
    try:
        new_hash = photo_hash(payload)
    except ValueError as exc:
        stanzas.refuse(out, stanza, "modify", "bad-request", str(exc), what=what)
        return True
    vcard = stanzas.copy(payload)
    room.data[VCARD_KEY] = vcard.toXml()
    if new_hash is None:
        room.data.pop(HASH_KEY, None)
    else:
        room.data[HASH_KEY] = new_hash
    room.save(out)
    out.send(stanzas.iq_result(stanza))
    out.info(f"{sender} set the vCard of {room.jid} (avatar {new_hash or 'none'})")
    room.service.hooks.fire("room-mirror-changed", room=room, out=out, vcard=True)
    _announce(room, out)
    return True


def _announce(room: Room, out: Outbox) -> None:
    """vcard-updated: the new hash to every occupant (one copy per slave), and 104."""
    presence = avatar_presence(room)
    direct, relays = room.service.router.route(room)
    out.broadcast(presence, direct)
    room.service.router.fan_out_room_stanza(room, presence, relays, out)
    room.broadcast_groupchat(stanzas.status_message(room.jid, ["104"]), out)


def on_joined(room: Room, occupant: Occupant, session: str, out: Outbox) -> None:
    """An occupant's first session joined directly: it gets the avatar's hash (behind a
    slave, the slave sends it). Prosody 13 sends an empty <photo/> to every joiner of a
    room without avatar too; we send it only when there is one (clients learn of none
    from disco#info, and XEP-0486 warns that this presence confuses some clients)."""
    if avatar_hash(room) is None or len(occupant.sessions) != 1 \
            or room.service.router.relay_of(room, session) is not None:
        return
    presence = avatar_presence(room)
    presence["to"] = session
    out.send(presence)


def snapshot(room: Room, extra: list[Element]) -> None:
    extra.append(avatar_presence(room))


def slave_mirror(room: Room, settings: Element, vcard: bool, **_: object) -> None:
    """§4.18: the vCard a slave answers its users' vcard-temp gets from (an empty
    <vcard/>: the room has none), when the snapshot or a change carries it."""
    if vcard:
        held = settings.addElement("vcard")
        stored = stored_vcard(room)
        if stored is not None:
            held.addChild(stored)


def disco_features(room: Room, features: list[str]) -> None:
    features.append(xmlns.VCARD)


def disco_info(room: Room, fields: list[Field]) -> None:
    fields.append({"var": AVATAR_HASH_FIELD, "type": "text-multi",
                   "value": [h for h in (avatar_hash(room),) if h]})


def setup(hooks: Hooks) -> None:
    hooks.add("room-iq", handle_iq)
    hooks.add("occupant-joined", on_joined)
    hooks.add("slave-snapshot", snapshot)
    hooks.add("slave-room-mirror", slave_mirror)
    hooks.add("room-disco-features", disco_features)
    hooks.add("room-disco-info", disco_info, priority=10)
