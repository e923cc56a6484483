"""A soak (issues 7 and 16): random faults one after the other under continuous traffic
from every users' server (behind slaves and direct), judged at the end by the same strict
rules as the fault tests (traffic.py): every message to every client exactly once, in its
sender's order, nobody evicted, everyone in the room, rosters right, each split detected
and joined within its bounds, no traceback.

The faults are drawn from the kinds testbed.faults.FAULT_KINDS has, each lasting from
0.5 s to 3 x the detection bound (keepalive 2 s), on a random users' server. The first
draws take one kind of each class of fault present (link, process pause, process
kill/restart, Prosody restart). `make soak` (SOAK_FAULTS, 30 by default) draws from every
kind; the suite's short soak (one fault of each class) only from the kinds that hold
today (HOLDING_KINDS: every kind not in testbed.faults.OPEN_FAULTS). Every Prosody runs
with mod_smacks and smacks_s2s_resend (conftest.SMACKS_RESEND), as the fault tests run the
master's Prosody restarting. The seed is fresh every run and printed
(DMUC_SOAK_SEED=n replays one).
"""

from __future__ import annotations

import os
import random

import pytest

from testbed.faults import FAULT_CLASSES, FAULT_KINDS, OPEN_FAULTS, Fault, FaultInjector, FaultKind
from testbed.network import DIRECT_DOMAIN, SLAVE_DOMAINS
from tests.integration.conftest import SMACKS_RESEND, STRICT_KEEPALIVE, Rig
from tests.integration.traffic import (
    Bounds,
    TrafficDriver,
    default_people,
    detection_bound,
    fault_bounds,
    run_soak,
)
from tests.integration.xmpp_client import run

pytestmark = pytest.mark.integration

RIG_KEEPALIVE = STRICT_KEEPALIVE  # the rig fixture's daemons use it
USERS = (*SLAVE_DOMAINS, DIRECT_DOMAIN)
LONGEST = 3 * detection_bound(STRICT_KEEPALIVE)


# What the suite's short soak draws from: the kinds that hold at every length (not in
# testbed.faults.OPEN_FAULTS). `make soak` (DMUC_SOAK_FAULTS set) draws from every kind.
HOLDING_KINDS = [k for k in FAULT_KINDS
                 if not {(k.name, "short"), (k.name, "long")} & OPEN_FAULTS]
# The suite's soak draws one fault of each class the holding kinds have.
SUITE_FAULTS = len({k.fault_class for k in HOLDING_KINDS})


def random_faults(injector: FaultInjector, rng: random.Random, count: int,
                  kinds_of: list[FaultKind]) -> list[tuple[Fault, float, Bounds]]:
    """``count`` faults from ``kinds_of``: first one kind of each of their classes (in a
    random order), then any kind; each on a random users' server with a slave, lasting
    0.5 s to LONGEST."""
    present = [c for c in FAULT_CLASSES if any(k.fault_class == c for k in kinds_of)]
    classes = rng.sample(present, len(present))
    kinds = [rng.choice([k for k in kinds_of if k.fault_class == c]) for c in classes]
    kinds += [rng.choice(kinds_of) for _ in range(max(count - len(kinds), 0))]
    chosen = []
    for kind in kinds[:count]:
        seconds = round(rng.uniform(0.5, LONGEST), 1)
        chosen.append((kind.make(injector, rng.choice(SLAVE_DOMAINS)), seconds,
                       fault_bounds(kind, seconds, STRICT_KEEPALIVE)))
    return chosen


@SMACKS_RESEND  # it draws the master's Prosody restarting too (test_faults.PROSODY_MARKS)
def test_soak(rig: Rig) -> None:
    everything = "DMUC_SOAK_FAULTS" in os.environ  # make soak
    kinds = list(FAULT_KINDS) if everything else HOLDING_KINDS
    count = int(os.environ.get("DMUC_SOAK_FAULTS", SUITE_FAULTS))
    seed = int(os.environ.get("DMUC_SOAK_SEED") or random.SystemRandom().randrange(65536))
    print(f"\nsoak: {count} faults of {len(kinds)} kinds, seed {seed} "
          f"(DMUC_SOAK_SEED={seed} replays it)")
    faults = random_faults(rig.faults, random.Random(seed), count, kinds)
    driver = TrafficDriver(rig.network, default_people(2, USERS))
    try:
        run(driver.start(), timeout=60)
        report = run(run_soak(driver, faults, rig.logs, seed=seed),
                     timeout=60 + sum(seconds + 40 for _, seconds, _ in faults))
    finally:
        run(driver.close(), timeout=30)
    print(f"\n{report.summary()}\n{report.details()}")
    assert report.ok, f"{report.summary()}\n{report.details()}"
