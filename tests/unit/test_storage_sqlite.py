"""Tests for the storage adapters (their SQL: dmuc.storage.sql): SQLite (dmuc.storage.sqlite)
and, for every test that takes ``storage_url``, PostgreSQL (dmuc.storage.postgres) on the
session's real server."""

from __future__ import annotations

import os
import re
import sqlite3
from pathlib import Path

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer

from dmuc.config import ConfigError, load_master_config
from dmuc.errors import StorageError
from dmuc.protocol import stanzas
from dmuc.records import HistoryRecord, OccupantRecord, RoomRecord
from dmuc.slave.room import RosterEntry, SlaveRoom
from dmuc.storage import PostgresStorage, Storage, open_storage, sql, url_for_log
from dmuc.storage.sqlite import SQLiteStorage

SERVICE = "muc.example.org"
OTHER_SERVICE = "chat.example.net"
ROOM = "room@muc.example.org"
ROOM2 = "other@muc.example.org"


def _url(path: Path) -> str:
    return f"sqlite://{path}"  # path is absolute, so this is sqlite:///...


def _record(n: int, **extra: object) -> HistoryRecord:
    return HistoryRecord(stamp=1000.0 + n, xml=f"<message><body>m{n}</body></message>", extra=extra)


@defer.inlineCallbacks
def _opened(where: Path | str):
    """Open the storage of a URL, or of an SQLite file."""
    store = open_storage(where if isinstance(where, str) else _url(where))
    yield store.open()
    return store


# -- what differs between the backends, for the tests that look into the database itself


def _is_sqlite(url: str) -> bool:
    return url.startswith("sqlite:")


def _query(url: str, sql: str, *args: object) -> list[tuple]:
    """Run one statement on a database outside the adapter; ? placeholders."""
    if _is_sqlite(url):
        with sqlite3.connect(url[len("sqlite://"):]) as conn:
            rows = conn.execute(sql, args).fetchall()
        conn.close()
        return rows
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(sql.replace("?", "%s"), args)
        return cur.fetchall() if cur.description else []


def _stored_version(url: str) -> int:
    if _is_sqlite(url):
        return _query(url, "PRAGMA user_version")[0][0]
    return _query(url, "SELECT version FROM dmuc_schema")[0][0]


def _set_version(url: str, version: int) -> None:
    if _is_sqlite(url):
        _query(url, f"PRAGMA user_version = {version}")
    else:
        _query(url, "CREATE TABLE dmuc_schema (version INTEGER NOT NULL)")
        _query(url, "INSERT INTO dmuc_schema (version) VALUES (?)", version)


def _tables(url: str) -> set[str]:
    if _is_sqlite(url):
        return {r[0] for r in _query(url, "SELECT name FROM sqlite_master")}
    return {r[0] for r in _query(
        url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}


def _count_history(store: Storage, room: str):
    sql = "SELECT count(*) FROM history WHERE room = " + (
        "?" if isinstance(store, SQLiteStorage) else "%s")
    return store._pool.runQuery(sql, (room,))


# -- URLs --------------------------------------------------------------------------


def test_from_url_absolute(tmp_path: Path) -> None:
    store = open_storage(_url(tmp_path / "a" / "m.db"))
    assert isinstance(store, SQLiteStorage)
    assert store.path == str(tmp_path / "a" / "m.db")


def test_from_url_relative_and_memory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert SQLiteStorage.from_url("sqlite:data/m.db").path == str(tmp_path / "data" / "m.db")
    assert SQLiteStorage.from_url("sqlite::memory:").path == ":memory:"
    assert SQLiteStorage.from_url("sqlite:///:memory:").path == ":memory:"


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:",
        "sqlite://",
        "sqlite:///",
        "sqlite:///var/lib/dmuc/",
        "sqlite://host/var/lib/m.db",
        "sqlite:///var/m.db?mode=ro",
        "sqlite:///var/m.db#frag",
        "postgres://localhost/dmuc",
        "/var/lib/m.db",
    ],
)
def test_bad_urls(url: str) -> None:
    with pytest.raises(StorageError) as info:
        SQLiteStorage.from_url(url)
    assert repr(url) in str(info.value)


