"""Cost of a join as the room grows: N joins through one slave, and N direct joins, into
one room of the sans-I/O master core (no sockets; what the core itself costs).

A join through a slave must cost the same whatever the room's size (the slave sends the
newcomer the occupant list; the master sends one copy of the new presence per slave). A
direct join costs the copies XEP-0045 requires (the occupant list to the newcomer, the
new presence to every occupant reached directly) and nothing more. Reported: total
seconds, the slowest single join (no stanza may block the reactor ~100 ms), and the mean
time of the first and the last 1,000 joins (equal when a join is O(1)).

    python -m benchmarks.joins [--occupants 10000] [--rate 2500]

With --daemon, the joins through one slave also go through a real `twistd dmuc-master`
(fed by a fake Prosody at --rate joins/s) while an unrelated user pings the service every
50 ms: the time until the last ENTER, and the ping times (no stanza may stall others).
That time is the benchmark's pace (occupants / rate) as long as the daemon keeps up.

With --burst (implies --daemon), all the joins are written at once, as fast as the socket
takes them (what a slave does after its own restart), while a direct user and a second
slave (standing for its users) each ping the service every 50 ms; every figure is read
from the daemon's answers: when the 1,000th, 5,000th and last ENTER came back, and each
pinger's p50/p99/max. --json FILE writes the figures as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from benchmarks.fake_prosody import SECRET, FakeServer, daemon_on_fake_server
from dmuc import xmlns
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from dmuc.shell.stalls import freeze_startup_objects
from testbed.configs import daemon_toml

SERVICE = "channel.avalon.irc"
ROOM = f"wallops@{SERVICE}"
SLAVE = "dmuc.vesa.yeggmaex.irc"
SLAVE_DOMAIN = "vesa.yeggmaex.irc"


def _join(who: str, nick: str) -> stanzas.Element:
    return stanzas.parse_stanza(
        f"<presence from='{who}' to='{ROOM}/{nick}'><x xmlns='{xmlns.MUC}'>"
        "<history maxstanzas='0'/></x></presence>")


def _copies(out: Outbox) -> int:
    return sum(len(d.recipients) if d.recipients is not None else 1 for d in out.deliveries)


def run(occupants: int, through_slave: bool) -> dict[str, float]:
    service = MUCService(ServiceSettings(jid=SERVICE, room_locking=False,
                                         slaves={SLAVE: frozenset({SLAVE_DOMAIN})}))
    now = 1_000_000.0
    service.receive(_join("owner@avalon.irc/pc", "owner"), now)
    if through_slave:
        register = stanzas.parse_stanza(
            f"<iq type='set' id='r' from='{SLAVE}' to='{ROOM}'>"
            f"<register xmlns='{xmlns.DMUC}' keepalive='60' history='0'/></iq>")
        service.receive(register, now)
    domain = SLAVE_DOMAIN if through_slave else "efnet.irc"
    times: list[float] = []
    copies = 0
    # As the daemon does at start-up: what lives before the room fills is not walked by
    # the collector (each join is parsed just before it is fed, as a stanza arrives).
    freeze_startup_objects()
    try:
        for i in range(occupants):
            stanza = _join(f"user{i}@{domain}/r", f"nick{i}")
            t0 = time.perf_counter()
            out = service.receive(stanza, now)
            times.append(time.perf_counter() - t0)
            copies += _copies(out)
    finally:
        gc.unfreeze()
    total = sum(times)
    window = min(1000, occupants)
    return {"total": total, "slowest_ms": max(times) * 1000,
            "first_ms": sum(times[:window]) / window * 1000,
            "last_ms": sum(times[-window:]) / window * 1000, "copies": copies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--occupants", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=2500.0, help="joins/s (--daemon)")
    parser.add_argument("--daemon", action="store_true", help="also through twistd")
    parser.add_argument("--no-direct", action="store_true", help="skip the direct joins")
    parser.add_argument("--burst", action="store_true",
                        help="through twistd, all joins at once, pings from two senders")
    parser.add_argument("--json", type=Path, help="write the --burst figures here")
    args = parser.parse_args()
    if args.burst:
        main_burst(args.occupants, args.json)
        return
    print(f"{'joins (sans-I/O core)':<22}{'occupants':>10}{'total s':>10}{'slowest ms':>12}"
          f"{'first-1k ms':>13}{'last-1k ms':>12}{'copies':>12}")
    runs = [("through one slave", True)] + ([] if args.no_direct else [("direct", False)])
    for label, through_slave in runs:
        r = run(args.occupants, through_slave)
        print(f"{label:<22}{args.occupants:>10}{r['total']:>10.2f}{r['slowest_ms']:>12.2f}"
              f"{r['first_ms']:>13.3f}{r['last_ms']:>12.3f}{r['copies']:>12,.0f}", flush=True)
    if args.daemon:
        workdir = Path(tempfile.mkdtemp(prefix="dmuc-bench-joins-"))
        # The ping times must be the daemon's: no collection of this process's own
        # garbage (the core runs above left plenty) may delay an answer's reading.
        gc.collect()
        gc.disable()
        try:
            d = asyncio.run(run_daemon(args.occupants, args.rate, workdir))
        finally:
            gc.enable()
            shutil.rmtree(workdir, ignore_errors=True)
        print(f"\ntwistd dmuc-master, {args.occupants} joins through one slave at "
              f"{args.rate:.0f}/s: {d['total']:.2f} s; {d['pings']:.0f} pings from another "
              f"user: p50 {d['ping_p50_ms']:.1f} ms, p99 {d['ping_p99_ms']:.1f} ms, "
              f"max {d['ping_max_ms']:.1f} ms; the daemon reported {d['stalls']:.0f} "
              f"stalls over 100 ms")


# --- the same through the real daemon ------------------------------------------------------

PINGER = "pinger@efnet.irc/r"
SLAVE2 = "dmuc.hub.efnet.irc"
SLAVE2_DOMAIN = "hub.efnet.irc"


def _master_config(workdir: Path) -> Callable[[int], str]:
    def config(port: int) -> str:
        return daemon_toml(jid=SERVICE, host="127.0.0.1", port=port, secret=SECRET,
                           db_path=workdir / "bench.db", level="warn",
                           tables={"muc": {"room_locking": False}},
                           extra_toml="[muc.limits]\nrate = 0\nslave_rate = 0\n",
                           slaves={SLAVE: [SLAVE_DOMAIN], SLAVE2: [SLAVE2_DOMAIN]})
    return config


def _enter_xml(i: int) -> str:
    return (f"<presence from='user{i}@{SLAVE_DOMAIN}/r' to='{ROOM}/nick{i}'>"
            f"<x xmlns='{xmlns.MUC}'><history maxstanzas='0'/></x></presence>")


async def _register(server: FakeServer, slave: str) -> None:
    registered = server.expect(f"<iq[^>]*id='reg-{slave}'".encode())
    server.send(f"<iq type='set' id='reg-{slave}' from='{slave}' to='{ROOM}'>"
                f"<register xmlns='{xmlns.DMUC}' keepalive='600' history='0'/></iq>")
    await asyncio.wait_for(registered, 30)


async def pinger(server: FakeServer, label: str, sender: str, rtts: list[float],
                 done: asyncio.Event) -> None:
    """Ping the service from `sender` every 50 ms until `done`, noting each round trip."""
    n = 0
    while not done.is_set():
        n += 1
        answer = server.expect(f"id='{label}{n}'".encode())
        sent = time.perf_counter()
        server.send(f"<iq type='get' id='{label}{n}' from='{sender}' to='{SERVICE}'>"
                    f"<ping xmlns='{xmlns.PING}'/></iq>")
        await asyncio.wait_for(answer, 120)
        rtts.append(time.perf_counter() - sent)
        await asyncio.sleep(0.05)


def _percentiles(label: str, rtts: list[float]) -> dict[str, float]:
    rtts = sorted(rtts)
    return {f"{label}_pings": len(rtts),
            f"{label}_p50_ms": rtts[len(rtts) // 2] * 1000,
            f"{label}_p99_ms": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1000,
            f"{label}_max_ms": rtts[-1] * 1000}


async def run_burst(occupants: int, workdir: Path) -> dict[str, float]:
    """`twistd dmuc-master` on a fake Prosody with two slaves registered: the first writes
    `occupants` ENTERs at once; a direct user and the second slave each ping the service
    every 50 ms until the last ENTER is answered."""
    async with daemon_on_fake_server("dmuc-master", SERVICE, workdir,
                                     _master_config(workdir)) as server:
        await _register(server, SLAVE)
        await _register(server, SLAVE2)
        marks = sorted({n for n in (1000, 5000, occupants) if n <= occupants})
        answered = {n: server.expect(f"<enter jid='user{n - 1}@{SLAVE_DOMAIN}/r'".encode())
                    for n in marks}
        done = asyncio.Event()
        rtts: dict[str, list[float]] = {"direct": [], "slave": []}

        started = time.perf_counter()
        server.send("".join(_enter_xml(i) for i in range(occupants)))
        tasks = [asyncio.create_task(pinger(server, "direct", PINGER, rtts["direct"], done)),
                 asyncio.create_task(pinger(server, "slave", SLAVE2, rtts["slave"], done))]
        result: dict[str, float] = {"occupants": occupants}
        for n in marks:
            await asyncio.wait_for(answered[n], 600)
            result[f"enter_{n}_s"] = time.perf_counter() - started
        done.set()
        await asyncio.gather(*tasks)
        result["stalls"] = server.daemon.log_text().count("the reactor was held")
    result.update(_percentiles("direct", rtts["direct"]))
    result.update(_percentiles("slave", rtts["slave"]))
    return result


def main_burst(occupants: int, json_path: Path | None) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="dmuc-bench-burst-"))
    gc.collect()
    gc.disable()  # the times must be the daemon's, not this process's collections
    try:
        r = asyncio.run(run_burst(occupants, workdir))
    finally:
        gc.enable()
        shutil.rmtree(workdir, ignore_errors=True)
    enters = ", ".join(f"{k.split('_')[1]} by {v:.2f} s" for k, v in r.items()
                       if k.startswith("enter_"))
    print(f"twistd dmuc-master, {occupants} ENTERs written at once by one slave: answered "
          f"{enters}; the daemon reported {r['stalls']:.0f} stalls over 100 ms")
    for label, who in (("direct", "a direct user"), ("slave", "another slave")):
        print(f"  pings from {who}: {r[label + '_pings']:.0f}, p50 "
              f"{r[label + '_p50_ms']:.1f} ms, p99 {r[label + '_p99_ms']:.1f} ms, "
              f"max {r[label + '_max_ms']:.1f} ms")
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps({"command": "python -m benchmarks.joins --burst "
                                         f"--occupants {occupants}", **r}, indent=1) + "\n")


async def run_daemon(occupants: int, rate: float, workdir: Path) -> dict[str, float]:
    """`twistd dmuc-master` on a fake Prosody: a slave registers, then `occupants` users of
    its domain join at `rate` joins/s while an unrelated user pings the service every
    50 ms. Reports the time until the last ENTER reached the slave and the ping times."""

    def config(port: int) -> str:
        return daemon_toml(jid=SERVICE, host="127.0.0.1", port=port, secret=SECRET,
                           db_path=workdir / "bench.db", level="warn",
                           tables={"muc": {"room_locking": False}},
                           extra_toml="[muc.limits]\nrate = 0\nslave_rate = 0\n",
                           slaves={SLAVE: [SLAVE_DOMAIN]})

    async with daemon_on_fake_server("dmuc-master", SERVICE, workdir, config) as server:
        registered = server.expect(b"<registered")
        server.send(f"<iq type='set' id='r' from='{SLAVE}' to='{ROOM}'>"
                    f"<register xmlns='{xmlns.DMUC}' keepalive='60' history='0'/></iq>")
        await asyncio.wait_for(registered, 30)
        last_enter = server.expect(
            f"<enter jid='user{occupants - 1}@{SLAVE_DOMAIN}/r'".encode())
        rtts: list[float] = []
        done = asyncio.Event()

        ping_task = asyncio.create_task(pinger(server, "ping", PINGER, rtts, done))
        started = time.perf_counter()
        chunk = max(int(rate / 100), 1)  # every 10 ms
        for first in range(0, occupants, chunk):
            for i in range(first, min(first + chunk, occupants)):
                server.send(
                    f"<presence from='user{i}@{SLAVE_DOMAIN}/r' to='{ROOM}/nick{i}'>"
                    f"<x xmlns='{xmlns.MUC}'><history maxstanzas='0'/></x></presence>")
            await asyncio.sleep(max(started + (first + chunk) / rate - time.perf_counter(), 0))
        await asyncio.wait_for(last_enter, 600)
        total = time.perf_counter() - started
        done.set()
        await ping_task
        stalls = server.daemon.log_text().count("the reactor was held")
    rtts.sort()
    return {"total": total, "pings": len(rtts), "stalls": stalls,
            "ping_p50_ms": rtts[len(rtts) // 2] * 1000,
            "ping_p99_ms": rtts[min(len(rtts) - 1, int(len(rtts) * 0.99))] * 1000,
            "ping_max_ms": rtts[-1] * 1000}


if __name__ == "__main__":
    main()
