"""A mirrored room's link to its master (XEP-0282 §4.2, §4.8, §4.10, §4.11) as a state
machine: the states are an Enum, LINK_TRANSITIONS says which event leads from which state
to which (anything else is an IllegalTransition), and SlaveLink carries out what each
event means: registering, holding local stanzas while the link is not LIVE, keepalives,
netsplit and netjoin.

    UNREGISTERED --register--> REGISTERING --registered--> SYNCING --synced--> LIVE
    REGISTERING --refused--> PASSTHROUGH        (users talk to the master directly)
    any --bounced--> SPLIT   (PASSTHROUGH stays)   SPLIT --netjoin--> REGISTERING
    SYNCING/LIVE/SPLIT --forgotten, master-restarted--> REGISTERING
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import keepalive, occupant_id, stanzas, xep0282
from dmuc.protocol.statemachine import StateMachine, TransitionObserver
from dmuc.slave import archive
from dmuc.slave.room import SlaveRoom, resubmission

# Stanzas held per room while not LIVE: stored with the room, far above a realistic split
# (an hour of a busy room's local traffic); past it, local users get resource-constraint.
MAX_QUEUED = 10_000
# What flush forwards in one call (~20 us each: ~10 ms); the rest goes in later reactor
# turns (`flushing`, SlaveService.work). 10,000 ENTERs queued while a room registered,
# forwarded at once, held the slave's reactor 264 ms (docs/benchmarks.md, issue 19).
FLUSH_SLICE = 500


class LinkState(Enum):
    UNREGISTERED = "unregistered"  # not mirrored yet: the first local stanza registers
    REGISTERING = "registering"  # <register/> sent, no answer yet
    SYNCING = "syncing"  # registered; the master's snapshot is arriving (until <synced/>)
    LIVE = "live"  # local stanzas go to the master as they come (§4.8)
    SPLIT = "split"  # the master is unreachable (§4.11.1): hold, answer IQs, ask often
    PASSTHROUGH = "passthrough"  # the master refused us: local stanzas go to it unchanged


L = LinkState
# (state, event) -> next state. Events: "register" (we send <register/>: the first local
# stanza, our stream (re)connected, no answer yet), "registered" (its result), "synced"
# (the snapshot is complete), "refused" (forbidden and the like), "bounced" (an error from
# the room), "netjoin" (heard from the master while split), "forgotten" (a keepalive
# answered item-not-found), "master-restarted" (the master service said <restarted/>).
LINK_TRANSITIONS: dict[tuple[LinkState, str], LinkState] = {
    (L.UNREGISTERED, "register"): L.REGISTERING,
    (L.REGISTERING, "register"): L.REGISTERING,  # no answer yet, or our stream came back
    (L.SYNCING, "register"): L.REGISTERING,  # our stream came back
    (L.LIVE, "register"): L.REGISTERING,  # our stream came back (or we restarted)
    (L.SPLIT, "register"): L.REGISTERING,  # a room of slave.rooms, at (re)connect
    (L.PASSTHROUGH, "register"): L.REGISTERING,  # likewise: the master may allow us now
    (L.REGISTERING, "registered"): L.SYNCING,
    (L.SPLIT, "registered"): L.SYNCING,  # something else bounced while we registered
    (L.LIVE, "registered"): L.SYNCING,  # a second registration: another snapshot follows
    (L.SYNCING, "synced"): L.LIVE,
    (L.LIVE, "synced"): L.LIVE,  # a snapshot the master sent unasked (moderator change)
    (L.REGISTERING, "refused"): L.PASSTHROUGH,
    (L.SPLIT, "refused"): L.PASSTHROUGH,
    (L.PASSTHROUGH, "refused"): L.PASSTHROUGH,  # the answer to a repeated <register/>
    (L.UNREGISTERED, "bounced"): L.SPLIT,  # restored without a registration
    (L.REGISTERING, "bounced"): L.SPLIT,
    (L.SYNCING, "bounced"): L.SPLIT,
    (L.LIVE, "bounced"): L.SPLIT,
    (L.SPLIT, "bounced"): L.SPLIT,
    (L.PASSTHROUGH, "bounced"): L.PASSTHROUGH,  # nothing goes through us: nothing to hold
    (L.SPLIT, "netjoin"): L.REGISTERING,
    (L.SYNCING, "forgotten"): L.REGISTERING,
    (L.LIVE, "forgotten"): L.REGISTERING,
    (L.SPLIT, "forgotten"): L.REGISTERING,
    (L.SYNCING, "master-restarted"): L.REGISTERING,
    (L.LIVE, "master-restarted"): L.REGISTERING,
    (L.SPLIT, "master-restarted"): L.REGISTERING,
}

FORWARDING = frozenset({L.LIVE, L.PASSTHROUGH})  # local stanzas go out at once
KEEPALIVE_STATES = frozenset({L.SYNCING, L.LIVE, L.SPLIT})  # we ask the master (§4.10)
# A register answered with one of these means "not allowed to mirror", not a netsplit.
REFUSALS = frozenset({"forbidden", "not-allowed", "service-unavailable",
                      "feature-not-implemented"})
# What a stored state comes back as after a restart: a room that was registered registers
# again once connected (its state is LIVE until then, as before the restart); any other
# waits for its next local stanza.
RESTORED_AS = {L.REGISTERING: L.LIVE, L.SYNCING: L.LIVE, L.LIVE: L.LIVE, L.SPLIT: L.LIVE}
MAX_INFLIGHT = 1000  # forwarded groupchat messages remembered until their broadcast
# A groupchat forwarded this long (seconds) after its user said it waited on the way (in
# our socket while we were stopped, in mod_dmuc_slave): it goes marked with its time.
WAITED = 1.0
# How long (in keepalives) a forwarded message is remembered without its broadcast: a
# split is found by then, by us (2 x keepalive) or by the master, which tells us with its
# next ping (2 x keepalive, its tick, keepalive/4).
INFLIGHT_KEEPALIVES = 4


def restored_state(state: Mapping[str, Any]) -> LinkState:
    """The state a stored room's link starts in (older stores say only "registered")."""
    name = state.get("link")
    if name is not None:
        return RESTORED_AS.get(LinkState(name), L.UNREGISTERED)
    return L.LIVE if state.get("registered") else L.UNREGISTERED


