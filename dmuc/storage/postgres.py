"""PostgreSQL implementation of the :class:`~dmuc.storage.Storage` adapter.

The driver is psycopg 3 (blocking API) on a Twisted ``adbapi`` pool with exactly one
connection and one thread, as the SQLite adapter: interactions execute one at a time in
the order they were issued, and the daemons keep Twisted's default reactor (psycopg's
async API would need the asyncio reactor under every daemon for no gain here).

The schema version lives in the table ``dmuc_schema`` (PostgreSQL has no user_version);
:data:`MIGRATIONS` brings a database up to date inside one transaction that first takes
an advisory lock, so daemons opening the same database at once migrate it once.

Operations queue in the adapter and run in issue order; those that waited for the one
before them run together in one transaction (a busy room costs one commit per batch, not
per message).  A lost connection (or another transient error) does not fail an
operation: its batch stays at the head of the queue and is retried with backoff, one log
line per attempt, while the operations issued after it wait behind it; nothing is
dropped and the order is kept.
"""

from __future__ import annotations

import itertools
import json
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from twisted.enterprise import adbapi
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dmuc.log import get_logger
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

log = get_logger("dmuc.storage")

_T = TypeVar("_T")

# A migration is SQL text (one or more statements; psycopg runs them as one) or a callable
# that gets the DB-API cursor of the migration transaction.  Entry i upgrades version i
# to i + 1.  Keep in step with dmuc.storage.sqlite.MIGRATIONS.
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
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        room TEXT NOT NULL,
        stamp DOUBLE PRECISION NOT NULL,
        xml TEXT NOT NULL,
        extra TEXT  -- JSON object
    );
    CREATE INDEX history_room_id ON history (room, id);
    """,
    # 2: the room archive (XEP-0313), kept by stanza-id, in the order the room said it.
    """
    CREATE TABLE archive (
        id BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        room TEXT NOT NULL,
        sid TEXT NOT NULL,  -- the XEP-0359 stanza-id the room gave the message
        stamp DOUBLE PRECISION NOT NULL,
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

URL_SCHEMES = ("postgresql://", "postgres://")
# pg_advisory_xact_lock key of schema migrations (any constant; "dmuc" in ASCII).
MIGRATION_LOCK = 0x646D7563
# libpq settings, unless the URL says otherwise: give up connecting after 10 s, and notice a
# connection that died silently (a peer or firewall gone) within about a minute, so that
# the writes waiting behind it are retried instead of stalling for TCP's long timeouts.
CONNECTION_DEFAULTS = {"connect_timeout": 10, "keepalives": 1, "keepalives_idle": 30,
                       "keepalives_interval": 10, "keepalives_count": 3,
                       "tcp_user_timeout": 60_000}
RETRY_FIRST_DELAY = 0.5  # seconds before the first retry; doubled up to the maximum
RETRY_MAX_DELAY = 30.0
# How long close() keeps retrying the operations still queued while the database is
# unreachable, before it gives them up (with one error line counting them).
CLOSE_PATIENCE = 10.0
# At most this many queued operations share one transaction.
MAX_BATCH = 100
# psycopg's errors that a new connection or a later attempt may cure: connection lost or
# refused, server shutting down, serialisation failures, out of resources.
TRANSIENT_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)


def schema_version() -> int:
    """The schema version this code creates: the number of migrations."""
    return len(MIGRATIONS)


def _run_migration(txn: Any, migration: Migration) -> None:
    if callable(migration):
        migration(txn)
    else:
        txn.execute(migration)


def _stored_version(txn: Any) -> int:
    """The version in dmuc_schema, which is created (at 0) in an empty database."""
    txn.execute("SELECT to_regclass('dmuc_schema') IS NOT NULL")
    if not txn.fetchone()[0]:
        txn.execute("CREATE TABLE dmuc_schema (version INTEGER NOT NULL)")
        txn.execute("INSERT INTO dmuc_schema (version) VALUES (0)")
        return 0
    txn.execute("SELECT version FROM dmuc_schema")
    return int(txn.fetchone()[0])


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


_URL_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^:@/?#]*):[^@/?#]*@")
_QUERY_PASSWORD = re.compile(r"(?<=[?&])password=[^&#]*(&|$)")


def without_password(url: str) -> str:
    """A PostgreSQL URL as it may appear in a log line or an error: without its password
    (in the user part or as a query parameter)."""
    url = _URL_PASSWORD.sub(r"\1@", url)
    url = _QUERY_PASSWORD.sub("", url)
    return url.rstrip("?&")


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


