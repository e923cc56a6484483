"""The records the cores exchange with storage: plain data (JSON-able dicts and strings),
so that the room core never sees storage and storage never sees room objects. A leaf
module: the core imports it; the adapters (dmuc.storage, which only the shell, config and
admin import) take and return these records."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class RoomRecord:
    """A persistent room as stored: its bare JID and its state (config, affiliations...)."""

    jid: str
    state: dict[str, Any]


@dataclass
class OccupantRecord:
    """An occupant of a master's room reached directly (not through a slave), as stored:
    the room, its nick, and its state (bare JID, role, occupant-id, sessions' presences)."""

    room_jid: str
    nick: str
    state: dict[str, Any]


@dataclass
class HistoryRecord:
    """One stored history stanza of a room."""

    stamp: float  # POSIX seconds, the time the room received it
    xml: str  # the stanza as broadcast, serialised, without 'to'
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ArchiveRecord:
    """One message of a room's archive (XEP-0313): kept by the room's stanza-id."""

    sid: str  # the XEP-0359 stanza-id the room gave it (the archive id, the RSM id)
    stamp: float  # POSIX seconds, when it was said
    nick: str  # the sender's nickname ("" for the room itself): 'with' an occupant JID
    sender: str  # the sender's bare real JID ("" for the room): 'with' a real JID
    xml: str  # the message as broadcast, serialised, without 'to'
    retracted: bool = False  # a tombstone replaced it (XEP-0425)


@dataclass
class ArchiveQuery:
    """What a MAM query asks of a room's archive. Times are POSIX seconds; `after` and
    `before` are stanza-ids (RSM, or the form's after-id/before-id); `last` asks for the
    newest page (an empty RSM <before/>); `ids` (mam:2#extended) picks messages by id."""

    max: int
    start: float | None = None
    end: float | None = None
    nick: str | None = None
    sender: str | None = None
    after: str | None = None
    before: str | None = None
    last: bool = False
    ids: list[str] | None = None


@dataclass
class ArchivePage:
    """A query's answer: the messages in archive order, the number of messages matching
    the filters (without the paging), and whether the page reaches the end it walked to."""

    records: list[ArchiveRecord]
    count: int
    complete: bool


def slave_history_key(slave_jid: str, room_jid: str) -> str:
    """History rows of a slave's copy of a room. The master keys its rows by the room JID;
    a slave by this key, so that master and slaves can share one database."""
    return f"{slave_jid}|{room_jid}"


def status_service(service: str) -> str:
    """Where the master records its slaves' link states and its heartbeat: the rooms of
    this pseudo-service (a key per slave), so that every adapter keeps them as it is."""
    return f"{service}|status"


# A slave stores its mirror of a room as rows beside the room's state (in the occupants
# table, under the slave's JID), keyed by these prefixes: one row per roster entry (the
# nick), one per local session (the full JID). A join or a leave writes its row, not the
# whole room.
MIRROR_ROSTER = "roster/"
MIRROR_SESSION = "session/"
