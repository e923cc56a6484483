"""The PostgreSQL backend of the storage adapter (the SQL itself is dmuc.storage.sql).

The driver is psycopg 3 (blocking API) on a Twisted ``adbapi`` pool with exactly one
connection and one thread, as the SQLite adapter: interactions execute one at a time in
the order they were issued, and the daemons keep Twisted's default reactor (psycopg's
async API would need the asyncio reactor under every daemon for no gain here).

The schema version lives in the table ``dmuc_schema`` (PostgreSQL has no user_version);
the migrations bring a database up to date inside one transaction that first takes
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
import re
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from twisted.enterprise import adbapi
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dmuc.errors import StorageError
from dmuc.log import get_logger
from dmuc.storage.sql import Dialect, SQLStorage, migrate, one_line, schema_version

log = get_logger("dmuc.storage")

_T = TypeVar("_T")

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


def _stored_version(txn: Any) -> int:
    """The version in dmuc_schema, which is created (at 0) in an empty database."""
    txn.execute("SELECT to_regclass('dmuc_schema') IS NOT NULL")
    if not txn.fetchone()[0]:
        txn.execute("CREATE TABLE dmuc_schema (version INTEGER NOT NULL)")
        txn.execute("INSERT INTO dmuc_schema (version) VALUES (0)")
        return 0
    txn.execute("SELECT version FROM dmuc_schema")
    return int(txn.fetchone()[0])


DIALECT = Dialect(mark="%s", types={"serial": "BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
                                    "real": "DOUBLE PRECISION"},
                  byte_order='"C"',  # as SQLite's BINARY, whatever the database's locale
                  statements=lambda script: [script])  # psycopg runs a script as one


_URL_PASSWORD = re.compile(r"^(postgres(?:ql)?://[^:@/?#]*):[^@/?#]*@")
_QUERY_PASSWORD = re.compile(r"(?<=[?&])password=[^&#]*(&|$)")


def without_password(url: str) -> str:
    """A PostgreSQL URL as it may appear in a log line or an error: without its password
    (in the user part or as a query parameter)."""
    url = _URL_PASSWORD.sub(r"\1@", url)
    url = _QUERY_PASSWORD.sub("", url)
    return url.rstrip("?&")


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


class PostgresStorage(SQLStorage):
    """Rooms and history in one PostgreSQL database, which master and slaves may share."""

    dialect = DIALECT
    URL_SCHEMES = URL_SCHEMES

    def __init__(self, conninfo: str, display: str) -> None:
        super().__init__(display)  # the URL without its password, for log lines
        self.conninfo = conninfo
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
                               f"{one_line(exc)}") from exc
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

    url_for_log = staticmethod(without_password)

    # -- lifecycle ------------------------------------------------------------------

    def _connect(self, read_only: bool) -> _Pool:
        return _Pool(
            "psycopg",
            self.conninfo,
            cp_min=1,
            cp_max=1,  # one connection, one thread: issue order is execution order
            cp_openfun=self._setup_read_only if read_only else self._setup_connection,
        )

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
            self._pool, self._closing, self._give_up_at = None, False, None
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

    def _read_version(self, txn: Any) -> int | None:
        txn.execute("SELECT to_regclass('dmuc_schema') IS NOT NULL")
        if not txn.fetchone()[0]:
            return None
        txn.execute("SELECT version FROM dmuc_schema")
        return int(txn.fetchone()[0])

    def _migrate(self, txn: Any) -> None:
        # The lock first: openers of one database queue here, so exactly one creates the
        # version table and runs the migrations; the others then find them done.
        txn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        if migrate(txn, self.dialect, _stored_version(txn), self.display):
            txn.execute("UPDATE dmuc_schema SET version = %s", (schema_version(),))
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
                    f"storage {self.display}: {op.what} failed: {one_line(f.value)}"))
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
                 error=one_line(f.value), waiting=len(self._queue), n=self._failures,
                 delay=delay)
        self._retry_call = reactor.callLater(delay, self._next)

    def _give_up(self, f: Failure) -> None:
        """close() ran out of patience: fail every queued operation, loudly, once."""
        dropped, self._queue = list(self._queue), deque()
        log.error("storage {db}: closing with {n} operations not applied, the database is "
                  "unreachable: {error}", db=self.display, n=len(dropped),
                  error=one_line(f.value))
        self._failures = self._unbatched = 0
        for op in dropped:
            op.done.errback(StorageError(
                f"storage {self.display}: {op.what} not applied: database unreachable"))
        self._next()
