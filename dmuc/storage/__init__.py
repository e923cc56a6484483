"""The persistence adapters, which only the shell, the configuration check and dmuc-admin
import (the cores exchange dmuc.records with them through the Outbox): the Storage
interface, and the one switch from a storage URL's scheme to its backend (SQLite,
PostgreSQL; their SQL is written once in dmuc.storage.sql)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from twisted.internet.defer import Deferred

from dmuc import records as stored
from dmuc.errors import StorageError, StoreAbsent
from dmuc.storage.postgres import PostgresStorage
from dmuc.storage.sql import SQLStorage
from dmuc.storage.sqlite import SQLiteStorage

__all__ = ["BACKENDS", "PostgresStorage", "SQLiteStorage", "Storage", "StoreAbsent",
           "backend_for", "open_storage", "url_for_log"]

# Every backend, by the URL schemes it serves.
BACKENDS: tuple[type[SQLStorage], ...] = (SQLiteStorage, PostgresStorage)


class Storage(Protocol):
    """What master and slaves need of a store. Every method returns a Deferred; writes are
    applied in the order they are issued."""

    def open(self, read_only: bool = False) -> Deferred[None]:
        """Create or migrate the schema to the current version; `read_only`: open an
        existing store without writing anything (StoreAbsent if there is none)."""

    def close(self) -> Deferred[None]: ...

    def load_rooms(self, service: str) -> Deferred[list[stored.RoomRecord]]:
        """All stored rooms of one MUC service (the component JID)."""

    def save_room(self, service: str, record: stored.RoomRecord,
                  entries: Sequence[stored.OccupantRecord | tuple[str, str]] = ()
                  ) -> Deferred[None]:
        """Insert or replace one room's state; in the same transaction, store each entry
        row (OccupantRecord) and forget each (room JID, key) beside it (a slave's
        mirrored roster and sessions, in the occupants table under the same service)."""

    def delete_room(self, service: str, room_jid: str,
                    history_key: str | None = None) -> Deferred[None]:
        """Remove a room with its history (kept under `history_key`, default the room JID:
        a slave keeps its copy's history under slave_history_key)."""

    def load_occupants(self, service: str) -> Deferred[list[stored.OccupantRecord]]:
        """Every stored occupant (reached directly) of one MUC service's rooms."""

    def save_occupants(self, service: str,
                       records: Sequence[stored.OccupantRecord | tuple[str, str]]
                       ) -> Deferred[None]:
        """In one transaction: store each OccupantRecord, forget each (room JID, nick)."""

    def forget_occupants(self, service: str, room_jid: str) -> Deferred[None]:
        """Forget every stored occupant of a room."""

    def append_history(
        self, room_jid: str, record: stored.HistoryRecord, keep: int
    ) -> Deferred[None]:
        """Append one entry and trim the room's history to its newest `keep` entries."""

    def load_history(self, room_jid: str, limit: int) -> Deferred[list[stored.HistoryRecord]]:
        """The newest `limit` entries of a room, oldest first."""

    def clear_history(self, room_jid: str) -> Deferred[None]: ...

    # -- the room archive (XEP-0313) -----------------------------------------------------

    def append_archive(self, entries: Sequence[tuple[str, stored.ArchiveRecord]]
                       ) -> Deferred[None]:
        """Add messages, each (room JID, record), to the rooms' archives, in order, in one
        transaction (a stanza-id already there is kept)."""

    def query_archive(self, room_jid: str,
                      query: stored.ArchiveQuery) -> Deferred[stored.ArchivePage]:
        """One page of a room's archive; fails with ArchiveIdNotFound for an unknown
        after/before id."""

    def retract_archive(self, room_jid: str, sid: str, tombstone_xml: str) -> Deferred[bool]:
        """Replace an archived message with its tombstone; whether it was there."""

    def expire_archive(self, older_than: float,
                       room_jid: str | None = None) -> Deferred[int]:
        """Delete every room's archived messages said before `older_than`; how many."""

    def delete_archive(self, room_jid: str) -> Deferred[None]:
        """Forget a room's archive (the room was destroyed)."""


def backend_for(url: str) -> type[SQLStorage]:
    """The backend that serves a storage URL's scheme."""
    for backend in BACKENDS:
        if url.startswith(backend.URL_SCHEMES):
            return backend
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise StorageError(f"unsupported storage URL scheme {scheme!r} "
                       "(supported: sqlite, postgresql)")


def open_storage(url: str) -> SQLStorage:
    """Build the adapter named by a storage URL, e.g. ``sqlite:///var/lib/dmuc/master.db``
    or ``postgresql://dmuc@db.example.org/dmuc`` (not opened yet)."""
    return backend_for(url).from_url(url)


def url_for_log(url: str) -> str:
    """A storage URL as log lines show it: never a database password."""
    try:
        return backend_for(url).url_for_log(url)
    except StorageError:
        return url
