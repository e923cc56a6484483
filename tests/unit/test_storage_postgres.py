"""What only the PostgreSQL adapter does (the rest runs on both backends in
test_storage_sqlite.py): its URLs, concurrent schema migration, one database shared by a
master and a slave, and operations retried in order while the server is down.

Every test runs against a real PostgreSQL (tests/conftest.py), never a mock."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import quote

import psycopg
import pytest
import pytest_twisted
from twisted.internet import defer, reactor, threads
from twisted.logger import formatEvent, globalLogPublisher

from dmuc.config import ConfigError, load_master_config
from dmuc.errors import StorageError
from dmuc.records import HistoryRecord, RoomRecord, slave_history_key
from dmuc.storage import PostgresStorage, open_storage, sql, url_for_log
from dmuc.storage import postgres as postgres_mod
from testbed.postgres import PostgresInstance

MASTER = "channel.avalon.irc"
SLAVE = "dmuc.vesa.yeggmaex.irc"
ROOM = "keep@channel.avalon.irc"


def _record(n: int) -> HistoryRecord:
    return HistoryRecord(stamp=1000.0 + n, xml=f"<message><body>m{n}</body></message>")


@pytest.fixture
def logged() -> Iterator[list[str]]:
    """The text of every dmuc.storage log event emitted while the test runs."""
    lines: list[str] = []

    def observe(event: dict) -> None:
        if event.get("log_namespace") == "dmuc.storage":
            lines.append(formatEvent(event))

    globalLogPublisher.addObserver(observe)
    yield lines
    globalLogPublisher.removeObserver(observe)


# -- URLs ----------------------------------------------------------------------------


def test_url_accepted_and_password_never_shown() -> None:
    store = open_storage("postgresql://dmuc:s3cret@db.example.org:6543/muc?sslmode=require")
    assert isinstance(store, PostgresStorage)
    assert store.display == "postgresql://dmuc@db.example.org:6543/muc?sslmode=require"
    assert "s3cret" in store.conninfo
    assert "connect_timeout=10" in store.conninfo and "tcp_user_timeout=" in store.conninfo
    in_query = PostgresStorage.from_url("postgres://dmuc@localhost/dmuc?password=s3cret")
    assert in_query.display == "postgres://dmuc@localhost/dmuc"
    assert url_for_log("postgres://u:pw@h/d?sslmode=disable&password=pw&port=5") == \
        "postgres://u@h/d?sslmode=disable&port=5"
    assert url_for_log("sqlite:///var/lib/dmuc/m.db") == "sqlite:///var/lib/dmuc/m.db"
    socket = PostgresStorage.from_url("postgresql://dmuc@%2Frun%2Fpostgresql/dmuc")
    assert "host=/run/postgresql" in socket.conninfo
    with pytest.raises(StorageError) as info:
        PostgresStorage.from_url("postgresql://dmuc:s3cret@localhost")
    assert "s3cret" not in str(info.value)


@pytest_twisted.inlineCallbacks
def test_unix_socket_url(postgres: PostgresInstance, new_database: Callable[[], str]):
    """The README's URL form: the server's socket dir as the host, percent-encoded."""
    name = new_database().rsplit("/", 1)[1]
    socket_dir = quote(str(postgres.workdir), safe="")
    store = open_storage(f"postgresql://dmuc@{socket_dir}:{postgres.port}/{name}")
    yield store.open()
    try:
        yield store.save_room(MASTER, RoomRecord(ROOM, {"via": "socket"}))
        assert (yield store.load_rooms(MASTER)) == [RoomRecord(ROOM, {"via": "socket"})]
    finally:
        yield store.close()


@pytest.mark.parametrize("url, reason", [
    ("postgresql://dmuc@localhost", "no database name"),
    ("postgresql://dmuc@localhost:port/db", "is not a port"),
    ("postgresql://dmuc@localhost:70000/db", "is not a port"),
    ("postgresql://dmuc@localhost/db?colour=red", "invalid URI query parameter"),
    ("sqlite:///x.db", "not a PostgreSQL storage URL"),
])
def test_bad_urls(url: str, reason: str) -> None:
    with pytest.raises(StorageError, match=re.escape(reason)) as info:
        PostgresStorage.from_url(url)
    assert repr(url) in str(info.value)


def test_config_accepts_and_checks_postgresql_urls(tmp_path: Path) -> None:
    def config(url: str) -> str:
        path = tmp_path / "master.toml"
        path.write_text(f'[component]\njid = "{MASTER}"\nsecret = "s"\n'
                        f'[storage]\nurl = "{url}"\n')
        return str(path)

    url = "postgresql://dmuc@127.0.0.1/dmuc"
    assert load_master_config(config(url)).storage_url == url
    with pytest.raises(ConfigError) as info:
        load_master_config(config("postgresql://dmuc@127.0.0.1"))
    assert info.value.key == "storage.url" and "no database name" in info.value.reason
    with pytest.raises(ConfigError, match="supported: sqlite, postgresql"):
        load_master_config(config("mysql://dmuc@127.0.0.1/dmuc"))


@pytest_twisted.inlineCallbacks
def test_unreachable_server_fails_open(postgres: PostgresInstance):
    url = f"postgresql://dmuc@127.0.0.1:{postgres.port}/no_such_database"
    store = open_storage(url)
    with pytest.raises(StorageError) as info:
        yield store.open()
    assert str(info.value).startswith(f"cannot open storage {url}: ")
    assert "no_such_database" in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(StorageError, match="not open"):
        yield store.load_rooms(MASTER)


# -- schema --------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_daemons_opening_one_empty_database_at_once_migrate_it_once(
        new_database: Callable[[], str], monkeypatch: pytest.MonkeyPatch):
    """Four adapters open the same empty database at the same moment. A slow migration
    widens the window: without the lock, a second opener would run migration 1 again
    (rooms already exists) or find no version table yet."""
    url = new_database()
    slow_and_counted = ("SELECT pg_sleep(0.3); CREATE TABLE opened (n INTEGER);"
                        " INSERT INTO opened VALUES (1);")
    migrations = [*sql.MIGRATIONS, slow_and_counted]
    monkeypatch.setattr(sql, "MIGRATIONS", migrations)
    stores = [open_storage(url) for _ in range(4)]
    results = yield defer.DeferredList([s.open() for s in stores], consumeErrors=True)
    try:
        assert [ok for ok, _ in results] == [True] * 4, results
        rows = yield stores[0]._pool.runQuery("SELECT version FROM dmuc_schema")
        assert rows == [(len(migrations),)]
        rows = yield stores[0]._pool.runQuery("SELECT count(*) FROM opened")
        assert rows == [(1,)]  # the migration ran once
        # each opener can use the schema at once
        yield defer.gatherResults([s.save_room(MASTER, RoomRecord(f"r{i}@{MASTER}", {}))
                                   for i, s in enumerate(stores)])
        assert len((yield stores[1].load_rooms(MASTER))) == 4
    finally:
        yield defer.gatherResults([s.close() for s in stores])


# -- one database for a master and its slaves ------------------------------------------


@pytest_twisted.inlineCallbacks
def test_master_and_slave_share_one_database(new_database: Callable[[], str]):
    """The keys the daemons use (the service JID; the room JID for the master's history,
    slave_history_key for a slave's) keep their rows apart in one database."""
    url = new_database()
    master, slave = open_storage(url), open_storage(url)
    yield master.open()
    yield slave.open()
    slave_key = slave_history_key(SLAVE, ROOM)
    try:
        yield master.save_room(MASTER, RoomRecord(ROOM, {"by": "master"}))
        yield slave.save_room(SLAVE, RoomRecord(ROOM, {"by": "slave"}))
        for n in range(3):
            yield master.append_history(ROOM, _record(n), keep=10)
            yield slave.append_history(slave_key, _record(100 + n), keep=2)
        assert (yield master.load_rooms(MASTER)) == [RoomRecord(ROOM, {"by": "master"})]
        assert (yield slave.load_rooms(SLAVE)) == [RoomRecord(ROOM, {"by": "slave"})]
        assert (yield master.load_history(ROOM, 10)) == [_record(n) for n in range(3)]
        # the slave's trim to 2 left the master's 3 entries alone
        assert (yield slave.load_history(slave_key, 10)) == [_record(101), _record(102)]

        # the slave forgets its copy: the master's room and history stay
        yield slave.delete_room(SLAVE, ROOM, slave_key)
        assert (yield slave.load_rooms(SLAVE)) == []
        assert (yield slave.load_history(slave_key, 10)) == []
        assert (yield master.load_rooms(MASTER)) == [RoomRecord(ROOM, {"by": "master"})]
        assert (yield master.load_history(ROOM, 10)) == [_record(n) for n in range(3)]
    finally:
        yield master.close()
        yield slave.close()


@pytest_twisted.inlineCallbacks
def test_one_failing_operation_among_queued_ones_fails_alone(new_database: Callable[[], str]):
    """Queued operations share a transaction; when one fails (text with a NUL byte, which
    PostgreSQL refuses), the others are applied all the same, in order."""
    store = open_storage(new_database())
    yield store.open()
    try:
        issued = [store.save_room(MASTER, RoomRecord(f"a@{MASTER}", {})),
                  store.save_room(MASTER, RoomRecord(f"b@{MASTER}", {})),
                  store.append_history(ROOM, HistoryRecord(1.0, "<a>\x00</a>"), keep=5),
                  store.append_history(ROOM, _record(2), keep=5),
                  store.save_room(MASTER, RoomRecord(f"c@{MASTER}", {}))]
        results = yield defer.DeferredList(issued, consumeErrors=True)
        assert [ok for ok, _ in results] == [True, True, False, True, True]
        failure = results[2][1]
        assert failure.check(StorageError) and "append_history failed" in str(failure.value)
        rooms = yield store.load_rooms(MASTER)
        assert [r.jid for r in rooms] == [f"{n}@{MASTER}" for n in "abc"]
        assert (yield store.load_history(ROOM, 10)) == [_record(2)]
        # and batching goes on afterwards
        yield defer.gatherResults([store.append_history(ROOM, _record(n), keep=5)
                                   for n in range(3, 9)])
        assert (yield store.load_history(ROOM, 10)) == [_record(n) for n in range(4, 9)]
    finally:
        yield store.close()


# -- the server goes away --------------------------------------------------------------


def _retry_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if "operations waiting, retry" in line]


