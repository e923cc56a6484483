"""The example plugins in the real daemons (issue 18 point 8): the master runs with
`muc.plugins = ["dmuc.plugins.slowmode", "dmuc.plugins.blocklist"]` on the five-server
network, and real clients reach the rooms through their slaves and directly (efnet.irc
has no slave). Slow mode refuses a second message too soon with wait/policy-violation
(and a log line); the block list refuses a blocked user's join and, after a reload
(SIGHUP) that blocks them, their messages."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from testbed.faults import DmucDaemons, wait_for_text
from testbed.network import MUC_SERVICE, DmucNetwork
from tests.integration.cast import CAST, DIRECT_USER
from tests.integration.conftest import keep_testbed, make_tempdir
from tests.integration.test_dmuc_slaves import is_groupchat, join
from tests.integration.xmpp_client import (
    NS_CLIENT,
    Client,
    body,
    error_condition,
    is_message,
    is_presence,
    run,
)

pytestmark = pytest.mark.integration

IPS = ("127.0.18.2", "127.0.18.3", "127.0.18.4", "127.0.18.5", "127.0.18.6")
LUDWIG = DIRECT_USER[1]  # efnet.irc: no slave, straight to the master
SLOW_SECONDS = 30


@dataclass
class Net:
    network: DmucNetwork
    daemons: DmucDaemons
    blocklist: Path
    clients: list[Client]

    def client(self, jid: str) -> Client:
        server = self.network.server(jid)
        client = Client(jid, host=server.ip, port=server.c2s_port)
        self.clients.append(client)
        run(client.connect())
        return client

    def master_log(self) -> str:
        return self.daemons.master.log_text()


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    net_dir, daemons_dir = make_tempdir("dmuc-plugins-net-"), make_tempdir("dmuc-plugins-")
    blocklist = daemons_dir / "blocklist"
    blocklist.write_text("# the test's block list\nphaedrus@killrc.oulubox.irc\n")
    network = DmucNetwork(net_dir, ips=IPS, log_level="info")
    network.start()
    daemons = DmucDaemons(network, daemons_dir, master_toml=(
        f"[muc.room_defaults.extra]\nslowmode = {SLOW_SECONDS}\n"
        f'[muc.plugin_config.blocklist]\nfile = "{blocklist}"\n'))
    config = daemons.master.config_path
    assert config is not None
    config.write_text(config.read_text().replace(
        "[muc]\n", '[muc]\nplugins = ["dmuc.plugins.slowmode", "dmuc.plugins.blocklist"]\n', 1))
    clients: list[Client] = []
    try:
        daemons.start()
        yield Net(network, daemons, blocklist, clients)
    finally:
        run(asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True))
        daemons.stop()
        network.stop()
        if not keep_testbed():
            for d in (net_dir, daemons_dir):
                shutil.rmtree(d, ignore_errors=True)


def refusal(client: Client, message_id: str):  # type: ignore[no-untyped-def]
    reply = run(client.expect(lambda e: e.get("id") == message_id))
    assert reply.get("type") == "error", reply
    error = reply.find(f"{{{NS_CLIENT}}}error")
    assert error is not None
    return error.get("type"), error_condition(reply), reply


def test_slow_mode_through_slaves_and_directly(net: Net) -> None:
    room = f"slow@{MUC_SERVICE}"
    wumpus, troy = net.client(CAST["Wumpus"]), net.client(CAST["Troy"])
    ludwig = net.client(LUDWIG)
    join(wumpus, room, "Wumpus")  # through killrc's slave: owner, a moderator
    join(troy, room, "Troy")  # through eris's slave
    join(ludwig, room, "Ludwig")  # directly
    for speaker, nick in ((troy, "Troy"), (ludwig, "Ludwig")):
        speaker.send_raw(f"<message to='{room}' type='groupchat' id='{nick}-1'>"
                         f"<body>{nick} one</body></message>")
        run(wumpus.expect(is_groupchat(room, nick, f"{nick} one")))
        speaker.send_raw(f"<message to='{room}' type='groupchat' id='{nick}-2'>"
                         f"<body>{nick} two</body></message>")
        kind, condition, reply = refusal(speaker, f"{nick}-2")
        assert (kind, condition) == ("wait", "policy-violation")
        assert body(reply) == f"{nick} two"  # sent back, as mod_muc_limits
        run(wumpus.expect_none(is_groupchat(room, nick, f"{nick} two"), barrier_to=MUC_SERVICE))
    # the moderator is not slowed down
    for n in range(3):
        wumpus.send_raw(f"<message to='{room}' type='groupchat'><body>mod {n}</body></message>")
        run(troy.expect(is_groupchat(room, "Wumpus", f"mod {n}")))
    log = net.master_log()
    for who in (CAST["Troy"], LUDWIG):
        assert f"slow mode: refused a message from {who} to {room}" in log, log[-3000:]
    assert "Traceback" not in log


def test_block_list_at_join_and_after_a_reload(net: Net) -> None:
    room = f"blocked@{MUC_SERVICE}"
    wiz, valdis = net.client(CAST["WiZ"]), net.client(CAST["Valdis"])
    phaedrus, ludwig = net.client(CAST["Phaedrus"]), net.client(LUDWIG)
    join(wiz, room, "WiZ")
    join(valdis, room, "Valdis")
    # blocked by JID, through killrc's slave
    phaedrus.send_raw(f"<presence to='{room}/Phaedrus'>"
                      "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
    refused = run(phaedrus.expect(is_presence(from_=f"{room}/Phaedrus", type_="error")))
    assert error_condition(refused) == "forbidden"
    run(wiz.expect_none(is_presence(from_=f"{room}/Phaedrus"), barrier_to=MUC_SERVICE))
    valdis.send_raw(f"<message to='{room}' type='groupchat'><body>before</body></message>")
    run(wiz.expect(is_groupchat(room, "Valdis", "before")))

    # a reload blocks Valdis (in the room) and efnet.irc (Ludwig, who comes directly)
    net.blocklist.write_text("phaedrus@killrc.oulubox.irc\nvaldis@killrc.oulubox.irc\n"
                             "efnet.irc\n")
    assert net.daemons.master.pid is not None
    os.kill(net.daemons.master.pid, signal.SIGHUP)
    wait_for_text(net.master_log, f"block list: 3 entries from {net.blocklist}")
    valdis.send_raw(f"<message to='{room}' type='groupchat' id='after'>"
                    "<body>after</body></message>")
    kind, condition, _ = refusal(valdis, "after")
    assert (kind, condition) == ("auth", "forbidden")
    run(wiz.expect_none(is_message(from_=f"{room}/Valdis"), barrier_to=MUC_SERVICE))
    ludwig.send_raw(f"<presence to='{room}/Ludwig'>"
                    "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
    refused = run(ludwig.expect(is_presence(from_=f"{room}/Ludwig", type_="error")))
    assert error_condition(refused) == "forbidden"
    log = net.master_log()
    assert f"refused join of {CAST['Phaedrus']} to {room}: forbidden" in log
    assert f"refused join of {LUDWIG} to {room}: forbidden" in log
    assert f"refused a message to {room} (block list) from {CAST['Valdis']}" in log
    assert "Traceback" not in log
