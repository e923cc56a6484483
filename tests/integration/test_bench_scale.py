"""The scale benchmark (benchmarks.scale, ``make bench-scale``) at CI size, on its K=10
network (twelve Prosody servers, ten slaves): the same code path as the N=10,000 run, with
small numbers. Asserts the structure its figures rest on, not speed:

* dmuc sends one s2s copy of each broadcast per users' server (K = 10), mod_muc one per
  occupant; every message reaches every occupant exactly once, in both systems;
* a room that broadcasts the moderators' presence only (how the big room is entered)
  still gets every message to every occupant, and its newcomer gets no participant's
  presence;
* in each burst (through a slave, direct), into each system, every joiner gets its own
  presence back and both pingers' pings are answered throughout.
"""

from __future__ import annotations

import pytest

from benchmarks.realnet import Settings, run_cases
from benchmarks.scale import MODERATORS_ONLY, BurstSettings, burst_table, run_burst

pytestmark = [pytest.mark.integration, pytest.mark.scale]

SERVERS, FULL, SHOWN_ONLY, JOINS = 10, 20, 40, 60


def test_scale_cases_structure() -> None:
    common = {"servers": SERVERS, "newcomers": 1, "paced_rate": 20.0, "paced_seconds": 1.0,
              "flood_seconds": 1.0, "window": 5, "drain": 30.0}
    cases = run_cases([Settings(occupants=FULL, **common),
                       Settings(occupants=SHOWN_ONLY, broadcast=MODERATORS_ONLY, **common)])
    for case in cases:
        n = case["settings"]["occupants"]
        dmuc, muc = case["results"]["dmuc"], case["results"]["mod_muc"]
        assert dmuc["per_broadcast"]["messages"] == SERVERS, dmuc["paced"]["s2s"]
        assert muc["per_broadcast"]["messages"] == n, muc["paced"]["s2s"]
        for res in (dmuc, muc):
            for phase in ("paced", "flood"):
                figures = res[phase]
                assert figures["sent"] > 0, (n, res["system"], phase)
                assert figures["delivered"] == figures["sent"] * n, (n, res["system"], phase)
                assert figures["duplicates"] == figures["missing"] == 0, (n, res["system"])
            presences = res["newcomer_presences"]
            if case["settings"]["broadcast"] is None:
                assert presences >= n + 1, (n, res["system"], presences)
            else:  # the owner's (a moderator) and its own
                assert presences == 2, (n, res["system"], presences)


def test_scale_bursts_answered() -> None:
    burst = run_burst(BurstSettings(joins=JOINS, servers=SERVERS, marks=(JOINS // 2,)))
    assert set(burst["results"]) == {"slave dmuc", "slave mod_muc", "direct dmuc",
                                     "direct mod_muc"}
    for name, res in burst["results"].items():
        assert set(res["marks"]) == {str(JOINS // 2), str(JOINS)}, name
        assert res["marks"][str(JOINS // 2)] <= res["marks"][str(JOINS)], name
        for pinger in ("direct_ping", "slave_ping"):
            assert res[pinger]["pings"] >= 1, (name, pinger)
            assert res[pinger]["max_ms"] is not None, (name, pinger)
    assert len(burst_table(burst)) == 4 + len(burst["results"])  # title, blank, head, rule