def test_open_storage_unknown_scheme() -> None:
    with pytest.raises(StorageError, match="unsupported storage URL scheme 'mysql'"):
        open_storage("mysql://x/y")


# The one switch from a URL's scheme to its backend: what open_storage builds, what log
# lines show, and what the configuration check says, for each scheme.
SCHEMES = [
    ("sqlite:///var/lib/dmuc/m.db", SQLiteStorage, "sqlite:///var/lib/dmuc/m.db", None),
    ("sqlite::memory:", SQLiteStorage, "sqlite::memory:", None),
    ("postgresql://dmuc:pw@db/dmuc", PostgresStorage, "postgresql://dmuc@db/dmuc", None),
    ("postgres://dmuc@db/dmuc?password=pw", PostgresStorage, "postgres://dmuc@db/dmuc", None),
    ("mysql://dmuc@db/dmuc", None, "mysql://dmuc@db/dmuc",
     "unsupported storage URL scheme 'mysql' (supported: sqlite, postgresql)"),
    ("postgresql://dmuc@db/", None, "postgresql://dmuc@db/", "no database name"),
]


@pytest.mark.parametrize(("url", "backend", "shown", "refusal"), SCHEMES)
def test_one_scheme_switch(tmp_path: Path, url: str, backend: type | None, shown: str,
                           refusal: str | None) -> None:
    assert url_for_log(url) == shown
    config = tmp_path / "dmuc.toml"
    config.write_text(f'[component]\njid = "channel.avalon.irc"\nsecret = "s"\n'
                      f'[storage]\nurl = "{url}"\n')
    if refusal is None:
        assert type(open_storage(url)) is backend
        if backend is PostgresStorage:  # /var/lib/dmuc need not be writable for the tester
            assert load_master_config(str(config)).storage_url == url
        return
    with pytest.raises(StorageError, match=re.escape(refusal)):
        open_storage(url)
    with pytest.raises(ConfigError) as err:
        load_master_config(str(config))
    assert err.value.key == "storage.url" and refusal in err.value.reason


# -- opening and schema --------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_open_creates_the_schema(tmp_path: Path):
    path = tmp_path / "m.db"
    store = yield _opened(path)
    try:
        assert path.is_file()
    finally:
        yield store.close()
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == len(sql.MIGRATIONS)
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"rooms", "history"} <= tables
    assert "history_room_id" in indexes


@pytest_twisted.inlineCallbacks
def test_connection_pragmas(tmp_path: Path):
    store = yield _opened(tmp_path / "m.db")
    try:
        rows = yield store._pool.runQuery("PRAGMA foreign_keys")
        assert rows[0][0] == 1
        rows = yield store._pool.runQuery("PRAGMA synchronous")
        assert rows[0][0] == 1  # NORMAL
        rows = yield store._pool.runQuery("PRAGMA cache_size")
        assert rows[0][0] == -128  # KiB: a small page cache (issue 19, memory)
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_open_creates_schema(storage_url: str):
    store = yield _opened(storage_url)
    yield store.close()
    assert _stored_version(storage_url) == len(sql.MIGRATIONS)
    assert {"rooms", "history"} <= _tables(storage_url)


@pytest_twisted.inlineCallbacks
def test_too_new_schema_rejected(storage_url: str):
    _set_version(storage_url, len(sql.MIGRATIONS) + 1)
    store = open_storage(storage_url)
    with pytest.raises(StorageError, match="newer"):
        yield store.open()
    # The failed open leaves the storage closed.
    with pytest.raises(StorageError, match="not open"):
        yield store.load_rooms(SERVICE)


