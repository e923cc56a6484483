"""Groupchat throughput of ``twistd dmuc-master`` for a 100- and a 1000-occupant room.

The benchmark plays the server side of the XEP-0114 component connection, so that what
is measured is the master process alone: it accepts the master's handshake, makes N
occupants join one room, then sends M groupchat messages from one occupant and times
until all N x M relayed copies have come back. It also times the sans-I/O core alone
(MUCService.receive + serialisation) in this process.

    python -m benchmarks.broadcast [--occupants 100 1000] [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.fake_prosody import (
    REPEATS,
    SECRET,
    daemon_on_fake_server,
    median_batch,
    print_header,
    print_row,
    result,
)
from testbed.configs import daemon_toml

SERVICE = "channel.avalon.irc"
ROOM = f"wallops@{SERVICE}"


def user(i: int) -> str:
    return f"user{i}@killrc.oulubox.irc/r"


def join_xml(i: int) -> str:
    return (f"<presence from='{user(i)}' to='{ROOM}/nick{i}'>"
            "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>")


MESSAGE = ("<message from='{sender}' to='{room}' type='groupchat' id='m{batch}-{n}'>"
           "<body>Phaedrus, we're all having a truly rotten time. ({n})</body></message>")


async def run_master(occupants: int, messages: int, workdir: Path) -> dict[str, float]:
    def config(port: int) -> str:
        return daemon_toml(jid=SERVICE, host="127.0.0.1", port=port, secret=SECRET,
                           db_path=workdir / "bench.db", level="warn",
                           tables={"muc": {"room_locking": False}},
                           extra_toml="[muc.limits]\nrate = 0\nslave_rate = 0\n")

    async with daemon_on_fake_server("dmuc-master", SERVICE, workdir, config) as server:
        # The i-th join sends i earlier presences to the newcomer, its own, and one to each
        # of the i earlier occupants: N*N presences for N joins.
        started = time.perf_counter()
        for i in range(occupants):
            server.send(join_xml(i))
        await server.until("presence", occupants * occupants)
        join_time = time.perf_counter() - started

        def send_batch(batch: int) -> None:
            for n in range(messages):
                server.send(MESSAGE.format(sender=user(0), room=ROOM, batch=batch, n=n))

        seconds = await median_batch(server, occupants * messages, send_batch)
    return result(occupants, messages, seconds, join_seconds=join_time)


def run_core(occupants: int, messages: int) -> dict[str, float]:
    """The sans-I/O core plus serialisation, in this process: the master's CPU ceiling."""
    from dmuc.master.service import MUCService, ServiceSettings
    from dmuc.protocol import stanzas

    parse = stanzas.parse_stanza

    service = MUCService(ServiceSettings(jid=SERVICE, room_locking=False))
    for i in range(occupants):
        service.receive(parse(join_xml(i)), time.time())
    msgs = [parse(MESSAGE.format(sender=user(0), room=ROOM, batch=0, n=n))
            for n in range(messages)]
    times = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for msg in msgs:
            out = service.receive(msg, time.time())
            for d in out.deliveries:
                for _xml in stanzas.render_many(d.stanza, d.recipients or [d.stanza["to"]]):
                    pass
        times.append(time.perf_counter() - started)
    return result(occupants, messages, statistics.median(times))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--occupants", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    print_header(f"{'joins s':>10}")
    for n in args.occupants:
        core = run_core(n, args.messages)
        workdir = Path(tempfile.mkdtemp(prefix="dmuc-bench-"))
        try:
            master = asyncio.run(run_master(n, args.messages, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print_row("core (in-process)", core)
        print_row("twistd dmuc-master", master, f"{master['join_seconds']:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
