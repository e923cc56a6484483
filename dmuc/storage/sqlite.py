"""The SQLite backend of the storage adapter (the SQL itself is dmuc.storage.sql).

All database work runs on a Twisted ``adbapi`` pool with exactly one connection and one
thread, so interactions execute one at a time in the order they were issued.  The schema
version lives in ``PRAGMA user_version``.
"""

from __future__ import annotations

import os
import sqlite3
import urllib.parse
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.enterprise import adbapi
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dmuc.errors import StorageError, StoreAbsent
from dmuc.storage.sql import Dialect, SQLStorage, migrate, schema_version

_T = TypeVar("_T")

MEMORY = ":memory:"
# SQLite's page cache per connection (KiB); see _setup_connection
PAGE_CACHE_KIB = 128
_URL_PREFIX = "sqlite:"


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


DIALECT = Dialect(mark="?", types={"serial": "INTEGER PRIMARY KEY AUTOINCREMENT",
                                   "real": "REAL"},
                  byte_order="BINARY", statements=_split_sql)


def _user_version(txn: Any) -> int:
    txn.execute("PRAGMA user_version")
    return int(txn.fetchone()[0])


def _create_private(path: str) -> None:
    """Create the database file 0600 if it does not exist (whatever the umask): it holds
    room passwords and the archives of members-only rooms. SQLite gives its -wal and -shm
    files the database file's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


class SQLiteStorage(SQLStorage):
    """Rooms and history in one SQLite file (or in memory, for tests)."""

    dialect = DIALECT
    URL_SCHEMES = (_URL_PREFIX,)

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path

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

    def check(self) -> None:
        """The file's directory must exist (a mistyped path must not become a new, empty
        store the daemon serves from) and be writable."""
        if self.path == MEMORY:
            return
        directory = os.path.dirname(self.path)
        if not os.path.isdir(directory):
            raise StorageError(f"directory {directory} does not exist (create it, or "
                               "correct the path)")
        if not os.access(directory, os.W_OK):
            raise StorageError(f"directory {directory} is not writable")

    # -- lifecycle ------------------------------------------------------------------

    def _connect(self, read_only: bool) -> adbapi.ConnectionPool:
        if self.path != MEMORY:
            directory = os.path.dirname(self.path)
            if not os.path.isdir(directory):
                raise StorageError(f"cannot open storage {self.path}: directory {directory} "
                                   "does not exist")
            if read_only and not os.path.exists(self.path):
                raise StoreAbsent(f"no dmuc store at {self.path}")
            if not read_only:
                _create_private(self.path)
        elif read_only:
            raise StoreAbsent("no dmuc store in a new in-memory database")
        return adbapi.ConnectionPool(
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
        # Rows are written far more than read back (a restart reads them once; the
        # operating system caches the file anyway): SQLite's own page cache, 2 MiB by
        # default, would hold each written page in the daemon's memory until it is full.
        conn.execute(f"PRAGMA cache_size=-{PAGE_CACHE_KIB}")

    def _read_version(self, txn: Any) -> int | None:
        return _user_version(txn)

    def _migrate(self, txn: Any) -> None:
        if _user_version(txn) == schema_version():
            return
        # Take the write lock before re-reading, so concurrent openers migrate once.
        txn.execute("BEGIN IMMEDIATE")
        if migrate(txn, self.dialect, _user_version(txn), self.display):
            txn.execute(f"PRAGMA user_version = {int(schema_version())}")
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
