"""A mirrored room as the slave keeps it: the master's roster, the distribution list of
local occupants, who of this server sent presence to the room, the subject, the history
and what waits for the master. Data only; what changes it lives in link.py (the link to
the master) and fanout.py (what the master broadcasts)."""

from __future__ import annotations

import sys
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.protocol import occupant_id, stanzas, visibility, xep0282
from dmuc.protocol.history import History
from dmuc.records import MIRROR_ROSTER, MIRROR_SESSION, OccupantRecord
from dmuc.slave.archive import ArchiveCopy
from dmuc.slave.tracked import IndexedTrackedDict, TrackedDict, TrackedSet

# Local messages remembered as shown here (echoed): what a slave may hold, and more.
MAX_ECHOED = 20_000
# The master's messages remembered by stanza-id: as many as its replay window keeps.
MAX_SEEN = 10_000


@dataclass(frozen=True, slots=True)
class RosterEntry:
    """An occupant as the slave mirrors it: its presence as the room lists it to a
    newcomer, serialised once (without 'to'), and what is read of it on every broadcast.
    The tree is parsed again only where something needs it (a resync's differences, a
    hidden occupant's departure): a roster of 10,000 keeps 10,000 strings, not the
    70,000 elements of their trees (4.5 KiB an occupant before, docs/benchmarks.md)."""

    xml: str
    role: str
    jid: str | None  # the occupant's real JID, when the master sent it (§4.7)
    occupant_id: str | None  # its XEP-0421 id, as the master sent it

    @classmethod
    def of(cls, presence: Element) -> RosterEntry:
        item = stanzas.muc_item(presence)
        return cls(stanzas.render_without_to(presence),
                   sys.intern(item.getAttribute("role", "none")) if item is not None
                   else "none",
                   item.getAttribute("jid") if item is not None else None,
                   occupant_id.of(presence))

    def presence(self) -> Element:
        """The presence itself, parsed (a new tree each time)."""
        return stanzas.parse_xml(self.xml)


