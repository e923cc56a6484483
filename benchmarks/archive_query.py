"""Cost of a room-archive (XEP-0313) page in the SQLite adapter, on a large archive.

Fills one in-memory database with `--rows` archived messages spread over 20 rooms (the
schema of dmuc.storage.sql's migrations), then times the page query the master runs for
a MAM request (dmuc.storage.sql.select_archive_page: the count and one page of 50), for
the shapes clients send: the first page, the last page (an empty RSM <before/>), a page
after an id in the middle, a 'with' an occupant JID, and a start/end hour. The query runs
in the storage thread, never in the reactor; this says how long a client waits for it.

    python -m benchmarks.archive_query [--rows 200000]
"""

from __future__ import annotations

import argparse
import sqlite3
import time

from dmuc.records import ArchiveQuery
from dmuc.storage import sql
from dmuc.storage.sqlite import DIALECT

ROOMS = 20
REPEATS = 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000)
    args = parser.parse_args()
    conn = sqlite3.connect(":memory:")
    cursor = conn.cursor()
    sql.migrate(cursor, DIALECT, 0, ":memory:")
    cursor.executemany(
        "INSERT INTO archive (room, sid, stamp, nick, sender, xml, retracted)"
        " VALUES (?, ?, ?, ?, ?, ?, 0)",
        ((f"room{i % ROOMS}@channel.avalon.irc", f"sid{i}", 1e9 + i, f"nick{i % 50}",
          f"user{i % 50}@vesa.yeggmaex.irc", "<message><body>hello</body></message>")
         for i in range(args.rows)))
    conn.commit()
    room = "room3@channel.avalon.irc"
    middle = f"sid{args.rows // 2 + 3}"
    shapes = {
        "first page": ArchiveQuery(max=50),
        "last page (<before/>)": ArchiveQuery(max=50, last=True),
        "after an id in the middle": ArchiveQuery(max=50, after=middle),
        "with an occupant JID": ArchiveQuery(max=50, nick="nick3", last=True),
        "start/end one hour": ArchiveQuery(max=50, start=1e9 + args.rows / 2,
                                           end=1e9 + args.rows / 2 + 3600),
    }
    print(f"{args.rows} archived messages in {ROOMS} rooms; one page of 50, median of "
          f"{REPEATS}")
    for label, query in shapes.items():
        times = []
        for _ in range(REPEATS):
            start = time.perf_counter()
            page = sql.select_archive_page(cursor, DIALECT, room, query)
            times.append(time.perf_counter() - start)
        times.sort()
        print(f"  {label:28} {times[REPEATS // 2] * 1000:7.2f} ms  "
              f"({len(page.records)} messages, count {page.count})")


if __name__ == "__main__":
    main()
