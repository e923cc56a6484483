"""The real-network benchmark (benchmarks.realnet, ``make bench``) at CI size: dmuc and
Prosody's mod_muc side by side on the five-server network, 12 occupants on 2 users'
servers. Asserts the structure the benchmark's figures rest on, not speed:

* dmuc: one s2s copy of each broadcast per users' server (the slaves), whatever the
  number of occupants there; mod_muc: one per remote occupant;
* every message reaches every occupant exactly once, in both systems, paced and flooded;
* the newcomer gets every occupant's presence before its own.
"""

from __future__ import annotations

from benchmarks.realnet import Settings, rows, run_case

OCCUPANTS, SERVERS = 12, 2


def test_side_by_side_structure() -> None:
    case = run_case(Settings(occupants=OCCUPANTS, servers=SERVERS, newcomers=1,
                             paced_rate=20, paced_seconds=1, flood_seconds=1, window=5,
                             drain=20))
    dmuc, muc = case["results"]["dmuc"], case["results"]["mod_muc"]
    # every occupant is remote to the master's server: on mod_muc each needs its own copy
    assert dmuc["per_broadcast"]["messages"] == SERVERS, dmuc["paced"]["s2s"]
    assert muc["per_broadcast"]["messages"] == OCCUPANTS, muc["paced"]["s2s"]
    for res in (dmuc, muc):
        for phase in ("paced", "flood"):
            figures = res[phase]
            assert figures["sent"] > 0, (res["system"], phase)
            assert figures["delivered"] == figures["sent"] * OCCUPANTS, (res["system"], phase)
            assert figures["duplicates"] == 0 and figures["missing"] == 0, (res["system"], phase)
            assert figures["min_per_client"] == figures["max_per_client"] == figures["sent"]
        # the roster: every occupant's presence, then the newcomer's own
        assert res["newcomer_presences"] >= OCCUPANTS + 1, res["system"]
    assert len(rows(case)) > 10  # the table renders from these figures
