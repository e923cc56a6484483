"""A throwaway PostgreSQL server on loopback, for tests, demos and benchmarks.

``initdb`` into ``workdir/data`` (trust authentication, superuser ``dmuc``), then the
``postgres`` server itself as a child process (not ``pg_ctl``, which daemonizes): the Popen
PID is the postmaster's, so it is stopped by PID like every other testbed process. As root,
both run as user ``postgres`` through ``setpriv`` (PostgreSQL refuses to run as root). The
server listens on ``ip:port`` and on a Unix socket in ``workdir`` only, never touching the
system cluster of the Debian package.
"""

from __future__ import annotations

import glob
import os
import pwd
import signal
import subprocess
import time
from pathlib import Path
from typing import IO

import psycopg
from psycopg import sql

from testbed.prosody import Pausable, TestbedError, _check_traversable, _live, free_port, tail

POSTGRES_USER = "postgres"
SUPERUSER = "dmuc"
READY_TIMEOUT = 30.0

# Shutdown modes of the postmaster, by signal (PostgreSQL's documented server signals).
STOP_SIGNALS = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}


def postgres_bindir() -> Path:
    """The bin dir of the newest PostgreSQL the Debian package installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if not found:
        raise TestbedError("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    return Path(found[-1]).parent


class PostgresInstance(Pausable):
    """One PostgreSQL server in ``workdir``; ``url(db)`` names a database on it."""

    label = "PostgreSQL"

    def __init__(self, workdir: Path | str, *, ip: str = "127.0.0.1",
                 port: int | None = None) -> None:
        self.workdir = Path(workdir).resolve()
        self.ip = ip
        self.port = port or free_port(ip)
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "postgres.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self.paused = False
        self._bindir = postgres_bindir()

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def url(self, database: str = "postgres") -> str:
        """The storage URL of a database on this server (as in ``storage.url``)."""
        return f"postgresql://{SUPERUSER}@{self.ip}:{self.port}/{database}"

    # -- process

    def _as_postgres(self, cmd: list[str]) -> list[str]:
        if os.geteuid() != 0:
            return cmd
        # setpriv execs, so the Popen PID is the server's own
        return ["setpriv", f"--reuid={POSTGRES_USER}", f"--regid={POSTGRES_USER}",
                "--init-groups", *cmd]

    def _initdb(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pw = pwd.getpwnam(POSTGRES_USER)
            _check_traversable(self.workdir, pw.pw_uid, pw.pw_gid)
            os.chown(self.workdir, pw.pw_uid, pw.pw_gid)
        result = subprocess.run(
            self._as_postgres([str(self._bindir / "initdb"), "-D", str(self.data_dir),
                               "-A", "trust", "-U", SUPERUSER, "-E", "UTF8", "--locale=C",
                               "--no-sync"]),
            cwd=self.workdir, stdin=subprocess.DEVNULL, capture_output=True, timeout=120,
            check=False)
        if result.returncode != 0:
            raise TestbedError(f"initdb failed ({result.returncode}):\n"
                               f"{result.stdout.decode(errors='replace')[-2000:]}"
                               f"{result.stderr.decode(errors='replace')[-2000:]}")

    def start(self, timeout: float = READY_TIMEOUT) -> PostgresInstance:
        """initdb (the first time), launch the server, wait until it accepts queries. A
        second start after stop() reuses the data: the same databases, the same port."""
        if self.running():
            raise TestbedError("PostgreSQL already running")
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        self._log = open(self.log_path, "ab")
        if os.geteuid() == 0:
            os.chown(self.log_path, pwd.getpwnam(POSTGRES_USER).pw_uid, -1)
        self.proc = subprocess.Popen(
            self._as_postgres([
                str(self._bindir / "postgres"), "-D", str(self.data_dir),
                "-k", str(self.workdir), "-p", str(self.port),
                "-c", f"listen_addresses={self.ip}",
                # a throwaway cluster: no fsync (durability against power loss is not
                # needed), but commits still reach the OS, so a crash (stop("immediate"))
                # loses nothing committed
                "-c", "fsync=off", "-c", "full_page_writes=off"]),
            cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._log,
            stderr=subprocess.STDOUT, start_new_session=True)
        self.paused = False
        _live.add(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Until a query succeeds (the server accepts connections only once it has
        recovered; a connection attempt is the event there is to wait for)."""
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        delay = 0.02
        while True:
            if self.proc.poll() is not None:
                raise TestbedError(f"postgres exited with code {self.proc.returncode}:\n"
                                   f"{tail(self.log_path)}")
            try:
                with psycopg.connect(self.url(), connect_timeout=2) as conn:
                    conn.execute("SELECT 1")
                return
            except psycopg.OperationalError as exc:
                if time.monotonic() > deadline:
                    raise TestbedError(f"PostgreSQL not ready within {timeout} s: {exc}\n"
                                       f"{tail(self.log_path)}") from exc
            time.sleep(delay)
            delay = min(delay * 2, 0.2)

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, mode: str = "fast", timeout: float = 10.0) -> int | None:
        """Shut the server down by PID: ``fast`` (SIGINT: roll back, disconnect),
        ``immediate`` (SIGQUIT: like a crash; recovery at the next start) or ``smart``;
        SIGKILL after ``timeout`` s. Idempotent."""
        code = None
        if self.paused:
            self.resume()
        if self.proc is not None:
            if self.proc.poll() is None:
                try:
                    self.proc.send_signal(STOP_SIGNALS[mode])
                    code = self.proc.wait(timeout)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                except ProcessLookupError:
                    pass
            code = self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None
        _live.discard(self)
        return code

    # -- databases

    def connect(self, database: str = "postgres", **kwargs: object) -> psycopg.Connection:
        """A psycopg connection (autocommit) to a database of this server, as superuser."""
        return psycopg.connect(self.url(database), autocommit=True, **kwargs)

    def create_database(self, name: str) -> str:
        """Create an empty database; returns its storage URL."""
        with self.connect() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {} STRATEGY FILE_COPY").format(
                sql.Identifier(name)))
        return self.url(name)

    def __enter__(self) -> PostgresInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<PostgresInstance pid={self.pid} {self.ip}:{self.port} {self.workdir}>"
