"""The MUC service (sans-I/O): routes each stanza to the service itself or to a room.

``MUCService.receive(stanza, now)`` returns an Outbox: the stanzas to write and the
records to store. Nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.errors import Refusal
from dmuc.hooks import Hooks
from dmuc.master.distribution import Distribution
from dmuc.master.features import adhoc, direct_occupants, history, mam, setup_builtin
from dmuc.master.features import limits as rate_limits
from dmuc.master.model import RoomConfig
from dmuc.master.room import Room
from dmuc.master.routing import Router
from dmuc.outbox import DeleteRoom, Outbox
from dmuc.protocol import stanzas, xep0282
from dmuc.records import HistoryRecord, OccupantRecord, RoomRecord

LOCKED_ROOM_LIFETIME = 300.0  # seconds a new room may stay locked (mod_muc's default)


@dataclass
class ServiceSettings:
    jid: str
    name: str = "Prosody Chatrooms"  # the disco name; mod_muc's default for its `name`
    admins: frozenset[str] = frozenset()
    # who may create rooms: "anyone", "admins", or a list of user domains
    create_rooms: str | list[str] = "anyone"
    room_locking: bool = True
    max_history_length: int = 50
    # messages per room kept for a slave's catch-up after a netsplit (by stanza-id)
    archive_window: int = 10_000
    enforce_reserved_nicks: bool = False
    allow_unaffiliated_register: bool = False
    # tell a user outside the room of its new affiliation (status 101); mod_muc does not
    affiliation_notify: bool = False
    room_defaults: dict[str, Any] = field(default_factory=dict)
    # XEP-0282 slaves allowed to mirror rooms: slave JID -> user domains it serves
    slaves: dict[str, frozenset[str]] = field(default_factory=dict)
    # per-sender rate limits (features/limits.py, [muc.limits]); None: none
    limits: rate_limits.Limits | None = None
    # the rooms' XEP-0313 archives (features/mam.py): retention in seconds (None: for
    # ever; mod_muc_mam's muc_log_expires_after, 1 week), how often expired messages are
    # deleted (muc_log_cleanup_interval), the most messages a query page returns
    archive_expires_after: float | None = 7 * 86_400
    archive_cleanup_interval: float = 4 * 3600
    archive_max_results: int = 50
    # [muc.plugin_config]: each plugin's own settings, by its name (e.g. "blocklist")
    plugin_config: dict[str, Any] = field(default_factory=dict)


class MUCService:
    def __init__(self, settings: ServiceSettings, hooks: Hooks | None = None) -> None:
        self.settings = settings
        self.jid = settings.jid
        self.admins = settings.admins
        self.hooks = hooks or Hooks()
        self.rooms: dict[str, Room] = {}
        self.distribution = Distribution(self)
        self.router: Router = self.distribution  # how the room core reaches its sessions
        self.retention = mam.Retention()
        setup_builtin(self.hooks)  # the room features' handlers, before operators' plugins
        rate_limits.setup(self.hooks, self)
        self.admin_commands = adhoc.setup(self.hooks, self)  # XEP-0050, for the admins
        # the occupants reached directly, kept across a crash (§4.11.5)
        self.direct_occupants = direct_occupants.setup(self.hooks, self)

    def reconfigure(self, settings: ServiceSettings, now: float) -> Outbox:
        """A configuration reload: the new settings apply from now on (room defaults to
        rooms created afterwards), the [[slaves]] allow list as Distribution.set_allowed.
        The caller keeps what was set up at start (the JID, the rate limits)."""
        out = Outbox(now)
        self.settings = settings
        self.admins = settings.admins
        self.distribution.set_allowed(dict(settings.slaves), out)
        self.hooks.fire("config-reloaded", service=self, out=out)
        return out

    # --- state from storage --------------------------------------------------------------

    def restore_room(self, record: RoomRecord, records: Iterable[HistoryRecord]) -> Room:
        room = Room.from_state(self, record.jid, record.state)
        history.load(room, list(records))
        self.rooms[room.jid] = room
        return room

    def restore_occupants(self, records: list[OccupantRecord], now: float) -> Outbox:
        """The occupants reached directly, back in their restored rooms (after every room
        is restored); a temporary room left without any is dropped."""
        out = Outbox(now)
        restored = self.direct_occupants.restore(records, out)
        if records:
            temporary = sum(not room.config.persistent for room in self.rooms.values())
            out.info(f"restored {restored} of {len(records)} stored occupants reached "
                     f"directly ({temporary} temporary rooms kept with them); asking each "
                     "session whether it is still there")
        return out

    # --- room lifecycle --------------------------------------------------------------------

    def may_create(self, creator_bare: str) -> bool:
        policy = self.settings.create_rooms
        if creator_bare in self.admins:
            return True
        if policy == "anyone":
            return True
        if policy == "admins":
            return False
        return jids.domain(creator_bare) in policy

    def create_room(self, room_jid: str, creator_bare: str, out: Outbox) -> Room:
        config = RoomConfig.from_dict({**RoomConfig().to_dict(), **self.settings.room_defaults})
        config.history_length = min(config.history_length, self.settings.max_history_length)
        room = Room(self, room_jid, config)
        room.affiliations[creator_bare] = "owner"
        room.locked = self.settings.room_locking
        room.created = out.now
        self.rooms[room_jid] = room
        out.info(f"{creator_bare} created {room_jid}")
        self.hooks.fire("room-created", room=room, out=out)
        return room

    def close_if_empty(self, room: Room, out: Outbox) -> None:
        """A temporary room ends with its last occupant; so does a never-configured room."""
        if room.destroyed or not room.is_empty():
            return
        if room.config.persistent and not room.locked:
            return
        self.remove_room(room, out)

    def remove_room(self, room: Room, out: Outbox) -> None:
        if room.destroyed:
            return
        room.destroyed = True
        self.rooms.pop(room.jid, None)
        self.forget_room(room, out)
        self.distribution.room_gone(room.jid)
        out.info(f"{room.jid} destroyed")
        self.hooks.fire("room-destroyed", room=room, out=out)

    def forget_room(self, room: Room, out: Outbox) -> None:
        """Remove a room from storage (it stopped being persistent, or was destroyed)."""
        out.store(DeleteRoom(room.jid))

    # --- routing -----------------------------------------------------------------------------

    def receive(self, stanza: Element, now: float) -> Outbox:
        # while our Prosody stops, copies for direct sessions wait for it (§4.11.5)
        return self.direct_occupants.withhold(self._receive(stanza, now))

    def _receive(self, stanza: Element, now: float) -> Outbox:
        out = Outbox(now)
        to = jids.parse(stanza.getAttribute("to"))
        sender = jids.parse(stanza.getAttribute("from"))
        kind = stanza.name
        if sender is None or kind not in ("message", "presence", "iq"):
            return out  # the server never sends us these; nothing sensible to answer
        if to is None:
            stanzas.refuse_malformed_address(out, stanza, (self.jid,), self.jid)
            return out
        # Replies go to the normalised address the sender used.
        stanza["from"] = sender.full()
        if sender.host == self.jid and sender.user is None and \
                self.direct_occupants.from_prosody(stanza, out):
            return out
        if sender.host == self.jid:
            # Our own addresses never speak as users (§6): a stanza from a room JID to a
            # room would make the room an occupant of itself and loop.
            if stanza.getAttribute("type") not in ("error", "result"):
                out.info(f"refused a {kind} from {sender.full()}: the service's own address")
                out.send(stanzas.error_reply(stanza, "cancel", "not-allowed",
                                             "The service's own addresses are not users",
                                             by=self.jid))
            return out
        if to.user is not None and self.distribution.note_forwarded(  # a slave's number
                stanza, sender.full(), to.userhost(), out):  # on what it forwards (§4.11.2)
            return out
        if self.direct_occupants.held_for_a_slave(stanza, sender.full(), out):
            return out
        if self.hooks.fire("stanza", stanza=stanza, out=out):
            return out
        if to.user is None:
            if to.host == self.jid:
                self._to_service(stanza, out)
            return out
        room_jid = to.userhost()
        nick = to.resource
        if self.distribution.is_slave_stanza(stanza, sender.full()):
            self.distribution.receive(stanza, sender.full(), room_jid, out)
            return out
        room = self.rooms.get(room_jid)
        if room is None:
            self._to_missing_room(stanza, room_jid, nick, out)
            return out
        if kind == "presence":
            room.handle_presence(stanza, nick, out)
        elif kind == "message":
            room.handle_message(stanza, nick, out)
        else:
            room.handle_iq(stanza, nick, out)
        return out

    def connected(self, now: float) -> Outbox:
        """The component stream is (again) up: every allowed slave learns that this master
        may have lost its registrations, and registers its rooms again (netjoin); every
        session reached directly is asked whether it is still there (§4.11.5)."""
        out = Outbox(now)
        self.direct_occupants.release(out)  # kept while our Prosody restarted: first
        for slave_jid in sorted(self.distribution.allowed):
            out.send(xep0282.master_restarted(self.jid, slave_jid))
        self.direct_occupants.connected(out)
        return out

    def tick(self, now: float) -> Outbox:
        """Timers: XEP-0282 keepalives to quiet or split slaves (§4.10, §4.11), and the
        end of rooms left locked."""
        out = Outbox(now)
        self.hooks.fire("tick", now=now, out=out)
        self.distribution.tick(now, out)
        self.retention.tick(self.settings, now, out)
        for room in list(self.rooms.values()):
            if room.locked and now - room.created > LOCKED_ROOM_LIFETIME:
                # As mod_muc: a room its owner never configured goes away.
                out.info(f"{room.jid} was never configured; destroying it")
                room.destroy(out, reason="The room was not configured in time")
        return self.direct_occupants.withhold(out)

    def _to_missing_room(self, stanza: Element, room_jid: str, nick: str | None,
                         out: Outbox) -> None:
        kind, stype = stanza.name, stanza.getAttribute("type")
        if kind == "presence" and stype is None:
            if nick is None:
                out.send(stanzas.join_error(stanza, "modify", "jid-malformed"))
                return
            creator = jids.bare(stanza["from"])
            if not self.may_create(creator):
                out.send(stanzas.join_error(stanza, "cancel", "not-allowed",
                                            "Room creation is restricted"))
                return
            try:
                jids.check_nick(nick)
            except Refusal as refusal:
                out.send(stanzas.join_error(stanza, refusal.err_type, refusal.condition,
                                            refusal.text))
                out.info(f"refused join of {creator} to {room_jid}: {refusal.text}")
                return
            room = self.create_room(room_jid, creator, out)
            self.hooks.fire("room-pre-create", room=room, stanza=stanza, out=out)
            if stanzas.child(stanza, "x", xmlns.MUC) is None:
                room.locked = False  # groupchat 1.0 client: an instant room (as lock.lib)
            room.join(stanza, stanza["from"], nick, out, created=True)
            if room.is_empty():
                self.remove_room(room, out)
            return
        if stype in ("error", "result") or (kind == "presence" and stype is not None):
            return
        out.send(stanzas.error_reply(stanza, "cancel", "item-not-found",
                                     "No such room"))

    def _to_service(self, stanza: Element, out: Outbox) -> None:
        if stanza.name != "iq" or stanza.getAttribute("type") not in ("get", "set"):
            if stanza.name == "message" and stanza.getAttribute("type") != "error":
                out.send(stanzas.error_reply(stanza, "cancel", "service-unavailable"))
            return
        payload = next(stanza.elements(), None)
        if payload is None:
            out.send(stanzas.error_reply(stanza, "modify", "bad-request"))
            return
        if self.hooks.fire("service-iq", stanza=stanza, payload=payload, out=out):
            return
        is_get = stanza.getAttribute("type") == "get"
        if is_get and payload.uri == xmlns.DISCO_INFO and not payload.getAttribute("node"):
            out.send(stanzas.iq_result(stanza, self.disco_info()))
        elif is_get and payload.uri == xmlns.DISCO_ITEMS and not payload.getAttribute("node"):
            out.send(stanzas.iq_result(stanza, self.disco_items()))
        elif is_get and payload.uri == xmlns.PING:
            out.send(stanzas.iq_result(stanza))
        else:
            out.send(stanzas.error_reply(stanza, "cancel", "service-unavailable"))

    def disco_info(self) -> Element:
        reply = stanzas.query(xmlns.DISCO_INFO)
        identity = reply.addElement("identity")
        identity.attributes.update(
            {"category": "conference", "type": "text", "name": self.settings.name}
        )
        # mod_muc_mam adds urn:xmpp:mam:2 on the service too
        features = [xmlns.MUC, xmlns.DISCO_INFO, xmlns.DISCO_ITEMS, xmlns.PING,
                    xmlns.STANZA_ID, xmlns.MAM]
        self.hooks.fire("service-disco-features", features=features)
        for var in features:
            reply.addElement("feature")["var"] = var
        return reply

    def disco_items(self) -> Element:
        reply = stanzas.query(xmlns.DISCO_ITEMS)
        for room_jid, room in sorted(self.rooms.items()):
            if room.config.public and not room.locked:
                item = reply.addElement("item")
                item["jid"] = room_jid
                item["name"] = room.config.name or room_jid.split("@")[0]
        return reply
