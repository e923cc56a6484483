"""The persistence adapter's vocabulary: records, errors and the Storage interface.

Records are plain data (JSON-able dicts and strings) so that the room core never sees
storage and storage never sees room objects.  Every method returns a Deferred.
Writes are applied in the order they are issued.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred


class StorageError(Exception):
    """The storage URL or the database cannot be used."""


class StoreAbsent(StorageError):
    """A read-only open found no dmuc store there (nothing was created)."""


@dataclass
class RoomRecord:
    """A persistent room as stored: its bare JID and its state (config, affiliations...)."""

    jid: str
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


class ArchiveIdNotFound(StorageError):
    """An RSM after/before id that is not (or no longer) in the room's archive."""


class Storage(Protocol):
    def open(self, read_only: bool = False) -> Deferred[None]:
        """Create or migrate the schema to the current version."""

    def close(self) -> Deferred[None]: ...

    def load_rooms(self, service: str) -> Deferred[list[RoomRecord]]:
        """All stored rooms of one MUC service (the component JID)."""

    def save_room(self, service: str, record: RoomRecord) -> Deferred[None]:
        """Insert or replace one room's state."""

    def delete_room(self, service: str, room_jid: str,
                    history_key: str | None = None) -> Deferred[None]:
        """Remove a room with its history (kept under `history_key`, default the room JID:
        a slave keeps its copy's history under slave_history_key)."""

    def append_history(
        self, room_jid: str, record: HistoryRecord, keep: int
    ) -> Deferred[None]:
        """Append one entry and trim the room's history to its newest `keep` entries."""

    def load_history(self, room_jid: str, limit: int) -> Deferred[list[HistoryRecord]]:
        """The newest `limit` entries of a room, oldest first."""

    def clear_history(self, room_jid: str) -> Deferred[None]: ...

    # -- the room archive (XEP-0313) -----------------------------------------------------

    def append_archive(self, entries: Sequence[tuple[str, ArchiveRecord]]) -> Deferred[None]:
        """Add messages, each (room JID, record), to the rooms' archives, in order, in one
        transaction (a stanza-id already there is kept)."""

    def query_archive(self, room_jid: str, query: ArchiveQuery) -> Deferred[ArchivePage]:
        """One page of a room's archive; fails with ArchiveIdNotFound for an unknown
        after/before id."""

    def retract_archive(self, room_jid: str, sid: str, tombstone_xml: str) -> Deferred[bool]:
        """Replace an archived message with its tombstone; whether it was there."""

    def expire_archive(self, older_than: float) -> Deferred[int]:
        """Delete every room's archived messages said before `older_than`; how many."""

    def delete_archive(self, room_jid: str) -> Deferred[None]:
        """Forget a room's archive (the room was destroyed)."""


def slave_history_key(slave_jid: str, room_jid: str) -> str:
    """History rows of a slave's copy of a room. The master keys its rows by the room JID;
    a slave by this key, so that master and slaves can share one database."""
    return f"{slave_jid}|{room_jid}"


def status_service(service: str) -> str:
    """Where the master records its slaves' link states and its heartbeat: the rooms of
    this pseudo-service (a key per slave), so that every adapter keeps them as it is."""
    return f"{service}|status"
