"""The persistence adapter: one asynchronous interface shared by master and slave
(dmuc.storage.records), and the adapters behind it (SQLite)."""

from __future__ import annotations

from dmuc.storage.records import (
    ArchiveIdNotFound,
    ArchivePage,
    ArchiveQuery,
    ArchiveRecord,
    HistoryRecord,
    RoomRecord,
    Storage,
    StorageError,
    slave_history_key,
    status_service,
)
from dmuc.storage.sqlite import SQLiteStorage

__all__ = ["ArchiveIdNotFound", "ArchivePage", "ArchiveQuery", "ArchiveRecord",
           "HistoryRecord", "RoomRecord", "Storage", "StorageError", "SQLiteStorage",
           "open_storage", "slave_history_key", "status_service"]


def open_storage(url: str) -> Storage:
    """Build the adapter named by a storage URL, e.g. ``sqlite:///var/lib/dmuc/master.db``."""
    if url.startswith("sqlite:"):
        return SQLiteStorage.from_url(url)
    scheme = url.split(":", 1)[0] if ":" in url else url
    raise StorageError(f"unsupported storage URL scheme {scheme!r} (supported: sqlite)")