@pytest_twisted.inlineCallbacks
def test_operations_retried_in_order_while_server_down(own_postgres: PostgresInstance,
                                                       logged: list[str]):
    pg = own_postgres
    url = pg.create_database("dmuc")
    store = open_storage(url)
    yield store.open()
    try:
        yield store.save_room(MASTER, RoomRecord(ROOM, {"v": 0}))
        yield threads.deferToThread(pg.stop, "immediate")  # like a crash

        issued = [store.save_room(MASTER, RoomRecord(ROOM, {"v": 1}))]
        issued += [store.append_history(ROOM, _record(n), keep=4) for n in range(6)]
        issued += [store.save_room(MASTER, RoomRecord(ROOM, {"v": 2}))]
        issued.append(store.clear_history(ROOM))
        issued += [store.append_history(ROOM, _record(n), keep=4) for n in range(10, 13)]
        load = store.load_rooms(MASTER)

        # wait for the second retry line: the first attempt and one retry failed
        yield _until(lambda: len(_retry_lines(logged)) >= 2)
        assert not any(d.called for d in issued)  # waiting, not failed, not dropped
        yield threads.deferToThread(pg.start)
        yield defer.gatherResults(issued)
        assert (yield load) == [RoomRecord(ROOM, {"v": 2})]
    finally:
        yield store.close()
    assert (yield _stored(url)) == ([("keep@channel.avalon.irc", '{"v":2}')],
                                    [1010.0, 1011.0, 1012.0])
    retries = _retry_lines(logged)
    # one line per failed attempt, each naming the waiting work and a growing delay
    delays = [float(re.search(r"retry \d+ in ([\d.]+) s", line).group(1)) for line in retries]
    assert delays == sorted(delays) and delays[0] < delays[-1], retries
    assert all(url in line and "save_room failed" in line for line in retries), retries
    assert "13 operations waiting, retry 1 in 0.5 s" in retries[0], retries
    assert [line for line in logged if "reachable again" in line] == [
        f"storage {url}: database reachable again after {len(retries)} failed attempts; "
        "applying the 13 operations that waited"]


