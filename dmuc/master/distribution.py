"""XEP-0282 on the master: registered slaves, and routing of broadcasts through them.

A session that entered a room through a slave is reached through that slave only: the
slave gets ONE copy of each broadcast (§4.7, §4.9) and fans it out. Everything about slaves
that the master knows lives here; room.py asks `route()` where each copy goes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas, xep0282

if TYPE_CHECKING:
    from dmuc.master.room import Room
    from dmuc.master.service import MUCService

MIN_KEEPALIVE = 5
MAX_KEEPALIVE = 3600


@dataclass
class SlaveLink:
    """One slave registered for one room."""

    jid: str
    room: str
    domains: frozenset[str]
    keepalive: int
    history: int
    split: bool = False
    last_heard: float = 0.0
    last_ping: float = 0.0
    shows_jids: bool = False  # whether its roster copies carry real JIDs
    # whether its copy of the room is up to date: broadcasts go only to slaves with
    # occupants, so one whose last occupant left falls behind until its next ENTER
    current: bool = False


class Distribution:
    def __init__(self, service: MUCService) -> None:
        self.service = service
        self.allowed: dict[str, frozenset[str]] = {
            jid: frozenset(domains) for jid, domains in service.settings.slaves.items()
        }
        self.links: dict[str, dict[str, SlaveLink]] = {}  # room -> slave JID -> link
        self._ids = itertools.count(1)
        self.pings: dict[str, tuple[str, str]] = {}  # iq id -> (room, slave)

    # --- routing --------------------------------------------------------------------

    def link(self, room_jid: str, slave_jid: str | None) -> SlaveLink | None:
        if slave_jid is None:
            return None
        return self.links.get(room_jid, {}).get(slave_jid)

    def link_for_user(self, room_jid: str, full_jid: str) -> SlaveLink | None:
        """The slave through which a user of this domain enters the room, if any."""
        domain = jids.bare(full_jid).split("@")[-1]
        for link in self.links.get(room_jid, {}).values():
            if domain in link.domains:
                return link
        return None

    def route(self, room: Room, sessions: Iterable[str]) -> tuple[list[str], list[SlaveLink]]:
        """Split recipients into sessions reached directly and slaves (one copy each).
        A split slave gets nothing (§4.11.1)."""
        if not room.via:
            return list(sessions), []  # nobody entered through a slave: the hot path
        direct: list[str] = []
        slaves: dict[str, SlaveLink] = {}
        for session in sessions:
            link = self.link(room.jid, room.via.get(session))
            if link is None:
                direct.append(session)
            elif not link.split:
                slaves[link.jid] = link
        return direct, list(slaves.values())

    def has_moderator(self, room: Room, link: SlaveLink) -> bool:
        for session, slave in room.via.items():
            if slave == link.jid:
                occupant = room.occupant_by_session(session)
                if occupant is not None and occupant.role == "moderator":
                    return True
        return False

    def shows_jids(self, room: Room, link: SlaveLink) -> bool:
        """§4.7: never send real JIDs to a slave without moderators (unless the room is
        non-anonymous, where everyone sees them)."""
        return not room.is_anonymous() or self.has_moderator(room, link)

    def all_links(self, room: Room) -> list[SlaveLink]:
        return [link for link in self.links.get(room.jid, {}).values()
                if link.current and not link.split]

    # --- from a slave -------------------------------------------------------------------

    def is_slave_stanza(self, stanza: Element, sender_jid: str) -> bool:
        """Stanzas from a server-level JID to a room: a slave speaking for itself."""
        if "@" in sender_jid or "/" in sender_jid:
            return False
        if sender_jid in self.allowed:
            return True
        return any(child.uri == xmlns.DMUC for child in stanza.elements())

    def receive(self, stanza: Element, slave_jid: str, room_jid: str, out: Outbox) -> None:
        kind, stype = stanza.name, stanza.getAttribute("type")
        link = self.link(room_jid, slave_jid)
        if stype == "error":
            if link is not None:
                self._split(link, out, f"stanza bounced ({stanzas.error_condition(stanza)})")
            return
        if link is not None:
            link.last_heard = out.now
        if kind == "iq" and stype == "result":
            self._pong(stanza, out)
            return
        payload = next(stanza.elements(), None)
        if kind == "iq" and stype == "set" and _is(payload, "register"):
            self._register(stanza, payload, slave_jid, room_jid, out)
        elif kind == "iq" and stype == "set" and _is(payload, "unregister"):
            self._unregister(stanza, link, out)
        elif kind == "iq" and stype == "get" and _is(payload, "keepalive"):
            if link is None:
                out.send(stanzas.error_reply(stanza, "cancel", "item-not-found",
                                             "Not registered for this room"))
            else:
                out.send(stanzas.iq_result(stanza))
        elif kind == "presence" and _is(payload, "x"):
            self._slave_presence(stanza, payload, link, slave_jid, room_jid, out)
        elif stype not in ("error", "result"):
            out.warn(f"malformed stanza from slave {slave_jid} to {room_jid}")
            out.send(stanzas.error_reply(stanza, "modify", "bad-request",
                                         "Unknown XEP-0282 request"))

    def _register(self, stanza: Element, payload: Element, slave_jid: str, room_jid: str,
                  out: Outbox) -> None:
        """§4.2: authorise, negotiate keepalive and history, then send the room's state."""
        domains = self.allowed.get(slave_jid)
        if domains is None:
            out.warn(f"refused slave registration from {slave_jid} for {room_jid}: "
                     "not in the [[slaves]] allow list")
            out.send(stanzas.error_reply(stanza, "auth", "forbidden",
                                         "This slave is not allowed to mirror rooms here"))
            return
        try:
            keepalive = int(payload.getAttribute("keepalive") or 60)
            history = int(payload.getAttribute("history") or 0)
        except ValueError:
            out.send(stanzas.error_reply(stanza, "modify", "bad-request",
                                         "keepalive and history must be numbers"))
            return
        keepalive = min(max(keepalive, MIN_KEEPALIVE), MAX_KEEPALIVE)
        room = self.service.rooms.get(room_jid)
        history = min(max(history, 0), room.config.history_length if room else
                      self.service.settings.max_history_length)
        link = self.link(room_jid, slave_jid)
        if link is None:
            link = SlaveLink(slave_jid, room_jid, domains, keepalive, history)
            self.links.setdefault(room_jid, {})[slave_jid] = link
        elif link.split:
            out.info(f"netjoin: slave {slave_jid} registered again for {room_jid}")
        link.domains, link.keepalive, link.history = domains, keepalive, history
        link.split, link.last_heard = False, out.now
        whois = room.config.whois if room else "moderators"
        out.send(xep0282.registered_result(stanza, keepalive, history, whois))
        out.info(f"slave {slave_jid} registered for {room_jid} "
                 f"(keepalive {keepalive}s, history {history})")
        self.snapshot(link, out)

    def _unregister(self, stanza: Element, link: SlaveLink | None, out: Outbox) -> None:
        """The slave stops mirroring the room; any session still reached through it leaves
        (it cannot be reached any more)."""
        out.send(stanzas.iq_result(stanza))
        if link is None:
            return
        self.links.get(link.room, {}).pop(link.jid, None)
        room = self.service.rooms.get(link.room)
        if room is not None:
            for session, slave in list(room.via.items()):
                occupant = room.occupant_by_session(session)
                if slave == link.jid and occupant is not None:
                    room.remove_session(occupant, session, out, statuses=("333",))
        out.info(f"slave {link.jid} unregistered from {link.room}")

    def snapshot(self, link: SlaveLink, out: Outbox) -> None:
        """§4.3/§4.4 (and netjoin): roster, history and subject of the room to a slave,
        between <resync/> and <synced/>."""
        room = self.service.rooms.get(link.room)
        link.current = True
        out.send(xep0282.resync_notice(link.room, link.jid))
        if room is not None:
            link.shows_jids = self.shows_jids(room, link)
            for occupant in room.occupants.values():
                if occupant.role not in room.config.presence_broadcast:
                    continue
                presence, xml = room.listed_presence(occupant, link.shows_jids)
                out.broadcast(presence, [link.jid], xml)
            if link.history:
                for entry in room.history[-link.history:]:
                    copy = xep0282.for_slave(entry.stanza, entry.stamp,
                                                  entry.stanza.getAttribute("from", link.room),
                                                  history=True)
                    copy["to"] = link.jid
                    out.send(copy)
            subject = room.subject_stanza(link.jid)
            subject.attributes.pop("to", None)
            copy = xep0282.for_slave(subject, out.now, link.room, history=True)
            copy["to"] = link.jid
            out.send(copy)
        out.send(xep0282.synced_notice(link.room, link.jid))

    def _slave_presence(self, stanza: Element, x: Element, link: SlaveLink | None,
                        slave_jid: str, room_jid: str, out: Outbox) -> None:
        refuse = stanzas.child(x, "refuse") if x.uri == xmlns.DMUC else None
        if refuse is None:
            out.send(stanzas.error_reply(stanza, "modify", "bad-request",
                                         "Unknown XEP-0282 presence"))
            return
        user = jids.parse(refuse.getAttribute("jid"))
        if link is None:
            out.send(stanzas.error_reply(stanza, "cancel", "item-not-found",
                                         "Not registered for this room"))
            return
        if user is None or user.host not in link.domains:
            out.warn(f"slave {slave_jid} spoke for {refuse.getAttribute('jid')} in {room_jid}:"
                     " not a user of its domains; refused")
            out.send(stanzas.error_reply(stanza, "auth", "forbidden",
                                         "A slave speaks only for users of its own domains"))
            return
        room = self.service.rooms.get(room_jid)
        occupant = room.occupant_by_session(user.full()) if room is not None else None
        out.warn(f"slave {slave_jid} refused ENTER of {user.full()} to {room_jid}")
        if room is not None and occupant is not None:
            room.remove_session(occupant, user.full(), out)

    # --- keepalive and netsplit (§4.10, §4.11) ------------------------------------------

    def tick(self, now: float, out: Outbox) -> None:
        for links in self.links.values():
            for link in links.values():
                interval = max(link.keepalive // 4, 1) if link.split else link.keepalive
                if now - max(link.last_heard, link.last_ping) >= interval:
                    link.last_ping = now
                    iq_id = f"dmuc-ka-{next(self._ids)}"
                    self.pings[iq_id] = (link.room, link.jid)
                    out.send(xep0282.keepalive_ping(link.room, link.jid, iq_id))

    def _pong(self, stanza: Element, out: Outbox) -> None:
        target = self.pings.pop(stanza.getAttribute("id") or "", None)
        if target is None:
            return
        link = self.link(*target)
        if link is not None and link.split:
            link.split = False
            out.info(f"netjoin: slave {link.jid} is back for {link.room}; resyncing")
            self.snapshot(link, out)

    def _split(self, link: SlaveLink, out: Outbox, why: str) -> None:
        if not link.split:
            out.warn(f"netsplit: slave {link.jid} for {link.room}: {why}")
        link.split = True

    def bounced(self, slave_jid: str, room_jid: str, out: Outbox) -> bool:
        link = self.link(room_jid, slave_jid)
        if link is None:
            return False
        self._split(link, out, "stanza bounced")
        return True

    # --- room events --------------------------------------------------------------------

    def visibility_changed(self, room: Room, out: Outbox) -> None:
        """A slave gained or lost its only moderator (or whois changed): its roster copy
        must gain or lose the real JIDs, so it gets a fresh snapshot."""
        for link in self.all_links(room):
            if self.shows_jids(room, link) != link.shows_jids:
                self.snapshot(link, out)

    def whois_changed(self, room: Room, out: Outbox) -> None:
        for link in self.all_links(room):
            out.send(xep0282.room_settings(room.jid, link.jid, room.config.whois))
        self.visibility_changed(room, out)

    def went_quiet(self, room_jid: str, slave_jid: str) -> None:
        """The slave's last occupant left: it gets no more broadcasts for now."""
        link = self.link(room_jid, slave_jid)
        if link is not None:
            link.current = False

    def room_gone(self, room_jid: str) -> None:
        self.links.pop(room_jid, None)


def _is(payload: Element | None, name: str) -> bool:
    return payload is not None and payload.uri == xmlns.DMUC and payload.name == name
