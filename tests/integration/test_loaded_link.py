"""A loaded link is not a dead link (issues 19 and 16): a flood that keeps every link of
the room busy for longer than the detection bound is not taken for a netsplit, and a
link that really goes silent still is, within the bound.

The smallest setup that showed the false split: 1,000 occupants on two users' servers
behind slaves (the room broadcasts the moderators' presence only, as the scale
benchmark's big room), keepalive 2 s (a split is found after 2 x 2 s of silence), and
the benchmark's flood (one sender a server, each with at most 20 messages not yet at
every occupant) for 15 s: each users' Prosody delivers 1,000 copies a message, falls
seconds behind, and what the slave writes to it (its keepalives, its answers to the
master's, its users' forwards) used to wait behind seconds of its own fan-out; the
master, hearing nothing but late keepalive answers, declared the split and the
slaves, told so by its pings, resynced (before: a split on one or both links in every
run on this machine). Runs the benchmark's own rig (benchmarks.realnet) and load
process (benchmarks.loadgen).
"""

from __future__ import annotations

import time

import pytest

from benchmarks.realnet import MUC_SERVICE, Rig, Settings, enter, rig, traffic
from testbed.faults import wait_for_text
from testbed.network import MASTER_DOMAIN, slave_jid
from tests.integration.traffic import detection_bound

pytestmark = pytest.mark.integration

KEEPALIVE = 2
BOUND = detection_bound(KEEPALIVE)  # 5.5 s
OCCUPANTS = 1000
FLOOD_SECONDS = 15.0  # more than twice the bound
ROOM = f"loaded@{MUC_SERVICE}"


def _netsplits(r: Rig) -> list[str]:
    assert r.daemons is not None
    return [f"{daemon.name}: {line}" for daemon in r.daemons.all
            for line in daemon.log_text().splitlines() if "netsplit" in line]


def test_a_flood_is_not_a_netsplit_and_a_silent_link_still_is() -> None:
    settings = Settings(occupants=OCCUPANTS, servers=2, window=20, drain=60.0,
                        flood_seconds=FLOOD_SECONDS, broadcast=("moderator",),
                        systems=("dmuc",), keepalive=KEEPALIVE)
    with rig(settings) as r:
        assert r.load is not None and r.daemons is not None
        occupants = list(range(OCCUPANTS))
        r.load.call("connect", accounts=r.accounts(OCCUPANTS))
        enter(r, {}, ROOM, occupants)
        flood = traffic(r, ROOM, occupants, count=10**6, window=settings.window,
                        duration=FLOOD_SECONDS)
        summary = {k: flood[k] for k in ("sent", "delivered", "missing", "duplicates",
                                         "p50", "p99")}
        # the links were loaded: what was said waited longer than a keepalive interval
        # in the queues (a keepalive answer behind it would have come too late)
        assert flood["p99"] > KEEPALIVE, summary
        assert flood["sent"] > 0 and flood["missing"] == flood["duplicates"] == 0, summary
        assert _netsplits(r) == [], summary

        # a link that goes silent is still a split, found within the bound on both ends
        slave_domain = r.user_domains[0]
        slave = r.daemons.slaves[slave_domain]
        began = time.monotonic()
        r.network.blackhole(slave_domain, MASTER_DOMAIN)
        try:
            wait_for_text(r.daemons.master.log_text,
                          f"netsplit: slave {slave_jid(slave_domain)} for {ROOM}", timeout=BOUND)
            wait_for_text(slave.log_text, f"netsplit from {ROOM}",
                          timeout=max(0.1, BOUND - (time.monotonic() - began)))
        finally:
            r.network.heal(slave_domain, MASTER_DOMAIN)
        other = r.user_domains[1]
        assert not any(other in line for line in _netsplits(r)), _netsplits(r)
