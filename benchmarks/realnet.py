"""dmuc against Prosody's own mod_muc on the same real network, side by side (``make bench``).

One run of ``python -m benchmarks.realnet`` brings up the testbed network (five Prosody
servers on loopback with real s2s and dialback through the counting proxies, the dmuc
master on avalon.irc, a dmuc slave on each users' server) plus Prosody's mod_muc as
``Component "conference.avalon.irc" "muc"`` on the master's Prosody. N users spread over K
users' servers log in over c2s, as real users, from a separate process
(:mod:`benchmarks.loadgen`). Then, for each system in turn, the SAME scenario in a room of
its own (``bench@channel.avalon.irc``, then ``bench@conference.avalon.irc``):

1. the N occupants enter (no history);
2. a newcomer enters and leaves again, ``--newcomers`` times: the time until it has the
   whole roster (its own presence comes after every other occupant's);
3. paced: one sender on each users' server, ``--paced-rate`` messages/s in all for
   ``--paced-seconds``: send-to-delivery latency, and what crossed the s2s links;
4. flood: the same senders as fast as a bounded window allows (each sender has at most
   ``--window`` messages not yet delivered to every occupant) for ``--flood-seconds``:
   delivered stanzas/s = copies delivered / (last delivery - first send);
5. the occupants leave.

CPU seconds are utime+stime (/proc/PID/stat) of every server-side process: the five
Prosody servers, the master and the slaves. Rate limits are off on both sides ([muc.limits]
rate = 0; Prosody loads no mod_muc_limits), and so is room locking. The results go to
stdout and into docs/benchmarks.md (between the markers), the ratios dmuc / mod_muc beside.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from testbed.faults import DmucDaemons
from testbed.network import MASTER_DOMAIN, MUC_SERVICE, DmucNetwork
from testbed.prosody import ComponentSpec, TestbedError

MOD_MUC_SERVICE = f"conference.{MASTER_DOMAIN}"
SYSTEMS = (("dmuc", MUC_SERVICE), ("mod_muc", MOD_MUC_SERVICE))
# no rate limits: the benchmark floods on purpose
MASTER_TOML = "[muc.limits]\nrate = 0\nslave_rate = 0\n"
REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "benchmarks.md"
# the marked sections of DOC each command rewrites: ``make bench`` and ``make bench-scale``
SECTIONS = ("realnet", "realnet-scale")
CLK_TCK = os.sysconf("SC_CLK_TCK")
# the slowest delivery rate (c2s copies/s) the drain allows for; mod_muc's flood at
# N=2,000 on K=10 ran at 1,756
DRAIN_FLOOR_RATE = 1000.0
# the paced phase runs at this share of the slower system's flood delivery rate (but at
# most --paced-rate): latency under load, not queueing at saturation
PACED_SHARE = 0.5


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process, from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def memory_kib(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (peak RSS) of a process, KiB."""
    out: dict[str, int] = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0])
    return out


class LoadProcess:
    """benchmarks.loadgen in a process of its own, one JSON command a line."""

    def __init__(self) -> None:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen([sys.executable, "-m", "benchmarks.loadgen"], cwd=REPO,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"cmd": cmd, **args}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise TestbedError(f"loadgen exited ({self.proc.wait()}) during {cmd}")
        answer = json.loads(line)
        if not answer.pop("ok"):
            raise TestbedError(f"loadgen {cmd}: {answer['error']}")
        return answer

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                self.call("quit")
            except (TestbedError, OSError, ValueError):
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


