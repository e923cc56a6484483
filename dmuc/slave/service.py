"""The XEP-0282 slave (sans-I/O): mirrors rooms of remote masters for this server's users.

Local users' stanzas to a mirrored room reach the slave (Prosody's mod_dmuc_slave diverts
them); the room's link to the master (link.py) forwards them unchanged (§4.8) or holds
them. From the master the slave receives ONE copy of every broadcast, and fanout.py
delivers it to the local occupants (§4.9, §4.7), with ENTER/LEAVE (§4.5, §4.6). This
module is the entry point (connected, receive, tick): it routes each stanza to the link or
to the fan-out, and saves the rooms a stanza touched. See docs/protocol.md for every
stanza.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.outbox import DeleteArchive, DeleteRoom, ForgetOccupants, Outbox, SaveRoom
from dmuc.protocol import occupant_id, stanzas, xep0282
from dmuc.protocol.occupant_iq import NOT_IN_ROOM, OccupantIq
from dmuc.protocol.occupant_iq import verdict as occupant_iq_verdict
from dmuc.protocol.statemachine import SplitCounter
from dmuc.records import HistoryRecord
from dmuc.slave import archive, roominfo
from dmuc.slave.fanout import Fanout, malformed, without_dmuc
from dmuc.slave.link import LinkConfig, LinkState, SlaveLink, restored_state
from dmuc.slave.room import SlaveRoom

# A silence of the timers this long means the process was stopped (SIGSTOP, a stuck host).
STOPPED_AFTER = 5.0


@dataclass
class SlaveSettings:
    jid: str  # the slave component's JID, e.g. dmuc.vesa.yeggmaex.irc
    domains: frozenset[str]  # the user domains it serves (its own server's VirtualHosts)
    masters: frozenset[str]  # MUC services whose rooms it mirrors
    keepalive: int = 60  # seconds of silence before a keepalive
    history: int = 20  # history stanzas it is willing to keep per room
    rooms: tuple[str, ...] = ()  # rooms to register for at start-up


class SlaveService:
    def __init__(self, settings: SlaveSettings) -> None:
        self.settings = settings
        self.jid = settings.jid
        self.rooms: dict[str, SlaveRoom] = {}
        self.links: dict[str, SlaveLink] = {}  # room JID -> its link to the master
        self._ids = itertools.count(1)
        self.pending_iqs: dict[str, tuple[str, str]] = {}  # id -> (kind, room)
        self._touched: set[str] = set()  # rooms whose state changed since the last take
        self._flushing: set[str] = set()  # rooms whose held stanzas go out a slice a turn
        self.last_tick: float | None = None  # ticks come every second (shell/daemon.py)
        self.resumed_at = -1e18  # when a tick last found we had been stopped
        self.splits = SplitCounter(LinkState.SPLIT)  # every link's netsplits and netjoins
        self.link_config = LinkConfig(self.jid, settings.keepalive, settings.history, self._id,
                                      self.splits)
        self.fanout = Fanout(self.jid, settings.domains)
        # users' hosts whose mod_dmuc_slave fans a broadcast out itself (it said so in its
        # answer to the mirror list): one copy with the recipients goes there (§4.15)
        self.fanout_hosts: set[str] = set()
        # users' hosts whose mod_dmuc_slave answered the mirror list without <said/> (an
        # older module, which passes on what its clients put in): their stamps are ignored
        self.unstamped_hosts: set[str] = set()

    def restore(self, room: SlaveRoom, records: list[HistoryRecord],
                state: Mapping[str, Any] | None = None) -> None:
        """A room as stored before a restart (`state`: what was stored, for its link);
        a room that was registered registers again once connected."""
        room.history.load(records)
        self.rooms[room.jid] = room
        self.links[room.jid] = SlaveLink(room, self.link_config,
                                         restored_state(state or {}))

    def reconfigure(self, keepalive: int, history: int) -> None:
        """A configuration reload: the keepalive and history this slave proposes apply to
        every registration from now on (new rooms, and each link's next registration)."""
        self.settings = replace(self.settings, keepalive=keepalive, history=history)
        self.link_config = replace(self.link_config, keepalive=keepalive, history=history)
        for link in self.links.values():
            link.config = self.link_config

    def history_key(self, room_jid: str) -> str:
        return self.fanout.history_key(room_jid)

    def _mirror(self, room_jid: str) -> tuple[SlaveRoom, SlaveLink]:
        """The room and its link, created (UNREGISTERED) on first use."""
        room = self.rooms.get(room_jid)
        if room is None:
            room = SlaveRoom(room_jid, keepalive=self.settings.keepalive,
                             history_length=self.settings.history)
            self.rooms[room_jid] = room
            self.links[room_jid] = SlaveLink(room, self.link_config)
        return room, self.links[room_jid]

    def _forget(self, room_jid: str, out: Outbox) -> None:
        self.rooms.pop(room_jid, None)
        self.links.pop(room_jid, None)
        self._touched.discard(room_jid)
        out.store(ForgetOccupants(room_jid))  # its entry rows (SlaveRoom.changed_entries)
        out.store(DeleteRoom(room_jid, self.history_key(room_jid)))
        out.store(DeleteArchive(self.history_key(room_jid)))  # copied afresh if needed

    def _save_touched(self, out: Outbox) -> None:
        """Every room this stanza touched is saved, with its link's state (the shell
        coalesces the writes and reads the state when it writes)."""
        touched, self._touched = self._touched, set()
        for room_jid in sorted(touched):
            room, link = self.rooms.get(room_jid), self.links.get(room_jid)
            if link is not None and link.flushing:
                self._flushing.add(room_jid)  # the rest goes in later turns (work)
            if room is not None and link is not None:
                out.store(SaveRoom(room_jid, _snapshot(room, link), room.changed_entries,
                                   room.unwritten))

    def _id(self, kind: str, room: str) -> str:
        iq_id = f"dmuc-{kind}-{next(self._ids)}"
        self.pending_iqs[iq_id] = (kind, room)
        return iq_id

    # --- entry points ------------------------------------------------------------------

    def connected(self, now: float) -> Outbox:
        """The component stream is up: tell Prosody's module which services to divert,
        and (re-)register the rooms we mirror (the master may have lost us meanwhile)."""
        out = Outbox(now)
        self.fanout_hosts.clear()  # until this Prosody's module answers again
        for domain in sorted(self.settings.domains):
            out.send(xep0282.mirror_iq(self.jid, domain, sorted(self.settings.masters),
                                       self._id("mirror", domain)))
        for room_jid in self.settings.rooms:
            self._mirror(room_jid)
        for room_jid, link in self.links.items():
            if link.state in (LinkState.SYNCING, LinkState.LIVE) \
                    or room_jid in self.settings.rooms:
                self._touched.add(room_jid)
                link.register("register", out)
        self._save_touched(out)
        return self._fold(out)

    def receive(self, stanza: Element, now: float) -> Outbox:
        out = Outbox(now)
        to = jids.parse(stanza.getAttribute("to"))
        sender = jids.parse(stanza.getAttribute("from"))
        if sender is None:
            return out  # Prosody vouches for 'from': nobody to answer
        if to is None:
            # e.g. a local user's join with a nick that fails strict validation: answered
            # as the master answers it (it would never get there)
            stanzas.refuse_malformed_address(out, stanza, self.settings.masters, self.jid)
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
        elif stanza.getAttribute("type") == "error" and to.host in self.settings.domains \
                and sender.host in self.settings.masters and sender.user is not None:
            self._bounce(stanza, to.full(), sender.userhost(), out)
        elif stanza.getAttribute("type") not in ("error", "result"):
            out.send(stanzas.error_reply(stanza, "cancel", "service-unavailable"))
        self._save_touched(out)
        return self._fold(out)

    def work(self, now: float) -> Outbox | None:
        """The core's own work for a later reactor turn (the shell asks after each turn):
        each link still forwarding what it held sends its next slice (SlaveLink.flush).
        None when there is none."""
        if not self._flushing:
            return None
        out = Outbox(now)
        flushing, self._flushing = self._flushing, set()
        for room_jid in sorted(flushing):
            link = self.links.get(room_jid)
            if link is not None and link.flushing:
                link.flush(out)
                self._touched.add(room_jid)  # saved, and put back while more is left
        if not self._touched:
            return None  # (their links split meanwhile: the rest waits for the netjoin)
        self._save_touched(out)
        return self._fold(out)

    def _resuming(self, now: float) -> bool:
        """Whether we are reading what waited while we were stopped (SIGSTOP: no tick for
        longer than STOPPED_AFTER). Then the master's "split" pings in that backlog are
        about our stop, not a one-way link: what our users said meanwhile goes on as it
        was said (live), and the master's <rejoin/> resyncs us."""
        last = self.last_tick
        return (last is not None and now - last > STOPPED_AFTER) \
            or now - self.resumed_at < STOPPED_AFTER  # the backlog outlasts the 1st tick

    def tick(self, now: float) -> Outbox:
        """Keepalives (§4.10) and unanswered registrations, per link."""
        out = Outbox(now)
        if self.last_tick is not None and now - self.last_tick > STOPPED_AFTER:
            self.resumed_at = now  # we were stopped: our backlog is being read
        self.last_tick = now
        self.fanout.occupancy.tick(out)
        for link in list(self.links.values()):
            link.tick(out)
            room = link.room
            archive.trim(room, self.history_key(room.jid), now, out)
            if room.duplicates:
                out.info(f"{room.jid}: dropped {room.duplicates} second copies from the "
                         "master (a slow link's late stanzas after a netjoin)")
                room.duplicates = 0
            if link.state is LinkState.LIVE and room.joining:
                # a join the master answered with an error (to the user) never ENTERs
                room.expire_joins(now - room.keepalive)
                self._unregister_if_deserted(room, link, out)
        self._save_touched(out)
        return self._fold(out)

    def _unregister_if_deserted(self, room: SlaveRoom, link: SlaveLink, out: Outbox) -> None:
        """The registration ends with the last local session, however it left (quit,
        kicked, banned, its join refused): neither side keeps the room alive with
        keepalives, and the next local join registers again."""
        if not room.deserted() or room.jid in self.settings.rooms \
                or link.state not in (LinkState.LIVE, LinkState.PASSTHROUGH):
            return  # (slave.rooms are mirrored whoever is in them)
        if link.state is LinkState.LIVE:
            link.unregister(out)
        self._forget(room.jid, out)
        out.info(f"no local occupant left in {room.jid}; unregistered")

    def _fold(self, out: Outbox) -> Outbox:
        """A copy for several sessions of a host that fans out itself goes there once,
        with the recipient list (the deliveries keep their recipients: only the shell's
        rendering changes); recipients of several hosts are split per host."""
        if not self.fanout_hosts:
            return out
        folded = []
        for d in out.deliveries:
            if d.recipients is None or len(d.recipients) < 2:
                folded.append(d)
                continue
            by_host: dict[str, list[str]] = {}
            for jid in d.recipients:
                by_host.setdefault(jid.split("@", 1)[-1].split("/", 1)[0], []).append(jid)
            for host, group in by_host.items():
                fans = host in self.fanout_hosts and len(group) > 1
                folded.append(d.to(group, host if fans else None))
        out.deliveries = folded
        return out

    # --- local users -> master (§4.8) ---------------------------------------------------

    def _from_local_user(self, stanza: Element, sender: JID, room_jid: str,
                         out: Outbox) -> None:
        if sender.host not in self.settings.domains or sender.user is None:
            # We speak only for users of our own server.
            out.warn(f"refused a stanza from {sender.full()} to {room_jid}: not a local user")
            if stanza.getAttribute("type") not in ("error", "result"):
                out.send(stanzas.error_reply(stanza, "auth", "forbidden",
                                             "This slave serves only its own users",
                                             by=self.jid))
            return
        room, link = self._mirror(room_jid)
        if stanza.name == "iq" and self._answered_here(room, link, stanza, sender, out):
            return
        if stanza.name == "iq" and self._archive_query(room, link, stanza, out):
            return
        if stanza.name == "iq" and link.state in (LinkState.LIVE, LinkState.SPLIT) \
                and "/" not in stanza.getAttribute("to", "") \
                and roominfo.answer(room, stanza, out):
            return  # disco#info and the vCard from our mirror (§4.18)
        said_at = out.now
        if stanza.name != "iq":
            said_at = self._said_at(stanza, sender, out.now)
            occupant_id.strip(stanza)  # only the master says who is who (XEP-0421)
            # and only we mark what we held (its time, §4.11.2)
            stanza.children = [c for c in stanza.children
                               if not (isinstance(c, Element) and c.uri == xmlns.DMUC)]
        room.note_presence(stanza, sender.full(), out.now)
        link.submit(stanza, sender.full(), out, said_at)

    def _said_at(self, stanza: Element, sender: JID, now: float) -> float:
        """When a local user said it: when mod_dmuc_slave received it (its <said/>, which
        no client can forge: the module removes theirs), so that what waited (in the
        module while we were down, in our socket while we were stopped) keeps its time;
        else now (§4.11.2)."""
        said = xep0282.said_time(stanza, sender.host not in self.unstamped_hosts, now)
        return now if said is None else said

    def _answered_here(self, room: SlaveRoom, link: SlaveLink, stanza: Element, sender: JID,
                       out: Outbox) -> bool:
        """XEP-0410 at the edge: while this slave knows who of its users is in the room
        (LIVE, and SPLIT, where they keep talking), it answers as the master would (the one
        rule of occupant_iq) a local occupant's ping to its own occupant JID, and a local
        user's IQ to an occupant JID when that user is not in the room: no round trip, and
        no client leaves and rejoins because a link is down. Everything else (a join still
        on its way, an IQ to another occupant) goes to the master."""
        to = jids.parse(stanza.getAttribute("to"))
        nick, full = to.resource if to is not None else None, sender.full()
        if not nick or stanza.getAttribute("type") not in ("get", "set") \
                or link.state not in (LinkState.LIVE, LinkState.SPLIT) \
                or (full in room.directed and full not in room.local):
            return False
        sender_nick = room.local.get(full) if full in room.directed else None
        decided = occupant_iq_verdict(stanza, sender_nick, nick, nick in room.roster)
        if decided is OccupantIq.NOT_IN_ROOM:
            stanzas.refuse(out, stanza, *NOT_IN_ROOM,
                           what=f"iq to {stanza.getAttribute('to')}")
            return True
        if decided is OccupantIq.SELF_PING:
            out.send(stanzas.iq_result(stanza))
            return True
        return False

    def _archive_query(self, room: SlaveRoom, link: SlaveLink, stanza: Element,
                       out: Outbox) -> bool:
        """XEP-0313 at the edge (§4.17): a local occupant's query to the room is answered
        from our copy of its archive while we know the room (LIVE, and SPLIT)."""
        payload = next(stanza.elements(), None)
        to = jids.parse(stanza.getAttribute("to"))
        if payload is None or payload.uri != xmlns.MAM or payload.name != "query" \
                or to is None or to.resource or link.state not in (LinkState.LIVE,
                                                                   LinkState.SPLIT) \
                or stanza.getAttribute("type") not in ("get", "set"):
            return False
        return archive.answer_query(room, stanza, payload, link.state is LinkState.SPLIT,
                                    self.history_key(room.jid), out)

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
            if xep0282.fanout_supported(stanza):
                self.fanout_hosts.add(room_jid)  # here: the users' host
            if xep0282.mirror_offers(stanza, "said"):
                self.unstamped_hosts.discard(room_jid)
            elif room_jid not in self.unstamped_hosts:
                self.unstamped_hosts.add(room_jid)
                out.warn(f"mod_dmuc_slave on {room_jid} does not stamp its users' messages: "
                         "held messages get the time this slave read them; upgrade it")
            return
        link = self.links.get(room_jid)
        if link is None:
            return
        if kind == "fill":
            if archive.fill_answered(link.room, stanza, self.history_key(room_jid), out):
                out.send(archive.fill_iq(link.room, self.jid, self._id("fill", room_jid)))
        elif kind == "register" and stanzas.error_condition(stanza) == "item-not-found":
            self._room_gone(link.room, out)
        elif kind == "register":
            link.register_answered(stanza, out)
        elif kind == "keepalive":
            link.keepalive_answered(stanza, out)
        elif stanza.getAttribute("type") != "error":
            link.last_heard = out.now

    def _room_gone(self, room: SlaveRoom, out: Outbox) -> None:
        """The master says the room we registered for again was destroyed meanwhile (we
        missed its notice): our occupants are told, what we held is answered, and we
        forget the room (a later join creates it afresh)."""
        notice = stanzas.new("presence", {"from": room.jid, "type": "unavailable"})
        x = stanzas.muc_user_x([{"affiliation": "none", "role": "none"}])
        x.addElement("destroy")
        notice.addChild(x)
        self.fanout.destroyed(room, notice, out)
        for held in room.queue:
            if held.getAttribute("type") not in ("error", "result", "unavailable"):
                out.send(stanzas.error_reply(held, "cancel", "item-not-found",
                                             "The room was destroyed", by=self.jid))
        self._forget(room.jid, out)

    def _master_restarted(self, service: str, out: Outbox) -> None:
        """The master (re)connected and may have lost our registrations: netjoin now for
        every room of it we mirror, instead of waiting for the next keepalive."""
        links = [link for room_jid, link in self.links.items()
                 if room_jid.endswith("@" + service) and link.machine.can("master-restarted")]
        if links:
            out.info(f"{service} (re)connected, or an admin forced a resync; registering "
                     f"{len(links)} rooms again")
        for link in links:
            self._touched.add(link.room.jid)
            link.register("master-restarted", out)

    # --- master -> slave --------------------------------------------------------------

    def _bounce(self, stanza: Element, user: str, room_jid: str, out: Outbox) -> None:
        """A local user's stanza to a mirrored room bounced (mod_dmuc_slave hands us
        Prosody's remote-server-* bounces): a netsplit. A groupchat message in flight is
        submitted again at the netjoin, so its sender sees no error; any other error goes
        on to the user."""
        room, link = self.rooms.get(room_jid), self.links.get(room_jid)
        if room is None or link is None:
            out.send(stanza)
            return
        nick = room.local.get(user)
        original, _ = xep0282.original_id(stanza.getAttribute("id") or "")
        resent = nick is not None and (nick, original) in room.inflight
        link.bounced(f"a local user's {stanza.name} bounced "
                     f"({stanzas.error_condition(stanza)})", out)
        if not resent:
            out.send(stanza)

    def _from_master(self, stanza: Element, sender: JID, out: Outbox) -> None:
        room_jid = sender.userhost()
        room, link = self.rooms.get(room_jid), self.links.get(room_jid)
        stype = stanza.getAttribute("type")
        if room is None or link is None:
            if stanza.name == "iq" and stype in ("get", "set"):
                out.send(stanzas.error_reply(stanza, "cancel", "item-not-found"))
            return
        if stype == "error":
            link.bounced(f"{stanza.name} bounced ({stanzas.error_condition(stanza)})", out)
            return
        link.heard(out)  # the master is reachable (again)
        if stanza.name == "iq":
            payload = next(stanza.elements(), None)
            if stype == "get" and payload is not None and payload.uri == xmlns.PING:
                out.send(stanzas.iq_result(stanza))  # the master's keepalive (§4.10)
                link.last_said = out.now
                if xep0282.says_split(stanza) and link.state is LinkState.LIVE \
                        and not self._resuming(out.now):
                    # it does not hear us: what we forward is lost on the way (§4.11.1)
                    link.bounced("the master's keepalive says it hears nothing from us", out)
            elif stype in ("get", "set"):
                out.send(stanzas.error_reply(stanza, "cancel", "service-unavailable"))
            return
        if not link.in_sequence(stanza, room.resync_old is not None, out):
            return  # a repeat, or after a gap (the registration it started repairs it)
        dmuc_x = stanzas.child(stanza, "x", xmlns.DMUC)
        if dmuc_x is not None and stanza.name == "presence" \
                and next(dmuc_x.elements(), None) is None:
            stanza, dmuc_x = without_dmuc(stanza), None  # it carried only its number
        if stanza.name == "presence":
            self._presence_from_master(room, link, stanza, sender, dmuc_x, out)
        elif stanza.name == "message" and dmuc_x is not None \
                and stanzas.child(dmuc_x, "rejoin") is not None:
            link.rejoin(out)
        elif stanza.name == "message" and dmuc_x is not None \
                and stanzas.child(dmuc_x, "resend") is not None:
            link.resend(stanzas.child(dmuc_x, "resend"), out)
        elif stanza.name == "message":
            self.fanout.message(room, stanza, dmuc_x, out)

    def _presence_from_master(self, room: SlaveRoom, link: SlaveLink, stanza: Element,
                              sender: JID, dmuc_x: Element | None, out: Outbox) -> None:
        nick = sender.resource
        if dmuc_x is None:
            if not nick and stanzas.child(stanza, "x", xmlns.VCARD_UPDATE) is not None:
                self.fanout.room_avatar(room, stanza, out)
                return
            if not nick:
                malformed(stanza, out, "presence from the room without a nickname")
                return
            self.fanout.roster_update(room, stanza, nick, out)
            return
        enter = stanzas.child(dmuc_x, "enter")
        leave = stanzas.child(dmuc_x, "leave")
        if enter is not None and nick:
            self.fanout.enter(room, stanza, nick, enter, dmuc_x, out)
        elif leave is not None and nick:
            if self.fanout.leave(room, stanza, leave, out):
                self._unregister_if_deserted(room, link, out)
        elif stanzas.child(dmuc_x, "destroy") is not None:
            self.fanout.destroyed(room, stanza, out)
            self._forget(room.jid, out)
        elif stanzas.child(dmuc_x, "resync") is not None:
            whois = stanzas.child(dmuc_x, "resync").getAttribute("whois")
            if whois in ("anyone", "moderators"):
                room.whois = whois
            self.fanout.resync_start(room, out)
        elif stanzas.child(dmuc_x, "synced") is not None:
            self.fanout.resync_end(room, out)
            link.synced(stanza, out)
            self._unregister_if_deserted(room, link, out)  # registered for nobody
        else:
            malformed(stanza, out, "unknown dmuc element")


def _snapshot(room: SlaveRoom, link: SlaveLink) -> Callable[[], dict[str, Any]]:
    """What SaveRoom stores for a room, read when the shell writes it."""
    return lambda: {**room.to_state(), **link.to_state()}
