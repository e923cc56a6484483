"""Metrics and reload of real daemons on a five-server network (its own, on 127.0.9.x):
the master's endpoint counts occupants directly and through the killrc slave, and the
slave's its mirrored room; a cut link is a netsplit on both sides (the slave holds what
its user says meanwhile) and its heal a netjoin; a master reload that removes the slave
from the allow list drops its link (its user leaves with 333, comes back directly) without
the component connection dropping; a slave reload applies its new keepalive. The slave
tells a test-owned $NOTIFY_SOCKET READY=1 once, and STATUS= as its Prosody goes and comes."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed import free_port
from testbed.faults import DmucDaemons, FaultInjector
from testbed.network import MUC_SERVICE, DmucNetwork, slave_jid
from tests.integration.cast import CAST, DIRECT_USER
from tests.integration.conftest import FAULT_KEEPALIVE, keep_testbed, make_tempdir
from tests.integration.ops_helpers import (
    NotifySocket,
    Samples,
    hear,
    join,
    say,
    scrape,
    sighup,
    value,
    value_or_0,
    wait_for_metric,
)
from tests.integration.xmpp_client import Client, has_status, is_presence, run

pytestmark = pytest.mark.integration

IPS = ("127.0.9.2", "127.0.9.3", "127.0.9.4", "127.0.9.5", "127.0.9.6")
KILLRC = "killrc.oulubox.irc"
KILLRC_SLAVE = slave_jid(KILLRC)
ROOM = f"ops@{MUC_SERVICE}"
AVALON_USER = "arthur@avalon.irc/console"


@dataclass
class OpsRig:
    network: DmucNetwork
    daemons: DmucDaemons
    faults: FaultInjector
    master_url: str
    slave_url: str
    slave_notify: NotifySocket  # the killrc slave's $NOTIFY_SOCKET


def with_metrics(config: Path, port: int) -> None:
    config.write_text(config.read_text() + f'\n[metrics]\nlisten = "127.0.0.1:{port}"\n')


@pytest.fixture
def ops_rig() -> Iterator[OpsRig]:
    net_dir, daemons_dir = make_tempdir("dmuc-ops-net-"), make_tempdir("dmuc-ops-")
    network = DmucNetwork(net_dir, ips=IPS, log_level="info")
    network.start()
    try:
        daemons = DmucDaemons(network, daemons_dir, keepalive=FAULT_KEEPALIVE)
        master_port, slave_port = free_port("127.0.0.1"), free_port("127.0.0.1")
        with_metrics(daemons.master.config_path, master_port)  # type: ignore[arg-type]
        with_metrics(daemons.slaves[KILLRC].config_path, slave_port)  # type: ignore[arg-type]
        notify = NotifySocket(daemons_dir / "notify.sock")
        daemons.slaves[KILLRC].env_extra.update(notify.env)
        daemons.start()
        faults = FaultInjector(network, daemons)
        try:
            yield OpsRig(network, daemons, faults, f"http://127.0.0.1:{master_port}/metrics",
                         f"http://127.0.0.1:{slave_port}/metrics", notify)
        finally:
            faults.cleanup()
            daemons.stop()
            notify.close()
    finally:
        network.stop()
        if not keep_testbed():
            for d in (net_dir, daemons_dir):
                shutil.rmtree(d, ignore_errors=True)


def link_state(samples: Samples, state: str) -> float:
    """1 when the slave's link for ROOM is in `state`, else 0. A room has a series of its
    own only while its link is not LIVE; the slave mirrors ROOM only, so LIVE is read
    from the count of rooms by state."""
    if state == "LIVE":
        assert value(samples, "dmuc_rooms") == 1
        assert value_or_0(samples, "dmuc_slave_link_state", room=ROOM, state="LIVE") == 0
        return value(samples, "dmuc_slave_links", state="LIVE")
    return value_or_0(samples, "dmuc_slave_link_state", room=ROOM, state=state)


def test_metrics_netsplit_and_reload_through_a_slave(ops_rig: OpsRig) -> None:
    rig = ops_rig
    master, slave = rig.daemons.master, rig.daemons.slaves[KILLRC]
    people = {"Wumpus": CAST["Wumpus"], DIRECT_USER[0]: DIRECT_USER[1], "Arthur": AVALON_USER}
    clients = {nick: Client(jid, "pw", host=rig.network.server(jid).ip,
                            port=rig.network.server(jid).c2s_port)
               for nick, jid in people.items()}
    wumpus, ludwig, arthur = clients.values()
    ready = rig.slave_notify.expect("READY", "1")
    assert ready["STATUS"] == (f"connected to Prosody as {KILLRC_SLAVE}: mirroring 0 rooms "
                               "(0 live) for 0 local sessions")
    try:
        run(asyncio.gather(*(c.connect() for c in clients.values())))
        for nick, client in clients.items():
            join(client, ROOM, nick)
        say(ludwig, ROOM, "one")
        for client in clients.values():
            hear(client, "one")

        m = scrape(rig.master_url)
        assert value(m, "dmuc_rooms") == 1
        assert value(m, "dmuc_occupants") == 3
        assert value(m, "dmuc_master_sessions", route="direct") == 2
        assert value(m, "dmuc_master_sessions", route=KILLRC_SLAVE) == 1
        assert value(m, "dmuc_master_slave_links", slave=KILLRC_SLAVE, state="LIVE") == 1
        assert value(m, "dmuc_master_allowed_slaves") == 3
        # the message went to the two direct sessions and once to the slave
        assert value(m, "dmuc_stanzas_out_total", kind="message") >= 3
        s = scrape(rig.slave_url)
        assert value(s, "dmuc_rooms") == 1
        assert value(s, "dmuc_occupants") == 1
        assert link_state(s, "LIVE") == 1
        assert value_or_0(s, "dmuc_slave_held_stanzas", room=ROOM) == 0
        assert value(s, "dmuc_slave_held_stanzas_all") == 0
        assert value(s, "dmuc_netsplits_total") == 0

        # a cut link: a netsplit on both sides; what Wumpus says meanwhile is held
        cut = rig.faults.link("cut", KILLRC)
        cut.inject()
        wait_for_metric(rig.master_url, lambda m: value(m, "dmuc_netsplits_total") >= 1,
                        what="the master's netsplit")
        s = wait_for_metric(rig.slave_url, lambda s: link_state(s, "SPLIT") == 1,
                            what="the slave's netsplit")
        assert value(s, "dmuc_netsplits_total") == 1
        assert value(scrape(rig.master_url), "dmuc_master_slave_links",
                     slave=KILLRC_SLAVE, state="SPLIT") == 1
        say(wumpus, ROOM, "during the split")
        hear(wumpus, "during the split")  # the slave's local echo
        wait_for_metric(rig.slave_url,
                        lambda s: value_or_0(s, "dmuc_slave_held_stanzas", room=ROOM) == 1
                        and value(s, "dmuc_slave_held_stanzas_all") == 1,
                        what="one held stanza")
        cut.heal()
        s = wait_for_metric(rig.slave_url, lambda s: link_state(s, "LIVE") == 1
                            and value(s, "dmuc_slave_held_stanzas_all") == 0,
                            what="the slave's netjoin")
        assert value(s, "dmuc_netjoins_total") >= 1
        hear(ludwig, "during the split")
        m = wait_for_metric(rig.master_url, lambda m: value(m, "dmuc_netjoins_total") >= 1,
                            what="the master's netjoin")
        assert value(m, "dmuc_master_slave_links", slave=KILLRC_SLAVE, state="LIVE") == 1

        # the master reloads without killrc's slave in its allow list
        config = master.config_path
        assert config is not None
        block = f'[[slaves]]\njid = "{KILLRC_SLAVE}"\ndomains = ["{KILLRC}"]\n'
        assert block in config.read_text()
        config.write_text(config.read_text().replace(block, ""))
        sighup(master)
        line = master.wait_for_log(f"slave {KILLRC_SLAVE} removed from the [[slaves]]")
        assert "refused from now on; dropped its links to 1 room" in line, line
        master.wait_for_log("configuration reloaded")
        run(wumpus.expect(lambda e: is_presence(from_=f"{ROOM}/Wumpus", type_="unavailable")(e)
                          and has_status(e, 333)))
        m = scrape(rig.master_url)
        assert value(m, "dmuc_master_allowed_slaves") == 2
        assert value_or_0(m, "dmuc_master_slave_links", slave=KILLRC_SLAVE, state="LIVE") == 0
        assert value_or_0(m, "dmuc_master_sessions", route=KILLRC_SLAVE) == 0
        assert value(m, "dmuc_master_sessions", route="direct") == 2
        say(arthur, ROOM, "after the reload")
        hear(ludwig, "after the reload")
        # Wumpus comes back: the slave is refused now, and passes its users through
        join(wumpus, ROOM, "Wumpus")
        s = wait_for_metric(rig.slave_url, lambda s: link_state(s, "PASSTHROUGH") == 1,
                            what="the slave refused")
        m = scrape(rig.master_url)
        assert value(m, "dmuc_master_sessions", route="direct") == 3
        slave.wait_for_log(f"master refused to register {KILLRC_SLAVE} for {ROOM}")

        # the slave reloads with a longer keepalive for its registrations from now on
        slave_config = slave.config_path
        assert slave_config is not None
        text = slave_config.read_text()
        assert f"keepalive = {FAULT_KEEPALIVE}\n" in text
        slave_config.write_text(text.replace(f"keepalive = {FAULT_KEEPALIVE}\n",
                                             "keepalive = 7\n"))
        sighup(slave)
        rig.slave_notify.expect("RELOADING", "1")
        assert rig.slave_notify.expect("READY", "1")["STATUS"].startswith(
            f"connected to Prosody as {KILLRC_SLAVE}: mirroring 1 room")
        assert "keepalive 7 s, history 20 (new registrations)" in slave.wait_for_log(
            "configuration reloaded")

        for daemon in (master, slave):
            assert daemon.log_text().count("component connected") == 1, daemon
            assert "Traceback" not in daemon.log_text()
            assert daemon.running()

        # the slave's Prosody restarts: STATUS says so both ways; READY=1 was said once
        restart = rig.faults.process("restart", f"prosody:{KILLRC}")
        restart.inject()
        down = rig.slave_notify.expect("STATUS")
        assert down["STATUS"].startswith("disconnected from Prosody") and "READY" not in down
        restart.heal()
        up = rig.slave_notify.expect("STATUS")
        assert up["STATUS"].startswith(f"connected to Prosody as {KILLRC_SLAVE}"), up
        assert "READY" not in up
        slave.wait_for_log("component connected", count=2)
    finally:
        run(asyncio.gather(*(c.disconnect() for c in clients.values()),
                           return_exceptions=True))