@dataclass
class SlaveRoom:
    jid: str
    # negotiated at registration (§4.2) and stored
    keepalive: int = 60
    history_length: int = 20
    whois: str = "moderators"
    # The roster, the hidden, the local sessions and the directed are stored one row per
    # entry beside the room's state (changed_entries): these containers note each nick
    # and each session that changed since the last write.
    roster: dict[str, RosterEntry] = field(init=False)  # nick -> presence from master
    # local occupants in the roster whose role the room does not broadcast (§4.7): shown
    # to no newcomer, and already told as gone to the other local occupants
    hidden: TrackedSet[str] = field(init=False)
    # local full JID -> nick (and, in local.keys_of, nick -> its local sessions)
    local: IndexedTrackedDict[str, str] = field(init=False)
    directed: TrackedSet[str] = field(init=False)  # local JIDs that sent presence to the room
    # local JIDs whose join went to the master without an ENTER yet -> when it went; a
    # refused join is answered to the user directly, so we only see no ENTER come
    joining: dict[str, float] = field(default_factory=dict)
    # local JIDs counted in the room that sent a join (MUC <x>) again: a client back under
    # the same full JID after its server restarted. The master answers with the whole join
    # sequence (as mod_muc), and what it says about the old session (a leave for a bounce)
    # is not for the new one.
    fresh: set[str] = field(default_factory=set)
    subject: Element | None = None  # the last subject message, as broadcast
    avatar: Element | None = None  # the room's avatar presence (XEP-0486), as broadcast
    # the master's disco#info query for the room, answered from (§4.18); None: ask it.
    # Kept as XML: written with every save of the room, read only when asked.
    info_xml: str | None = None
    vcard_xml: str | None = None  # the room's vCard (§4.18), when vcard_known
    vcard_known: bool = False
    history: History = field(default_factory=History)
    archive: ArchiveCopy = field(default_factory=ArchiveCopy)  # its XEP-0313 archive (§4.17)
    queue: list[Element] = field(default_factory=list)  # local stanzas held for the master
    # groupchat forwarded while LIVE whose broadcast has not come back yet: (nick, id) ->
    # (the stanza, when sent). Submitted again if a netsplit is found meanwhile (§4.11.2).
    inflight: OrderedDict[tuple[str, str], tuple[Element, float]] = field(
        default_factory=OrderedDict)
    # (nick, message id) of local occupants' messages shown here before the master had
    # them (held, or in flight at a netsplit): the master's copy, under any prefix, or
    # replayed, is not shown again (§4.11.2). Bounded: the oldest are forgotten.
    echoed: OrderedDict[tuple[str, str], None] = field(default_factory=OrderedDict)
    # stanza-ids of the master's messages we took, newest last (bounded): a copy that
    # comes again (queued on a slow link, and replayed by the catch-up) is dropped
    seen: OrderedDict[str, None] = field(default_factory=OrderedDict, repr=False)
    duplicates: int = 0  # copies dropped since the last tick (one log line a tick)
    last_id: str | None = None  # stanza-id of the newest message from the master
    # during a resync: the roster before it (the stanza-ids of the history we had are in
    # known_ids), so that local occupants are told only what changed
    resync_old: dict[str, Element] | None = None
    known_ids: set[str] = field(default_factory=set)
    # nick -> (its roster entry, that entry's XML without the real JID), for the entries
    # that have one, made for the first viewer who may not see it; not stored
    rendered: dict[str, tuple[RosterEntry, str]] = field(default_factory=dict, repr=False)
    # each held stanza's serialisation, made once: a long split saves the queue often
    _held_xml: dict[int, tuple[Element, str]] = field(default_factory=dict, repr=False)
    # nicks (roster, hidden) and local JIDs (local, directed) changed since the last write
    _changed_nicks: set[str] = field(default_factory=set, repr=False)
    _changed_sessions: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.roster = TrackedDict(self._changed_nicks)
        self.hidden = TrackedSet(self._changed_nicks)
        self.local = IndexedTrackedDict(self._changed_sessions)
        self.directed = TrackedSet(self._changed_sessions)

    # --- persistence (the link's state is stored beside it, by the service) ------------

    def to_state(self) -> dict[str, Any]:
        """The room's own state: what does not grow with the room (its entries are rows,
        changed_entries)."""
        return {
            "keepalive": self.keepalive,
            "history_length": self.history_length,
            "whois": self.whois,
            "subject": self.subject.toXml() if self.subject is not None else None,
            "last_id": self.last_id,
            "avatar": self.avatar.toXml() if self.avatar is not None else None,
            "info": self.info_xml,
            "vcard": self.vcard_xml,
            "vcard_known": self.vcard_known,
            # what waits for the master survives a restart; what was in flight is
            # submitted again (the master drops it if it had it)
            "queue": self._serialised(self.unacknowledged()),
            **self.archive.to_state(),
        }

    @classmethod
    def from_state(cls, jid: str, state: dict[str, Any],
                   entries: Mapping[str, dict[str, Any]] | None = None) -> SlaveRoom:
        """A room as stored: its state and its entries (row key -> row, as
        changed_entries wrote them). A state of an older dmuc holds the entries itself:
        the first write then stores them all as rows."""
        room = cls(jid)
        room.keepalive = int(state.get("keepalive", 60))
        room.history_length = int(state.get("history_length", 20))
        room.whois = state.get("whois", "moderators")
        room.roster.update({n: RosterEntry.of(stanzas.parse_xml(x))
                            for n, x in state.get("roster", {}).items()})
        room.hidden |= set(state.get("hidden", ())) & set(room.roster)
        room.local.update(state.get("local", {}))
        room.directed |= set(state.get("directed", ()))
        rows_kept = not any(key in state for key in ("roster", "hidden", "local", "directed"))
        room._restore_entries(entries or {})
        if rows_kept:
            room._changed_nicks.clear()
            room._changed_sessions.clear()
        if state.get("subject"):
            room.subject = stanzas.parse_xml(state["subject"])
        room.last_id = state.get("last_id")
        if state.get("avatar"):
            room.avatar = stanzas.parse_xml(state["avatar"])
        room.info_xml, room.vcard_xml = state.get("info"), state.get("vcard")
        room.vcard_known = bool(state.get("vcard_known", False))
        room.queue = [stanzas.parse_xml(x) for x in state.get("queue", ())]
        room.archive = ArchiveCopy.from_state(state)
        return room

    def _restore_entries(self, entries: Mapping[str, dict[str, Any]]) -> None:
        for key, row in entries.items():
            if key.startswith(MIRROR_ROSTER) and row.get("presence"):
                nick = key[len(MIRROR_ROSTER):]
                self.roster[nick] = RosterEntry.of(stanzas.parse_xml(row["presence"]))
                if row.get("hidden"):
                    self.hidden.add(nick)
            elif key.startswith(MIRROR_SESSION):
                full = key[len(MIRROR_SESSION):]
                if row.get("nick"):
                    self.local[full] = str(row["nick"])
                if row.get("directed"):
                    self.directed.add(full)

    def changed_entries(self) -> list[OccupantRecord | tuple[str, str]]:
        """The rows of the entries changed since the last call, for storage: a row per
        changed nick of the roster and per changed local session; (room, key) for one that
        is gone. Called when the shell writes the room: O(what changed)."""
        rows: list[OccupantRecord | tuple[str, str]] = []
        for nick in sorted(self._changed_nicks):
            self._add_row(rows, MIRROR_ROSTER + nick, self._roster_row(nick))
        for full in sorted(self._changed_sessions):
            self._add_row(rows, MIRROR_SESSION + full, self._session_row(full))
        self._changed_nicks.clear()
        self._changed_sessions.clear()
        return rows

    def unwritten(self, rows: list[OccupantRecord | tuple[str, str]]) -> None:
        """Rows changed_entries gave whose write failed: changed again, so that the next
        save writes them (as they are then)."""
        for row in rows:
            key = row.nick if isinstance(row, OccupantRecord) else row[1]
            if key.startswith(MIRROR_ROSTER):
                self._changed_nicks.add(key[len(MIRROR_ROSTER):])
            elif key.startswith(MIRROR_SESSION):
                self._changed_sessions.add(key[len(MIRROR_SESSION):])

    def all_entries(self) -> dict[str, dict[str, Any]]:
        """Every entry's row (row key -> row), as from_state takes them: a whole copy of
        the room (tests, and what changed_entries writes bit by bit)."""
        rows = {MIRROR_ROSTER + nick: self._roster_row(nick) for nick in self.roster}
        rows.update({MIRROR_SESSION + full: self._session_row(full)
                     for full in {*self.local, *self.directed}})
        return {key: row for key, row in rows.items() if row is not None}

    def _add_row(self, rows: list[OccupantRecord | tuple[str, str]], key: str,
                 row: dict[str, Any] | None) -> None:
        rows.append((self.jid, key) if row is None else OccupantRecord(self.jid, key, row))

    def _roster_row(self, nick: str) -> dict[str, Any] | None:
        entry = self.roster.get(nick)
        if entry is None:
            return None
        return {"presence": entry.xml, "hidden": nick in self.hidden}

    def _session_row(self, full: str) -> dict[str, Any] | None:
        nick, directed = self.local.get(full), full in self.directed
        if nick is None and not directed:
            return None
        return {"nick": nick, "directed": directed}

    def _serialised(self, held: list[Element]) -> list[str]:
        cache, fresh = self._held_xml, {}
        for stanza in held:
            known = cache.get(id(stanza))
            fresh[id(stanza)] = known if known is not None and known[0] is stanza \
                else (stanza, stanza.toXml())
        self._held_xml = fresh
        return [fresh[id(stanza)][1] for stanza in held]

    def unacknowledged(self) -> list[Element]:
        """What the master may not have: the stanzas in flight (as resubmissions), then
        the held ones, in the order the users sent them."""
        return [xep0282.held(resubmission(stanza), said_at)
                for stanza, said_at in self.inflight.values()] + self.queue

    def take_once(self, sid: str) -> bool:
        """Whether the master's message with this stanza-id is new here (then noted)."""
        if sid in self.seen:
            return False
        self.seen[sid] = None
        while len(self.seen) > MAX_SEEN:
            self.seen.popitem(last=False)
        return True

    def arrived(self, message: Element) -> None:
        """The master's broadcast of a message came back: if it was one of ours in
        flight, under its own id or as a resubmission, it is no longer."""
        nick = message.getAttribute("from", "").partition("/")[2]
        original, _ = xep0282.original_id(message.getAttribute("id") or "")
        self.inflight.pop((nick, original), None)

    def note_echoed(self, nick: str, message_id: str) -> None:
        self.echoed[(nick, message_id)] = None
        while len(self.echoed) > MAX_ECHOED:
            self.echoed.popitem(last=False)

    def was_echoed(self, message: Element) -> bool:
        """Whether the master's copy of a message (live or replayed) is one a local
        occupant's message that was shown here already; then it is forgotten (it comes
        once). After a restart, a held message's prefix still says so."""
        message_id = message.getAttribute("id") or ""
        nick = message.getAttribute("from", "").partition("/")[2]
        original, _ = xep0282.original_id(message_id)
        if (nick, original) in self.echoed:
            del self.echoed[(nick, original)]
            return True
        return message_id.startswith(xep0282.SPLIT_ID_PREFIX) and nick in self.local.keys_of

    # --- lookups -----------------------------------------------------------------------

    def role_of(self, nick: str) -> str:
        entry = self.roster.get(nick)
        return entry.role if entry is not None else "none"

    def occupant_id_of(self, nick: str) -> str | None:
        entry = self.roster.get(nick)
        return entry.occupant_id if entry is not None else None

    def shown(self) -> dict[str, RosterEntry]:
        """The roster as local occupants were told it: without the hidden occupants."""
        return {nick: e for nick, e in self.roster.items() if nick not in self.hidden}

    def forget_occupant(self, nick: str) -> None:
        self.roster.pop(nick, None)
        self.rendered.pop(nick, None)
        self.hidden.discard(nick)

    def sessions_of(self, nick: str) -> list[str]:
        return list(self.local.keys_of.get(nick, ()))

    def local_sessions(self) -> list[str]:
        return list(self.local)

    def local_roles(self) -> list[tuple[str, str]]:
        """Each local session with the role of its occupant (who sees real JIDs, §4.7)."""
        return [(full, self.role_of(nick)) for full, nick in self.local.items()]

    def receives_real_jids(self) -> bool:
        """Whether the master sends us real JIDs (§4.7: only with a local moderator)."""
        moderators = any(self.role_of(nick) == "moderator" for nick in self.local.keys_of)
        return visibility.slave_sees_real_jids(self.whois, moderators)

    def deserted(self) -> bool:
        """No local occupant, nobody of ours joining, nothing held: nothing to mirror for."""
        return not self.local and not self.directed and not self.queue

    # --- local users -------------------------------------------------------------------

    def note_presence(self, stanza: Element, full: str, now: float) -> None:
        """§4.5: remember which local users sent available presence to the room (the
        ENTER check), and since when a join waits for its ENTER."""
        if stanza.name != "presence":
            return
        ptype = stanza.getAttribute("type")
        if ptype is None:
            self.directed.add(full)
            if full not in self.local:
                self.joining.setdefault(full, now)
            elif stanzas.child(stanza, "x", xmlns.MUC) is not None:
                self.fresh.add(full)
        elif ptype == "unavailable":
            self.directed.discard(full)
            self.joining.pop(full, None)
            self.fresh.discard(full)

    def expire_joins(self, before: float) -> None:
        """Joins that went to the master before `before` and got no ENTER were refused
        (nick taken, banned, members-only...): those users are not coming in."""
        for full, since in list(self.joining.items()):
            if since < before:
                del self.joining[full]
                self.directed.discard(full)


def resubmission(stanza: Element) -> Element:
    """A stanza in flight, to be submitted again with the id prefix that lets the master
    drop it if the first one did arrive."""
    copy = stanzas.copy(stanza)
    message_id = copy.getAttribute("id") or ""
    if not message_id.startswith(xep0282.RESUBMIT_ID_PREFIX):
        copy["id"] = xep0282.RESUBMIT_ID_PREFIX + message_id
    return copy
