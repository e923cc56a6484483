"""Cost of a join as the room grows: N joins through one slave, and N direct joins, into
one room of the sans-I/O master core (no sockets; what the core itself costs).

A join through a slave must cost the same whatever the room's size (the slave sends the
newcomer the occupant list; the master sends one copy of the new presence per slave). A
direct join costs the copies XEP-0045 requires (the occupant list to the newcomer, the
new presence to every occupant reached directly) and nothing more. Reported: total
seconds, the slowest single join (no stanza may block the reactor ~100 ms), and the mean
time of the first and the last 1,000 joins (equal when a join is O(1)).

    python -m benchmarks.joins [--occupants 10000]
"""

from __future__ import annotations

import argparse
import time

from dmuc import xmlns
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

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
    joins = [_join(f"user{i}@{domain}/r", f"nick{i}") for i in range(occupants)]
    times: list[float] = []
    copies = 0
    started = time.perf_counter()
    for stanza in joins:
        t0 = time.perf_counter()
        out = service.receive(stanza, now)
        times.append(time.perf_counter() - t0)
        copies += _copies(out)
    total = time.perf_counter() - started
    window = min(1000, occupants)
    return {"total": total, "slowest_ms": max(times) * 1000,
            "first_ms": sum(times[:window]) / window * 1000,
            "last_ms": sum(times[-window:]) / window * 1000, "copies": copies}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--occupants", type=int, default=10_000)
    args = parser.parse_args()
    print(f"{'joins':<22}{'occupants':>10}{'total s':>10}{'slowest ms':>12}"
          f"{'first-1k ms':>13}{'last-1k ms':>12}{'copies':>12}")
    for label, through_slave in (("through one slave", True), ("direct", False)):
        r = run(args.occupants, through_slave)
        print(f"{label:<22}{args.occupants:>10}{r['total']:>10.2f}{r['slowest_ms']:>12.2f}"
              f"{r['first_ms']:>13.3f}{r['last_ms']:>12.3f}{r['copies']:>12,.0f}")


if __name__ == "__main__":
    main()
