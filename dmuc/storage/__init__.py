"""The persistence adapter: one asynchronous interface shared by master and slave
(dmuc.storage.records), and the adapters behind it (SQLite, PostgreSQL)."""

from __future__ import annotations

from dmuc.storage.postgres import URL_SCHEMES as POSTGRES_URL_SCHEMES
from dmuc.storage.postgres import PostgresStorage, without_password
from dmuc.storage.records import (
    ArchiveIdNotFound,
    ArchivePage,
    ArchiveQuery,
    ArchiveRecord,
    HistoryRecord,
    RoomRecord,
    Storage,
    StorageError,
    StoreAbsent,
    slave_history_key,
    status_service,
)
from dmuc.storage.sqlite import SQLiteStorage

__all__ = ["POSTGRES_URL_SCHEMES", "ArchiveIdNotFound", "ArchivePage", "ArchiveQuery",
           "ArchiveRecord", "HistoryRecord", "PostgresStorage", "RoomRecord", "Storage",
           "StorageError", "StoreAbsent", "SQLiteStorage", "open_storage", "slave_history_key",
           "status_service", "url_for_log"]


def open_storage(url: str) -> Storage:
    """Build the adapter named by a storage URL, e.g. ``sqlite:///var/lib/dmuc/master.db``
    or ``postgresql://dmuc@db.example.org/dmuc``."""
    if url.startswith("sqlite:"):
        return SQLiteStorage.from_url(url)
    if url.startswith(POSTGRES_URL_SCHEMES):
        return PostgresStorage.from_url(url)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise StorageError(f"unsupported storage URL scheme {scheme!r} "
                       "(supported: sqlite, postgresql)")


def url_for_log(url: str) -> str:
    """A storage URL as log lines show it: never a database password."""
    return without_password(url) if url.startswith(POSTGRES_URL_SCHEMES) else url
