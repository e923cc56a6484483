"""The occupants the master reaches directly (not through a XEP-0282 slave), kept across a
crash of the master (docs/protocol.md §4.11.5).

A slave registers its users again when the master comes back; a user on the master's own
Prosody, or on a server without a slave, has no one to do that. So each such occupant is
stored (its nick, bare JID, role, occupant-id and each direct session's last presence),
one row each, written when its presence changes (coalesced by the shell), and a master
restarted after kill -9 restores them in their rooms, a temporary room with them: their
next message is accepted and nobody sees them leave or enter again (as mod_muc restores
the occupants it saved at shutdown, but without needing a clean shutdown).

Whoever left meanwhile is found at once: whenever the component stream comes (back) up,
each direct session gets a XEP-0030 disco#info query from the room (which every client
answers); an error saying the session is gone (service-unavailable from its server, as
for a groupchat bounce: mod_muc's kickable errors) removes it with status 307 and 333, as
mod_muc removes a session whose broadcast bounced.

While the master is down its Prosody holds what direct users send it (mod_dmuc_hold,
loaded on the master's Component) and hands it over in order when it is back, each
stanza marked with when it was held (dmuc's one "when said" marker, <said/>, read by
xep0282.said_time as the slave reads mod_dmuc_slave's). That Prosody announces the module
at every connect (a message from the component's own JID); only then does the master take
a direct sender's groupchat as said at that time (within the last day), and mod_dmuc_hold
removes any <said/> a sender put on its own stanza.

When that Prosody is stopped (SIGTERM: a restart), mod_dmuc_hold tells the master first
(<stopping/> from the component's JID) and waits for its answer before Prosody closes its
s2s and c2s sessions: everything the master wrote before the answer has been read and
routed while those were up. From then on the master keeps what it has for the sessions it
reaches directly (their server's link is about to close, or is closed: Prosody would drop
it) and sends it once the component stream is up again, before anything new. A slave's
copies are written as ever: its link has numbers and asks again for what it missed.
"""

from __future__ import annotations

import itertools
from collections import OrderedDict, deque
from typing import TYPE_CHECKING, Any

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.hooks import Hooks
from dmuc.master.features.occupant_id import occupant_id
from dmuc.master.model import Occupant
from dmuc.master.room import KICKABLE_ERRORS
from dmuc.outbox import DeleteRoom, Delivery, ForgetOccupants, Outbox, SaveOccupant
from dmuc.protocol import stanzas, xep0282
from dmuc.records import OccupantRecord

if TYPE_CHECKING:
    from dmuc.master.room import Room
    from dmuc.master.service import MUCService

CHECK_PREFIX = "dmuc-alive-"  # the id of the disco#info query that asks a session
MAX_CHECKS = 100_000  # queries awaiting an answer (a bound on memory; the oldest go)
# copies kept for direct sessions while our Prosody restarts (a bound on memory; the
# oldest go, with a warning line)
MAX_WITHHELD = 50_000


def to_user(jid: str) -> bool:
    """A user's address (a session reached directly), not a server-level one (a slave,
    our own component)."""
    return "@" in jid


def stopping_answer(service_jid: str) -> Element:
    """The master's answer to mod_dmuc_hold's <stopping/>: written after everything it
    sent before, so Prosody has routed all that once it reads this."""
    message = stanzas.new("message", {"from": service_jid, "to": service_jid})
    message.addElement((xmlns.DMUC, "stopping"))
    return message


def direct_sessions(room: Room, occupant: Occupant) -> list[str]:
    router = room.service.router
    return [s for s in occupant.sessions if router.relay_of(room, s) is None]


def snapshot(room: Room, nick: str) -> dict[str, Any] | None:
    """What is stored of the occupant `nick` now; None: nothing (gone, or not direct)."""
    occupant = room.occupants.get(nick)
    if room.destroyed or occupant is None:
        return None
    sessions = direct_sessions(room, occupant)
    if not sessions:
        return None
    return {
        "bare_jid": occupant.bare_jid,
        "role": occupant.role,
        "occupant_id": occupant_id(room, occupant),
        "primary": occupant.primary if occupant.primary in sessions else sessions[0],
        "sessions": {s: occupant.sessions[s] for s in sessions},
    }


