"""The SQL of the storage adapters, written once: the schema with its migrations, and every
query on rooms, history and the room archive (XEP-0313).

Plain DB-API. A backend names its `Dialect` (parameter mark, the two column types that
differ, how a migration script is split into statements) and how an interaction runs in
one transaction (`SQLStorage._run`); `SQLStorage` is the Storage interface on top of
that, so a new backend is one small file (sqlite.py, postgres.py).
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from dmuc.errors import ArchiveIdNotFound, StorageError, StoreAbsent
from dmuc.records import (
    ArchivePage,
    ArchiveQuery,
    ArchiveRecord,
    HistoryRecord,
    OccupantRecord,
    RoomRecord,
)

_T = TypeVar("_T")


@dataclass(frozen=True)
class Dialect:
    """What differs between two SQL databases, as far as dmuc's SQL goes."""

    mark: str  # the DB-API parameter mark: "?" (sqlite3) or "%s" (psycopg)
    # The column types the migrations name as {serial} (an ascending integer primary key)
    # and {real} (a double).
    types: Mapping[str, str]
    byte_order: str  # the collation that sorts text by bytes, whatever the locale
    statements: Callable[[str], list[str]]  # a migration script as execute() takes it


# A migration is SQL text (statements separated by ';', with {serial} and {real} for the
# dialect's types) or a callable that gets the DB-API cursor of the migration transaction.
# Entry i upgrades version i to i + 1.
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
        id {serial},
        room TEXT NOT NULL,
        stamp {real} NOT NULL,
        xml TEXT NOT NULL,
        extra TEXT  -- JSON object
    );
    CREATE INDEX history_room_id ON history (room, id);
    """,
    # 2: the room archive (XEP-0313), kept by stanza-id, in the order the room said it.
    """
    CREATE TABLE archive (
        id {serial},
        room TEXT NOT NULL,
        sid TEXT NOT NULL,  -- the XEP-0359 stanza-id the room gave the message
        stamp {real} NOT NULL,
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
    # 3: the master's occupants reached directly (not through a slave), one row each, so
    # that a master restarted after a crash still has them in its rooms
    # (docs/protocol.md §4.11.5).
    """
    CREATE TABLE occupants (
        service TEXT NOT NULL,
        room TEXT NOT NULL,
        nick TEXT NOT NULL,
        state TEXT NOT NULL,  -- JSON object
        PRIMARY KEY (service, room, nick)
    );
    """,
]


def schema_version() -> int:
    """The schema version this code creates: the number of migrations."""
    return len(MIGRATIONS)


def run_migration(txn: Any, dialect: Dialect, migration: Migration) -> None:
    if callable(migration):
        migration(txn)
    else:
        for statement in dialect.statements(migration.format_map(dialect.types)):
            txn.execute(statement)


def migrate(txn: Any, dialect: Dialect, current: int, where: str) -> bool:
    """Bring a database at version `current` to schema_version(), in the caller's
    transaction; whether anything was run. A newer database is refused."""
    target = schema_version()
    if current > target:
        raise StorageError(f"storage {where} has schema version {current}, newer than the "
                           f"{target} this dmuc knows; upgrade dmuc")
    for version in range(current, target):
        run_migration(txn, dialect, MIGRATIONS[version])
    return current != target


def one_line(text: object) -> str:
    return " ".join(str(text).split())


def _dumps(value: dict[str, Any]) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _loads(text: str | None) -> dict[str, Any]:
    if not text:
        return {}
    value = json.loads(text)
    return value if isinstance(value, dict) else {}


def _occupant_rows(records: Sequence[OccupantRecord | tuple[str, str]]
                   ) -> list[tuple[str, str, str | None]]:
    """(room, key, serialised state), or (room, key, None) for a row to delete."""
    return [(r.room_jid, r.nick, _dumps(r.state)) if isinstance(r, OccupantRecord)
            else (r[0], r[1], None) for r in records]


# -- the queries: each is one interaction, (cursor, dialect, arguments) ---------------------