@dataclass(frozen=True)
class LinkConfig:
    """What every link of one slave shares."""

    slave_jid: str
    keepalive: int  # proposed at registration
    history: int  # proposed at registration
    new_id: Callable[[str, str], str]  # (kind, room) -> an iq id the service will route back
    observer: TransitionObserver | None = None  # told of every state change (metrics)


class SlaveLink:
    def __init__(self, room: SlaveRoom, config: LinkConfig,
                 state: LinkState = L.UNREGISTERED) -> None:
        self.room = room
        self.config = config
        self.machine: StateMachine[LinkState] = StateMachine(
            f"slave link to {room.jid}", LINK_TRANSITIONS, state, config.observer)
        self.last_heard = 0.0  # the master's last stanza (or answer) for this room
        self.last_sent = 0.0  # our last <register/> or keepalive
        self.last_said = 0.0  # anything we sent the master for this room (keepalive.due)
        self.rejoining = False  # the current registration follows a netsplit
        self.expected_seq: int | None = None  # the master's next stanza number (§4.11.2)
        # our numbers for what we forward while LIVE (§4.11.2): the last one given (our
        # registrations tell the master), and the recent forwards by number (and when
        # said), for a resend: serialised (up to MAX_INFLIGHT of them per room: a tree
        # each was ~1.5 KB, most of a slave's memory per local user below that number)
        self.sent_seq = 0
        self.sent: OrderedDict[int, tuple[str, float]] = OrderedDict()
        self.snapshot_count = 0  # stanzas received inside the current snapshot
        self.register_id: str | None = None  # the iq id of the <register/> under way
        self.registered_at = 0.0  # when the master answered it (SYNCING since)

    @property
    def state(self) -> LinkState:
        return self.machine.state

    def to_state(self) -> dict[str, Any]:
        return {"link": self.state.value}

    def __repr__(self) -> str:
        return f"<SlaveLink {self.room.jid} {self.state.name}>"

    # --- local users -> master (§4.8) ------------------------------------------------

    def submit(self, stanza: Element, full: str, out: Outbox,
               said_at: float | None = None) -> None:
        """A local user's stanza to the room: to the master unchanged while LIVE (or
        PASSTHROUGH); otherwise held until <synced/>, and the first one registers.
        `said_at`: when its user said it (mod_dmuc_slave's stamp; default now)."""
        said_at = out.now if said_at is None else said_at
        state = self.state
        if stanza.name == "message" and stanza.getAttribute("type") == "groupchat":
            # Only an id lets a message lost on the way be submitted again, and the master
            # drop it if it did arrive (§4.11.2): a client that gave none gets one. The
            # prefix that marks what we held is ours alone (it is not rate-limited).
            client_id = xep0282.without_held_prefix(stanza.getAttribute("id") or "")
            stanza["id"] = client_id or xep0282.SLAVE_ID_PREFIX + uuid.uuid4().hex
        if state in FORWARDING and self.room.queue:
            # what waited is still going out, a slice a turn (flush): this goes behind it
            # (a name with "_": domish's __getattr__ never takes it for a child element)
            stanza._behind_backlog = said_at  # type: ignore[attr-defined]
            self._hold(stanza, out)
            return
        if state in FORWARDING:
            if state is L.LIVE:
                self._track(stanza, full, said_at)
            self._forward(stanza, said_at, out)
            return
        if stanza.name == "iq" and state is L.SPLIT:
            # §4.11.1: an IQ cannot wait for the netjoin; answer it now.
            if stanza.getAttribute("type") in ("get", "set"):
                out.send(stanzas.error_reply(stanza, "wait", "remote-server-timeout",
                                             "The room's master is unreachable (netsplit)",
                                             by=self.config.slave_jid))
            return
        nick = self.room.local.get(full)
        is_groupchat = stanza.name == "message" and stanza.getAttribute("type") == "groupchat"
        resent = (stanza.getAttribute("id") or "").startswith(xep0282.RESUBMIT_ID_PREFIX)
        if is_groupchat and nick is not None and stanza.getAttribute("to") == self.room.jid \
                and not resent:  # a resubmission was shown already, when it first went out
            # A local occupant keeps talking: shown here at once, submitted later with an
            # id that tells us not to show it again (§4.11.1, §4.11.2).
            self._hold(self._shown_and_held(stanza, nick, said_at, out), out)
        elif is_groupchat and resent:
            # mod_dmuc_slave's replay of what it handed a slave that then died: not shown
            # here (the room may have shown it already), and marked with its time, so that
            # wherever it is shown late it is shown as said then (XEP-0203), not after
            # what its sender said since (the master drops a copy it had)
            self._hold(xep0282.held(stanza, said_at), out)
        else:
            self._hold(stanza, out)
        if state is L.UNREGISTERED:
            self.register("register", out)

    def _track(self, stanza: Element, full: str, said_at: float) -> None:
        """Remember a local occupant's groupchat until the master's broadcast of it comes
        back: a split found meanwhile submits it again (§4.11.2)."""
        nick = self.room.local.get(full)
        message_id = stanza.getAttribute("id")
        if stanza.name != "message" or stanza.getAttribute("type") != "groupchat" \
                or nick is None or not message_id:
            return
        original, _ = xep0282.original_id(message_id)  # its broadcast may come as either
        self.room.inflight[(nick, original)] = (stanza, said_at)
        while len(self.room.inflight) > MAX_INFLIGHT:
            self.room.inflight.popitem(last=False)

    def _shown_and_held(self, stanza: Element, nick: str, said_at: float,
                        out: Outbox, in_flight: bool = False) -> Element:
        """A local occupant's groupchat that cannot go to the master now: shown to the
        local occupants at once (the master's copy of it will not be shown again, whatever
        its id: §4.11.2), and returned as held, with the time it was said."""
        room = self.room
        echo = local_echo(stanza, room.jid, nick, room.occupant_id_of(nick))
        if in_flight or said_at < out.now - WAITED:
            # shown late (it was in flight, and later ones of its sender may have been
            # shown already; or it waited on the way): with when it was said, as the room
            # shows it elsewhere, not as if said now
            echo.addChild(stanzas.delay(said_at, room.jid))
        out.broadcast(echo, room.local_sessions())
        original, _ = xep0282.original_id(stanza.getAttribute("id") or "")
        room.note_echoed(nick, original)
        held = xep0282.held(stanza, said_at)
        held["id"] = xep0282.SPLIT_ID_PREFIX + original
        return held

    def _hold_inflight(self, out: Outbox) -> None:
        """A netsplit, or a registration: what was forwarded without its broadcast coming
        back may or may not have reached the master. It is shown here now and held in
        front of the rest, with the time it was said; the master drops it if it had it,
        and we do not show its copy again (§4.11.2)."""
        room = self.room
        if room.inflight:
            replays = [self._shown_and_held(stanza, nick, said_at, out, in_flight=True)
                       for (nick, _), (stanza, said_at) in room.inflight.items()]
            room.inflight.clear()
            room.queue[:0] = replays

    def _hold(self, stanza: Element, out: Outbox) -> None:
        if len(self.room.queue) >= MAX_QUEUED:
            out.send(stanzas.error_reply(stanza, "wait", "resource-constraint",
                                         "Too many stanzas waiting for the room",
                                         by=self.config.slave_jid))
            return
        self.room.queue.append(stanza)

    @property
    def flushing(self) -> bool:
        """Forwarding, with held stanzas still to go (flush sends a slice per call)."""
        return self.state in FORWARDING and bool(self.room.queue)

    def flush(self, out: Outbox) -> None:
        """What was held goes to the master in order, FLUSH_SLICE of it now; while more is
        left (`flushing`) the service calls again in a later reactor turn, and what local
        users send meanwhile waits behind it (submit)."""
        queue = self.room.queue
        queued, self.room.queue = queue[:FLUSH_SLICE], queue[FLUSH_SLICE:]
        for stanza in queued:
            said_at = getattr(stanza, "_behind_backlog", None)
            if said_at is None:
                self._forward(stanza, out.now, out)
                continue
            # submitted while forwarding: as submit would have sent it then
            del stanza._behind_backlog
            if self.state is L.LIVE:
                self._track(stanza, stanza.getAttribute("from") or "", said_at)
            self._forward(stanza, said_at, out)

    def _forward(self, stanza: Element, said_at: float, out: Outbox) -> None:
        """To the master; while LIVE numbered (a copy: what we keep stays as the user sent
        it) and remembered for a while, so that what the master misses can go again."""
        self.last_said = out.now
        if self.state is not L.LIVE:
            out.send(stanza)
            return
        self.sent_seq += 1
        self.sent[self.sent_seq] = (stanzas.render(stanza), said_at)
        while len(self.sent) > MAX_INFLIGHT:
            self.sent.popitem(last=False)
        wire = stanzas.copy(stanza)
        if said_at < out.now - WAITED and stanza.name == "message" \
                and stanza.getAttribute("type") == "groupchat" \
                and xep0282.held_stamp(stanza) is None:
            wire = xep0282.held(wire, said_at)  # the room shows it said then (§4.11.2)
        out.send(xep0282.numbered(wire, self.sent_seq))

    def resend(self, request: Element, out: Outbox) -> None:
        """The master found a gap in our numbers (stanzas lost on the way to it, too short
        a loss for a split to be found): what it names goes again. A groupchat message as
        a resubmission with the time it was said (the master drops a copy it had), a
        presence as it was; a lost IQ cannot go again unasked: its sender is answered."""
        first = stanzas.parse_bounded_int(request.getAttribute("from"), 1, 2**62)
        last = stanzas.parse_bounded_int(request.getAttribute("to"), 1, 2**62)
        if self.state is not L.LIVE or first is None or last is None or last < first:
            return  # a registration under way resyncs everything anyway
        lost = [(stanzas.parse_stanza(xml), said_at) for seq, (xml, said_at)
                in self.sent.items() if first <= seq <= last]
        out.warn(f"the master of {self.room.jid} lost {last - first + 1} stanzas of ours "
                 f"on the way; sending {len(lost)} again")
        for stanza, said_at in lost:
            if stanza.name == "iq":
                if stanza.getAttribute("type") in ("get", "set"):
                    out.send(stanzas.error_reply(stanza, "wait", "remote-server-timeout",
                                                 "Lost on the way to the room; try again",
                                                 by=self.config.slave_jid))
                continue
            if stanza.name == "message" and stanza.getAttribute("type") == "groupchat":
                stanza = resubmission(stanza)
                if xep0282.held_stamp(stanza) is None:
                    stanza = xep0282.held(stanza, said_at)
            self._forward(stanza, said_at, out)

    # --- registration (§4.2) ---------------------------------------------------------

    def register(self, event: str, out: Outbox, *, retry: bool = False) -> None:
        """Send <register/> on `event` ("register", "netjoin", "forgotten",
        "master-restarted"); the master answers with a full snapshot. A `retry` of an
        unanswered one (the first s2s connection can take seconds) keeps its id, so that
        the master, if it did get the first, answers without a second snapshot."""
        before = self.state
        self.machine.fire(event)
        if not (retry and self.register_id is not None):
            self.register_id = self.config.new_id("register", self.room.jid)
        if event != "register":
            out.info(f"netjoin with {self.room.jid}: resyncing")
        if event != "register" or before is L.SPLIT:
            self.rejoining = True  # for the log line of the answer
        self.last_sent = self.last_said = out.now
        self._hold_inflight(out)  # the master may not have them: ask it again
        out.send(xep0282.register_iq(self.config.slave_jid, self.room.jid, self.register_id,
                                     self.config.keepalive, self.config.history,
                                     last=self.room.last_id, sent=self.sent_seq))

    def register_answered(self, answer: Element, out: Outbox) -> None:
        room = self.room
        if answer.getAttribute("type") == "error":
            condition = stanzas.error_condition(answer)
            if condition not in REFUSALS:
                self.bounced(f"registration failed ({condition})", out)
            elif self._allowed("refused", out):
                out.warn(f"master refused to register {self.config.slave_jid} for {room.jid} "
                         f"({condition}); its users talk to the master directly")
                self.machine.fire("refused")
                self.rejoining = False
                self.flush(out)
            return
        self.last_heard = out.now
        if not self._allowed("registered", out):
            return
        self.register_id, self.registered_at = None, out.now
        after_split = self.rejoining or self.state is L.SPLIT
        self.machine.fire("registered")
        self.rejoining = False
        registered = stanzas.child(answer, "registered", xmlns.DMUC)
        if registered is not None:
            # The master's values, if they make sense (a malformed one keeps ours).
            room.keepalive = stanzas.parse_bounded_int(
                registered.getAttribute("keepalive"), keepalive.MIN_KEEPALIVE,
                keepalive.MAX_KEEPALIVE) or room.keepalive
            history = stanzas.parse_bounded_int(registered.getAttribute("history"), 0, 10**6)
            room.history_length = room.history_length if history is None else history
            room.whois = registered.getAttribute("whois") or room.whois
        archive.registered(room, xep0282.ArchiveSettings.parse(registered)
                           if registered is not None else None)
        out.info(f"registered with {room.jid} (keepalive {room.keepalive}s, "
                 f"history {room.history_length})" + (" after a netsplit" if after_split else ""))
        # Local stanzas stay held until the snapshot that follows has arrived.

    def synced(self, notice: Element, out: Outbox) -> None:
        """The snapshot is complete (the roster differences are told by fanout): local
        occupants the master no longer knows enter again, then what was held goes out.
        The notice names the room's newest message: our place for the next catch-up."""
        if not self._allowed("synced", out):
            return  # e.g. the master's own netjoin snapshot while we register: ours follows
        self.machine.fire("synced")
        synced = stanzas.child(stanzas.child(notice, "x", xmlns.DMUC) or notice, "synced")
        if synced is not None and synced.getAttribute("last") is not None:
            self.room.last_id = synced["last"]
        self._rejoin_local_occupants()
        self.flush(out)
        if self.room.archive.filling:
            # our archive copy: what the master archived since the newest message we have
            out.send(archive.fill_iq(self.room, self.config.slave_jid,
                                     self.config.new_id("fill", self.room.jid)))

    def _rejoin_local_occupants(self) -> None:
        """After a netjoin, local occupants the master no longer knows enter again with
        the presence they last sent (forwarded as theirs, §4.8), before anything held."""
        room = self.room
        for full, nick in list(room.local.items()):
            if nick in room.roster:
                continue
            presence = stanzas.new("presence", {"from": full, "to": f"{room.jid}/{nick}"})
            presence.addElement((xmlns.MUC, "x")).addElement("history")["maxstanzas"] = "0"
            room.queue.insert(0, presence)

    def unregister(self, out: Outbox) -> None:
        """Stop mirroring (the last local occupant left); the service forgets the room."""
        out.send(xep0282.unregister_iq(self.config.slave_jid, self.room.jid,
                                       self.config.new_id("unregister", self.room.jid)))

    # --- keepalive, netsplit and netjoin (§4.10, §4.11) ------------------------------

    def tick(self, out: Outbox) -> None:
        """Ask the master after `keepalive` seconds of silence (a quarter of that while
        split, so that the netjoin is noticed soon); register again if a <register/>
        went unanswered that long."""
        state = self.state
        if state is L.REGISTERING:
            # unanswered for keepalive/4: sent again (hearing the master's pings meanwhile
            # is no answer: they pass where ours may not)
            if out.now - self.last_sent >= keepalive.interval(self.room.keepalive, True):
                self.register("register", out, retry=True)
            return
        if state is L.SYNCING and out.now - self.registered_at >= 2 * self.room.keepalive:
            # registered, but the snapshot never ended (lost with a broken stream)
            self.register("register", out)
            return
        if state not in KEEPALIVE_STATES:
            return
        if state is not L.SPLIT and keepalive.expired(out.now, self.last_heard, self.last_sent,
                                                      self.room.keepalive):
            self.bounced(f"keepalive unanswered for {out.now - self.last_heard:.0f} s", out)
            state = self.state
        self._expire_inflight(out.now)  # after the split check: a dead link's are requeued
        if keepalive.due(out.now, self.last_heard, self.last_sent, self.last_said,
                         self.room.keepalive, split=state is L.SPLIT):
            self.last_sent = self.last_said = out.now
            out.send(xep0282.keepalive_iq(self.config.slave_jid, self.room.jid,
                                          self.config.new_id("keepalive", self.room.jid),
                                          self.sent_seq))

    def _expire_inflight(self, now: float) -> None:
        """A message whose broadcast did not come back within INFLIGHT_KEEPALIVES
        intervals while no split was found arrived, or was refused (the refusal went to
        its sender): no need to remember it."""
        horizon = now - INFLIGHT_KEEPALIVES * self.room.keepalive
        for recent in (self.room.inflight, self.sent):
            while recent and next(iter(recent.values()))[1] < horizon:
                recent.popitem(last=False)

    def keepalive_answered(self, answer: Element, out: Outbox) -> None:
        if answer.getAttribute("type") == "error":
            condition = stanzas.error_condition(answer)
            if condition != "item-not-found":
                self.bounced(f"keepalive bounced ({condition})", out)
            elif self.machine.can("forgotten"):
                out.info(f"master forgot our registration for {self.room.jid}; "
                         "re-registering")
                self.register("forgotten", out)
            return
        self.heard(out)

    def heard(self, out: Outbox) -> None:
        """Any stanza from the master but an error: if we were split, that is the netjoin."""
        self.last_heard = out.now
        if self.state is L.SPLIT:
            self.register("netjoin", out)

    def bounced(self, why: str, out: Outbox) -> None:
        """An error from the room (a bounced forward or keepalive): nothing more is
        submitted until the netjoin."""
        if self.state not in (L.SPLIT, L.PASSTHROUGH):
            out.warn(f"netsplit from {self.room.jid}: {why}")
        self.machine.fire("bounced")
        if self.state is L.SPLIT:
            self._hold_inflight(out)

    def rejoin(self, out: Outbox) -> None:
        """The master heard from us again after it found the link split: register again,
        with the newest message we have, and get exactly what we missed."""
        if self.state is L.REGISTERING:
            self.register("register", out, retry=True)  # it did not get ours: again
        elif self._allowed("forgotten", out):
            self.register("forgotten", out)

    def in_sequence(self, stanza: Element, in_snapshot: bool, out: Outbox) -> bool:
        """Whether to take a stanza from the master, by its number: a repeat is dropped; a
        gap (something lost on the way, e.g. a link that dropped bytes) starts a
        registration, whose snapshot replays what was lost. A snapshot's own stanzas are
        counted against the count its <synced/> gives."""
        seq = xep0282.sequence_number(stanza)
        if seq is None:
            if in_snapshot:
                self.snapshot_count += 1
            return True
        x = stanzas.child(stanza, "x", xmlns.DMUC)
        if x is not None and stanzas.child(x, "resync") is not None:
            self.expected_seq, self.snapshot_count = seq + 1, 0
            return True
        expected, self.expected_seq = self.expected_seq, seq + 1
        lost = xep0282.missing_before(expected, seq)
        if lost is None:
            self.expected_seq = expected
            self.room.duplicates += 1  # told once a tick (service.tick)
            return False
        synced = stanzas.child(x, "synced") if x is not None else None
        count = stanzas.parse_bounded_int(synced.getAttribute("count"), 0, 2**62) \
            if synced is not None else None
        if count is not None and count != self.snapshot_count:
            lost += abs(count - self.snapshot_count)
        if not lost:
            return True
        out.warn(f"lost {lost} stanzas from the master of {self.room.jid} on the way; "
                 "registering again to get them")
        self.expected_seq = None
        if self.machine.can("forgotten"):
            self.register("forgotten", out)
        return False

    def _allowed(self, event: str, out: Outbox) -> bool:
        """An answer or notice from the network may come late or twice: in a state with no
        transition for it, it is stale and ignored (never an IllegalTransition)."""
        if self.machine.can(event):
            return True
        out.debug(f"{self.room.jid}: ignored {event!r} while {self.state.name}")
        return False


def local_echo(message: Element, room: str, nick: str, sender_id: str | None) -> Element:
    """A held groupchat of a local occupant as the room would relay it, for the local
    occupants (while the link is not LIVE), with the sender's occupant-id as the master
    gave it in the roster (XEP-0421)."""
    copy = stanzas.new("message", {"from": f"{room}/{nick}", "type": "groupchat",
                                   "id": message.getAttribute("id")})
    for el in message.elements():
        copy.addChild(stanzas.copy(el))
    occupant_id.place(copy, sender_id)
    return copy
