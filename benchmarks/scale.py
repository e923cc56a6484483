"""dmuc against Prosody's mod_muc at scale, K=10 users' servers (``make bench-scale``).

One run of ``python -m benchmarks.scale`` does, each on a network of its own (the testbed
of :mod:`testbed.network` with K users' servers with a slave each, plus the master's server
and a direct one, and Prosody's mod_muc on the master's server):

1. the cases of :mod:`benchmarks.realnet` (enter, newcomer's roster, flood, paced latency,
   s2s stanzas and bytes per broadcast, server CPU per 1,000 delivered stanzas, memory per
   occupant, peak RSS) at each ``--occupants`` N. Above ``--full-roster-up-to`` the room
   broadcasts the moderators' presence only (set by its owner, the first occupant, before
   the others enter): N joins with every presence broadcast cost N² copies, 100 million
   at N=10,000, hours on either system on two cores;
2. the burst (``--burst`` B): B users of one users' server send their joins at once (dmuc:
   their slave forwards B ENTERs at once; mod_muc: B joins over s2s), then B users of the
   direct server do the same, each into each system's room, while a direct user and a
   user behind another slave (both in the room) ping the room, the next ping 50 ms after
   each answer: when the 1,000th, 5,000th and last joiner had its own presence back, and
   the pings' p50 / p99 / max.

mod_muc runs only up to ``--mod-muc-up-to`` N (rooms and bursts): its joins cost it
O(room size) each (Prosody 0.12's send_occupant_list builds every occupant's presence
before it filters them), about 80 min for the enter of N=10,000 on two cores.

Prints the tables with the ratios, writes them into docs/benchmarks.md (between the
``realnet-scale`` markers) with the command, and the raw figures to ``--json``
(docs/bench/realnet-scale.json by default).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.loadgen import percentile
from benchmarks.realnet import (
    REPO,
    SECTIONS,
    SYSTEMS,
    LoadProcess,
    Rig,
    Settings,
    add_case_arguments,
    command_line,
    rig,
    run_cases,
    settings_for,
    write_doc,
)
from testbed.network import DIRECT_DOMAIN

JSON = REPO / "docs" / "bench" / "realnet-scale.json"
# the roles the big rooms broadcast (see the module's docstring)
MODERATORS_ONLY = ("moderator",)


@dataclass
class BurstSettings:
    joins: int = 10_000
    servers: int = 10
    marks: tuple[int, ...] = (1000, 5000)
    systems: tuple[str, ...] = ("dmuc", "mod_muc")


def _burst_accounts(r: Rig, prefix: str, domain: str, joins: int,
                    pinger_domain: str) -> list[list[Any]]:
    """``joins`` users of ``domain``, then the two pingers: a direct user and a user of
    ``pinger_domain`` (behind another slave)."""
    return [*r.accounts(joins, prefix, [domain]), *r.accounts(1, f"{prefix}pd", [DIRECT_DOMAIN]),
            *r.accounts(1, f"{prefix}ps", [pinger_domain])]


def _ping_figures(rtts: list[float]) -> dict[str, float | int | None]:
    worst = max(rtts) if rtts else None
    return {"pings": len(rtts), "p50_ms": 1000 * (percentile(rtts, 50) or 0),
            "p99_ms": 1000 * (percentile(rtts, 99) or 0),
            "max_ms": None if worst is None else 1000 * worst}


def _one_burst(r: Rig, load: LoadProcess, service: str, label: str, joins: int,
               marks: Sequence[int]) -> dict[str, Any]:
    """One burst into a fresh room of ``service``: the direct pinger creates it (owner)
    and makes it broadcast the moderators' presence only, the other pinger enters, then
    the ``joins`` users send their joins at once; everyone leaves afterwards."""
    direct, behind = joins, joins + 1  # the pingers' indexes in this load process
    room = f"burst-{label}@{service}"
    load.call("join", room=room, clients=[direct])
    load.call("configure", room=room, client=direct, broadcast=list(MODERATORS_ONLY))
    load.call("join", room=room, clients=[behind])
    cpu0 = r.cpu()
    answer = load.call("burst", room=room, clients=list(range(joins)),
                       pingers=[direct, behind], marks=[*marks, joins])
    cpu = sum(v - cpu0.get(k, 0.0) for k, v in r.cpu().items())
    load.call("leave", room=room, clients=[*range(joins), behind, direct])
    return {"room": room, "marks": answer["marks"], "server_cpu": cpu,
            "direct_ping": _ping_figures(answer["pings"][str(direct)]),
            "slave_ping": _ping_figures(answer["pings"][str(behind)])}


def run_burst(settings: BurstSettings) -> dict[str, Any]:
    """Both bursts (through a slave, direct), each into dmuc's room then mod_muc's."""
    with rig(Settings(occupants=settings.joins, servers=settings.servers)) as r:
        assert r.load is not None
        burst_server, pinger_server = r.user_domains[0], r.user_domains[-1]
        direct_load = LoadProcess()
        r.extra_loads.append(direct_load)
        loads = {"slave": (r.load, burst_server), "direct": (direct_load, DIRECT_DOMAIN)}
        for label, (load, domain) in loads.items():
            load.call("connect", accounts=_burst_accounts(r, label[0], domain,
                                                          settings.joins, pinger_server))
        out: dict[str, Any] = {"settings": settings.__dict__, "burst_server": burst_server,
                               "pinger_server": pinger_server, "results": {}}
        for label, (load, _domain) in loads.items():
            for system, service in SYSTEMS:
                if system not in settings.systems:
                    continue
                print(f"-- burst of {settings.joins} joins ({label}) into {system} ...",
                      flush=True)
                out["results"][f"{label} {system}"] = _one_burst(
                    r, load, service, label, settings.joins, settings.marks)
        return out


def _fmt_ms(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def burst_table(burst: dict[str, Any]) -> list[str]:
    """The burst table, dmuc's row above mod_muc's for each burst."""
    joins = burst["settings"]["joins"]
    marks = [str(m) for m in burst["settings"]["marks"] if m < joins] + [str(joins)]
    head = " | ".join(f"{int(m):,}th joiner in, s" for m in marks)
    lines = [f"Bursts of {joins:,} joins at once on K = {burst['settings']['servers']} "
             f"(through a slave: the users of {burst['burst_server']}; direct: users of "
             f"{DIRECT_DOMAIN}); pings to the room from a direct user and from a user of "
             f"{burst['pinger_server']} (behind its slave), both in the room", "",
             f"| burst, system | {head} | server CPU s | direct user's ping p50 / p99 / "
             "max ms (pings) | other slave's user's ping p50 / p99 / max ms (pings) |",
             "|---|" + "---:|" * (len(marks) + 3)]
    for name, res in burst["results"].items():
        cells = [f"{res['marks'][m]:.2f}" if m in res["marks"] else "-" for m in marks]
        pings = [f"{_fmt_ms(p['p50_ms'])} / {_fmt_ms(p['p99_ms'])} / {_fmt_ms(p['max_ms'])}"
                 f" ({p['pings']})" for p in (res["direct_ping"], res["slave_ping"])]
        lines.append(f"| {name} | {' | '.join(cells)} | {res['server_cpu']:.1f} | "
                     f"{' | '.join(pings)} |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_case_arguments(p, occupants=[1000, 2000, 10_000], servers=10)
    p.add_argument("--full-roster-up-to", type=int, default=1000,
                   help="above this N the room broadcasts the moderators' presence only")
    p.add_argument("--burst", type=int, nargs="*", default=[1000, 10_000],
                   help="joins in each burst (none: no burst)")
    p.add_argument("--mod-muc-up-to", type=int, default=2000,
                   help="run mod_muc only up to this N (its joins cost O(N) each)")
    args = p.parse_args(argv)
    began = time.monotonic()
    json_path: Path = args.json or JSON
    json_path.parent.mkdir(parents=True, exist_ok=True)
    raw: dict[str, Any] = {"command": command_line("benchmarks.scale", argv).strip(),
                           "cases": [], "bursts": []}

    def systems(n: int) -> tuple[str, ...]:
        return ("dmuc", "mod_muc") if n <= args.mod_muc_up_to else ("dmuc",)

    for n in args.occupants:
        one = settings_for(args, n, None if n <= args.full_roster_up_to else MODERATORS_ONLY)
        one.systems = systems(n)
        raw["cases"] += run_cases([one])
        json_path.write_text(json.dumps(raw, indent=1) + "\n")  # what is done so far
    for joins in args.burst:
        burst = run_burst(BurstSettings(joins=joins, servers=args.servers,
                                        systems=systems(joins)))
        print("\n".join(burst_table(burst)), flush=True)
        raw["bursts"].append(burst)
        json_path.write_text(json.dumps(raw, indent=1) + "\n")
    seconds = raw["seconds"] = time.monotonic() - began
    print(f"({seconds:.0f} s)")
    json_path.write_text(json.dumps(raw, indent=1) + "\n")
    cases = raw["cases"]
    if not args.no_doc:
        extra = [line for burst in raw["bursts"] for line in [*burst_table(burst), ""]]
        shown = json_path.relative_to(REPO) if json_path.is_relative_to(REPO) else json_path
        extra.append(f"The whole run took {seconds / 60:.1f} min; raw figures: `{shown}`.")
        write_doc(cases, raw["command"], SECTIONS[1], [*extra, ""])
    return 0


if __name__ == "__main__":
    sys.exit(main())
