"""The XEP-0282 slave (sans-I/O): mirrors rooms of remote masters for this server's users.

Local users' stanzas to a mirrored room reach the slave (Prosody's mod_dmuc_slave diverts
them); the slave forwards them to the master unchanged (§4.8) and keeps, per room, the
roster, the distribution list of local occupants and the history. From the master it
receives ONE copy of every broadcast and fans it out to the local occupants (§4.9, §4.7),
and ENTER/LEAVE (§4.5, §4.6). See docs/protocol.md for every stanza.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.outbox import AppendHistory, ClearHistory, DeleteRoom, Outbox, SaveRoom
from dmuc.protocol import stanzas, visibility, xep0282
from dmuc.protocol.history import History, HistoryEntry, delayed
from dmuc.storage import HistoryRecord, slave_history_key

MAX_QUEUED = 500  # stanzas held per room while registering or split


@dataclass
class SlaveSettings:
    jid: str  # the slave component's JID, e.g. dmuc.vesa.yeggmaex.irc
    domains: frozenset[str]  # the user domains it serves (its own server's VirtualHosts)
    masters: frozenset[str]  # MUC services whose rooms it mirrors
    keepalive: int = 60  # seconds of silence before a keepalive
    history: int = 20  # history stanzas it is willing to keep per room
    rooms: tuple[str, ...] = ()  # rooms to register for at start-up


@dataclass
class SlaveRoom:
    jid: str
    registered: bool = False
    registering: bool = False
    passthrough: bool = False  # the master refused us: users talk to it directly
    split: bool = False
    keepalive: int = 60
    history_length: int = 20
    whois: str = "moderators"
    roster: dict[str, Element] = field(default_factory=dict)  # nick -> presence from master
    local: dict[str, str] = field(default_factory=dict)  # local full JID -> nick
    directed: set[str] = field(default_factory=set)  # local JIDs that sent presence to the room
    subject: Element | None = None  # the last subject message, as broadcast
    history: History = field(default_factory=History)
    queue: list[Element] = field(default_factory=list)  # held for the master
    # during a resync: the roster before it, and the stanza-ids of the history we had
    resync_old: dict[str, Element] | None = None
    # nick -> (its roster presence, that XML, without the real JID, that XML); not stored
    rendered: dict[str, tuple[Element, str, Element, str]] = field(
        default_factory=dict, repr=False)
    known_ids: set[str] = field(default_factory=set)
    last_heard: float = 0.0
    last_keepalive: float = 0.0

    # --- persistence -----------------------------------------------------------------

    def to_state(self) -> dict[str, Any]:
        return {
            "registered": self.registered,
            "keepalive": self.keepalive,
            "history_length": self.history_length,
            "whois": self.whois,
            "roster": {nick: p.toXml() for nick, p in self.roster.items()},
            "local": dict(self.local),
            "directed": sorted(self.directed),
            "subject": self.subject.toXml() if self.subject is not None else None,
        }

    @classmethod
    def from_state(cls, jid: str, state: dict[str, Any]) -> SlaveRoom:
        room = cls(jid)
        room.registered = bool(state.get("registered"))
        room.keepalive = int(state.get("keepalive", 60))
        room.history_length = int(state.get("history_length", 20))
        room.whois = state.get("whois", "moderators")
        room.roster = {n: stanzas.parse_xml(x) for n, x in state.get("roster", {}).items()}
        room.local = dict(state.get("local", {}))
        room.directed = set(state.get("directed", ()))
        if state.get("subject"):
            room.subject = stanzas.parse_xml(state["subject"])
        return room

    # --- lookups -----------------------------------------------------------------------

    def role_of(self, nick: str) -> str:
        presence = self.roster.get(nick)
        item = stanzas.muc_item(presence) if presence is not None else None
        return item.getAttribute("role", "none") if item is not None else "none"

    def sessions_of(self, nick: str) -> list[str]:
        return [jid for jid, n in self.local.items() if n == nick]

    def local_sessions(self) -> list[str]:
        return list(self.local)


class SlaveService:
    def __init__(self, settings: SlaveSettings) -> None:
        self.settings = settings
        self.jid = settings.jid
        self.rooms: dict[str, SlaveRoom] = {}
        self._ids = itertools.count(1)
        self.pending_iqs: dict[str, tuple[str, str]] = {}  # id -> (kind, room)
        self._touched: set[str] = set()  # rooms whose state changed since the last take

    def restore(self, room: SlaveRoom, records: list[HistoryRecord]) -> None:
        """A room as stored before a restart; it registers again once connected."""
        room.history.load(records)
        self.rooms[room.jid] = room

    def history_key(self, room_jid: str) -> str:
        return slave_history_key(self.jid, room_jid)

    def _save_touched(self, out: Outbox) -> None:
        """Every room this stanza touched is saved (the shell coalesces the writes)."""
        touched, self._touched = self._touched, set()
        for room_jid in sorted(touched):
            room = self.rooms.get(room_jid)
            if room is not None:
                out.store(SaveRoom(room_jid, room.to_state))

    def _forget(self, room: SlaveRoom, out: Outbox) -> None:
        self.rooms.pop(room.jid, None)
        self._touched.discard(room.jid)
        out.store(DeleteRoom(room.jid, self.history_key(room.jid)))

    def _id(self, kind: str, room: str) -> str:
        iq_id = f"dmuc-{kind}-{next(self._ids)}"
        self.pending_iqs[iq_id] = (kind, room)
        return iq_id

    # --- entry points ------------------------------------------------------------------

    def connected(self, now: float) -> Outbox:
        """The component stream is up: tell Prosody's module which services to divert,
        and (re-)register the rooms we mirror."""
        out = Outbox(now)
        for domain in sorted(self.settings.domains):
            out.send(xep0282.mirror_iq(self.jid, domain, sorted(self.settings.masters),
                                            self._id("mirror", domain)))
        for room_jid in self.settings.rooms:
            self._room(room_jid)
        for room in self.rooms.values():
            if room.registered or room.jid in self.settings.rooms:
                room.registered = False
                self._register(room, out)
        self._save_touched(out)
        return out

    def receive(self, stanza: Element, now: float) -> Outbox:
        out = Outbox(now)
        to = jids.parse(stanza.getAttribute("to"))
        sender = jids.parse(stanza.getAttribute("from"))
        if to is None or sender is None:
            return out
        stanza["from"] = sender.full()
        for jid in (to, sender):
            if jid.user is not None and jid.host in self.settings.masters:
                self._touched.add(jid.userhost())
        is_answer = stanza.name == "iq" and stanza.getAttribute("type") in ("result", "error")
        if to.host in self.settings.masters and to.user is not None:
            self._from_local_user(stanza, sender, to.userhost(), out)
        elif is_answer and stanza.getAttribute("id") in self.pending_iqs:
            self._iq_answer(stanza, out)
        elif to.full() == self.jid and sender.host in self.settings.masters and sender.user:
            self._from_master(stanza, sender, out)
        elif to.full() == self.jid or to.host == self.jid:
            self._to_self(stanza, out)
        elif stanza.getAttribute("type") not in ("error", "result"):
            out.send(stanzas.error_reply(stanza, "cancel", "service-unavailable"))
        self._save_touched(out)
        return out

    def tick(self, now: float) -> Outbox:
        """Keepalive (§4.10): ping the master after `keepalive` seconds of silence, more
        often while split, so that a netjoin is noticed soon."""
        out = Outbox(now)
        for room in self.rooms.values():
            if not (room.registered or room.split) or room.passthrough:
                continue
            interval = max(room.keepalive // 4, 1) if room.split else room.keepalive
            quiet = now - max(room.last_heard, room.last_keepalive)
            if quiet >= interval:
                room.last_keepalive = now
                out.send(xep0282.keepalive_iq(self.jid, room.jid,
                                                   self._id("keepalive", room.jid)))
        return out

    # --- local users -> master (§4.8) ---------------------------------------------------

    def _room(self, room_jid: str) -> SlaveRoom:
        room = self.rooms.get(room_jid)
        if room is None:
            room = SlaveRoom(room_jid, keepalive=self.settings.keepalive,
                             history_length=self.settings.history)
            self.rooms[room_jid] = room
        return room

    def _from_local_user(self, stanza: Element, sender: Any, room_jid: str, out: Outbox) -> None:
        if sender.host not in self.settings.domains or sender.user is None:
            # We speak only for users of our own server.
            out.warn(f"refused a stanza from {sender.full()} to {room_jid}: not a local user")
            if stanza.getAttribute("type") not in ("error", "result"):
                out.send(stanzas.error_reply(stanza, "auth", "forbidden",
                                             "This slave serves only its own users"))
            return
        room = self._room(room_jid)
        full = sender.full()
        if stanza.name == "presence":
            ptype = stanza.getAttribute("type")
            if ptype is None:
                room.directed.add(full)  # §4.5: the user did send presence to the room
            elif ptype == "unavailable":
                room.directed.discard(full)
        if room.passthrough:
            out.send(stanza)
            return
        if room.split:
            self._during_split(room, stanza, full, out)
            return
        if not room.registered:
            self._hold(room, stanza, out)
            if not room.registering:
                self._register(room, out)
            return
        out.send(stanza)

    def _hold(self, room: SlaveRoom, stanza: Element, out: Outbox) -> None:
        if len(room.queue) >= MAX_QUEUED:
            out.send(stanzas.error_reply(stanza, "wait", "resource-constraint",
                                         "Too many stanzas waiting for the room"))
            return
        room.queue.append(stanza)

    def _during_split(self, room: SlaveRoom, stanza: Element, full: str, out: Outbox) -> None:
        """§4.11.1: stop submitting to the master. Local occupants keep talking: their
        groupchat is shown locally at once and submitted at the netjoin; presences and
        private messages wait for the netjoin too; IQs get an error now."""
        if stanza.name == "iq":
            if stanza.getAttribute("type") in ("get", "set"):
                out.send(stanzas.error_reply(stanza, "wait", "remote-server-timeout",
                                             "The room's master is unreachable (netsplit)"))
            return
        nick = room.local.get(full)
        is_groupchat = stanza.name == "message" and stanza.getAttribute("type") == "groupchat"
        if is_groupchat and nick is not None and stanza.getAttribute("to") == room.jid:
            out.broadcast(xep0282.local_echo(stanza, room.jid, nick), room.local_sessions())
            held = stanzas.copy(stanza)
            held["id"] = xep0282.SPLIT_ID_PREFIX + (stanza.getAttribute("id") or "")
            self._hold(room, held, out)
            return
        self._hold(room, stanza, out)

    def _register(self, room: SlaveRoom, out: Outbox) -> None:
        self._touched.add(room.jid)
        room.registering = True
        out.send(xep0282.register_iq(self.jid, room.jid, self._id("register", room.jid),
                                          self.settings.keepalive, self.settings.history))

    def _flush(self, room: SlaveRoom, out: Outbox) -> None:
        queued, room.queue = room.queue, []
        for stanza in queued:
            out.send(stanza)

    # --- the slave's own JID ------------------------------------------------------------

    def _to_self(self, stanza: Element, out: Outbox) -> None:
        kind, stype = stanza.name, stanza.getAttribute("type")
        service = stanza.getAttribute("from", "")
        dmuc_x = stanzas.child(stanza, "x", xmlns.DMUC)
        if kind == "message" and service in self.settings.masters and dmuc_x is not None \
                and stanzas.child(dmuc_x, "restarted") is not None:
            self._master_restarted(service, out)
            return
        if kind == "iq" and stype in ("result", "error"):
            self._iq_answer(stanza, out)
            return
        if kind == "iq" and stype == "get":
            payload = next(stanza.elements(), None)
            if payload is not None and payload.uri == xmlns.PING:
                out.send(stanzas.iq_result(stanza))
                return
            if payload is not None and payload.uri == xmlns.DISCO_INFO:
                out.send(stanzas.iq_result(stanza, xep0282.slave_disco_info()))
                return
        if stype not in ("error", "result") and kind == "iq":
            out.send(stanzas.error_reply(stanza, "cancel", "service-unavailable"))

    def _iq_answer(self, stanza: Element, out: Outbox) -> None:
        pending = self.pending_iqs.pop(stanza.getAttribute("id") or "", None)
        if pending is None:
            return
        kind, room_jid = pending
        if kind == "mirror":
            if stanza.getAttribute("type") == "error":
                out.warn(f"Prosody on {room_jid} did not accept the mirror list: is "
                         "mod_dmuc_slave loaded there with this component?")
            return
        room = self.rooms.get(room_jid)
        if room is None:
            return
        if stanza.getAttribute("type") == "error":
            condition = stanzas.error_condition(stanza)
            if kind == "register":
                room.registering = False
                if condition in ("forbidden", "not-allowed", "service-unavailable",
                                 "feature-not-implemented"):
                    # Not allowed to mirror: the users' stanzas go to the master as they are.
                    out.warn(f"master refused to register {self.jid} for {room_jid} "
                             f"({condition}); its users talk to the master directly")
                    room.passthrough = True
                    self._flush(room, out)
                else:
                    self._split(room, out, f"registration failed ({condition})")
            elif kind == "keepalive":
                if condition == "item-not-found":
                    out.info(f"master forgot our registration for {room_jid}; re-registering")
                    room.registered = False
                    self._netjoin(room, out)
                else:
                    self._split(room, out, f"keepalive bounced ({condition})")
            return
        room.last_heard = out.now
        if kind == "register":
            registered = stanzas.child(stanza, "registered", xmlns.DMUC)
            room.registering = False
            room.registered = True
            was_split = room.split
            room.split = False
            if registered is not None:
                room.keepalive = int(registered.getAttribute("keepalive") or room.keepalive)
                room.history_length = int(registered.getAttribute("history")
                                          or room.history_length)
                room.whois = registered.getAttribute("whois") or room.whois
            out.info(f"registered with {room_jid} (keepalive {room.keepalive}s, "
                     f"history {room.history_length})" + (" after a netsplit" if was_split else ""))
            # Local stanzas stay held until the snapshot that follows has arrived.
        elif kind == "keepalive" and room.split:
            self._netjoin(room, out)

    # --- netsplit and netjoin (§4.11) ----------------------------------------------------

    def _split(self, room: SlaveRoom, out: Outbox, why: str) -> None:
        if not room.split:
            out.warn(f"netsplit from {room.jid}: {why}")
        room.split = True
        room.registered = False
        room.registering = False

    def _netjoin(self, room: SlaveRoom, out: Outbox) -> None:
        """The master is back: register again; the master answers with a full resync."""
        out.info(f"netjoin with {room.jid}: resyncing")
        room.split = True  # keep holding local stanzas until the registration completes
        self._register(room, out)

    def _master_restarted(self, service: str, out: Outbox) -> None:
        """The master (re)connected and may have lost our registrations: netjoin now for
        every room of it we mirror, instead of waiting for the next keepalive."""
        rooms = [r for r in self.rooms.values()
                 if r.jid.endswith("@" + service) and (r.registered or r.split)]
        if rooms:
            out.info(f"{service} (re)connected; registering {len(rooms)} rooms again")
        for room in rooms:
            self._touched.add(room.jid)
            if not room.registering:
                room.registered = False
                self._netjoin(room, out)

    def _rejoin_local_occupants(self, room: SlaveRoom, out: Outbox) -> None:
        """After a netjoin, local occupants the master no longer knows enter again with
        the presence they last sent (forwarded as theirs, §4.8)."""
        for full, nick in list(room.local.items()):
            if nick in room.roster:
                continue
            presence = stanzas.new("presence", {"from": full, "to": f"{room.jid}/{nick}"})
            presence.addElement((xmlns.MUC, "x")).addElement("history")["maxstanzas"] = "0"
            room.queue.insert(0, presence)

    # --- master -> slave --------------------------------------------------------------------

    def _from_master(self, stanza: Element, sender: Any, out: Outbox) -> None:
        room = self.rooms.get(sender.userhost())
        stype = stanza.getAttribute("type")
        if room is None:
            if stanza.name == "iq" and stype in ("get", "set"):
                out.send(stanzas.error_reply(stanza, "cancel", "item-not-found"))
            return
        if stype == "error":
            self._split(room, out, f"{stanza.name} bounced "
                                   f"({stanzas.error_condition(stanza)})")
            return
        room.last_heard = out.now
        if room.split and not room.registering:
            self._netjoin(room, out)  # the master is reachable again
        if stanza.name == "iq":
            payload = next(stanza.elements(), None)
            if stype == "get" and payload is not None and payload.uri == xmlns.PING:
                out.send(stanzas.iq_result(stanza))  # the master's keepalive (§4.10)
            elif stype in ("get", "set"):
                out.send(stanzas.error_reply(stanza, "cancel", "service-unavailable"))
            return
        dmuc_x = stanzas.child(stanza, "x", xmlns.DMUC)
        if stanza.name == "presence":
            self._presence_from_master(room, stanza, sender, dmuc_x, out)
        elif stanza.name == "message":
            self._message_from_master(room, stanza, sender, dmuc_x, out)

    def _bad(self, stanza: Element, out: Outbox, why: str) -> None:
        out.warn(f"malformed stanza from {stanza.getAttribute('from')}: {why}")
        if stanza.getAttribute("type") not in ("error", "result"):
            out.send(stanzas.error_reply(stanza, "modify", "bad-request", why))

    def _presence_from_master(self, room: SlaveRoom, stanza: Element, sender: Any,
                              dmuc_x: Element | None, out: Outbox) -> None:
        nick = sender.resource
        if dmuc_x is not None:
            enter = stanzas.child(dmuc_x, "enter")
            leave = stanzas.child(dmuc_x, "leave")
            destroy = stanzas.child(dmuc_x, "destroy")
            if enter is not None and nick:
                self._enter(room, stanza, nick, enter, dmuc_x, out)
            elif leave is not None and nick:
                self._leave(room, stanza, leave, out)
            elif destroy is not None:
                self._destroyed(room, stanza, out)
            elif stanzas.child(dmuc_x, "resync") is not None:
                self._resync_start(room, out)
            elif stanzas.child(dmuc_x, "synced") is not None:
                self._resync_end(room, out)
            else:
                self._bad(stanza, out, "unknown dmuc element")
            return
        if not nick:
            self._bad(stanza, out, "presence from the room without a nickname")
            return
        self._roster_update(room, stanza, nick, out)

    def _resync_start(self, room: SlaveRoom, out: Outbox) -> None:
        """A snapshot of the master's state follows (§4.3, §4.4, netjoin): it replaces
        ours; local occupants are told only what changed, and get what they missed."""
        room.resync_old = dict(room.roster)
        room.roster.clear()
        room.rendered.clear()
        room.known_ids = {xep0282.stanza_id(e.stanza, room.jid) for e in room.history}
        room.history.clear()
        out.store(ClearHistory(self.history_key(room.jid)))

    def _resync_end(self, room: SlaveRoom, out: Outbox) -> None:
        old = room.resync_old or {}
        room.resync_old = None
        room.known_ids = set()
        local_nicks = set(room.local.values())
        # Only now is every local occupant's role known (it decides who sees real JIDs).
        for nick, presence in room.roster.items():
            before = old.get(nick)
            if before is None or before.toXml() != presence.toXml():
                self._deliver_roster_change(room, presence, room.sessions_of(nick), out)
        for nick, presence in old.items():
            if nick not in room.roster and nick not in local_nicks:
                gone = xep0282.gone_during_split(presence)
                self._deliver_roster_change(room, gone, [], out)
        room.registered = True
        room.split = False
        self._rejoin_local_occupants(room, out)
        self._flush(room, out)

    def _enter(self, room: SlaveRoom, stanza: Element, nick: str, enter: Element,
               dmuc_x: Element, out: Outbox) -> None:
        """§4.5: add a local user to the distribution list and greet it (Listings 13-15)."""
        user = jids.parse(enter.getAttribute("jid"))
        if user is None or user.resource is None:
            self._bad(stanza, out, "enter without a full JID")
            return
        full = user.full()
        if user.host not in self.settings.domains or full not in room.directed:
            out.warn(f"refused ENTER of {full} to {room.jid}: no directed presence from "
                     "that user")
            out.send(xep0282.refuse_presence(self.jid, room.jid, full))
            return
        already = room.local.get(full) == nick
        room.local[full] = nick
        own = xep0282.without_dmuc(stanza)
        own["to"] = full
        if already:
            return  # a netjoin re-entry: the user has the roster and history already
        viewer_role = stanzas.item_role(own)
        for other_nick, presence in room.roster.items():
            if other_nick == nick:
                continue
            listed, xml = self._for_viewer(room, other_nick, presence, viewer_role)
            out.broadcast(listed, [full], xml)
        out.send(own)
        request = stanzas.child(dmuc_x, "history")
        for entry in room.history.select(request, out.now):
            out.broadcast(delayed(entry, room.jid), [full])
        subject = room.subject if room.subject is not None else stanzas.subject_message(
            room.jid, "")
        out.broadcast(stanzas.copy(subject), [full])
        out.info(f"{full} entered {room.jid} as {nick}")

    def _leave(self, room: SlaveRoom, stanza: Element, leave: Element, out: Outbox) -> None:
        """§4.6: remove the user from the distribution list; it gets the stanza."""
        full = leave.getAttribute("jid")
        if not full or full not in room.local:
            return
        del room.local[full]
        own = xep0282.without_dmuc(stanza)
        own["to"] = full
        out.send(own)
        out.info(f"{full} left {room.jid}")
        if not room.local and not room.directed and not room.queue:
            self._unregister(room, out)

    def _unregister(self, room: SlaveRoom, out: Outbox) -> None:
        """The last local occupant left: stop mirroring the room, so that neither side
        keeps it alive with keepalives (the next local join registers again)."""
        out.send(xep0282.unregister_iq(self.jid, room.jid, self._id("unregister",
                                                                         room.jid)))
        self._forget(room, out)
        out.info(f"no local occupant left in {room.jid}; unregistered")

    def _destroyed(self, room: SlaveRoom, stanza: Element, out: Outbox) -> None:
        notice = xep0282.without_dmuc(stanza)
        for full, nick in room.local.items():
            copy = stanzas.copy(notice)
            copy["from"] = f"{room.jid}/{nick}"
            copy["to"] = full
            out.send(copy)
        self._forget(room, out)
        out.info(f"{room.jid} was destroyed by its master")

    def _for_viewer(self, room: SlaveRoom, nick: str, presence: Element,
                    viewer_role: str) -> tuple[Element, str]:
        """§4.7: a listed presence with or without the occupant's real JID, per the room's
        whois setting, and its serialisation (cached until that roster entry changes, so
        that each newcomer's occupant list is not serialised anew)."""
        cached = room.rendered.get(nick)
        if cached is None or cached[0] is not presence:
            stripped = visibility.without_real_jid(presence)
            cached = (presence, stanzas.render_without_to(presence), stripped,
                      stanzas.render_without_to(stripped))
            room.rendered[nick] = cached
        if room.whois == "anyone" or viewer_role == "moderator":
            return cached[0], cached[1]
        return cached[2], cached[3]

    def _roster_update(self, room: SlaveRoom, stanza: Element, nick: str, out: Outbox) -> None:
        """§4.7: store the change, then deliver it to every local occupant."""
        presence = stanzas.copy(stanza)
        presence.attributes.pop("to", None)
        if presence.getAttribute("type") == "unavailable":
            own = room.sessions_of(nick)
            room.roster.pop(nick, None)
            room.rendered.pop(nick, None)
            new_nick = stanzas.item_nick(presence)
            if new_nick and stanzas.has_status(presence, "303"):
                for full in own:
                    room.local[full] = new_nick  # a local occupant changed its nick
            self._deliver_roster_change(room, presence, own, out)
            return
        own = room.sessions_of(nick)
        was_moderator, had_moderator = room.role_of(nick) == "moderator", _moderates(room)
        room.roster[nick] = _as_listed(presence)
        if room.resync_old is not None:
            return  # a snapshot: told at <synced/>, once the whole roster is known
        self._deliver_roster_change(room, presence, own, out)
        role = room.role_of(nick)
        if own and room.whois != "anyone" and was_moderator != (role == "moderator") \
                and had_moderator == _moderates(room):
            # As mod_muc, a local occupant who gains or loses the moderator role gets the
            # occupant list again, with or without real JIDs. (When this slave gains its
            # first or loses its last moderator, the master's snapshot does that instead.)
            for other, listed in room.roster.items():
                if other != nick:
                    element, xml = self._for_viewer(room, other, listed, role)
                    out.broadcast(element, own, xml)

    def _deliver_roster_change(self, room: SlaveRoom, presence: Element, own: list[str],
                               out: Outbox) -> None:
        """One copy per variant: with 110 to the occupant's own sessions, with or without
        the real JID to the others."""
        with_jid: list[str] = []
        without_jid: list[str] = []
        for full, local_nick in room.local.items():
            if full in own:
                continue
            if room.whois == "anyone" or room.role_of(local_nick) == "moderator":
                with_jid.append(full)
            else:
                without_jid.append(full)
        out.broadcast(presence, with_jid)
        if without_jid:
            out.broadcast(visibility.without_real_jid(presence), without_jid)
        if own:
            out.broadcast(visibility.with_self_status(presence, room.whois), own)

    def _message_from_master(self, room: SlaveRoom, stanza: Element, sender: Any,
                             dmuc_x: Element | None, out: Outbox) -> None:
        if stanza.getAttribute("type") != "groupchat":
            if dmuc_x is not None and stanzas.child(dmuc_x, "room") is not None:
                whois = stanzas.child(dmuc_x, "room").getAttribute("whois")
                if whois in ("anyone", "moderators"):
                    room.whois = whois
            return
        if dmuc_x is None:
            self._bad(stanza, out, "groupchat from the master without a dmuc element")
            return
        delay = stanzas.child(dmuc_x, "delay", xmlns.DELAY)
        stamp = stanzas.parse_stamp(delay.getAttribute("stamp", "")) if delay is not None else None
        if stamp is None:
            stamp = out.now
        local_copy = xep0282.without_dmuc(stanza)
        local_copy.attributes.pop("to", None)
        is_history = stanzas.child(dmuc_x, "history") is not None
        if stanzas.child(local_copy, "subject") is not None and stanzas.child(
                local_copy, "body") is None:
            room.subject = local_copy
            if is_history:
                return
        elif stanzas.child(local_copy, "body") is not None:
            entry = self._store_history(room, local_copy, stamp, out)
            if is_history:
                # Replayed history: show local occupants only what they missed.
                sid = xep0282.stanza_id(local_copy, room.jid)
                missed = sid is not None and sid not in room.known_ids
                if missed and entry is not None and not self._echoed_during_split(room, local_copy):
                    out.broadcast(delayed(entry, room.jid),
                                  room.local_sessions())
                return
        if is_history:
            return
        if self._echoed_during_split(room, local_copy):
            return
        out.broadcast(local_copy, room.local_sessions())

    def _store_history(self, room: SlaveRoom, message: Element, stamp: float,
                       out: Outbox) -> HistoryEntry | None:
        entry = room.history.add(message, stamp, room.history_length)
        if entry is not None:
            out.store(AppendHistory(self.history_key(room.jid), entry.record(),
                                    room.history_length))
        return entry

    def _echoed_during_split(self, room: SlaveRoom, message: Element) -> bool:
        """A message a local user sent during a split was already shown locally."""
        if not message.getAttribute("id", "").startswith(xep0282.SPLIT_ID_PREFIX):
            return False
        sender_nick = message.getAttribute("from", "").partition("/")[2]
        return sender_nick in room.local.values()


def _moderates(room: SlaveRoom) -> bool:
    """Whether a local occupant is a moderator (then the master sends us real JIDs)."""
    return any(room.role_of(nick) == "moderator" for nick in set(room.local.values()))


def _as_listed(presence: Element) -> Element:
    """An occupant's presence as the room lists it to a newcomer (XEP-0045 §7.2.3): without
    the actor, reason and status codes of the broadcast that last changed it."""
    listed = stanzas.copy(presence)
    x = stanzas.child(listed, "x", xmlns.MUC_USER)
    if x is not None:
        x.children = [c for c in x.children if not (isinstance(c, Element)
                                                    and c.name == "status")]
        item = stanzas.child(x, "item")
        if item is not None:
            item.children = [c for c in item.children if not (
                isinstance(c, Element) and c.name in ("actor", "reason"))]
    return listed
