"""Writes per second of the storage adapters, as the shell issues them: N history appends
(keep 20) and N room saves (50 rooms), all issued at once, timed until the last one is
applied. PostgreSQL is a throwaway server (testbed.postgres, fsync off) on loopback;
SQLite a file in a temp dir (WAL, synchronous=NORMAL).

    python -m benchmarks.storage_writes [--writes 2000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time

from twisted.internet import defer, task

from dmuc.records import HistoryRecord, RoomRecord
from dmuc.storage import open_storage
from testbed.postgres import PostgresInstance

STANZA = "<message type='groupchat'><body>benchmark</body></message>"


@defer.inlineCallbacks
def measure(url: str, label: str, writes: int):  # type: ignore[no-untyped-def]
    store = open_storage(url)
    yield store.open()
    try:
        start = time.monotonic()
        yield defer.gatherResults([store.append_history("room@muc", HistoryRecord(1.0, STANZA),
                                                        20) for _ in range(writes)])
        appends = time.monotonic() - start
        start = time.monotonic()
        yield defer.gatherResults([store.save_room("muc", RoomRecord(f"r{i % 50}@muc",
                                                                     {"config": {"n": i}}))
                                   for i in range(writes)])
        saves = time.monotonic() - start
    finally:
        yield store.close()
    print(f"{label:<34} {writes / appends:>8.0f} appends/s {writes / saves:>8.0f} saves/s")


@defer.inlineCallbacks
def main(reactor, writes: int):  # type: ignore[no-untyped-def]
    workdir = tempfile.mkdtemp(prefix="dmuc-bench-storage-")
    pg = PostgresInstance(tempfile.mkdtemp(prefix="dmuc-bench-postgres-"))
    pg.start()
    try:
        yield measure(pg.create_database("bench"), "postgresql (loopback, fsync off)", writes)
        yield measure(f"sqlite://{workdir}/bench.db", "sqlite (WAL, synchronous=NORMAL)",
                      writes)
    finally:
        pg.stop()
        shutil.rmtree(pg.workdir, ignore_errors=True)
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    args = parser.parse_args()
    task.react(main, (args.writes,))