def select_rooms(txn: Any, d: Dialect, service: str) -> list[RoomRecord]:
    txn.execute(f"SELECT jid, state FROM rooms WHERE service = {d.mark}"
                f" ORDER BY jid COLLATE {d.byte_order}", (service,))
    return [RoomRecord(jid=jid, state=_loads(state)) for jid, state in txn.fetchall()]


def upsert_room(txn: Any, d: Dialect, service: str, jid: str, state: str) -> None:
    # An upsert, not REPLACE: REPLACE deletes the row (and would cascade).
    txn.execute(f"INSERT INTO rooms (service, jid, state) VALUES ({d.mark}, {d.mark}, {d.mark})"
                " ON CONFLICT (service, jid) DO UPDATE SET state = excluded.state",
                (service, jid, state))


def upsert_room_with_entries(txn: Any, d: Dialect, service: str, jid: str, state: str,
                             rows: Sequence[tuple[str, str, str | None]]) -> None:
    upsert_room(txn, d, service, jid, state)
    if rows:
        write_occupants(txn, d, service, rows)


def delete_room(txn: Any, d: Dialect, service: str, jid: str, history_key: str) -> None:
    txn.execute(f"DELETE FROM rooms WHERE service = {d.mark} AND jid = {d.mark}", (service, jid))
    delete_history(txn, d, history_key)


def select_occupants(txn: Any, d: Dialect, service: str) -> list[OccupantRecord]:
    txn.execute(f"SELECT room, nick, state FROM occupants WHERE service = {d.mark}"
                f" ORDER BY room COLLATE {d.byte_order}, nick COLLATE {d.byte_order}",
                (service,))
    return [OccupantRecord(room_jid=room, nick=nick, state=_loads(state))
            for room, nick, state in txn.fetchall()]


def write_occupants(txn: Any, d: Dialect, service: str,
                    rows: Sequence[tuple[str, str, str | None]]) -> None:
    """Each (room, nick, state): stored, or forgotten where the state is None."""
    m = d.mark
    kept = [(service, room, nick, state) for room, nick, state in rows if state is not None]
    gone = [(service, room, nick) for room, nick, state in rows if state is None]
    if gone:
        txn.executemany(f"DELETE FROM occupants WHERE service = {m} AND room = {m}"
                        f" AND nick = {m}", gone)
    if kept:
        txn.executemany(f"INSERT INTO occupants (service, room, nick, state)"
                        f" VALUES ({m}, {m}, {m}, {m})"
                        " ON CONFLICT (service, room, nick) DO UPDATE SET state = excluded.state",
                        kept)


def delete_occupants(txn: Any, d: Dialect, service: str, room: str) -> None:
    txn.execute(f"DELETE FROM occupants WHERE service = {d.mark} AND room = {d.mark}",
                (service, room))


def insert_history(txn: Any, d: Dialect, row: tuple[str, float, str, str], keep: int) -> None:
    m = d.mark
    txn.execute(f"INSERT INTO history (room, stamp, xml, extra) VALUES ({m}, {m}, {m}, {m})",
                row)
    # Delete everything up to the (keep+1)-th newest id; none if there are fewer.
    txn.execute(f"DELETE FROM history WHERE room = {m} AND id <= ("
                f" SELECT id FROM history WHERE room = {m} ORDER BY id DESC LIMIT 1 OFFSET {m})",
                (row[0], row[0], keep))


def select_history(txn: Any, d: Dialect, key: str, limit: int) -> list[HistoryRecord]:
    txn.execute("SELECT stamp, xml, extra FROM ("
                f" SELECT id, stamp, xml, extra FROM history WHERE room = {d.mark}"
                f" ORDER BY id DESC LIMIT {d.mark}) AS newest ORDER BY id", (key, limit))
    return [HistoryRecord(stamp=stamp, xml=xml, extra=_loads(extra))
            for stamp, xml, extra in txn.fetchall()]


def delete_history(txn: Any, d: Dialect, key: str) -> None:
    txn.execute(f"DELETE FROM history WHERE room = {d.mark}", (key,))