@pytest_twisted.inlineCallbacks
def test_close_gives_up_loudly_when_server_stays_down(own_postgres: PostgresInstance,
                                                      logged: list[str],
                                                      monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setattr(postgres_mod, "CLOSE_PATIENCE", 1.0)
    url = own_postgres.create_database("dmuc")
    store = open_storage(url)
    yield store.open()
    yield threads.deferToThread(own_postgres.stop, "immediate")
    writes = [store.append_history(ROOM, _record(n), keep=10) for n in range(3)]
    yield _until(lambda: len(_retry_lines(logged)) >= 1)
    yield store.close()
    results = yield defer.DeferredList(writes, consumeErrors=True)
    assert [ok for ok, _ in results] == [False] * 3
    assert all(f.check(StorageError) and "not applied" in str(f.value) for _, f in results)
    assert [line for line in logged if "closing with" in line] == [
        f"storage {url}: closing with 3 operations not applied, the database is "
        f"unreachable: " + logged[-1].split("unreachable: ", 1)[1]]
    with pytest.raises(StorageError, match="not open"):
        yield store.load_rooms(MASTER)


def _until(condition: Callable[[], bool], timeout: float = 20.0) -> defer.Deferred:
    """Fires once `condition()` holds (polled on the reactor: a log line has no event of
    its own to wait for)."""
    d: defer.Deferred = defer.Deferred()
    deadline = reactor.seconds() + timeout

    def check() -> None:
        if condition():
            d.callback(None)
        elif reactor.seconds() > deadline:
            d.errback(AssertionError(f"condition not met within {timeout} s"))
        else:
            reactor.callLater(0.02, check)

    check()
    return d


def _stored(url: str) -> defer.Deferred:
    """(rooms rows, history stamps) read outside the adapter."""

    def read() -> tuple[list[tuple], list[float]]:
        with psycopg.connect(url) as conn:
            rooms = conn.execute("SELECT jid, state FROM rooms").fetchall()
            stamps = [r[0] for r in conn.execute("SELECT stamp FROM history ORDER BY id")]
        return rooms, stamps

    return threads.deferToThread(read)
