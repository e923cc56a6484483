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

from benchmarks.fake_prosody import SECRET, FakeServer
from dmuc.testbed.daemon import TwistdDaemon

SERVICE = "channel.avalon.irc"
ROOM = f"wallops@{SERVICE}"
REPEATS = 5  # batches of messages per configuration; the median batch is reported


def user(i: int) -> str:
    return f"user{i}@killrc.oulubox.irc/r"


def join_xml(i: int) -> str:
    return (f"<presence from='{user(i)}' to='{ROOM}/nick{i}'>"
            "<x xmlns='http://jabber.org/protocol/muc'><history maxstanzas='0'/></x></presence>")


async def run_master(occupants: int, messages: int, workdir: Path) -> dict[str, float]:
    server = FakeServer(SERVICE)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    port = listener.sockets[0].getsockname()[1]
    config = workdir / "bench.toml"
    config.write_text(
        f'[component]\njid = "{SERVICE}"\nhost = "127.0.0.1"\nport = {port}\n'
        f'secret = "{SECRET}"\n[storage]\nurl = "sqlite:///{workdir}/bench.db"\n'
        '[log]\nlevel = "warn"\n[muc]\nroom_locking = false\n'
    )
    daemon = TwistdDaemon("dmuc-master", config, workdir, wait_for="")
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, lambda: daemon.start(wait_for="starting up", timeout=30))
    try:
        await asyncio.wait_for(server.connected.wait(), 30)
        # Joins: occupant i receives i earlier presences plus its own, and each earlier
        # occupant one more: 2*i+1 presences for the i-th join.
        t0 = time.perf_counter()
        for i in range(occupants):
            server.send(join_xml(i))
        await server.until("presence", occupants * occupants)
        join_time = time.perf_counter() - t0
        times = []
        for batch in range(REPEATS):
            base = server.counts["message"]
            t0 = time.perf_counter()
            for n in range(messages):
                server.send(f"<message from='{user(0)}' to='{ROOM}' type='groupchat' "
                            f"id='m{batch}-{n}'><body>Phaedrus, we're all having a truly "
                            f"rotten time. ({n})</body></message>")
            await server.until("message", base + occupants * messages)
            times.append(time.perf_counter() - t0)
        elapsed = statistics.median(times)
    finally:
        daemon.stop()
        listener.close()
        await listener.wait_closed()
    return {
        "occupants": occupants,
        "messages": messages,
        "seconds": elapsed,
        "messages_per_s": messages / elapsed,
        "stanzas_per_s": occupants * messages / elapsed,
        "join_seconds": join_time,
    }  # seconds: the median of REPEATS batches


def run_core(occupants: int, messages: int) -> dict[str, float]:
    """The sans-I/O core plus serialisation, in this process: the master's CPU ceiling."""
    from dmuc import stanzas
    from dmuc.service import MUCService, ServiceSettings

    parse = stanzas.parse_stanza

    service = MUCService(ServiceSettings(jid=SERVICE, room_locking=False))
    for i in range(occupants):
        service.receive(parse(join_xml(i)), time.time())
    msgs = [parse(f"<message from='{user(0)}' to='{ROOM}' type='groupchat' id='m{n}'>"
                  f"<body>Phaedrus, we're all having a truly rotten time. ({n})</body></message>")
            for n in range(messages)]
    times = []
    for _ in range(REPEATS):
        t0 = time.perf_counter()
        for msg in msgs:
            out = service.receive(msg, time.time())
            for d in out.deliveries:
                for _xml in stanzas.render_many(d.stanza, d.recipients or [d.stanza["to"]]):
                    pass
        times.append(time.perf_counter() - t0)
    elapsed = statistics.median(times)
    return {"occupants": occupants, "messages": messages, "seconds": elapsed,
            "messages_per_s": messages / elapsed, "stanzas_per_s": occupants * messages / elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--occupants", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    print(f"{'what':<24}{'occupants':>10}{'messages':>10}{'seconds':>10}"
          f"{'msg/s':>10}{'stanzas/s':>12}")
    for n in args.occupants:
        core = run_core(n, args.messages)
        workdir = Path(tempfile.mkdtemp(prefix="dmuc-bench-"))
        try:
            master = asyncio.run(run_master(n, args.messages, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        for label, r in (("core (in-process)", core), ("twistd dmuc-master", master)):
            print(f"{label:<24}{r['occupants']:>10}{r['messages']:>10}{r['seconds']:>10.3f}"
                  f"{r['messages_per_s']:>10.1f}{r['stanzas_per_s']:>12.0f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