@pytest_twisted.inlineCallbacks
def test_later_migration_applied_on_reopen(storage_url: str, monkeypatch: pytest.MonkeyPatch):
    store = yield _opened(storage_url)
    yield store.save_room(SERVICE, RoomRecord(ROOM, {"a": 1}))
    yield store.close()

    def add_row(cursor) -> None:
        cursor.execute("INSERT INTO roster (jid) VALUES ('u@example.org')")

    migrations = [
        *sql.MIGRATIONS,
        "CREATE TABLE roster (jid TEXT PRIMARY KEY); CREATE INDEX roster_jid ON roster (jid);",
        add_row,
    ]
    monkeypatch.setattr(sql, "MIGRATIONS", migrations)
    store = yield _opened(storage_url)
    try:
        rows = yield store._pool.runQuery("SELECT jid FROM roster")
        assert rows == [("u@example.org",)]
        rooms = yield store.load_rooms(SERVICE)
        assert rooms == [RoomRecord(ROOM, {"a": 1})]
    finally:
        yield store.close()
    assert _stored_version(storage_url) == len(migrations)


@pytest_twisted.inlineCallbacks
def test_failing_migration_rolls_back(storage_url: str, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(
        sql,
        "MIGRATIONS",
        [*sql.MIGRATIONS, "CREATE TABLE extra (x INTEGER); SELECT * FROM nosuchtable;"],
    )
    store = open_storage(storage_url)
    with pytest.raises(StorageError, match="nosuchtable"):
        yield store.open()
    # Nothing of the failed upgrade is left: not even migration 1 (nor a version table).
    assert _tables(storage_url) == set()
    if _is_sqlite(storage_url):
        assert _stored_version(storage_url) == 0


@pytest_twisted.inlineCallbacks
def test_unwritable_path(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    path = blocker / "sub" / "m.db"
    store = SQLiteStorage.from_url(_url(path))
    with pytest.raises(StorageError) as info:
        yield store.open()
    assert str(path) in str(info.value)
    assert "cannot open storage" in str(info.value)


@pytest_twisted.inlineCallbacks
def test_not_a_database(tmp_path: Path):
    path = tmp_path / "m.db"
    path.write_bytes(b"this is not an sqlite database file, just some bytes" * 100)
    store = SQLiteStorage.from_url(_url(path))
    with pytest.raises(StorageError) as info:
        yield store.open()
    assert str(path) in str(info.value)


@pytest_twisted.inlineCallbacks
def test_open_twice_and_close_twice(storage_url: str):
    store = yield _opened(storage_url)
    with pytest.raises(StorageError, match="already open"):
        yield store.open()
    yield store.close()
    yield store.close()  # idempotent
    with pytest.raises(StorageError, match="not open"):
        yield store.save_room(SERVICE, RoomRecord(ROOM, {}))


# -- rooms ---------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_rooms_round_trip(storage_url: str):
    store = yield _opened(storage_url)
    try:
        assert (yield store.load_rooms(SERVICE)) == []
        state = {
            "config": {"name": "Café ☕", "persistent": True},
            "affiliations": {"a@b": "owner"},
        }
        yield store.save_room(SERVICE, RoomRecord(ROOM, state))
        yield store.save_room(SERVICE, RoomRecord(ROOM2, {"x": [1, 2]}))
        rooms = yield store.load_rooms(SERVICE)
        assert rooms == [RoomRecord(ROOM2, {"x": [1, 2]}), RoomRecord(ROOM, state)]

        # Replace.
        yield store.save_room(SERVICE, RoomRecord(ROOM, {"config": {"name": "new"}}))
        rooms = yield store.load_rooms(SERVICE)
        assert RoomRecord(ROOM, {"config": {"name": "new"}}) in rooms
        assert len(rooms) == 2

        # Delete.
        yield store.delete_room(SERVICE, ROOM)
        assert (yield store.load_rooms(SERVICE)) == [RoomRecord(ROOM2, {"x": [1, 2]})]
        yield store.delete_room(SERVICE, "missing@muc.example.org")  # no error
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_save_room_snapshots_state(storage_url: str):
    store = yield _opened(storage_url)
    try:
        state = {"n": 1}
        d = store.save_room(SERVICE, RoomRecord(ROOM, state))
        state["n"] = 2  # mutated before the write ran
        yield d
        assert (yield store.load_rooms(SERVICE)) == [RoomRecord(ROOM, {"n": 1})]
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_services_are_separate(storage_url: str):
    store = yield _opened(storage_url)
    try:
        yield store.save_room(SERVICE, RoomRecord(ROOM, {"s": 1}))
        yield store.save_room(OTHER_SERVICE, RoomRecord(ROOM, {"s": 2}))
        assert (yield store.load_rooms(SERVICE)) == [RoomRecord(ROOM, {"s": 1})]
        assert (yield store.load_rooms(OTHER_SERVICE)) == [RoomRecord(ROOM, {"s": 2})]
        yield store.delete_room(OTHER_SERVICE, ROOM)
        assert (yield store.load_rooms(OTHER_SERVICE)) == []
        assert (yield store.load_rooms(SERVICE)) == [RoomRecord(ROOM, {"s": 1})]
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_delete_room_deletes_history(storage_url: str):
    store = yield _opened(storage_url)
    try:
        yield store.save_room(SERVICE, RoomRecord(ROOM, {}))
        yield store.append_history(ROOM, _record(1), keep=10)
        yield store.append_history(ROOM2, _record(2), keep=10)
        yield store.delete_room(SERVICE, ROOM)
        assert (yield store.load_history(ROOM, 10)) == []
        assert (yield store.load_history(ROOM2, 10)) == [_record(2)]
    finally:
        yield store.close()


# -- history -------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_history_order_limit_and_extra(storage_url: str):
    store = yield _opened(storage_url)
    try:
        assert (yield store.load_history(ROOM, 5)) == []
        for n in range(5):
            yield store.append_history(ROOM, _record(n, nick=f"n{n}"), keep=100)
        yield store.append_history(ROOM2, _record(99), keep=100)

        everything = yield store.load_history(ROOM, 100)
        assert everything == [_record(n, nick=f"n{n}") for n in range(5)]
        assert everything[0].extra == {"nick": "n0"}

        newest = yield store.load_history(ROOM, 2)
        assert [r.xml for r in newest] == [_record(3).xml, _record(4).xml]  # oldest first
        assert (yield store.load_history(ROOM, 0)) == []
        assert (yield store.load_history(ROOM2, 100)) == [_record(99)]
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_history_order_is_insertion_not_stamp(storage_url: str):
    store = yield _opened(storage_url)
    try:
        yield store.append_history(ROOM, HistoryRecord(stamp=50.0, xml="<a/>"), keep=10)
        yield store.append_history(ROOM, HistoryRecord(stamp=10.0, xml="<b/>"), keep=10)
        assert [r.xml for r in (yield store.load_history(ROOM, 10))] == ["<a/>", "<b/>"]
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_history_trim(storage_url: str):
    store = yield _opened(storage_url)
    try:
        for n in range(6):
            yield store.append_history(ROOM, _record(n), keep=3)
        yield store.append_history(ROOM2, _record(50), keep=3)
        assert (yield store.load_history(ROOM, 100)) == [_record(3), _record(4), _record(5)]

        # Lowering keep trims at the next append; other rooms are untouched.
        yield store.append_history(ROOM, _record(6), keep=1)
        assert (yield store.load_history(ROOM, 100)) == [_record(6)]
        assert (yield store.load_history(ROOM2, 100)) == [_record(50)]

        rows = yield _count_history(store, ROOM)
        assert rows[0][0] == 1

        # keep=0 deletes all of the room's history, the new entry included.
        yield store.append_history(ROOM, _record(7), keep=0)
        assert (yield store.load_history(ROOM, 100)) == []
        assert (yield store.load_history(ROOM2, 100)) == [_record(50)]
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_negative_arguments_rejected(storage_url: str):
    store = yield _opened(storage_url)
    try:
        with pytest.raises(ValueError):
            yield store.append_history(ROOM, _record(1), keep=-1)
        with pytest.raises(ValueError):
            yield store.load_history(ROOM, -1)
        assert (yield store.load_history(ROOM, 10)) == []
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_clear_history_keeps_room(storage_url: str):
    store = yield _opened(storage_url)
    try:
        yield store.save_room(SERVICE, RoomRecord(ROOM, {"k": "v"}))
        yield store.append_history(ROOM, _record(1), keep=10)
        yield store.append_history(ROOM2, _record(2), keep=10)
        yield store.clear_history(ROOM)
        assert (yield store.load_history(ROOM, 10)) == []
        assert (yield store.load_history(ROOM2, 10)) == [_record(2)]
        assert (yield store.load_rooms(SERVICE)) == [RoomRecord(ROOM, {"k": "v"})]
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_writes_applied_in_issue_order(storage_url: str):
    store = yield _opened(storage_url)
    try:
        # Issue without waiting; the last save must win and trims must see prior inserts.
        ds = [store.save_room(SERVICE, RoomRecord(ROOM, {"v": i})) for i in range(20)]
        ds += [store.append_history(ROOM, _record(i), keep=5) for i in range(20)]
        yield defer.gatherResults(ds, consumeErrors=True)
        assert (yield store.load_rooms(SERVICE)) == [RoomRecord(ROOM, {"v": 19})]
        assert (yield store.load_history(ROOM, 100)) == [_record(i) for i in range(15, 20)]
    finally:
        yield store.close()


# -- persistence ---------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_reopen_persists(storage_url: str):
    store = yield _opened(storage_url)
    yield store.save_room(SERVICE, RoomRecord(ROOM, {"persistent": True}))
    d1 = store.append_history(ROOM, _record(1, nick="a"), keep=10)
    d2 = store.append_history(ROOM, _record(2), keep=10)
    # close() without waiting for the writes: it must still let them finish first.
    yield store.close()
    assert d1.called and d2.called

    again = yield _opened(storage_url)
    try:
        assert (yield again.load_rooms(SERVICE)) == [RoomRecord(ROOM, {"persistent": True})]
        assert (yield again.load_history(ROOM, 10)) == [_record(1, nick="a"), _record(2)]
    finally:
        yield again.close()


@pytest_twisted.inlineCallbacks
def test_memory_database(tmp_path: Path):
    store = SQLiteStorage.from_url("sqlite::memory:")
    yield store.open()
    try:
        yield store.save_room(SERVICE, RoomRecord(ROOM, {"m": 1}))
        yield store.append_history(ROOM, _record(1), keep=10)
        assert (yield store.load_rooms(SERVICE)) == [RoomRecord(ROOM, {"m": 1})]
        assert (yield store.load_history(ROOM, 10)) == [_record(1)]
    finally:
        yield store.close()
    assert os.listdir(tmp_path) == []  # nothing written to disk


@pytest_twisted.inlineCallbacks
def test_direct_occupants_stored_updated_forgotten(storage_url: str):
    """The master's direct occupants (§4.11.5): one row each, per service, replaced by a
    newer state, deleted one by one or with their room, in one transaction a batch."""
    store = yield _opened(storage_url)
    try:
        yield store.save_occupants(SERVICE, [
            OccupantRecord(ROOM, "wiz", {"role": "moderator"}),
            OccupantRecord(ROOM, "troy", {"role": "participant"}),
            OccupantRecord(ROOM2, "wiz", {"role": "visitor"})])
        yield store.save_occupants(OTHER_SERVICE, [OccupantRecord(ROOM, "x", {"role": "n"})])
        yield store.save_occupants(SERVICE, [
            OccupantRecord(ROOM, "wiz", {"role": "participant"}), (ROOM, "troy"),
            (ROOM, "never stored")])
        got = yield store.load_occupants(SERVICE)
        assert [(r.room_jid, r.nick, r.state) for r in got] == [
            (ROOM2, "wiz", {"role": "visitor"}), (ROOM, "wiz", {"role": "participant"})]
        yield store.forget_occupants(SERVICE, ROOM2)
        got = yield store.load_occupants(SERVICE)
        assert [(r.room_jid, r.nick) for r in got] == [(ROOM, "wiz")]
        other = yield store.load_occupants(OTHER_SERVICE)
        assert [(r.room_jid, r.nick) for r in other] == [(ROOM, "x")]
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_a_slave_room_is_stored_one_changed_entry_at_a_time(storage_url: str):
    """A slave's mirrored room: its state, with a row per roster entry and per local
    session beside it (one transaction); a save writes only the entries changed since
    the last; a restart reads the same room back. A state an older dmuc stored (the
    roster inside it) is written as rows at its first save."""
    slave = "dmuc.vesa.example.org"
    store = yield _opened(storage_url)

    @defer.inlineCallbacks
    def reloaded(jid: str):
        rooms = {r.jid: r.state for r in (yield store.load_rooms(slave))}
        rows = {r.nick: r.state for r in (yield store.load_occupants(slave)) if r.room_jid == jid}
        return SlaveRoom.from_state(jid, rooms[jid], rows)

    def presence(nick: str, role: str) -> RosterEntry:
        return RosterEntry.of(stanzas.parse_xml(
            f"<presence from='{ROOM}/{nick}'><x xmlns='http://jabber.org/protocol/muc#user'>"
            f"<item affiliation='none' role='{role}'/></x></presence>"))

    try:
        room = SlaveRoom(ROOM)
        room.roster.update({"wiz": presence("wiz", "moderator"),
                            "troy": presence("troy", "visitor")})
        room.hidden.add("troy")
        room.local["wiz@vesa.example.org/r"] = "wiz"
        room.directed |= {"wiz@vesa.example.org/r", "new@vesa.example.org/r"}
        first = room.changed_entries()
        assert len(first) == 4 and room.changed_entries() == []
        yield store.save_room(slave, RoomRecord(ROOM, room.to_state()), first)
        del room.roster["troy"]
        room.hidden.discard("troy")
        room.directed.discard("new@vesa.example.org/r")
        assert room.changed_entries() == [(ROOM, "roster/troy"),
                                          (ROOM, "session/new@vesa.example.org/r")]
        yield store.save_room(slave, RoomRecord(ROOM, room.to_state()),
                              [(ROOM, "roster/troy"), (ROOM, "session/new@vesa.example.org/r")])
        restored = yield reloaded(ROOM)
        assert restored.all_entries() == room.all_entries() and set(restored.roster) == {"wiz"}
        assert restored.local == {"wiz@vesa.example.org/r": "wiz"}

        legacy = {**room.to_state(), "roster": {"old": presence("old", "participant").xml},
                  "hidden": ["old"], "local": {"old@vesa.example.org/r": "old"},
                  "directed": ["old@vesa.example.org/r"]}
        upgraded = SlaveRoom.from_state(ROOM2, legacy)
        yield store.save_room(slave, RoomRecord(ROOM2, upgraded.to_state()),
                              upgraded.changed_entries())
        again = yield reloaded(ROOM2)
        assert again.all_entries() == upgraded.all_entries()
        assert again.hidden == {"old"} and again.local == {"old@vesa.example.org/r": "old"}
        yield store.forget_occupants(slave, ROOM2)
        assert {r.room_jid for r in (yield store.load_occupants(slave))} == {ROOM}
    finally:
        yield store.close()
