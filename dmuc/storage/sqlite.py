"""SQLite implementation of the :class:`~dmuc.storage.Storage` adapter.

All database work runs on a Twisted ``adbapi`` pool with exactly one connection and one
thread, so interactions execute one at a time in the order they were issued.  The schema
version lives in ``PRAGMA user_version``; :data:`MIGRATIONS` brings a database up to date.
"""

from __future__ import annotations

import json
import os
import sqlite3
import urllib.parse
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dmuc.storage.archive_sql import select_archive_page
from dmuc.storage.records import (
    ArchivePage,
    ArchiveQuery,
    ArchiveRecord,
    HistoryRecord,
    RoomRecord,
    StorageError,
    StoreAbsent,
)

_T = TypeVar("_T")

# A migration is SQL text (one or more ';'-separated statements) or a callable that gets
# the DB-API cursor of the migration transaction.  Entry i upgrades version i to i + 1.
Migration = str | Callable[[Any], None]

MIGRATIONS: list[Migration] = [
    # 1: rooms and their history.
    """
    CREATE TABLE rooms (
        service TEXT NOT NULL,
        jid TEXT NOT NULL,
        state TEXT NOT NULL,  -- JSON object
        PRIMARY KEY (service, jid)
    );
    CREATE TABLE history (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        room TEXT NOT NULL,
        stamp REAL NOT NULL,
        xml TEXT NOT NULL,
        extra TEXT  -- JSON object
    );
    CREATE INDEX history_room_id ON history (room, id);
    """,
    # 2: the room archive (XEP-0313), kept by stanza-id, in the order the room said it.
    """
    CREATE TABLE archive (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        room TEXT NOT NULL,
        sid TEXT NOT NULL,  -- the XEP-0359 stanza-id the room gave the message
        stamp REAL NOT NULL,
        nick TEXT NOT NULL,  -- the sender's nickname ('with' an occupant JID)
        sender TEXT NOT NULL,  -- the sender's bare real JID ('with' a real JID)
        xml TEXT NOT NULL,
        retracted INTEGER NOT NULL DEFAULT 0  -- 1: xml is a XEP-0425 tombstone
    );
    CREATE UNIQUE INDEX archive_room_sid ON archive (room, sid);
    CREATE INDEX archive_room_id ON archive (room, id);
    CREATE INDEX archive_room_stamp ON archive (room, stamp);
    CREATE INDEX archive_stamp ON archive (stamp);
    CREATE INDEX archive_room_nick ON archive (room, nick, id);
    CREATE INDEX archive_room_sender ON archive (room, sender, id);
    """,
]

MEMORY = ":memory:"
_URL_PREFIX = "sqlite:"


def schema_version() -> int:
    """The schema version this code creates: the number of migrations."""
    return len(MIGRATIONS)


def _split_sql(script: str) -> list[str]:
    """Split SQL text into complete statements (so they can run inside one transaction;
    ``executescript`` would commit first)."""
    statements: list[str] = []
    buf = ""
    for piece in script.split(";"):
        buf += piece + ";"
        if sqlite3.complete_statement(buf):
            if buf.strip(" \t\r\n;"):
                statements.append(buf.strip())
            buf = ""
    if buf.strip(" \t\r\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {buf.strip()!r}")
    return statements


def _run_migration(txn: Any, migration: Migration) -> None:
    if callable(migration):
        migration(txn)
    else:
        for statement in _split_sql(migration):
            txn.execute(statement)


