"""XEP-0282 on the master: the registered slaves of each room, every copy that goes
through them, and the state of §4.11.2 (the replay window, resubmissions, held messages).

The room core (room.py) speaks XEP-0045 only: it fires room events (dmuc.hooks) and this
module hooks them, the way Prosody's plugins hook muc.lib.lua's: `occupant-entering` /
`occupant-session-new` / `occupant-session-moved` (§4.5), `occupant-leaving` /
`occupant-session-gone` (§4.6), `occupant-role-set` / `occupant-role-broadcast` (§4.7),
`occupant-groupchat` and `message-time` (§4.11.2), `message-kept` / `message-retracted`
/ `recent-message` (the replay window), `room-destroying`, and `room-config-applied` (a
whois change). It is also the room's routing.Router: `route`, `relay_of` and the fan-outs
(§4.7, §4.9). A session that entered through a slave is reached through that slave only:
the slave gets ONE copy of each broadcast and fans it out. Each slave's registration for a
room is a small state machine (REGISTRATION_TRANSITIONS).
"""

from __future__ import annotations

import itertools
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.hooks import Hooks
from dmuc.master.model import Occupant, PresenceChange, RoomConfig
from dmuc.master.numbering import ForwardedNumbers
from dmuc.master.replay import ReplayWindow
from dmuc.outbox import Outbox
from dmuc.protocol import keepalive, stanzas, visibility, xep0282
from dmuc.protocol.history import HistoryEntry, with_default
from dmuc.protocol.statemachine import SplitCounter, StateMachine, TransitionObserver

if TYPE_CHECKING:
    from dmuc.master.room import Room
    from dmuc.master.service import MUCService


# What a session that moves to another nick through its slave asks for: no history again.
_NO_HISTORY_JOIN = stanzas.parse_xml(
    f"<presence><x xmlns='{xmlns.MUC}'><history maxstanzas='0'/></x></presence>")
# Recent (sender, message id) pairs kept to recognise a slave's resubmissions, and a late
# first copy after its replay (§4.11.2): far more than a split holds in flight.
MAX_REMEMBERED_SUBMISSIONS = 5000
MAX_TOMBSTONES = 10_000  # destroyed rooms remembered for slaves that missed the notice
# Its handlers run before the features' (e.g. history on join): a relayed session's
# slave sends it everything itself.
HOOK_PRIORITY = 1000


class RegistrationState(Enum):
    LIVE = "live"  # registered and up to date: gets every broadcast while it has occupants
    STALE = "stale"  # its last occupant left: gets nothing, refreshed before its next ENTER
    SPLIT = "split"  # unreachable (§4.11.1): gets nothing, pinged every keepalive/4


R = RegistrationState
# (state, event) -> next state. Registering again always starts afresh (with a snapshot).
REGISTRATION_TRANSITIONS: dict[tuple[RegistrationState, str], RegistrationState] = {
    (R.LIVE, "register"): R.LIVE,
    (R.STALE, "register"): R.LIVE,
    (R.SPLIT, "register"): R.LIVE,
    (R.LIVE, "quiet"): R.STALE,  # its last local occupant left
    (R.SPLIT, "quiet"): R.SPLIT,
    (R.STALE, "refresh"): R.LIVE,  # a snapshot before an ENTER through it
    (R.LIVE, "bounce"): R.SPLIT,
    (R.STALE, "bounce"): R.SPLIT,
    (R.SPLIT, "bounce"): R.SPLIT,
    (R.SPLIT, "pong-empty"): R.STALE,  # netjoin without occupants: refreshed on next ENTER
    # (a ping answered with occupants behind it: the slave is asked to register again,
    # and its registration makes it LIVE with exactly the gap replayed)
}


@dataclass
class SlaveRegistration:
    """One slave registered for one room."""

    jid: str
    room: str
    domains: frozenset[str]
    keepalive: int
    history: int
    last_heard: float = 0.0  # anything from the slave for the room, its users' forwards too
    last_ping: float = 0.0
    last_said: float = 0.0  # anything we sent the slave for the room (keepalive.due)
    seq: int = 0  # the number of the last stanza sent to it for the room (§4.11.2)
    # the numbers of what it forwarded us for the room (§4.11.2): a lost one is asked for
    forwarded: ForwardedNumbers = field(default_factory=ForwardedNumbers)
    shows_jids: bool = False  # whether its roster copy carries real JIDs
    since: float = 0.0  # when it entered its present state (for the admins' view)
    back_since: float = -1e18  # when it last left SPLIT
    register_id: str | None = None  # the iq id of the <register/> last answered
    observer: TransitionObserver | None = field(default=None, repr=False, compare=False)
    machine: StateMachine[RegistrationState] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.machine = StateMachine(f"link {self.jid} for {self.room}", REGISTRATION_TRANSITIONS,
                                    RegistrationState.LIVE, self.observer)

    @property
    def state(self) -> RegistrationState:
        return self.machine.state

    @property
    def split(self) -> bool:
        return self.state is RegistrationState.SPLIT

    def fire(self, event: str, now: float) -> RegistrationState:
        """Move the link's state machine, noting when its state changed."""
        before = self.machine.state
        state = self.machine.fire(event)
        if state is not before:
            self.since = now
            if before is RegistrationState.SPLIT:
                self.back_since = now
        return state

    def catching_up(self, now: float) -> bool:
        """Split, or back from a split for less than a keepalive: what comes from it now
        may be what waited while it was stopped or its link stalled (§4.11.2)."""
        return self.split or now - self.back_since < self.keepalive

    def send(self, stanza: Element, out: Outbox) -> None:
        """Everything for the room goes to the slave numbered, in order."""
        self.seq += 1
        self.last_said = out.now
        out.send(xep0282.numbered(stanza, self.seq))