class DirectOccupants:
    """Keeps the direct occupants in storage, restores them, and asks them at connect."""

    def __init__(self, service: MUCService) -> None:
        self.service = service
        self.checks: OrderedDict[str, tuple[str, str]] = OrderedDict()  # id -> room, session
        self._ids = itertools.count(1)
        # mod_dmuc_hold announced itself on this stream: its delays can be believed
        self.hold_announced = False
        # our Prosody said it is stopping: copies for direct sessions wait for the next
        # connect (withheld, in order; `withheld_copies` counts their recipients)
        self.prosody_stopping = False
        self.withheld: deque[Delivery] = deque()
        self.withheld_copies = 0

    def hook(self, hooks: Hooks) -> None:
        hooks.add("occupant-changed", self.changed)
        hooks.add("room-destroyed", self.destroyed)
        hooks.add("room-config-applied", self.config_applied, priority=19)
        hooks.add("stanza", self.answer, priority=100)
        hooks.add("message-time", self.held_time)

    # --- storage --------------------------------------------------------------------

    def changed(self, room: Room, nicks: tuple[str, ...], out: Outbox) -> None:
        """An occupant's presence changed (joined, left, new nick, role, status): its row
        is written as it is when the shell writes it. A temporary room is stored too while
        it has direct occupants (its configuration with them)."""
        for nick in nicks:
            occupant = room.occupants.get(nick)
            if occupant is not None and not direct_sessions(room, occupant):
                continue  # reached through a slave: the slave registers it again
            if occupant is not None and not room.keeps_occupants:
                room.keeps_occupants = True
                room.save(out)
            out.store(SaveOccupant(room.jid, nick, lambda nick=nick: snapshot(room, nick)))

    def destroyed(self, room: Room, out: Outbox) -> None:
        if room.keeps_occupants:
            out.store(ForgetOccupants(room.jid))

    def config_applied(self, room: Room, old: object, out: Outbox) -> None:
        """After persistent.py: a temporary room with direct occupants stays stored."""
        if room.keeps_occupants and not room.config.persistent:
            room.save(out)

    def restore(self, records: list[OccupantRecord], out: Outbox) -> int:
        """Put the stored occupants back in their (restored) rooms; a temporary room that
        has none is dropped. How many were restored."""
        restored = 0
        for record in records:
            room = self.service.rooms.get(record.room_jid)
            if room is None or record.nick in room.occupants:
                continue
            try:
                self._restore_one(room, record)
            except (KeyError, TypeError, ValueError) as exc:
                out.warn(f"{record.room_jid}: cannot restore occupant {record.nick}: {exc}")
                continue
            restored += 1
        for room in list(self.service.rooms.values()):
            if not room.config.persistent and room.is_empty():
                out.store(ForgetOccupants(room.jid))
                self.service.rooms.pop(room.jid, None)
                out.store(DeleteRoom(room.jid))
        return restored

    def _restore_one(self, room: Room, record: OccupantRecord) -> None:
        state = record.state
        # kept serialised, as stored (Occupant.sessions); parsed here to refuse a bad row
        sessions = {jid: stanzas.render(stanzas.parse_stanza(xml))
                    for jid, xml in state["sessions"].items()}
        if not sessions:
            raise ValueError("no session")
        primary = state.get("primary") if state.get("primary") in sessions else next(
            iter(sessions))
        occupant = Occupant(nick=record.nick, bare_jid=str(state["bare_jid"]),
                            role=str(state["role"]), sessions=sessions, primary=primary,
                            occupant_id=str(state.get("occupant_id") or ""))
        room.occupants[record.nick] = occupant
        room.keeps_occupants = True
        scratch = Outbox(0.0)  # nothing goes out: the sessions are only routed again
        for session in sessions:
            room.nick_of[session] = record.nick
            self.service.hooks.fire("occupant-entering", room=room, session=session,
                                    out=scratch)
        self.service.hooks.fire("occupant-role-set", room=room, occupant=occupant)

    # --- is each one still there? ----------------------------------------------------

    def connected(self, out: Outbox) -> None:
        """The component stream is up: ask every direct session whether it still is."""
        self.hold_announced = False
        self.checks.clear()
        for room in self.service.rooms.values():
            for occupant in room.occupants.values():
                for session in direct_sessions(room, occupant):
                    check_id = f"{CHECK_PREFIX}{next(self._ids)}"
                    self.checks[check_id] = (room.jid, session)
                    out.send(stanzas.iq("get", room.jid, session, check_id,
                                        stanzas.query(xmlns.DISCO_INFO)))
        while len(self.checks) > MAX_CHECKS:
            self.checks.popitem(last=False)

    def answer(self, stanza: Element, out: Outbox) -> bool | None:
        """The answer to a check: an error saying the session is gone removes it."""
        if stanza.name != "iq" or stanza.getAttribute("type") not in ("result", "error"):
            return None
        asked = self.checks.pop(stanza.getAttribute("id") or "", None)
        if asked is None:
            return None
        room_jid, session = asked
        room = self.service.rooms.get(room_jid)
        if (stanza.getAttribute("type") == "result" or room is None
                or stanza.getAttribute("from") != session):
            return True
        occupant = room.occupant_by_session(session)
        condition = stanzas.error_condition(stanza)
        if occupant is not None and (condition is None or condition in KICKABLE_ERRORS):
            out.info(f"{session} is gone from {room_jid} ({condition}): removing it")
            room.remove_session(occupant, session, out, statuses=("307", "333"))
        return True

    # --- what mod_dmuc_hold held ------------------------------------------------------

    def from_prosody(self, stanza: Element, out: Outbox) -> bool:
        """A stanza from the component's own JID, which only its Prosody can send:
        mod_dmuc_hold's announcement. Whether it was one."""
        if stanza.name != "message" or stanza.getAttribute("type") == "error":
            return False
        if stanzas.child(stanza, "stopping", xmlns.DMUC) is not None:
            self._prosody_stopping(out)
            return True
        if stanzas.child(stanza, "hold", xmlns.DMUC) is None:
            return False
        if not self.hold_announced:
            out.info("mod_dmuc_hold is loaded on our Prosody: what it held for us while we "
                     "were away keeps its time")
        self.hold_announced = True
        return True

    # --- our Prosody restarting (mod_dmuc_hold's <stopping/>) ---------------------------

    def _prosody_stopping(self, out: Outbox) -> None:
        if not self.prosody_stopping:
            out.info("our Prosody is stopping: what we send to sessions we reach directly "
                     "waits until it is back")
        self.prosody_stopping = True
        out.send(stopping_answer(self.service.jid))

    def withhold(self, out: Outbox) -> Outbox:
        """While our Prosody stops: take the copies for users' sessions out of `out` and
        keep them, in order, for the next connect (MAX_WITHHELD at most, oldest dropped)."""
        if not self.prosody_stopping:
            return out
        kept: list[Delivery] = []
        for delivery in out.deliveries:
            if delivery.recipients is None:
                if to_user(delivery.stanza.getAttribute("to") or ""):
                    self._keep(delivery, 1, out)
                else:
                    kept.append(delivery)
                continue
            users = [r for r in delivery.recipients if to_user(r)]
            others = [r for r in delivery.recipients if not to_user(r)]
            if users:
                self._keep(delivery.to(users, delivery.host), len(users), out)
            if others:
                kept.append(delivery.to(others, delivery.host) if users else delivery)
        out.deliveries[:] = kept
        return out

    def _keep(self, delivery: Delivery, copies: int, out: Outbox) -> None:
        self.withheld.append(delivery)
        self.withheld_copies += copies
        dropped = 0
        while self.withheld_copies > MAX_WITHHELD and len(self.withheld) > 1:
            gone = self.withheld.popleft()
            self.withheld_copies -= 1 if gone.recipients is None else len(gone.recipients)
            dropped += 1
        if dropped:
            out.warn(f"our Prosody is still away: dropped the {dropped} oldest stanzas kept "
                     f"for direct sessions (more than {MAX_WITHHELD} copies)")

    def release(self, out: Outbox) -> None:
        """The component stream is up (our Prosody is back): what was kept goes first."""
        self.prosody_stopping = False
        if not self.withheld:
            return
        out.info(f"our Prosody is back: sending the {self.withheld_copies} copies kept for "
                 "sessions we reach directly")
        out.deliveries.extend(self.withheld)
        self.withheld.clear()
        self.withheld_copies = 0

    def _said_at(self, stanza: Element, now: float) -> float | None:
        """When our Prosody held `stanza` for us (mod_dmuc_hold's <said/>), if it did."""
        return xep0282.said_time(stanza, self.hold_announced, now)

    def held_for_a_slave(self, stanza: Element, sender: str, out: Outbox) -> bool:
        """A user's stanza our Prosody held while we were down, from a domain a slave
        serves: it was on its way from that slave, which registers again when we are back
        and submits again every groupchat it had in flight (§4.11.2): a held groupchat
        is a second copy of that, dropped and counted as one; anything else gets the
        answer the component's absence gave before (remote-server-timeout, which
        mod_dmuc_slave hands to the slave). Whether it was one."""
        distribution = self.service.distribution
        if not to_user(sender) or stanza.getAttribute("type") in ("error", "result") \
                or not distribution.serves(sender):
            return False
        if self._said_at(stanza, out.now) is None:
            return False
        if stanza.name == "message" and stanza.getAttribute("type") == "groupchat":
            distribution.left_to_slave(stanza, sender, out, "held by our Prosody")
            return True
        stanzas.refuse(out, stanza, "wait", "remote-server-timeout",
                       "Held while the service was down; its slave submits it again",
                       what=f"a held {stanza.name} through a slave", by=self.service.jid)
        return True

    def held_time(self, room: Room, stanza: Element, now: float) -> float | None:
        """When a direct sender said a groupchat its Prosody held for us (its <said/>,
        announced and within the last day); None: now."""
        if room.service.router.relay_of(room, stanza.getAttribute("from")) is not None:
            return None
        return self._said_at(stanza, now)


def setup(hooks: Hooks, service: MUCService) -> DirectOccupants:
    keeper = DirectOccupants(service)
    keeper.hook(hooks)
    return keeper
