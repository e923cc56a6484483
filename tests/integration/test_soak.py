"""A soak (issue 7): random faults one after the other under continuous traffic, counted at
the end: nothing lost, nothing duplicated, every roster right, no traceback.

The test suite runs a short one (DMUC_SOAK_FAULTS faults, default 3, seed DMUC_SOAK_SEED,
default 7: the same faults every CI run); `make soak` runs a long one with a fresh seed
(printed, so that a failure can be replayed with DMUC_SOAK_SEED).
"""

from __future__ import annotations

import os
import random

import pytest
from conftest import Rig
from traffic import TrafficDriver, default_people, run_soak
from xmpp_client import run

from testbed.faults import Fault, FaultInjector
from testbed.network import MASTER_DOMAIN, SLAVE_DOMAINS

pytestmark = pytest.mark.integration

USERS = SLAVE_DOMAINS  # a master restart removes direct users (as mod_muc); see test_faults


def random_faults(injector: FaultInjector, rng: random.Random,
                  count: int) -> list[tuple[Fault, float]]:
    """`count` faults drawn from every kind the harness has, each with how long it lasts."""
    kinds = [
        lambda d: injector.link("cut", d, MASTER_DOMAIN),
        lambda d: injector.link("blackhole", d, MASTER_DOMAIN),
        lambda d: injector.link("stall", d, MASTER_DOMAIN),
        lambda d: injector.link("delay", d, MASTER_DOMAIN, seconds=rng.uniform(0.2, 1.5)),
        lambda d: injector.process("kill", "master"),
        lambda d: injector.process("kill", d),
        lambda d: injector.process("pause", d),
        lambda d: injector.process("restart", d),
        lambda d: injector.process("restart", f"prosody:{d}"),
    ]
    chosen = []
    for _ in range(count):
        make = rng.choice(kinds)
        chosen.append((make(rng.choice(USERS)), round(rng.uniform(3.0, 12.0), 1)))
    return chosen


def test_soak(rig: Rig) -> None:
    count = int(os.environ.get("DMUC_SOAK_FAULTS", "3"))
    seed = int(os.environ.get("DMUC_SOAK_SEED", "7"))
    rng = random.Random(seed)
    faults = random_faults(rig.faults, rng, count)
    driver = TrafficDriver(rig.network, default_people(2, USERS))
    try:
        run(driver.start(), timeout=60)
        report = run(run_soak(driver, faults, rig.logs, seed=seed),
                     timeout=60 + sum(seconds + 30 for _, seconds in faults))
    finally:
        run(driver.close(), timeout=30)
    print(f"\n{report.summary()}\n{report.details()}")
    assert report.ok, f"{report.summary()}\n{report.details()}"