def insert_archive(txn: Any, d: Dialect, rows: list[tuple[Any, ...]]) -> None:
    marks = ", ".join([d.mark] * 7)
    txn.executemany("INSERT INTO archive (room, sid, stamp, nick, sender, xml, retracted)"
                    f" VALUES ({marks}) ON CONFLICT (room, sid) DO NOTHING", rows)


def retract_archived(txn: Any, d: Dialect, room_jid: str, sid: str, tombstone: str) -> bool:
    txn.execute(f"UPDATE archive SET xml = {d.mark}, retracted = 1"
                f" WHERE room = {d.mark} AND sid = {d.mark}", (tombstone, room_jid, sid))
    return bool(txn.rowcount and txn.rowcount > 0)


def delete_archive_before(txn: Any, d: Dialect, older_than: float, room_jid: str | None) -> int:
    if room_jid is None:
        txn.execute(f"DELETE FROM archive WHERE stamp < {d.mark}", (older_than,))
    else:
        txn.execute(f"DELETE FROM archive WHERE room = {d.mark} AND stamp < {d.mark}",
                    (room_jid, older_than))
    return max(txn.rowcount or 0, 0)


def delete_archive(txn: Any, d: Dialect, room_jid: str) -> None:
    txn.execute(f"DELETE FROM archive WHERE room = {d.mark}", (room_jid,))


def _archive_position(txn: Any, d: Dialect, room_jid: str, sid: str) -> int:
    txn.execute(f"SELECT id FROM archive WHERE room = {d.mark} AND sid = {d.mark}",
                (room_jid, sid))
    row = txn.fetchone()
    if row is None:
        raise ArchiveIdNotFound(f"no message {sid!r} in the archive of {room_jid}")
    return int(row[0])


def _archive_filters(d: Dialect, room_jid: str,
                     query: ArchiveQuery) -> tuple[list[str], list[Any]]:
    """The WHERE terms of a query's filters (start, end, with, ids) and their parameters."""
    where, params = [f"room = {d.mark}"], [room_jid]
    for column, op, value in (("stamp", ">=", query.start), ("stamp", "<=", query.end),
                              ("nick", "=", query.nick), ("sender", "=", query.sender)):
        if value is not None:
            where.append(f"{column} {op} {d.mark}")
            params.append(value)
    if query.ids is not None:
        where.append(f"sid IN ({', '.join(d.mark for _ in query.ids)})")
        params.extend(query.ids)
    return where, params


def select_archive_page(txn: Any, d: Dialect, room_jid: str, query: ArchiveQuery) -> ArchivePage:
    """A MAM page in one transaction, as Prosody's archive:find with limit max+1: the
    filters (start, end, with, ids) give `count`; `after` walks forward from a message,
    `before` (or `last`) backwards from one (or from the end); at most `max` messages,
    returned oldest first."""
    if query.ids is not None and not query.ids:
        return ArchivePage([], 0, True)
    where, params = _archive_filters(d, room_jid, query)
    filters = " AND ".join(where)
    txn.execute(f"SELECT COUNT(*) FROM archive WHERE {filters}", params)
    count = int(txn.fetchone()[0])
    for sid, op in ((query.after, ">"), (query.before, "<")):
        if sid is not None:
            where.append(f"id {op} {d.mark}")
            params.append(_archive_position(txn, d, room_jid, sid))
    backwards = query.before is not None or query.last
    txn.execute(
        "SELECT sid, stamp, nick, sender, xml, retracted FROM archive"
        f" WHERE {' AND '.join(where)} ORDER BY id {'DESC' if backwards else 'ASC'}"
        f" LIMIT {d.mark}", [*params, max(query.max, 0) + 1])
    rows = txn.fetchall()
    records = [ArchiveRecord(sid=sid, stamp=stamp, nick=nick, sender=sender, xml=xml,
                             retracted=bool(retracted))
               for sid, stamp, nick, sender, xml, retracted in rows[:max(query.max, 0)]]
    if backwards:
        records.reverse()
    return ArchivePage(records, count, len(rows) <= query.max)