@dataclass
class RoomReplay:
    """One room's §4.11.2 state: what a slave back from a netsplit is replayed, and the
    submissions already broadcast."""

    window: ReplayWindow
    # (sender, message id) of recent groupchat submissions -> whether it was a slave's
    # replay: a slave that resubmits what it held or had in flight across a netsplit is
    # not broadcast twice, nor is a late first copy after its replay
    submitted: OrderedDict[tuple[str, str], bool] = field(default_factory=OrderedDict)


@dataclass
class RoomRoutes:
    """How each session of one room is reached, kept as indexes so that routing a
    broadcast costs the copies it makes, not the size of the room."""

    direct: dict[str, None] = field(default_factory=dict)  # sessions reached directly
    via: dict[str, str] = field(default_factory=dict)  # session -> slave JID
    sessions: dict[str, set[str]] = field(default_factory=dict)  # slave JID -> sessions
    # sessions behind a slave whose occupant is a moderator, and their count per slave
    moderating: set[str] = field(default_factory=set)
    moderators: dict[str, int] = field(default_factory=dict)


class Distribution:
    def __init__(self, service: MUCService) -> None:
        self.service = service
        self.allowed: dict[str, frozenset[str]] = {
            jid: frozenset(domains) for jid, domains in service.settings.slaves.items()
        }
        self.links: dict[str, dict[str, SlaveRegistration]] = {}  # room -> slave JID -> link
        self.routes: dict[str, RoomRoutes] = {}  # room -> its sessions behind slaves
        self._ids = itertools.count(1)
        self.pings: dict[str, tuple[str, str]] = {}  # iq id -> (room, slave)
        self.splits = SplitCounter(RegistrationState.SPLIT)  # every link's netsplits and netjoins
        # second copies of messages dropped (a slave's replay, or the late first copy
        # after it), per room since the last tick: logged in one line a tick
        self.duplicates: dict[str, int] = {}
        self.duplicates_total = 0
        self.replays: dict[str, RoomReplay] = {}  # room -> its replay window and submissions
        # rooms destroyed while slaves were registered for them: a slave that registers
        # again for one (it missed the notice) is told it is gone
        self.tombstones: OrderedDict[str, None] = OrderedDict()
        self._hook(service.hooks)

    def _hook(self, hooks: Hooks) -> None:
        """The room events XEP-0282 takes part in (dmuc.hooks lists them)."""
        for event, handler in (
            ("occupant-entering", self._on_entering),
            ("occupant-session-new", self._on_session_new),
            ("occupant-session-moved", self._on_session_moved),
            ("occupant-leaving", self._on_leaving),
            ("occupant-session-gone", self.forget),
            ("occupant-role-set", self.count_roles),
            ("occupant-role-broadcast", self.visibility_changed),
            ("message-time", self._on_message_time),
            ("message-kept", self._on_message_kept),
            ("message-retracted", self._on_message_retracted),
            ("recent-message", self._on_recent_message),
            ("room-destroying", self.destroyed),
        ):
            hooks.add(event, handler, priority=HOOK_PRIORITY)
        # a subject change (priority 20) is never a resubmission
        hooks.add("occupant-groupchat", self._on_groupchat, priority=10)
        # after the evictions and storage of a new configuration (as whois.py did)
        hooks.add("room-config-applied", self._on_config_applied, priority=10)
        # what a slave answers from its mirror changed (§4.18): a vCard set, a new room
        hooks.add("room-mirror-changed", self._on_mirror_changed)
        hooks.add("room-created", lambda room, out, **_: self._on_mirror_changed(
            room, out, vcard=True))

    def replay_of(self, room: Room) -> RoomReplay:
        replay = self.replays.get(room.jid)
        if replay is None:
            window = ReplayWindow(self.service.settings.archive_window)
            replay = self.replays[room.jid] = RoomReplay(window)
        return replay

    # --- lookups ----------------------------------------------------------------------

    def link(self, room_jid: str, slave_jid: str | None) -> SlaveRegistration | None:
        if slave_jid is None:
            return None
        return self.links.get(room_jid, {}).get(slave_jid)

    def link_for_user(self, room_jid: str, full_jid: str) -> SlaveRegistration | None:
        """The slave through which a user of this domain enters the room, if any."""
        domain = jids.domain(full_jid)
        for link in self.links.get(room_jid, {}).values():
            if domain in link.domains:
                return link
        return None

    def serves(self, user: str) -> bool:
        """Whether a user's domain is one an allowed slave serves (registered or not)."""
        domain = jids.domain(user)
        return any(domain in served for served in self.allowed.values())

    def left_to_slave(self, stanza: Element, sender: str, out: Outbox, why: str) -> None:
        """A groupchat its slave will submit again after registering (it never saw its
        broadcast, §4.11.2): this copy is dropped and counted as a second one, unanswered
        (the sender sees it delivered once)."""
        room_jid = jids.bare(stanza.getAttribute("to") or "")
        out.debug(f"dropped groupchat {stanza.getAttribute('id')} of {sender} to {room_jid}"
                  f" ({why}): its slave submits it again")
        self.duplicate_dropped(room_jid)

    def slave_of(self, room: Room, session: str) -> str | None:
        """The slave a session entered through (None: reached directly)."""
        routes = self.routes.get(room.jid)
        return routes.via.get(session) if routes is not None else None

    def relay_of(self, room: Room, session: str) -> str | None:
        """routing.Router: the slave a session entered through (None: reached directly)."""
        return self.slave_of(room, session)

    def route(self, room: Room, exclude: Collection[str] = ()) -> tuple[list[str],
                                                                        list[SlaveRegistration]]:
        """Who gets a copy of a broadcast: the sessions reached directly, and one copy
        per slave with occupants (§4.7, §4.9). A split slave gets nothing (§4.11.1)."""
        routes = self.routes.get(room.jid)
        direct = [] if routes is None else (
            [s for s in routes.direct if s not in exclude] if exclude else list(routes.direct))
        # LIVE: every slave with occupants, and one just registered whose users are about
        # to enter (so that it misses nothing in between, e.g. after a master restart).
        links = [link for link in self.links.get(room.jid, {}).values()
                 if link.state is RegistrationState.LIVE]
        return direct, links

    def has_moderator(self, room: Room, link: SlaveRegistration) -> bool:
        routes = self.routes.get(room.jid)
        return routes is not None and routes.moderators.get(link.jid, 0) > 0

    def shows_jids(self, room: Room, link: SlaveRegistration) -> bool:
        """§4.7: real JIDs go to a slave only under the shared visibility rule."""
        return visibility.slave_sees_real_jids(room.config.whois, self.has_moderator(room, link))

    def live_links(self, room: Room) -> list[SlaveRegistration]:
        return [link for link in self.links.get(room.jid, {}).values()
                if link.state is RegistrationState.LIVE]

    # --- what the room's events do (hooked in _hook) ----------------------------------

    def entering(self, room: Room, session: str, out: Outbox) -> bool:
        """A session joins: if its domain has a reachable slave, the session will be
        reached through it (§4.5; a stale slave is refreshed first), else directly.
        True when it is reached through a slave."""
        routes = self.routes.setdefault(room.jid, RoomRoutes())
        link = self.link_for_user(room.jid, session)
        if link is None or link.split:
            if session in routes.via:
                self.forget(room, session, out)
            routes.direct[session] = None
            return False
        routes.direct.pop(session, None)
        if link.state is RegistrationState.STALE:
            link.fire("refresh", out.now)
            self.snapshot(link, out)
        routes.via[session] = link.jid
        routes.sessions.setdefault(link.jid, set()).add(session)
        return True

    def entered(self, room: Room, occupant: Occupant, session: str, join: Element,
                self_codes: list[str], out: Outbox) -> None:
        """§4.5 Listing 2/12: the ENTER, with the user's own presence and history request;
        the slave sends the roster, history and subject itself."""
        slave = self.slave_of(room, session)
        if slave is None:
            return
        muc_x = stanzas.child(join, "x", xmlns.MUC)
        # the slave selects what the master would: a join without limits asks for the
        # room's default number
        request = with_default(
            stanzas.child(muc_x, "history") if muc_x is not None else None,
            room.config.default_history_messages)
        own = room.presence_of(occupant, True,
                               visibility.self_status_codes(self_codes))
        self._send(room, slave, xep0282.enter(own, slave, session, request), out)

    def leaving(self, room: Room, occupant: Occupant, session: str, change: PresenceChange,
                out: Outbox) -> bool:
        """§4.6: a session that entered through a slave leaves through it (LEAVE first);
        `change` says how its own unavailable presence is built."""
        slave = self.slave_of(room, session)
        if slave is None:
            return False
        codes = visibility.self_status_codes(change.statuses)
        own = room.changed_presence(occupant, change, True, codes, own=True)
        self._send(room, slave, xep0282.leave(own, slave, session), out)
        return True

    def _send(self, room: Room, slave: str, stanza: Element, out: Outbox) -> None:
        link = self.link(room.jid, slave)
        if link is not None:
            link.send(stanza, out)
        else:
            out.send(stanza)

    def forget(self, room: Room, session: str, out: Outbox) -> None:
        """A session is gone; a slave whose last session it was gets nothing more."""
        routes = self.routes.get(room.jid)
        if routes is None:
            return
        routes.direct.pop(session, None)
        slave = routes.via.pop(session, None)
        if slave is None:
            return
        self._count_moderator(routes, slave, session, False)
        behind = routes.sessions.get(slave)
        if behind is not None:
            behind.discard(session)
            link = self.link(room.jid, slave)
            if not behind:
                del routes.sessions[slave]
                if link is not None:
                    link.fire("quiet", out.now)
            elif link is not None:
                self._refresh_visibility(room, link, out)

    def count_roles(self, room: Room, occupant: Occupant) -> None:
        """An occupant joined or its role changed: keep each slave's moderator count (it
        decides whether the slave's copies carry real JIDs, §4.7). Called before the
        change is broadcast, so that the broadcast already follows it."""
        routes = self.routes.get(room.jid)
        if routes is None or not routes.via:
            return
        for session in occupant.sessions:
            slave = routes.via.get(session)
            if slave is not None:
                self._count_moderator(routes, slave, session, occupant.role == "moderator")

    def visibility_changed(self, room: Room, occupant: Occupant, out: Outbox) -> None:
        """After the broadcast: a slave of this occupant that gained its first or lost its
        last moderator gets a snapshot with or without real JIDs."""
        routes = self.routes.get(room.jid)
        if routes is None or not routes.via:
            return
        slaves = {routes.via[s] for s in occupant.sessions if s in routes.via}
        for slave in sorted(slaves):
            link = self.link(room.jid, slave)
            if link is not None:
                self._refresh_visibility(room, link, out)

    @staticmethod
    def _count_moderator(routes: RoomRoutes, slave: str, session: str, moderating: bool) -> None:
        if moderating == (session in routes.moderating):
            return
        if moderating:
            routes.moderating.add(session)
            routes.moderators[slave] = routes.moderators.get(slave, 0) + 1
        else:
            routes.moderating.discard(session)
            routes.moderators[slave] -= 1

    def _refresh_visibility(self, room: Room, link: SlaveRegistration, out: Outbox) -> None:
        if link.state is RegistrationState.LIVE and self.shows_jids(room, link) != link.shows_jids:
            self.snapshot(link, out)

    def fan_out_presence(self, room: Room, build: Callable[[bool], Element],
                         links: Iterable[SlaveRegistration], out: Outbox) -> None:
        """§4.7: one copy of a presence per slave, with real JIDs only where allowed."""
        for link in links:
            copy = build(self.shows_jids(room, link))
            copy["to"] = link.jid
            link.send(copy, out)

    def fan_out_room_stanza(self, room: Room, stanza: Element, links: Iterable[SlaveRegistration],
                            out: Outbox) -> None:
        """A stanza from the room itself (e.g. its avatar presence): one copy per slave,
        delivered by it to its local occupants."""
        for link in links:
            copy = stanzas.copy(stanza)
            copy["to"] = link.jid
            link.send(copy, out)

    def for_direct(self, message: Element) -> Element:
        """Direct users get the id its sender gave it, not their slave's handle (§4.11.2)."""
        return xep0282.for_users(message)

    def fan_out_groupchat(self, room: Room, message: Element, links: Iterable[SlaveRegistration],
                          out: Outbox, stamp: float) -> None:
        """§4.9: one copy per slave, with the XEP-0203 delay inside the dmuc element."""
        for link in links:
            copy = xep0282.for_slave(message, stamp, message.getAttribute("from"))
            copy["to"] = link.jid
            link.send(copy, out)

    def destroyed(self, room: Room, notice: Element | None, out: Outbox) -> None:
        """The room is gone: one notice to every slave registered for it (§4.6), with
        occupants or not, so that none keeps its state (its subject, its history) or
        registers for it again; each tells its local occupants."""
        self.routes.pop(room.jid, None)
        links = self.links.pop(room.jid, {})
        if links:  # one of them may miss the notice (a split): its next registration
            self.tombstones[room.jid] = None
            while len(self.tombstones) > MAX_TOMBSTONES:
                self.tombstones.popitem(last=False)
        if notice is None:
            x = stanzas.muc_user_x([{"affiliation": "none", "role": "none"}])
            x.addElement("destroy")
            notice = stanzas.new("presence", {"from": room.jid, "type": "unavailable"})
            notice.addChild(x)
        for slave in sorted(links):
            links[slave].send(xep0282.destroyed(notice, room.jid, slave), out)

    def room_gone(self, room_jid: str) -> None:
        self.links.pop(room_jid, None)
        self.routes.pop(room_jid, None)
        self.replays.pop(room_jid, None)

    def settings_changed(self, room: Room, out: Outbox, whois: bool = False,
                         vcard: bool = False) -> None:
        """The slaves apply whois and archiving themselves and answer disco#info and the
        vCard from their mirror (§4.18): each live one gets the room's settings again; a
        roster copy that must gain or lose the real JIDs is sent again (`whois`: it
        changed); `vcard`: the vCard changed, it goes too."""
        for link in self.live_links(room):
            link.send(self.settings_message(room, link.jid, vcard), out)
            if whois:
                self._refresh_visibility(room, link, out)

    def settings_message(self, room: Room, slave: str, vcard: bool) -> Element:
        """The room's settings a slave applies and answers from: whois, the archive's, and
        what the features add (disco#info, the vCard when `vcard`: §4.18)."""
        message = xep0282.room_settings(room.jid, slave, room.config.whois,
                                        self.archive_settings(room))
        settings = stanzas.child(stanzas.child(message, "x", xmlns.DMUC), "room")
        self.service.hooks.fire("slave-room-mirror", room=room, settings=settings,
                                vcard=vcard)
        return message

    def _on_mirror_changed(self, room: Room, out: Outbox, vcard: bool = False,
                           **_: object) -> None:
        self.settings_changed(room, out, vcard=vcard)

    def archive_settings(self, room: Room | None) -> xep0282.ArchiveSettings | None:
        """The room's archive settings a slave keeps its copy by (§4.17); None without
        an archive (the feature is not loaded)."""
        if room is None:
            return None
        return self.service.hooks.fire("slave-archive-settings", room=room)

    # --- room events whose handler takes a step over, or reads a stanza ---------------
    # A handler returns True to take the event over (the room does not go on), else None.

    def _on_entering(self, room: Room, session: str, out: Outbox) -> bool | None:
        return self.entering(room, session, out) or None

    def _on_session_new(self, room: Room, occupant: Occupant, session: str, stanza: Element,
                        self_codes: list[str], out: Outbox) -> bool | None:
        """§4.5: the slave sends roster, own presence, history and subject itself."""
        if self.slave_of(room, session) is None:
            return None
        self.entered(room, occupant, session, stanza, self_codes, out)
        return True

    def _on_session_moved(self, room: Room, occupant: Occupant, session: str,
                          self_codes: list[str], out: Outbox) -> bool | None:
        """A session behind a slave moved to another nick: it enters the new one through
        the slave, without history again."""
        if self.slave_of(room, session) is None:
            return None
        self.entered(room, occupant, session, _NO_HISTORY_JOIN, self_codes, out)
        return True

    def _on_leaving(self, room: Room, occupant: Occupant, session: str, change: PresenceChange,
                    out: Outbox) -> bool | None:
        return self.leaving(room, occupant, session, change, out) or None

    def _on_groupchat(self, room: Room, occupant: Occupant, stanza: Element,
                      out: Outbox) -> bool | None:
        """A groupchat a slave resubmits after a netsplit, already broadcast, is dropped."""
        return self._resubmitted(room, stanza.getAttribute("from"),
                                 stanza.getAttribute("id"), out) or None

    def is_second_copy(self, room: Room, stanza: Element) -> bool:
        """Whether a slave's resubmission is of a message the room has already had (it
        will be dropped: the rate limits do not charge it)."""
        original, replay = xep0282.original_id(stanza.getAttribute("id") or "")
        return replay and (stanza.getAttribute("from"), original) in \
            self.replay_of(room).submitted

    def _resubmitted(self, room: Room, sender: str, message_id: str | None,
                     out: Outbox) -> bool:
        """Whether a groupchat is a copy of one the room has already broadcast: after a
        netsplit a slave cannot know which of the messages it had in flight arrived, and
        submits them again (xep0282's RESUBMIT or SPLIT prefix); a link that was only slow
        delivers the first copy late, after the replay. So two copies of one (sender, id)
        where one is a slave's replay are one message. Plain ids alone are never dropped:
        a client may reuse them."""
        if not message_id:
            return False
        original, _ = xep0282.original_id(message_id)
        replay = original != message_id
        key = (sender, original)
        submitted = self.replay_of(room).submitted
        seen = submitted.get(key)
        if seen is not None and (replay or seen):
            out.debug(f"{room.jid}: dropped a second copy {message_id} of {sender}")
            self.duplicate_dropped(room.jid)
            return True
        submitted[key] = replay
        submitted.move_to_end(key)
        while len(submitted) > MAX_REMEMBERED_SUBMISSIONS:
            submitted.popitem(last=False)
        return False

    def _on_message_time(self, room: Room, stanza: Element, now: float) -> float | None:
        """When a message a slave held through a netsplit was sent (§4.11.2): taken only
        from a session behind a slave, and only if it lies in the last day."""
        held = xep0282.held_stamp(stanza)
        if held is None or self.slave_of(room, stanza["from"]) is None:
            return None
        return xep0282.plausible_said_time(held, now)

    def _on_message_kept(self, room: Room, entry: HistoryEntry, sid: str | None,
                         restored: bool = False) -> None:
        self.replay_of(room).window.add(entry, sid, restored)

    def _on_message_retracted(self, room: Room, sid: str) -> None:
        self.replay_of(room).window.retract(sid)

    def _on_recent_message(self, room: Room, sid: str) -> HistoryEntry | None:
        return self.replay_of(room).window.get(sid)

    def _on_config_applied(self, room: Room, old: RoomConfig, out: Outbox) -> None:
        # any setting may show in disco#info (§4.18): the slaves' mirrors follow
        self.settings_changed(room, out, whois=room.config.whois != old.whois)

    # --- from a slave -------------------------------------------------------------------

    def note_forwarded(self, stanza: Element, sender: str, room_jid: str,
                       out: Outbox) -> bool:
        """A stanza a slave forwarded for one of its users carries the slave's number for
        the room (§4.11.2), taken off here (the room never relays it); a gap is what was
        lost on the way, which the slave is asked to send again.

        Whether it is a groupchat the slave forwarded before it registered with us (we
        restarted: it forwarded this while it had not yet heard our <restarted/>): the
        slave registers again and submits every groupchat whose broadcast it did not see
        (§4.11.2), this one with them, so this copy is dropped and counted as a second
        copy; answering it "not in the room" would tell its sender of an error about a
        message the room delivers all the same."""
        seq = xep0282.take_sequence_number(stanza)
        if seq is None:
            return False
        link = self.link_for_user(room_jid, sender)
        if link is not None:
            link.last_heard = out.now  # the slave is alive: a loaded link is not a dead one
            link.forwarded.heard(seq, out.now)
            return False
        if stanza.name != "message" or stanza.getAttribute("type") != "groupchat" \
                or not stanza.getAttribute("id"):
            return False  # not a message the slave keeps in flight: answered as it is
        if not self.serves(sender):
            return False
        self.left_to_slave(stanza, sender, out, "its slave is not registered (yet)")
        return True

    def _ask_lost(self, link: SlaveRegistration, out: Outbox) -> None:
        """Numbers missing for a while: stanzas lost on the way, asked for again."""
        ranges = link.forwarded.lost(out.now)
        if ranges:
            count = sum(last - first + 1 for first, last in ranges)
            out.warn(f"lost {count} stanzas from slave {link.jid} for {link.room} on the "
                     "way; asking it to send them again")
        for first, last in ranges:
            link.send(xep0282.resend_request(link.room, link.jid, first, last), out)

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
                stanzas.refuse(out, stanza, "cancel", "item-not-found",
                               "Not registered for this room",
                               what=f"XEP-0282 keepalive for {room_jid}")
            else:
                out.send(stanzas.iq_result(stanza))
                link.last_said = out.now
                sent = stanzas.parse_bounded_int(payload.getAttribute("seq"), 0, 2**62)
                if sent is not None:  # what it forwarded up to now: the tail lost too?
                    link.forwarded.said_sent(sent, out.now)
        elif kind == "iq" and stype == "get" and _is(payload, "archive"):
            self._archive_fill(stanza, payload, link, room_jid, out)
        elif kind == "presence" and _is(payload, "x"):
            self._slave_presence(stanza, payload, link, slave_jid, room_jid, out)
        elif stype not in ("error", "result"):
            out.warn(f"malformed stanza from slave {slave_jid} to {room_jid}")
            out.send(stanzas.error_reply(stanza, "modify", "bad-request",
                                         "Unknown XEP-0282 request"))

    def _archive_fill(self, stanza: Element, payload: Element,
                      link: SlaveRegistration | None, room_jid: str, out: Outbox) -> None:
        """§4.17: a registered slave copies the room's archive, a page at a time (the
        senders' real JIDs only if it may see them)."""
        room = self.service.rooms.get(room_jid)
        if link is None or room is None:
            stanzas.refuse(out, stanza, "cancel", "item-not-found",
                           "Not registered for this room",
                           what=f"XEP-0282 archive copy of {room_jid}")
            return
        if not self.service.hooks.fire("slave-archive-fill", room=room, stanza=stanza,
                                       payload=payload, with_senders=self.shows_jids(room, link),
                                       out=out):
            stanzas.refuse(out, stanza, "cancel", "feature-not-implemented",
                           "This room keeps no archive",
                           what=f"XEP-0282 archive copy of {room_jid}")

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
        proposed_keepalive = stanzas.parse_bounded_int(payload.getAttribute("keepalive") or "60",
                                                       0, 10**9)
        history = stanzas.parse_bounded_int(payload.getAttribute("history") or "0", 0, 10**9)
        if proposed_keepalive is None or history is None:
            stanzas.refuse(out, stanza, "modify", "bad-request",
                           "keepalive and history must be numbers",
                           what=f"registration for {room_jid}")
            return
        every = keepalive.clamp(proposed_keepalive)
        room = self.service.rooms.get(room_jid)
        if room is None and payload.getAttribute("last") is not None \
                and room_jid in self.tombstones:
            # it had the room and missed its destroy: it must not bring any of it back
            stanzas.refuse(out, stanza, "cancel", "item-not-found", "The room was destroyed",
                           what=f"registration of {slave_jid} for {room_jid}", by=room_jid)
            return
        history = min(max(history, 0), room.config.history_length if room else
                      self.service.settings.max_history_length)
        link = self.link(room_jid, slave_jid)
        if link is not None and link.state is RegistrationState.LIVE \
                and stanza.getAttribute("id") == link.register_id:
            # the slave's retry of one we answered (its answer was slow): the snapshot
            # we sent is on its way; a second would double what crosses the link
            link.forwarded.restart(_sent_so_far(payload))
            out.send(xep0282.registered_result(stanza, link.keepalive, link.history,
                                               room.config.whois if room else "moderators",
                                               self.archive_settings(room)))
            out.debug(f"{room_jid}: slave {slave_jid} sent its registration again; "
                      "answered, no second snapshot")
            return
        if link is None:
            link = SlaveRegistration(slave_jid, room_jid, domains, every, history, since=out.now,
                             observer=self.splits)
            self.links.setdefault(room_jid, {})[slave_jid] = link
        else:
            if link.split:
                out.info(f"netjoin: slave {slave_jid} registered again for {room_jid}")
            link.fire("register", out.now)
        link.domains, link.keepalive, link.history = domains, every, history
        link.last_heard, link.register_id = out.now, stanza.getAttribute("id")
        link.forwarded.restart(_sent_so_far(payload))
        whois = room.config.whois if room else "moderators"
        out.send(xep0282.registered_result(stanza, every, history, whois,
                                           self.archive_settings(room)))
        out.info(f"slave {slave_jid} registered for {room_jid} "
                 f"(keepalive {every}s, history {history})")
        self.snapshot(link, out, after=payload.getAttribute("last"))

    def _unregister(self, stanza: Element, link: SlaveRegistration | None, out: Outbox) -> None:
        """The slave stops mirroring the room; any session still reached through it leaves
        (it cannot be reached any more)."""
        out.send(stanzas.iq_result(stanza))
        if link is None:
            return
        self._drop(link, out)
        out.info(f"slave {link.jid} unregistered from {link.room}")

    def _drop(self, link: SlaveRegistration, out: Outbox) -> None:
        """Forget a link; any session still reached through it leaves (status 333: it
        cannot be reached any more)."""
        room = self.service.rooms.get(link.room)
        routes = self.routes.get(link.room)
        if room is not None and routes is not None:
            for session in sorted(routes.sessions.get(link.jid, ())):
                occupant = room.occupant_by_session(session)
                if occupant is not None:
                    room.remove_session(occupant, session, out, statuses=("333",))
        self.links.get(link.room, {}).pop(link.jid, None)

    def set_allowed(self, allowed: dict[str, frozenset[str]], out: Outbox) -> None:
        """A new [[slaves]] allow list (a configuration reload). A slave no longer listed
        is treated as any unknown slave from now on: its links are dropped (its sessions
        leave with status 333), its next keepalive is answered item-not-found and its
        registration forbidden, so its users talk to the master directly. A listed slave
        whose domains changed keeps its links with the new domains."""
        removed = sorted(set(self.allowed) - set(allowed))
        self.allowed = dict(allowed)
        for slave in removed:
            links = [room_links[slave] for room_links in self.links.values()
                     if slave in room_links]
            for link in links:
                self._drop(link, out)
            rooms = f"{len(links)} room{'' if len(links) == 1 else 's'}"
            out.warn(f"slave {slave} removed from the [[slaves]] allow list: refused from "
                     f"now on; dropped its links to {rooms}")
        for room_links in self.links.values():
            for link in room_links.values():
                link.domains = self.allowed.get(link.jid, link.domains)

    # --- counts for the metrics (read at scrape time) ----------------------------------

    def sessions_by_route(self) -> tuple[int, dict[str, int]]:
        """Occupant sessions reached directly, and through each slave."""
        direct, via = 0, {}
        for routes in self.routes.values():
            direct += len(routes.direct)
            for slave, sessions in routes.sessions.items():
                via[slave] = via.get(slave, 0) + len(sessions)
        return direct, via

    def links_by_state(self) -> dict[tuple[str, RegistrationState], int]:
        """(slave, state) -> how many rooms' links are in that state."""
        counts: dict[tuple[str, RegistrationState], int] = {}
        for room_links in self.links.values():
            for link in room_links.values():
                key = (link.jid, link.state)
                counts[key] = counts.get(key, 0) + 1
        return counts

    def snapshot(self, link: SlaveRegistration, out: Outbox, after: str | None = None) -> None:
        """§4.3/§4.4 (and netjoin): roster, history and subject of the room to a slave,
        between <resync/> and <synced/>. `after`: the stanza-id of the last message the
        slave has; every message since then is replayed (§4.11.2), with at least its
        history length."""
        room = self.service.rooms.get(link.room)
        whois = room.config.whois if room is not None else "moderators"
        link.send(xep0282.resync_notice(link.room, link.jid, whois), out)
        first = len(out.deliveries)
        if room is not None:
            link.shows_jids = self.shows_jids(room, link)
            for occupant in room.occupants.values():
                if occupant.role in room.config.presence_broadcast:
                    out.broadcast(None, [link.jid],
                                  room.listed_presence(occupant, link.shows_jids))
                elif any(self.slave_of(room, s) == link.jid for s in occupant.sessions):
                    # §4.7: its own occupants of a role not broadcast, as hidden, so that
                    # the slave knows they are inside (and does not enter them again)
                    out.broadcast(room.hidden_presence(occupant, link.shows_jids), [link.jid])
            entries, found = self.replay_of(room).window.replay(after, link.history)
            if not found:
                out.warn(f"slave {link.jid} missed more of {link.room} than the archive "
                         f"keeps (its last message {after} is gone); replaying the newest "
                         f"{len(entries)}")
            if entries:
                for entry in entries:
                    copy = xep0282.for_slave(entry.stanza, entry.stamp,
                                             entry.stanza.getAttribute("from", link.room),
                                             history=True)
                    copy["to"] = link.jid
                    out.send(copy)
            self._snapshot_subject(room, link, out)
            extra: list[Element] = []  # the room's own state from its features (avatar)
            self.service.hooks.fire("slave-snapshot", room=room, extra=extra)
            for stanza in extra:
                stanza["to"] = link.jid
                out.send(stanza)
            # the settings a slave answers disco#info and the vCard from (§4.18)
            out.send(self.settings_message(room, link.jid, vcard=True))
        else:
            self._snapshot_subject(None, link, out)
        newest = self.replay_of(room).window.newest_id() if room is not None else ""
        count = len(out.deliveries) - first
        link.send(xep0282.synced_notice(link.room, link.jid, newest, count), out)

    @staticmethod
    def _snapshot_subject(room: Room | None, link: SlaveRegistration, out: Outbox) -> None:
        """A snapshot always names the subject, an empty one for a room that does not
        exist (yet): a slave keeps nothing of a room destroyed meanwhile."""
        subject = room.subject_stanza(link.jid) if room is not None \
            else stanzas.subject_message(link.room, "")
        subject.attributes.pop("to", None)
        copy = xep0282.for_slave(subject, out.now, link.room, history=True)
        copy["to"] = link.jid
        out.send(copy)

    def _slave_presence(self, stanza: Element, x: Element, link: SlaveRegistration | None,
                        slave_jid: str, room_jid: str, out: Outbox) -> None:
        refuse = stanzas.child(x, "refuse") if x.uri == xmlns.DMUC else None
        if refuse is None:  # <enter/> is the master's to send; an empty or unknown <x>
            stanzas.refuse(out, stanza, "modify", "bad-request", "Unknown XEP-0282 presence",
                           what=f"XEP-0282 presence to {room_jid} ({_children(x)})")
            return
        user = jids.parse(refuse.getAttribute("jid"))
        if link is None:
            stanzas.refuse(out, stanza, "cancel", "item-not-found",
                           "Not registered for this room",
                           what=f"XEP-0282 refuse for {room_jid}")
            return
        if user is None or user.host not in link.domains:
            out.warn(f"slave {slave_jid} spoke for {refuse.getAttribute('jid')} in {room_jid}:"
                     " not a user of its domains; refused")
            out.send(stanzas.error_reply(stanza, "auth", "forbidden",
                                         "A slave speaks only for users of its own domains"))
            return
        room = self.service.rooms.get(room_jid)
        occupant = room.occupant_by_session(user.full()) if room is not None else None
        if room is None or occupant is None:
            # An ENTER forged in the room's name, or one that crossed the user's leave.
            out.info(f"slave {slave_jid} refused ENTER of {user.full()} to {room_jid}, "
                     "who is not in the room")
            return
        if self.slave_of(room, user.full()) != slave_jid:
            # §6: a slave may only refuse a session that entered through it. No error reply:
            # to a slave an error from the room means a netsplit.
            out.warn(f"slave {slave_jid} refused {user.full()} in {room_jid}, which did not "
                     "enter through it; ignored")
            return
        out.warn(f"slave {slave_jid} refused ENTER of {user.full()} to {room_jid}")
        room.remove_session(occupant, user.full(), out)

    # --- keepalive and netsplit (§4.10, §4.11) ------------------------------------------

    def duplicate_dropped(self, room_jid: str) -> None:
        """A second copy of a message was dropped: not the user's error, not answered;
        counted, and told in one line at the next tick (§4.11.2)."""
        self.duplicates[room_jid] = self.duplicates.get(room_jid, 0) + 1
        self.duplicates_total += 1

    def tick(self, now: float, out: Outbox) -> None:
        for room_jid, count in sorted(self.duplicates.items()):
            out.info(f"{room_jid}: dropped {count} second cop{'y' if count == 1 else 'ies'} "
                     "of messages a slave replayed after a netsplit (or that a slow link "
                     "delivered late)")
        self.duplicates.clear()
        for links in self.links.values():
            for link in links.values():
                if not link.split and keepalive.expired(now, link.last_heard, link.last_ping,
                                                        link.keepalive):
                    silent = now - link.last_heard
                    self._split(link, out, f"keepalive unanswered for {silent:.0f} s")
                if not link.split:  # (a split one resyncs through its registration)
                    self._ask_lost(link, out)
                if keepalive.due(now, link.last_heard, link.last_ping, link.last_said,
                                 link.keepalive, link.split):
                    link.last_ping = link.last_said = now
                    iq_id = f"dmuc-ka-{next(self._ids)}"
                    self.pings[iq_id] = (link.room, link.jid)
                    out.send(xep0282.keepalive_ping(link.room, link.jid, iq_id, link.split))

    def _pong(self, stanza: Element, out: Outbox) -> None:
        target = self.pings.pop(stanza.getAttribute("id") or "", None)
        if target is None:
            return
        link = self.link(*target)
        if link is None or not link.split:
            return
        routes = self.routes.get(link.room)
        if routes is not None and routes.sessions.get(link.jid):
            # The slave registers again, saying what it has: the snapshot then replays
            # exactly what it missed (§4.11.2); until then it stays split.
            self.ask_rejoin(link, out, f"netjoin: slave {link.jid} is back for {link.room}")
        else:
            link.fire("pong-empty", out.now)
            out.info(f"netjoin: slave {link.jid} is back for {link.room}")

    def ask_rejoin(self, link: SlaveRegistration, out: Outbox, why: str) -> None:
        """Ask a slave to register again for a room, saying what it has: its snapshot then
        replays exactly what it is missing (§4.11.2). At a netjoin, and when an admin
        forces a resync (features/adhoc.py)."""
        out.info(f"{why}; asking it to register again")
        out.send(xep0282.rejoin_request(link.room, link.jid))

    def _split(self, link: SlaveRegistration, out: Outbox, why: str) -> None:
        if not link.split:
            out.warn(f"netsplit: slave {link.jid} for {link.room}: {why}")
        link.fire("bounce", out.now)


def _sent_so_far(register: Element) -> int:
    """How many stanzas a registering slave has numbered for the room (§4.11.2)."""
    return stanzas.parse_bounded_int(register.getAttribute("seq"), 0, 2**62) or 0


def _is(payload: Element | None, name: str) -> bool:
    return payload is not None and payload.uri == xmlns.DMUC and payload.name == name


def _children(x: Element) -> str:
    """What an <x/> holds, for a log line: its namespace and its first children's names."""
    names = [el.name for el in x.elements()][:3]
    return f"x of {x.uri}: " + (", ".join(f"<{n}/>" for n in names) if names else "empty")