class _Connection(adbapi.Connection):
    """adbapi's connection wrapper, quiet when the connection broke: the pool drops it (the
    next interaction connects afresh) and the interaction's own error is what is reported
    (adbapi would log a traceback for the failed rollback)."""

    def rollback(self) -> None:
        conn = self._connection
        if conn is not None and (conn.closed or conn.broken):
            self._pool.disconnect(conn)
            self._connection = None
            return
        super().rollback()


class _Pool(adbapi.ConnectionPool):
    connectionFactory = _Connection


@dataclass
class _Operation:
    what: str
    interaction: Callable[..., Any]
    args: tuple[Any, ...]
    done: Deferred


def _run_batch(txn: Any, batch: list[_Operation]) -> list[Any]:
    """The interactions of a batch in order, in one transaction (adbapi commits)."""
    return [op.interaction(txn, *op.args) for op in batch]


class PostgresStorage:
    """Rooms and history in one PostgreSQL database, which master and slaves may share."""

    def __init__(self, conninfo: str, display: str) -> None:
        self.conninfo = conninfo
        self.display = display  # the URL without its password, for log lines
        self._pool: adbapi.ConnectionPool | None = None
        self._closing = False  # close() waits for the queue to drain
        self._queue: deque[_Operation] = deque()
        self._busy = False
        self._failures = 0  # consecutive transient failures of the batch at the head
        self._unbatched = 0  # how many at the head to run one per transaction (see _failed)
        self._retry_call: Any = None
        self._give_up_at: float | None = None  # set by close()
        self._drained: list[Deferred] = []

    @classmethod
    def from_url(cls, url: str) -> PostgresStorage:
        """Accept a libpq URI: ``postgresql://user[:password]@host[:port]/database[?param=..]``
        (``postgres://`` too; a host of ``%2Fdir`` or ``?host=/dir`` is a Unix socket dir)."""
        if not url.startswith(URL_SCHEMES):
            raise StorageError(
                f"not a PostgreSQL storage URL: {url!r} (expected postgresql://user@host/db)")
        try:
            params = conninfo_to_dict(url)
        except psycopg.Error as exc:
            raise StorageError(f"malformed PostgreSQL URL {without_password(url)!r}: "
                               f"{_one_line(exc)}") from exc
        if not params.get("dbname"):
            raise StorageError(
                f"malformed PostgreSQL URL {without_password(url)!r}: no database name")
        port = str(params.get("port", "5432"))
        if not all(p.isdigit() and 0 < int(p) < 65536 for p in port.split(",")):
            raise StorageError(
                f"malformed PostgreSQL URL {without_password(url)!r}: {port!r} is not a port")
        for key, value in CONNECTION_DEFAULTS.items():
            params.setdefault(key, value)
        return cls(make_conninfo(**params), without_password(url))

    # -- lifecycle ------------------------------------------------------------------

    def open(self, read_only: bool = False) -> Deferred[None]:
        """Create the pool, then create or migrate the schema to the current version; or,
        `read_only`, in read-only transactions, check that the schema is there at the
        current version (StoreAbsent if there is none) and write nothing.
        The database must be reachable now: a daemon that cannot open it exits."""
        if self._pool is not None:
            return defer.fail(StorageError(f"storage {self.display} is already open"))
        pool = _Pool(
            "psycopg",
            self.conninfo,
            cp_min=1,
            cp_max=1,  # one connection, one thread: issue order is execution order
            cp_openfun=self._setup_read_only if read_only else self._setup_connection,
        )
        self._pool = pool
        self._give_up_at = None
        d = pool.runInteraction(self._check_version if read_only else self._migrate)

        def failed(f: Failure) -> Failure:
            # Leave no threads behind; report the database and the reason.
            self._pool = None
            pool.close()
            if f.check(StorageError):
                return f
            return Failure(StorageError(
                f"cannot open storage {self.display}: {_one_line(f.value)}"))

        d.addErrback(failed)
        return d

    def close(self) -> Deferred[None]:
        """Wait for the operations already issued, then close the pool.  Idempotent.  If
        the database is unreachable, they are retried for CLOSE_PATIENCE seconds more."""
        pool = self._pool
        if pool is None or self._closing:
            return defer.succeed(None)
        self._closing = True  # no new operations
        self._give_up_at = reactor.seconds() + CLOSE_PATIENCE
        if self._retry_call is not None and self._retry_call.active():
            self._retry_call.reset(0)  # retry now rather than after a long backoff
        d: Deferred[None] = Deferred()
        if self._busy:
            self._drained.append(d)
        else:
            d.callback(None)

        def shut(result: object) -> object:
            self._pool, self._closing = None, False
            pool.close()
            return result

        d.addBoth(shut)
        return d

    @staticmethod
    def _setup_connection(conn: psycopg.Connection) -> None:
        # Every room and history row is text; the server's own settings may differ.
        conn.execute("SET client_encoding = 'UTF8'")
        conn.commit()

    @classmethod
    def _setup_read_only(cls, conn: psycopg.Connection) -> None:
        conn.execute("SET default_transaction_read_only = on")
        cls._setup_connection(conn)

    def _check_version(self, txn: Any) -> None:
        txn.execute("SELECT to_regclass('dmuc_schema') IS NOT NULL")
        if not txn.fetchone()[0]:
            raise StoreAbsent(f"no dmuc tables in {self.display}")
        txn.execute("SELECT version FROM dmuc_schema")
        current = int(txn.fetchone()[0])
        if current != schema_version():
            raise StorageError(f"storage {self.display} has schema version {current}, not "
                               f"the {schema_version()} of this dmuc (a read-only open does "
                               "not migrate it)")

    def _migrate(self, txn: Any) -> None:
        target = schema_version()
        # The lock first: openers of one database queue here, so exactly one creates the
        # version table and runs the migrations; the others then find them done.
        txn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        current = _stored_version(txn)
        if current > target:
            raise StorageError(
                f"storage {self.display} has schema version {current}, newer than the "
                f"{target} this dmuc knows; upgrade dmuc"
            )
        for version in range(current, target):
            _run_migration(txn, MIGRATIONS[version])
        if current != target:
            txn.execute("UPDATE dmuc_schema SET version = %s", (target,))
        # runInteraction commits (and releases the lock).

    def _run(self, what: str, interaction: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Queue one interaction (one transaction); database errors become StorageError,
        except transient ones, which are retried (see _failed)."""
        if self._pool is None or self._closing:
            return defer.fail(StorageError(f"storage {self.display} is not open"))
        op = _Operation(what, interaction, args, Deferred())
        self._queue.append(op)
        if not self._busy:
            self._next()
        return op.done

    # -- the queue: operations run in issue order, those waiting together in one
    #    transaction (one commit instead of one each); the batch at the head is retried
    #    while the database is unreachable ---------------------------------------------

    def _next(self) -> None:
        self._retry_call = None
        if not self._queue:
            self._busy = False
            drained, self._drained = self._drained, []
            for d in drained:
                d.callback(None)
            return
        self._busy = True
        size = 1 if self._unbatched else MAX_BATCH
        batch = list(itertools.islice(self._queue, size))
        assert self._pool is not None
        self._pool.runInteraction(_run_batch, batch).addCallbacks(
            self._succeeded, self._failed, callbackArgs=(batch,), errbackArgs=(batch,))

    def _succeeded(self, results: list[object], batch: list[_Operation]) -> None:
        if self._failures:
            log.info("storage {db}: database reachable again after {n} failed attempts; "
                     "applying the {waited} operations that waited", db=self.display,
                     n=self._failures, waited=len(self._queue))
            self._failures = 0
        for _ in batch:
            self._queue.popleft()
        self._unbatched = max(0, self._unbatched - len(batch))
        for op, result in zip(batch, results):
            op.done.callback(result)
        self._next()

    def _failed(self, f: Failure, batch: list[_Operation]) -> None:
        op = batch[0]
        if not f.check(*TRANSIENT_ERRORS):
            if len(batch) > 1:
                # One of them failed and none was committed: run them one at a time, so
                # that only that one fails.
                self._unbatched = len(batch)
                self._next()
                return
            self._queue.popleft()
            self._unbatched = max(0, self._unbatched - 1)
            self._failures = 0
            if f.check(psycopg.Error):
                f = Failure(StorageError(
                    f"storage {self.display}: {op.what} failed: {_one_line(f.value)}"))
            op.done.errback(f)
            self._next()
            return
        self._failures += 1
        if self._give_up_at is not None and reactor.seconds() >= self._give_up_at:
            self._give_up(f)
            return
        delay = min(RETRY_FIRST_DELAY * 2 ** (self._failures - 1), RETRY_MAX_DELAY)
        if self._give_up_at is not None:
            delay = min(delay, max(0.0, self._give_up_at - reactor.seconds()))
        log.warn("storage {db}: {what} failed: {error}; {waiting} operations waiting, "
                 "retry {n} in {delay:.1f} s", db=self.display, what=op.what,
                 error=_one_line(f.value), waiting=len(self._queue), n=self._failures,
                 delay=delay)
        self._retry_call = reactor.callLater(delay, self._next)

    def _give_up(self, f: Failure) -> None:
        """close() ran out of patience: fail every queued operation, loudly, once."""
        dropped, self._queue = list(self._queue), deque()
        log.error("storage {db}: closing with {n} operations not applied, the database is "
                  "unreachable: {error}", db=self.display, n=len(dropped),
                  error=_one_line(f.value))
        self._failures = self._unbatched = 0
        for op in dropped:
            op.done.errback(StorageError(
                f"storage {self.display}: {op.what} not applied: database unreachable"))
        self._next()

    # -- rooms ----------------------------------------------------------------------

    def load_rooms(self, service: str) -> Deferred[list[RoomRecord]]:
        """All stored rooms of one MUC service, ordered by JID."""

        def q(txn: Any) -> list[RoomRecord]:
            # COLLATE "C": byte order, as SQLite's, whatever the database's locale
            txn.execute("SELECT jid, state FROM rooms WHERE service = %s"
                        ' ORDER BY jid COLLATE "C"', (service,))
            return [RoomRecord(jid=jid, state=_loads(state)) for jid, state in txn.fetchall()]

        return self._run("load_rooms", q)

    def save_room(self, service: str, record: RoomRecord) -> Deferred[None]:
        """Insert or replace one room's state."""
        state = _dumps(record.state)  # serialise now: later mutations must not leak in

        def q(txn: Any) -> None:
            txn.execute(
                "INSERT INTO rooms (service, jid, state) VALUES (%s, %s, %s) "
                "ON CONFLICT (service, jid) DO UPDATE SET state = excluded.state",
                (service, record.jid, state),
            )

        return self._run("save_room", q)

    def delete_room(self, service: str, room_jid: str,
                    history_key: str | None = None) -> Deferred[None]:
        """Remove a room with its history (kept under `history_key`, default the room JID)."""

        def q(txn: Any) -> None:
            txn.execute("DELETE FROM rooms WHERE service = %s AND jid = %s", (service, room_jid))
            txn.execute("DELETE FROM history WHERE room = %s", (history_key or room_jid,))

        return self._run("delete_room", q)

    # -- history --------------------------------------------------------------------

    def append_history(self, room_jid: str, record: HistoryRecord, keep: int) -> Deferred[None]:
        """Append one entry and trim the room's history to its newest `keep` entries."""
        if keep < 0:
            return defer.fail(ValueError(f"keep must be >= 0, not {keep}"))
        row = (room_jid, float(record.stamp), record.xml, _dumps(record.extra))

        def q(txn: Any) -> None:
            txn.execute("INSERT INTO history (room, stamp, xml, extra) VALUES (%s, %s, %s, %s)",
                        row)
            # Delete everything up to the (keep+1)-th newest id; none if there are fewer.
            txn.execute(
                "DELETE FROM history WHERE room = %s AND id <= ("
                " SELECT id FROM history WHERE room = %s ORDER BY id DESC LIMIT 1 OFFSET %s)",
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
                " SELECT id, stamp, xml, extra FROM history WHERE room = %s"
                " ORDER BY id DESC LIMIT %s) AS newest ORDER BY id",
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
            txn.execute("DELETE FROM history WHERE room = %s", (room_jid,))

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
                " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (room, sid) DO NOTHING",
                rows)

        return self._run("append_archive", q)

    def query_archive(self, room_jid: str, query: ArchiveQuery) -> Deferred[ArchivePage]:
        """One page of a room's archive (see select_archive_page)."""
        return self._run("query_archive", select_archive_page, room_jid, query, "%s")

    def retract_archive(self, room_jid: str, sid: str, tombstone_xml: str) -> Deferred[bool]:
        """Replace an archived message with its tombstone; whether it was there."""

        def q(txn: Any) -> bool:
            txn.execute("UPDATE archive SET xml = %s, retracted = 1"
                        " WHERE room = %s AND sid = %s", (tombstone_xml, room_jid, sid))
            return bool(txn.rowcount and txn.rowcount > 0)

        return self._run("retract_archive", q)

    def expire_archive(self, older_than: float) -> Deferred[int]:
        """Delete every room's archived messages said before `older_than`; how many."""

        def q(txn: Any) -> int:
            txn.execute("DELETE FROM archive WHERE stamp < %s", (float(older_than),))
            return max(txn.rowcount or 0, 0)

        return self._run("expire_archive", q)

    def delete_archive(self, room_jid: str) -> Deferred[None]:
        """Forget a room's archive (the room was destroyed)."""

        def q(txn: Any) -> None:
            txn.execute("DELETE FROM archive WHERE room = %s", (room_jid,))

        return self._run("delete_archive", q)