@dataclass
class Settings:
    occupants: int = 300
    servers: int = 3
    newcomers: int = 5
    paced_rate: float = 30.0
    paced_seconds: float = 10.0
    flood_seconds: float = 10.0
    # the flood's window per sender, at most: see flood_window
    window: int = 20
    # c2s deliveries the flood may have in flight in all (senders x window x N): a backlog
    # the servers clear in seconds, so the rate is theirs and the drain sees every copy
    in_flight: int = 200_000
    # the wait for the last copies after the last send: this, plus the flood's deliveries
    # in flight at DRAIN_FLOOR_RATE
    drain: float = 60.0
    # mod_dmuc_slave's one-copy fan-out (docs/protocol.md §4.15); False: a copy per user
    fanout: bool = True
    # the roles whose presence the room broadcasts (muc#roomconfig_presencebroadcast, set
    # by the first occupant, the owner, before the others enter); None: every role, the
    # default. ("moderator",) makes N joins cost O(N) copies instead of N² (at N=10,000,
    # 100 million presences: hours on either system), and the newcomer's roster the
    # moderators only
    broadcast: tuple[str, ...] | None = None
    # the systems run (mod_muc's joins cost it O(room size) each even when it lists no
    # one: send_occupant_list builds every occupant's presence before filtering, so N
    # joins cost it O(N²) work, about 75 min at N=10,000 on this machine)
    systems: tuple[str, ...] = ("dmuc", "mod_muc")
    # the slaves' keepalive (s), which the master uses too; short ones find splits soon
    keepalive: int = 60


class Rig:
    """The network, the daemons and the load process of one case."""

    def __init__(self, settings: Settings, workdir: Path) -> None:
        self.settings = settings
        muc = ComponentSpec(MOD_MUC_SERVICE, "", plugin="muc",
                            options={"muc_room_locking": False})
        self.network = DmucNetwork(workdir / "net", extra_components={MASTER_DOMAIN: [muc]},
                                   log_level="info", slaves_count=settings.servers)
        self.user_domains = list(self.network.slave_domains)
        self.network.counter.keep_log = False
        for domain in self.user_domains:
            options = self.network.servers[domain].prosody.host_options[domain]
            options = {**options, "dmuc_slave_fanout": settings.fanout}
            self.network.servers[domain].prosody.host_options[domain] = options
        self.daemons: DmucDaemons | None = None
        self.load: LoadProcess | None = None
        self.extra_loads: list[LoadProcess] = []  # more load processes (the bursts')
        self.workdir = workdir

    def start(self) -> Rig:
        self.network.start()
        self.daemons = DmucDaemons(self.network, self.workdir / "daemons",
                                   keepalive=self.settings.keepalive,
                                   master_toml=MASTER_TOML).start()
        self.load = LoadProcess()
        return self

    def stop(self) -> None:
        for load in [*self.extra_loads, self.load]:
            if load is not None:
                load.stop()
        if self.daemons is not None:
            self.daemons.stop()
        self.network.stop()

    def server_pids(self) -> dict[str, int]:
        """Every server-side process: the Prosody servers, the master, the slaves."""
        assert self.daemons is not None
        pids = {f"prosody {d}": s.prosody.pid for d, s in self.network.servers.items()}
        pids["master"] = self.daemons.master.pid
        pids |= {f"slave {d}": daemon.pid for d, daemon in self.daemons.slaves.items()}
        return {k: v for k, v in pids.items() if v is not None}

    def cpu(self) -> dict[str, float]:
        return {name: cpu_seconds(pid) for name, pid in self.server_pids().items()}

    def s2s(self) -> dict[str, tuple[int, int, int]]:
        """(stanzas of all kinds, bytes, messages) forwarded per link direction ``a>b``."""
        out = {}
        domains = list(self.network.servers)
        for a in domains:
            for b in domains:
                if a != b:
                    counts = self.network.s2s_counts(b, a)
                    out[f"{a}>{b}"] = (sum(counts.values()), self.network.s2s_bytes(b, a),
                                       counts["message"])
        return out

    def accounts(self, n: int, prefix: str = "u",
                 domains: Sequence[str] | None = None) -> list[list[Any]]:
        """``n`` accounts spread evenly over ``domains`` (default: the users' servers)."""
        domains = list(domains or self.user_domains)
        out = []
        for i in range(n):
            domain = domains[i % len(domains)]
            server = self.network.servers[domain]
            out.append([f"{prefix}{i}@{domain}", server.ip, server.c2s_port])
        return out


