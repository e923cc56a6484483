"""dmuc-admin list-slaves on the running five-server network: the master records each
slave's link state in its store, and a netsplit shows as `split` with its time, then
`live` again after the netjoin."""

from __future__ import annotations

import calendar
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.integration.conftest import FAULT_KEEPALIVE, MUC_DOMAIN, Rig
from tests.integration.xmpp_client import NS_MUC, Client, all_of, has_status, is_presence, run

pytestmark = pytest.mark.integration

KILLRC = "killrc.oulubox.irc"
SLAVE = f"dmuc.{KILLRC}"
ROOM = f"wallops@{MUC_DOMAIN}"
RECORD_SECONDS = 5.0  # MasterService.STATUS_SECONDS
DETECTION = 2 * FAULT_KEEPALIVE + 1.5


def list_slaves(config: Path) -> str:
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-m", "dmuc.admin", "--config", str(config),
                             "list-slaves"], cwd=root, capture_output=True, text=True,
                            timeout=60, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def await_state(config: Path, state: str, timeout: float) -> tuple[str, float]:
    """Read the store until the slave's line shows `state` (the master writes every
    RECORD_SECONDS); returns the line and its `since` (POSIX seconds)."""
    deadline = time.monotonic() + timeout
    shown = ""
    while time.monotonic() < deadline:
        shown = list_slaves(config)
        line = next((ln for ln in shown.splitlines() if ln.startswith(SLAVE + "\t")), "")
        if line.split("\t")[1:2] == [state]:
            since = re.search(r"since (\S+ \S+) UTC", line)
            assert since is not None, line
            return line, calendar.timegm(time.strptime(since.group(1), "%Y-%m-%d %H:%M:%S"))
        time.sleep(0.5)  # the store is polled: the master writes it on its own timer
    raise AssertionError(f"{SLAVE} not {state} within {timeout} s:\n{shown}")


def test_list_slaves_follows_a_netsplit(rig: Rig) -> None:
    config = rig.daemons.master.config_path
    assert config is not None
    first = list_slaves(config)
    assert re.search(rf"master {MUC_DOMAIN}: pid {rig.daemons.master.pid}", first), first
    server = rig.network.server(f"argl@{KILLRC}")
    client = Client(f"argl@{KILLRC}/laptop", "pw", host=server.ip, port=server.c2s_port)
    run(client.connect())
    try:
        client.send_raw(f"<presence to='{ROOM}/wumpus'><x xmlns='{NS_MUC}'/></presence>")
        run(client.expect(all_of(is_presence(from_=f"{ROOM}/wumpus"),
                                 lambda e: has_status(e, 110))))
        line, _ = await_state(config, "live", RECORD_SECONDS + 5)
        assert "rooms live=1" in line and f"domains {KILLRC}" in line, line

        cut_at = time.time()
        rig.network.blackhole(KILLRC)
        rig.daemons.master.wait_for_log(f"netsplit: slave {SLAVE}", timeout=DETECTION + 5)
        line, since = await_state(config, "split", RECORD_SECONDS + 5)
        assert cut_at - 1 <= since <= cut_at + DETECTION + RECORD_SECONDS + 1, line

        rig.network.heal(KILLRC)
        rig.daemons.master.wait_for_log(f"netjoin: slave {SLAVE}", timeout=30)
        line, since_live = await_state(config, "live", RECORD_SECONDS + 5)
        assert since_live >= since, line
    finally:
        rig.network.heal_all()
        run(client.disconnect())