class SQLStorage(ABC):
    """The Storage interface over the queries above. A backend sets `dialect` and
    `URL_SCHEMES`, builds itself `from_url`, and implements `_connect` (a new adbapi pool),
    `_migrate` (read the stored version, call `migrate`, store the new one), `_run` (queue
    one interaction) and `close`."""

    dialect: ClassVar[Dialect]
    URL_SCHEMES: ClassVar[tuple[str, ...]]

    def __init__(self, display: str) -> None:
        self.display = display  # how log lines and errors name the database
        self._pool: Any = None  # the adbapi pool while open

    @classmethod
    @abstractmethod
    def from_url(cls, url: str) -> SQLStorage:
        """The backend for a storage URL of one of its URL_SCHEMES."""

    @staticmethod
    def url_for_log(url: str) -> str:
        """A storage URL as log lines show it (never a password)."""
        return url

    def check(self) -> None:
        """Raise StorageError if the configured store cannot work, as far as can be told
        without opening it (the configuration check). By default nothing can be told."""
        return None

    @abstractmethod
    def _connect(self, read_only: bool) -> Any:
        """A new adbapi pool; `read_only`: one that cannot write (StoreAbsent if there is no
        store to open)."""

    @abstractmethod
    def _migrate(self, txn: Any) -> None:
        """Read the stored version, call `migrate`, store the new one (in `txn`)."""

    @abstractmethod
    def _read_version(self, txn: Any) -> int | None:
        """The stored schema version without writing anything; None: no dmuc schema."""

    def _check_version(self, txn: Any) -> None:
        """A read-only open: the store must be there, at this code's version (a read-only
        open never migrates)."""
        current = self._read_version(txn)
        if current is None:
            raise StoreAbsent(f"no dmuc store in {self.display}")
        if current != schema_version():
            raise StorageError(f"storage {self.display} has schema version {current}, not "
                               f"the {schema_version()} of this dmuc (a read-only open does "
                               "not migrate it)")

    @abstractmethod
    def _run(self, what: str, interaction: Callable[..., _T], *args: Any) -> Deferred[_T]:
        """Queue one interaction on the pool (`what` names it in log lines)."""

    @abstractmethod
    def close(self) -> Deferred[None]:
        """Close the pool once the queued writes are done."""

    # -- lifecycle ------------------------------------------------------------------------

    def open(self, read_only: bool = False) -> Deferred[None]:
        """Create the pool, then create or migrate the schema to the current version; or,
        `read_only` (dmuc-admin's dry run), open an existing store at the current version
        and write nothing: no file, no table, no migration (StoreAbsent if there is no
        store). The database must be usable now: a daemon that cannot open it exits."""
        if self._pool is not None:
            return defer.fail(StorageError(f"storage {self.display} is already open"))
        try:
            pool = self._connect(read_only)
        except StorageError as exc:
            return defer.fail(exc)
        except OSError as exc:
            return defer.fail(StorageError(f"cannot open storage {self.display}: {exc}"))
        self._pool = pool
        d = pool.runInteraction(self._check_version if read_only else self._migrate)

        def failed(f: Failure) -> Failure:
            # Leave no threads behind; report the database and the reason.
            self._pool = None
            pool.close()
            if f.check(StorageError):
                return f
            return Failure(StorageError(
                f"cannot open storage {self.display}: {one_line(f.value)}"))

        d.addErrback(failed)
        return d

    # -- rooms ----------------------------------------------------------------------------

    def load_rooms(self, service: str) -> Deferred[list[RoomRecord]]:
        """All stored rooms of one MUC service, ordered by JID (byte order)."""
        return self._run("load_rooms", select_rooms, self.dialect, service)

    def save_room(self, service: str, record: RoomRecord,
                  entries: Sequence[OccupantRecord | tuple[str, str]] = ()) -> Deferred[None]:
        """Insert or replace one room's state, and write its entry rows (stored, or
        forgotten for a (room, key)) in the same transaction."""
        state = _dumps(record.state)  # serialise now: later mutations must not leak in
        if not entries:
            return self._run("save_room", upsert_room, self.dialect, service, record.jid,
                             state)
        return self._run("save_room", upsert_room_with_entries, self.dialect, service,
                         record.jid, state, _occupant_rows(entries))

    def delete_room(self, service: str, room_jid: str,
                    history_key: str | None = None) -> Deferred[None]:
        """Remove a room with its history (kept under `history_key`, default the room JID)."""
        return self._run("delete_room", delete_room, self.dialect, service, room_jid,
                         history_key or room_jid)

    # -- the master's occupants reached directly ------------------------------------------

    def load_occupants(self, service: str) -> Deferred[list[OccupantRecord]]:
        """Every stored occupant of one MUC service, by room and nick (byte order)."""
        return self._run("load_occupants", select_occupants, self.dialect, service)

    def save_occupants(self, service: str,
                       records: Sequence[OccupantRecord | tuple[str, str]]) -> Deferred[None]:
        """In one transaction: store each OccupantRecord, forget each (room, nick)."""
        return self._run("save_occupants", write_occupants, self.dialect, service,
                         _occupant_rows(records))

    def forget_occupants(self, service: str, room_jid: str) -> Deferred[None]:
        """Forget every stored occupant of a room."""
        return self._run("forget_occupants", delete_occupants, self.dialect, service, room_jid)

    # -- history --------------------------------------------------------------------------

    def append_history(self, room_jid: str, record: HistoryRecord, keep: int) -> Deferred[None]:
        """Append one entry and trim the room's history to its newest `keep` entries."""
        if keep < 0:
            return defer.fail(ValueError(f"keep must be >= 0, not {keep}"))
        row = (room_jid, float(record.stamp), record.xml, _dumps(record.extra))
        return self._run("append_history", insert_history, self.dialect, row, keep)

    def load_history(self, room_jid: str, limit: int) -> Deferred[list[HistoryRecord]]:
        """The newest `limit` entries of a room, oldest first."""
        if limit < 0:
            return defer.fail(ValueError(f"limit must be >= 0, not {limit}"))
        return self._run("load_history", select_history, self.dialect, room_jid, limit)

    def clear_history(self, room_jid: str) -> Deferred[None]:
        """Delete a room's history, keeping the room."""
        return self._run("clear_history", delete_history, self.dialect, room_jid)

    # -- the room archive (XEP-0313) ------------------------------------------------------

    def append_archive(self, entries: Sequence[tuple[str, ArchiveRecord]]) -> Deferred[None]:
        """Add messages, each (room JID, record), to the rooms' archives, in order, in one
        transaction (a stanza-id already there is kept)."""
        rows = [(room_jid, r.sid, float(r.stamp), r.nick, r.sender, r.xml, int(r.retracted))
                for room_jid, r in entries]
        return self._run("append_archive", insert_archive, self.dialect, rows)

    def query_archive(self, room_jid: str, query: ArchiveQuery) -> Deferred[ArchivePage]:
        """One page of a room's archive; fails with ArchiveIdNotFound for an unknown
        after/before id."""
        return self._run("query_archive", select_archive_page, self.dialect, room_jid, query)

    def retract_archive(self, room_jid: str, sid: str, tombstone_xml: str) -> Deferred[bool]:
        """Replace an archived message with its tombstone; whether it was there."""
        return self._run("retract_archive", retract_archived, self.dialect, room_jid, sid,
                         tombstone_xml)

    def expire_archive(self, older_than: float,
                       room_jid: str | None = None) -> Deferred[int]:
        """Delete every room's archived messages said before `older_than` (or only those
        of the archive `room_jid`); how many."""
        return self._run("expire_archive", delete_archive_before, self.dialect,
                         float(older_than), room_jid)

    def delete_archive(self, room_jid: str) -> Deferred[None]:
        """Forget a room's archive (the room was destroyed)."""
        return self._run("delete_archive", delete_archive, self.dialect, room_jid)