@contextmanager
def rig(settings: Settings) -> Iterator[Rig]:
    workdir = Path(tempfile.mkdtemp(prefix="dmuc-bench-"))
    if os.geteuid() == 0:
        workdir.chmod(0o755)
    r = Rig(settings, workdir)
    try:
        yield r.start()
    finally:
        r.stop()
        if not os.environ.get("DMUC_KEEP_TESTBED"):
            shutil.rmtree(workdir, ignore_errors=True)


def _delta(after: dict[str, float], before: dict[str, float]) -> float:
    return sum(after[k] - before.get(k, 0.0) for k in after)


def _memory(r: Rig) -> dict[str, int]:
    return {k: memory_kib(p)["VmRSS"] for k, p in r.server_pids().items()}


def enter(r: Rig, out: dict[str, Any], room: str, occupants: list[int]) -> None:
    """The occupants enter; the time, CPU and the server side's RSS growth per occupant:
    over the whole enter (the room's costs included; each process's first-use costs are
    not, see warm_up), and over the last nine tenths (what each further occupant costs:
    the slope)."""
    assert r.load is not None
    mem0, cpu0 = _memory(r), r.cpu()
    began = time.monotonic()
    # the first occupant creates the room (its owner: it destroys the room at the end)
    r.load.call("join", room=room, clients=occupants[:1])
    if r.settings.broadcast is not None:
        r.load.call("configure", room=room, client=occupants[0],
                    broadcast=list(r.settings.broadcast))
    occupants = occupants[1:]
    first, rest = occupants[:len(occupants) // 10], occupants[len(occupants) // 10:]
    r.load.call("join", room=room, clients=first)
    mem_first = _memory(r)
    r.load.call("join", room=room, clients=rest)
    out["join_seconds"] = time.monotonic() - began
    out["join_cpu"] = _delta(r.cpu(), cpu0)
    mem1 = _memory(r)
    out["rss_growth_kib_by_process"] = {k: mem1[k] - mem0.get(k, 0) for k in mem1}
    out["rss_growth_kib_per_occupant"] = \
        (sum(mem1.values()) - sum(mem0.values())) / r.settings.occupants
    out["rss_slope_kib_by_process"] = {k: mem1[k] - mem_first.get(k, 0) for k in mem1}
    out["rss_slope_kib_per_occupant"] = \
        (sum(mem1.values()) - sum(mem_first.values())) / max(1, len(rest))


def warm_up(r: Rig, service: str, clients: list[int]) -> None:
    """A few users of every users' server enter a small room of ``service`` and leave it,
    before any figure is taken: each process's first-use costs (code paths run the first
    time, buffers and caches filled once) are then not counted as the big room's. Run on
    both systems alike."""
    assert r.load is not None
    room = f"warm@{service}"
    r.load.call("join", room=room, clients=clients)
    r.load.call("leave", room=room, clients=clients)


def newcomers(r: Rig, out: dict[str, Any], room: str, newcomer: int) -> None:
    """A newcomer enters (and leaves) ``settings.newcomers`` times: p50 time to the roster."""
    assert r.load is not None
    times, firsts = [], []
    for _ in range(r.settings.newcomers):
        answer = r.load.call("newcomer", room=room, client=newcomer)
        times.append(answer["seconds"])
        firsts.append(answer["first"])
        out["newcomer_presences"] = answer["presences"]
        r.load.call("leave", room=room, clients=[newcomer])
    times.sort()
    firsts.sort()
    out["newcomer_p50"] = times[len(times) // 2] if times else None
    out["newcomer_first_p50"] = firsts[len(firsts) // 2] if firsts else None


def settle(r: Rig, quiet: float = 2.0, limit: float = 180.0) -> float:
    """Wait until nothing crosses the s2s links for ``quiet`` seconds (at most ``limit``):
    what the previous phase left in flight (mod_muc's flood backlog is still draining
    minutes later at N=2,000) must not be counted in the next one. The seconds waited."""
    began = time.monotonic()
    last, since = -1, began
    while time.monotonic() - began < limit:
        total = sum(sum(v[:2]) for v in r.s2s().values())
        now = time.monotonic()
        if total != last:
            last, since = total, now
        elif now - since >= quiet:
            break
        time.sleep(0.25)  # a window of silence has no event to await
    return time.monotonic() - began


def flood_window(s: Settings) -> int:
    """The flood's window per sender: ``s.window``, but no more than ``s.in_flight``
    deliveries in flight in all (20 at N=300 on K=10, 10 at N=2,000, 2 at N=10,000).
    A fixed window puts senders x window x N copies in flight: 2 million at N=10,000,
    minutes of backlog in the users' Prosody servers, more than the drain waits for."""
    return max(1, min(s.window, s.in_flight // (s.servers * s.occupants)))


def drain_seconds(s: Settings, window: int) -> float:
    """How long a traffic phase waits for its last copies: ``s.drain`` plus the time
    the most the flood can have in flight takes at DRAIN_FLOOR_RATE."""
    return s.drain + s.servers * window * s.occupants / DRAIN_FLOOR_RATE


def paced_rate(s: Settings, floods: Sequence[dict[str, Any]]) -> float:
    """Messages/s of the paced phase: ``s.paced_rate``, or PACED_SHARE of what the slower
    flood delivered (copies/s over N receivers) if that is less. A floor of 1 msg/s put
    N=10,000 at 10,000 copies/s, 90 % of the flood's rate: the latency was queueing."""
    slowest = min(f["rate"] for f in floods) / max(1, s.occupants)
    return min(s.paced_rate, max(0.05, PACED_SHARE * slowest))


def traffic(r: Rig, room: str, occupants: list[int], **args: Any) -> dict[str, Any]:
    """One traffic phase from one sender on each users' server; CPU and s2s counted."""
    assert r.load is not None
    senders = occupants[:len(r.user_domains)]
    settled = settle(r)
    r.network.reset_counts()
    cpu0, load0 = r.cpu(), cpu_seconds(r.load.pid)
    drain = drain_seconds(r.settings, flood_window(r.settings))
    result = r.load.call("traffic", room=room, senders=senders, drain=drain,
                         receivers=occupants, **args)
    cpu1 = r.cpu()
    # the clients' own process: near one core's worth of the elapsed time, it bounds the rate
    result["load_cpu"] = cpu_seconds(r.load.pid) - load0
    result["settled_seconds"] = settled
    result["cpu"] = _delta(cpu1, cpu0)
    result["cpu_by_process"] = {k: v - cpu0[k] for k, v in cpu1.items()}
    result["s2s"] = r.s2s()
    return result


def run_both(r: Rig, occupants: list[int], newcomer: int,
             warm: Sequence[int] = ()) -> dict[str, dict[str, Any]]:
    """Both rooms, each phase on one system then the other (so both meet the machine's
    load of the same minutes): enter, newcomers, flood, then paced at a rate both sustain
    (the given rate, or half the slower flood's messages/s if that is less)."""
    s = r.settings
    out: dict[str, dict[str, Any]] = {
        system: {"system": system, "room": f"bench@{service}"} for system, service in SYSTEMS
        if system in s.systems}
    for system, service in SYSTEMS:
        if system in out and warm:
            warm_up(r, service, list(warm))
    # the enter runs mod_muc's room first: a process's heap keeps what a burst of garbage
    # took, and the users' Prosody servers serve both systems, so the second enter reuses
    # what the first left there (in the other order they grew ~2.8 KiB per occupant in
    # dmuc's enter and nothing in mod_muc's, docs/benchmarks.md). mod_muc's own process
    # (avalon.irc's Prosody, which holds its room) does nothing in dmuc's enter, and
    # dmuc's daemons nothing in mod_muc's: each is measured fresh in either order.
    for res in reversed(out.values()):
        enter(r, res, res["room"], occupants)
    for res in out.values():
        newcomers(r, res, res["room"], newcomer)
    window = flood_window(s)
    for res in out.values():
        res["flood_window"] = window
        res["flood"] = traffic(r, res["room"], occupants, count=10**6, window=window,
                               duration=s.flood_seconds)
    rate = paced_rate(s, [res["flood"] for res in out.values()])
    senders = len(r.user_domains)
    count = max(1, round(rate * s.paced_seconds / senders))
    for res in out.values():
        res["paced_rate"] = rate
        # every scheduled message is sent: the last at (count - 1) * senders / rate s
        res["paced"] = traffic(r, res["room"], occupants, count=count, rate=rate,
                               duration=s.paced_seconds * 2 + count * senders / rate)
    assert r.load is not None
    for res in out.values():
        # its owner destroys the room: one presence to each occupant, where N leaves
        # would cost N² (each goes to everyone left: minutes at K=10 and N=1,000)
        r.load.call("destroy", room=res["room"], client=occupants[0], timeout=600.0)
        res["memory"] = {k: memory_kib(p) for k, p in r.server_pids().items()}
    return out


def broadcast_costs(r: Rig, result: dict[str, Any]) -> dict[str, float]:
    """s2s stanzas and bytes per broadcast of the paced phase, master's server -> users'
    servers (the fan-out), and over every link in both directions."""
    paced = result["paced"]
    sent = max(1, paced["sent"])
    out_links = [f"{MASTER_DOMAIN}>{d}" for d in r.user_domains]
    return {
        "messages": sum(paced["s2s"][k][2] for k in out_links) / sent,
        "stanzas": sum(paced["s2s"][k][0] for k in out_links) / sent,
        "bytes": sum(paced["s2s"][k][1] for k in out_links) / sent,
        "all_stanzas": sum(v[0] for v in paced["s2s"].values()) / sent,
        "all_bytes": sum(v[1] for v in paced["s2s"].values()) / sent,
    }


def run_case(settings: Settings) -> dict[str, Any]:
    """Both systems on one network, in one run."""
    with rig(settings) as r:
        assert r.load is not None
        n = settings.occupants
        warm = r.accounts(2 * len(r.user_domains), "warm")
        accounts = r.accounts(n) + [r.accounts(1, "newcomer")[0]] + warm
        r.load.call("connect", accounts=accounts)
        results = run_both(r, list(range(n)), newcomer=n,
                           warm=range(n + 1, n + 1 + len(warm)))
        for result in results.values():
            result["per_broadcast"] = broadcast_costs(r, result)
        return {"settings": settings.__dict__, "results": results}


# ----------------------------------------------------------------------------------------------
# the table


def _fmt(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "-"
    return f"{value:,.{digits}f}"


def rows(case: dict[str, Any]) -> list[tuple[str, str, str, str]]:
    """(figure, dmuc, mod_muc, ratio dmuc / mod_muc); "-" where a system was not run."""
    results = case["results"]
    d = results["dmuc"]
    out: list[tuple[str, str, str, str]] = []

    def row(name: str, get: Callable[[dict[str, Any]], float | None],
            digits: int = 1) -> None:
        a, b = (get(results[k]) if k in results else None for k in ("dmuc", "mod_muc"))
        ratio = f"{a / b:.2f}" if a is not None and b else "-"
        out.append((name, _fmt(a, digits), _fmt(b, digits), ratio))

    def per_1000(x: dict[str, Any]) -> float | None:
        return 1000 * x["cpu"] / x["delivered"] if x["delivered"] else None

    def mib(r: dict[str, Any], prefix: str) -> float:
        return sum(v["VmHWM"] for k, v in r["memory"].items() if k.startswith(prefix)) / 1024

    def ms(value: float | None) -> float | None:
        return None if value is None else 1000 * value

    window = d.get("flood_window", case["settings"]["window"])
    row(f"flood (window {window} per sender): delivered stanzas/s",
        lambda x: x["flood"]["rate"], 0)
    row("flood: messages sent", lambda x: x["flood"]["sent"], 0)
    row("flood: copies missing / duplicated",
        lambda x: x["flood"]["missing"] + x["flood"]["duplicates"], 0)
    row("flood: server CPU s per 1,000 delivered", lambda x: per_1000(x["flood"]), 3)
    row(f"paced {d['paced_rate']:.1f} msg/s: p50 latency ms", lambda x: ms(x["paced"]["p50"]))
    row("paced: p99 latency ms", lambda x: ms(x["paced"]["p99"]))
    row("paced: copies missing / duplicated",
        lambda x: x["paced"]["missing"] + x["paced"]["duplicates"], 0)
    row("paced: server CPU s per 1,000 delivered", lambda x: per_1000(x["paced"]), 3)
    for key, name, digits in (
            ("messages", "s2s messages per broadcast (master's server -> users' servers)", 2),
            ("stanzas", "s2s stanzas of all kinds per broadcast (master's server -> users' "
                        "servers)", 2),
            ("bytes", "s2s bytes per broadcast (master's server -> users' servers)", 0),
            ("all_stanzas", "s2s stanzas per broadcast (all links, both ways)", 2),
            ("all_bytes", "s2s bytes per broadcast (all links, both ways)", 0)):
        row(name, lambda x, key=key: x["per_broadcast"][key], digits)
    shown = case["settings"].get("broadcast")
    roster = "whole roster" if shown is None else f"roster ({'/'.join(shown)} shown)"
    row(f"newcomer gets the {roster} (p50 of {case['settings']['newcomers']}), ms",
        lambda x: ms(x["newcomer_p50"]))
    row("newcomer: first roster presence (p50), ms", lambda x: ms(x["newcomer_first_p50"]))
    row(f"{case['settings']['occupants']} occupants enter, s", lambda x: x["join_seconds"], 2)
    row("RSS growth of the server side per occupant, KiB",
        lambda x: x["rss_growth_kib_per_occupant"], 1)
    row("RSS growth per occupant over the last nine tenths of the enter, KiB",
        lambda x: x.get("rss_slope_kib_per_occupant"), 1)
    m = results.get("mod_muc")
    out.append(("peak RSS master / slaves (dmuc), master's Prosody (both), MiB",
                f"{mib(d, 'master'):.1f} / {mib(d, 'slave'):.1f}",
                "-" if m is None else f"{mib(m, 'prosody ' + MASTER_DOMAIN):.1f}", "-"))
    return out


def table(case: dict[str, Any]) -> str:
    s = case["settings"]
    fanout = "one copy + recipient list" if s.get("fanout", True) else "a copy per user"
    shown = s.get("broadcast")
    presence = "" if shown is None else \
        f"; the room broadcasts the presence of {'/'.join(shown)} only"
    lines = [f"N = {s['occupants']} occupants on K = {s['servers']} users' servers "
             f"(slave -> its Prosody: {fanout}{presence})",
             "", "| figure | dmuc | mod_muc | dmuc / mod_muc |", "|---|---:|---:|---:|"]
    lines += [f"| {a} | {b} | {c} | {r} |" for a, b, c, r in rows(case)]
    return "\n".join(lines)


def cpu_split(case: dict[str, Any]) -> str:
    """Per process: the flood's CPU seconds, and peak RSS (VmHWM) over the whole run."""
    lines = []
    for system, res in case["results"].items():
        parts = ", ".join(f"{k} {v:.1f}" for k, v in res["flood"]["cpu_by_process"].items()
                          if v > 0.05)
        lines.append(f"- {system} flood, CPU s by process: {parts}; the load process "
                     f"(the clients, not counted above) {res['flood'].get('load_cpu', 0):.1f}"
                     f" s in {res['flood']['elapsed']:.1f} s")
    # the processes are shared by both systems (the users' Prosody servers serve both
    # rooms): the peak is read after each system's run, the later one covers both
    peaks = list(case["results"].values())[-1]["memory"]
    parts = ", ".join(f"{k} {v['VmHWM'] / 1024:.0f}" for k, v in peaks.items())
    lines.append(f"- peak RSS by process after both runs, MiB: {parts}")
    return "\n".join(lines)


def write_doc(cases: Sequence[dict[str, Any]], command: str, section: str = SECTIONS[0],
              extra: Sequence[str] = ()) -> None:
    """Rewrite ``section`` of docs/benchmarks.md (between its markers) with the tables."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    when = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    body = [begin, "", f"Run {when} on {platform.node() or 'this machine'} "
            f"({os.cpu_count()} CPUs), command:", "", "```sh", command, "```", ""]
    for case in cases:
        body += [table(case), "", cpu_split(case), ""]
    body += [*extra, end]
    replace_section(section, body)


def replace_section(section: str, body: Sequence[str], heading: str = "") -> None:
    """Put ``body`` (its lines, markers included) between ``section``'s markers in
    docs/benchmarks.md, or append it (under ``heading``) if the markers are not there."""
    begin, end = f"<!-- {section}:begin -->", f"<!-- {section}:end -->"
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n\n"
    if begin in text and end in text:
        head, rest = text.split(begin, 1)
        text = head + "\n".join(body) + rest.split(end, 1)[1]
    else:
        text += "\n" + (f"{heading}\n\n" if heading else "") + "\n".join(body) + "\n"
    DOC.write_text(text)


def add_case_arguments(p: argparse.ArgumentParser, occupants: list[int],
                       servers: int) -> None:
    """The options of one case (shared with ``benchmarks.scale``)."""
    p.add_argument("--occupants", type=int, nargs="+", default=occupants)
    p.add_argument("--servers", type=int, default=servers,
                   help="K: users' servers with a slave (the network has K + 2 servers)")
    p.add_argument("--newcomers", type=int, default=5)
    p.add_argument("--paced-rate", type=float, default=30.0)
    p.add_argument("--paced-seconds", type=float, default=10.0)
    p.add_argument("--flood-seconds", type=float, default=10.0)
    p.add_argument("--window", type=int, default=20,
                   help="the flood's window per sender, at most (see --in-flight)")
    p.add_argument("--in-flight", type=int, default=200_000,
                   help="c2s deliveries the flood may have in flight in all: the window "
                        "is lowered to senders x window x N <= this")
    p.add_argument("--no-fanout", action="store_true",
                   help="the slaves send one copy per local user (mod_dmuc_slave's "
                        "dmuc_slave_fanout = false)")
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    p.add_argument("--json", type=Path, help="also write the raw figures here")


def settings_for(args: argparse.Namespace, occupants: int,
                 broadcast: tuple[str, ...] | None = None) -> Settings:
    return Settings(occupants=occupants, servers=args.servers, newcomers=args.newcomers,
                    paced_rate=args.paced_rate, paced_seconds=args.paced_seconds,
                    flood_seconds=args.flood_seconds, window=args.window,
                    in_flight=args.in_flight,
                    fanout=not args.no_fanout, broadcast=broadcast)


def run_cases(settings: Sequence[Settings]) -> list[dict[str, Any]]:
    """Each case on a network of its own; its table printed as it ends."""
    cases = []
    for one in settings:
        print(f"-- N={one.occupants} K={one.servers}: dmuc and mod_muc ...", flush=True)
        case = run_case(one)
        cases.append(case)
        print(table(case), flush=True)
        print(cpu_split(case), flush=True)
    return cases


def command_line(module: str, argv: Sequence[str] | None) -> str:
    return f"python -m {module} " + " ".join(sys.argv[1:] if argv is None else argv)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_case_arguments(p, occupants=[300, 1000], servers=3)
    args = p.parse_args(argv)
    began = time.monotonic()
    cases = run_cases([settings_for(args, n) for n in args.occupants])
    print(f"({time.monotonic() - began:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(cases, indent=1))
    if not args.no_doc:
        write_doc(cases, command_line("benchmarks.realnet", argv).strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