def _user_version(txn: Any) -> int:
    txn.execute("PRAGMA user_version")
    return int(txn.fetchone()[0])


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _create_private(path: str) -> None:
    """Create the database file 0600 if it does not exist (whatever the umask): it holds
    room passwords and the archives of members-only rooms. SQLite gives its -wal and -shm
    files the database file's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class SQLiteStorage:
    """Rooms and history in one SQLite file (or in memory, for tests)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._pool: adbapi.ConnectionPool | None = None

    @classmethod
    def from_url(cls, url: str) -> SQLiteStorage:
        """Accept ``sqlite:///abs/path.db`` (or ``sqlite:/abs/path.db``), ``sqlite:rel/path.db``
        (resolved against the current directory now) and ``sqlite::memory:`` or
        ``sqlite:///:memory:`` (one private in-memory database per instance)."""
        if not url.startswith(_URL_PREFIX):
            raise StorageError(f"not an SQLite storage URL: {url!r} (expected sqlite:///path)")
        rest = url[len(_URL_PREFIX) :]
        if "?" in rest or "#" in rest or "\0" in rest:
            raise StorageError(f"malformed SQLite URL {url!r}: query, fragment or NUL not allowed")
        if rest.startswith("//"):
            # sqlite://<host>/<path>: only an empty host is meaningful.
            rest = rest[2:]
            if rest and not rest.startswith("/"):
                raise StorageError(
                    f"malformed SQLite URL {url!r}: a host is not allowed, "
                    "use sqlite:///absolute/path.db"
                )
            if rest == "/" + MEMORY:
                return cls(MEMORY)
        if rest == MEMORY:
            return cls(MEMORY)
        if not rest or rest.endswith("/") or os.path.basename(rest) in (".", ".."):
            raise StorageError(f"malformed SQLite URL {url!r}: no database file name")
        return cls(os.path.abspath(rest))

    # -- lifecycle ------------------------------------------------------------------

    def open(self, read_only: bool = False) -> Deferred[None]:
        """Create the pool, then create or migrate the schema to the current version; or,
        `read_only`, open an existing store at the current version without writing
        anything (StoreAbsent if there is no file). The file's directory must exist: a
        mistyped path is an error, not a new empty store."""
        if self._pool is not None:
            return defer.fail(StorageError(f"storage {self.path} is already open"))
        directory = os.path.dirname(self.path)
        if self.path != MEMORY and not os.path.isdir(directory):
            return defer.fail(StorageError(f"cannot open storage {self.path}: directory "
                                           f"{directory} does not exist"))
        if read_only and (self.path == MEMORY or not os.path.exists(self.path)):
            return defer.fail(StoreAbsent(f"no store at {self.path}"))
        if not read_only and self.path != MEMORY:
            try:
                _create_private(self.path)
            except OSError as e:
                return defer.fail(StorageError(f"cannot open storage {self.path}: {e}"))
        pool = adbapi.ConnectionPool(
            "sqlite3",
            # (one leading slash: "file://x" would name a host)
            f"file:{urllib.parse.quote('/' + self.path.lstrip('/'))}?mode=ro" if read_only
            else self.path,
            uri=read_only,
            check_same_thread=False,
            cp_min=1,
            cp_max=1,  # one connection, one thread: issue order is execution order
            cp_openfun=None if read_only else self._setup_connection,
        )
        self._pool = pool
        d = pool.runInteraction(self._check_version if read_only else self._migrate)

        def failed(f: Failure) -> Failure:
            # Leave no threads behind; report the path and the reason.
            self._pool = None
            pool.close()
            if f.check(StorageError):
                return f
            return Failure(StorageError(f"cannot open storage {self.path}: {f.value}"))

        d.addErrback(failed)
        return d

    def close(self) -> Deferred[None]:
        """Wait for the writes already issued, then close the pool.  Idempotent."""
        pool, self._pool = self._pool, None
        if pool is None:
            return defer.succeed(None)
        d = pool.runInteraction(lambda txn: None)  # barrier: runs after queued writes

        def shut(result: object) -> object:
            pool.close()
            return result

        d.addBoth(shut)
        d.addCallback(lambda _: None)
        return d

    @staticmethod
    def _setup_connection(conn: sqlite3.Connection) -> None:
        # Per-connection settings; these pragmas cannot run inside a transaction.
        conn.execute("PRAGMA journal_mode=WAL").fetchall()
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA foreign_keys=ON")

    def _check_version(self, txn: Any) -> None:
        current = _user_version(txn)
        if current != schema_version():
            raise StorageError(f"storage {self.path} has schema version {current}, not the "
                               f"{schema_version()} of this dmuc (a read-only open does not "
                               "migrate it)")

    def _migrate(self, txn: Any) -> None:
        target = schema_version()
        if _user_version(txn) == target:
            return
        # Take the write lock before re-reading, so concurrent openers migrate once.
        txn.execute("BEGIN IMMEDIATE")
        current = _user_version(txn)
        if current > target:
            raise StorageError(
                f"storage {self.path} has schema version {current}, newer than the "
                f"{target} this dmuc knows; upgrade dmuc"
            )
        for version in range(current, target):
            _run_migration(txn, MIGRATIONS[version])
        txn.execute(f"PRAGMA user_version = {int(target)}")
        # runInteraction commits.

    def _run(self, what: str, interaction: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Queue one interaction (one transaction); SQLite errors become StorageError."""
        if self._pool is None:
            return defer.fail(StorageError(f"storage {self.path} is not open"))

        def translate(f: Failure) -> Failure:
            if f.check(sqlite3.Error):
                return Failure(StorageError(f"storage {self.path}: {what} failed: {f.value}"))
            return f

        return self._pool.runInteraction(interaction, *args).addErrback(translate)

    # -- rooms ----------------------------------------------------------------------

    def load_rooms(self, service: str) -> Deferred[list[RoomRecord]]:
        """All stored rooms of one MUC service, ordered by JID."""

        def q(txn: Any) -> list[RoomRecord]:
            txn.execute("SELECT jid, state FROM rooms WHERE service = ? ORDER BY jid", (service,))
            return [RoomRecord(jid=jid, state=_loads(state)) for jid, state in txn.fetchall()]

        return self._run("load_rooms", q)

    def save_room(self, service: str, record: RoomRecord) -> Deferred[None]:
        """Insert or replace one room's state."""
        state = _dumps(record.state)  # serialise now: later mutations must not leak in

        def q(txn: Any) -> None:
            # An upsert, not REPLACE: REPLACE deletes the row (and would cascade).
            txn.execute(
                "INSERT INTO rooms (service, jid, state) VALUES (?, ?, ?) "
                "ON CONFLICT (service, jid) DO UPDATE SET state = excluded.state",
                (service, record.jid, state),
            )

        return self._run("save_room", q)

    def delete_room(self, service: str, room_jid: str,
                    history_key: str | None = None) -> Deferred[None]:
        """Remove a room with its history (kept under `history_key`, default the room JID)."""

        def q(txn: Any) -> None:
            txn.execute("DELETE FROM rooms WHERE service = ? AND jid = ?", (service, room_jid))
            txn.execute("DELETE FROM history WHERE room = ?", (history_key or room_jid,))

        return self._run("delete_room", q)

    # -- history --------------------------------------------------------------------

    def append_history(self, room_jid: str, record: HistoryRecord, keep: int) -> Deferred[None]:
        """Append one entry and trim the room's history to its newest `keep` entries."""
        if keep < 0:
            return defer.fail(ValueError(f"keep must be >= 0, not {keep}"))
        row = (room_jid, float(record.stamp), record.xml, _dumps(record.extra))

        def q(txn: Any) -> None:
            txn.execute("INSERT INTO history (room, stamp, xml, extra) VALUES (?, ?, ?, ?)", row)
            # Delete everything up to the (keep+1)-th newest id; none if there are fewer.
            txn.execute(
                "DELETE FROM history WHERE room = ? AND id <= ("
                " SELECT id FROM history WHERE room = ? ORDER BY id DESC LIMIT 1 OFFSET ?)",
                (room_jid, room_jid, keep),
            )

        return self._run("append_history", q)

    def load_history(self, room_jid: str, limit: int) -> Deferred[list[HistoryRecord]]:
        """The newest `limit` entries of a room, oldest first."""
        if limit < 0:
            return defer.fail(ValueError(f"limit must be >= 0, not {limit}"))

        def q(txn: Any) -> list[HistoryRecord]:
            txn.execute(
                "SELECT stamp, xml, extra FROM ("
                " SELECT id, stamp, xml, extra FROM history WHERE room = ?"
                " ORDER BY id DESC LIMIT ?) ORDER BY id",
                (room_jid, limit),
            )
            return [
                HistoryRecord(stamp=stamp, xml=xml, extra=_loads(extra))
                for stamp, xml, extra in txn.fetchall()
            ]

        return self._run("load_history", q)

    def clear_history(self, room_jid: str) -> Deferred[None]:
        """Delete a room's history, keeping the room."""

        def q(txn: Any) -> None:
            txn.execute("DELETE FROM history WHERE room = ?", (room_jid,))

        return self._run("clear_history", q)

    # -- the room archive (XEP-0313) ---------------------------------------------------

    def append_archive(self, entries: Sequence[tuple[str, ArchiveRecord]]) -> Deferred[None]:
        """Add messages, each (room JID, record), to the rooms' archives, in order, in one
        transaction (a stanza-id already there is kept)."""
        rows = [(room_jid, r.sid, float(r.stamp), r.nick, r.sender, r.xml, int(r.retracted))
                for room_jid, r in entries]

        def q(txn: Any) -> None:
            txn.executemany(
                "INSERT INTO archive (room, sid, stamp, nick, sender, xml, retracted)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (room, sid) DO NOTHING", rows)

        return self._run("append_archive", q)

    def query_archive(self, room_jid: str, query: ArchiveQuery) -> Deferred[ArchivePage]:
        """One page of a room's archive (see select_archive_page)."""
        return self._run("query_archive", select_archive_page, room_jid, query)

    def retract_archive(self, room_jid: str, sid: str, tombstone_xml: str) -> Deferred[bool]:
        """Replace an archived message with its tombstone; whether it was there."""

        def q(txn: Any) -> bool:
            txn.execute("UPDATE archive SET xml = ?, retracted = 1 WHERE room = ? AND sid = ?",
                        (tombstone_xml, room_jid, sid))
            return bool(txn.rowcount and txn.rowcount > 0)

        return self._run("retract_archive", q)

    def expire_archive(self, older_than: float) -> Deferred[int]:
        """Delete every room's archived messages said before `older_than`; how many."""

        def q(txn: Any) -> int:
            txn.execute("DELETE FROM archive WHERE stamp < ?", (float(older_than),))
            return max(txn.rowcount or 0, 0)

        return self._run("expire_archive", q)

    def delete_archive(self, room_jid: str) -> Deferred[None]:
        """Forget a room's archive (the room was destroyed)."""

        def q(txn: Any) -> None:
            txn.execute("DELETE FROM archive WHERE room = ?", (room_jid,))

        return self._run("delete_archive", q)
