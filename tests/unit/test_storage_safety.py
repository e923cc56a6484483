"""What opening a store may and may not do, on both backends: a new SQLite file is private
(0600, its -wal and -shm too) whatever the umask; a directory that does not exist is an
error, not a new empty store; a read-only open (dmuc-admin's dry run) creates nothing —
no file, no table — and writes nothing, and finds an existing store's rooms."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import pytest_twisted

from dmuc.config import ConfigError, load_master_config
from dmuc.errors import StorageError, StoreAbsent
from dmuc.records import RoomRecord
from dmuc.storage import open_storage

SERVICE = "channel.avalon.irc"


@pytest.fixture
def open_umask() -> Iterator[None]:
    old = os.umask(0o022)  # the usual umask: files 0644 unless we say otherwise
    yield
    os.umask(old)


@pytest_twisted.inlineCallbacks
def test_a_new_sqlite_store_is_private(tmp_path: Path, open_umask: None):
    path = tmp_path / "master.db"
    store = open_storage(f"sqlite://{path}")
    yield store.open()
    try:
        yield store.save_room(SERVICE, RoomRecord(f"r@{SERVICE}", {"config": {"password": "x"}}))
        files = sorted(tmp_path.iterdir())
        assert {p.name for p in files} >= {"master.db", "master.db-wal", "master.db-shm"}
        for file in files:
            assert stat.S_IMODE(file.stat().st_mode) == 0o600, file
    finally:
        yield store.close()


@pytest_twisted.inlineCallbacks
def test_a_missing_directory_is_an_error(tmp_path: Path):
    store = open_storage(f"sqlite://{tmp_path / 'typo' / 'master.db'}")
    with pytest.raises(StorageError, match="directory .*typo does not exist"):
        yield store.open()
    assert not (tmp_path / "typo").exists()


@pytest_twisted.inlineCallbacks
def test_read_only_open_of_no_store_creates_nothing(storage_url: str, tmp_path: Path):
    store = open_storage(storage_url)
    with pytest.raises(StoreAbsent):
        yield store.open(read_only=True)
    assert list(tmp_path.iterdir()) == []
    if storage_url.startswith("postgresql"):
        with psycopg.connect(storage_url) as conn:
            tables = conn.execute("SELECT count(*) FROM pg_tables "
                                  "WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)


@pytest_twisted.inlineCallbacks
def test_read_only_open_reads_and_never_writes(storage_url: str):
    store = open_storage(storage_url)
    yield store.open()
    yield store.save_room(SERVICE, RoomRecord(f"r@{SERVICE}", {"config": {}}))
    yield store.close()
    reader = open_storage(storage_url)
    yield reader.open(read_only=True)
    try:
        rooms = yield reader.load_rooms(SERVICE)
        assert [r.jid for r in rooms] == [f"r@{SERVICE}"]
        with pytest.raises(StorageError):
            yield reader.save_room(SERVICE, RoomRecord(f"s@{SERVICE}", {"config": {}}))
    finally:
        yield reader.close()


def test_the_configuration_refuses_a_store_in_a_missing_directory(tmp_path: Path) -> None:
    config = tmp_path / "master.toml"
    config.write_text(f'[component]\njid = "{SERVICE}"\nsecret = "s"\n'
                      f'[storage]\nurl = "sqlite://{tmp_path}/typo/master.db"\n')
    with pytest.raises(ConfigError) as refused:
        load_master_config(str(config))
    assert str(refused.value) == (f"{config}: storage.url: directory {tmp_path}/typo does "
                                  "not exist (create it, or correct the path)")


# docs/operations.md#postgresql: the role the daemons use, with only the rights they need
# (connect to their database, own the schema named like the role, for their tables)
LEAST_PRIVILEGE = """
REVOKE ALL ON DATABASE {db} FROM PUBLIC;
GRANT CONNECT ON DATABASE {db} TO {role};
REVOKE ALL ON SCHEMA public FROM PUBLIC;
CREATE SCHEMA {role} AUTHORIZATION {role};
"""


@pytest_twisted.inlineCallbacks
def test_the_documented_postgresql_role_is_enough(postgres, new_database) -> None:  # type: ignore[no-untyped-def]
    operations = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    for statement in LEAST_PRIVILEGE.strip().splitlines():
        assert statement.replace("{db}", "dmuc").replace("{role}", "dmuc") in operations
    url = new_database()
    db = url.rsplit("/", 1)[1]
    role = f"{db}_role"
    with postgres.connect(db) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")  # no superuser, createdb, createrole
        for statement in LEAST_PRIVILEGE.strip().splitlines():
            conn.execute(statement.format(db=db, role=role))
    role_url = url.replace(url.split("//", 1)[1].split("@", 1)[0], role, 1)
    store = open_storage(role_url)
    yield store.open()
    try:
        yield store.save_room(SERVICE, RoomRecord(f"r@{SERVICE}", {"config": {}}))
        assert [r.jid for r in (yield store.load_rooms(SERVICE))] == [f"r@{SERVICE}"]
    finally:
        yield store.close()
    with postgres.connect(db) as conn:
        tables = {row[0] for row in conn.execute(
            "SELECT schemaname FROM pg_tables WHERE tablename = 'rooms'")}
        conn.execute(f"DROP SCHEMA {role} CASCADE; DROP OWNED BY {role}; DROP ROLE {role}")
    assert tables == {role}  # in its own schema, nothing in public
