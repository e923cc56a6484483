"""Fixtures of unit and integration tests alike: a throwaway PostgreSQL server.

PostgreSQL must be installed (Debian package ``postgresql``): a missing server is an
error, never a skip. DMUC_KEEP_TESTBED=1 keeps its directory (data, log) after the session.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.postgres import PostgresInstance

_database_names = itertools.count(1)


def new_postgres() -> PostgresInstance:
    """An unstarted server in a fresh temp dir (the caller starts it, stop_postgres ends it)."""
    return PostgresInstance(Path(tempfile.mkdtemp(prefix="dmuc-postgres-")))


def stop_postgres(server: PostgresInstance) -> None:
    server.stop()
    if not os.environ.get("DMUC_KEEP_TESTBED"):
        shutil.rmtree(server.workdir, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresInstance]:
    """One PostgreSQL server per session, on a free loopback port."""
    server = new_postgres()
    server.start()
    try:
        yield server
    finally:
        stop_postgres(server)


@pytest.fixture
def own_postgres() -> Iterator[PostgresInstance]:
    """A server of the test's own, which it may stop and start (by PID)."""
    server = new_postgres()
    server.start()
    try:
        yield server
    finally:
        stop_postgres(server)


@pytest.fixture
def new_database(postgres: PostgresInstance) -> Callable[[], str]:
    """``new_database()`` -> the storage URL of a new, empty database of the session's
    server (one per call: tests never see each other's rows)."""
    return lambda: postgres.create_database(f"dmuc_test_{os.getpid()}_{next(_database_names)}")


@pytest.fixture(params=["sqlite", "postgresql"])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The URL of a new, empty database of each backend: the tests that take it run on
    SQLite and on PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite://{tmp_path / 'm.db'}"
    new_database: Callable[[], str] = request.getfixturevalue("new_database")
    return new_database()
