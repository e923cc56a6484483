"""The persistence adapter's vocabulary: records, errors and the Storage interface.

Records are plain data (JSON-able dicts and strings) so that the room core never sees
storage and storage never sees room objects.  Every method returns a Deferred.
Writes are applied in the order they are issued.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred


class StorageError(Exception):
    """The storage URL or the database cannot be used."""


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


class Storage(Protocol):
    def open(self) -> Deferred[None]:
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


def slave_history_key(slave_jid: str, room_jid: str) -> str:
    """History rows of a slave's copy of a room. The master keys its rows by the room JID;
    a slave by this key, so that master and slaves can share one database."""
    return f"{slave_jid}|{room_jid}"


def status_service(service: str) -> str:
    """Where the master records its slaves' link states and its heartbeat: the rooms of
    this pseudo-service (a key per slave), so that every adapter keeps them as it is."""
    return f"{service}|status"
