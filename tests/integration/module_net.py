"""A test module's own five-server network with the daemons (a module-scoped fixture's
body): its clients are real slixmpp clients with the plugins the module names."""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

from testbed.faults import DmucDaemons
from testbed.network import DmucNetwork
from tests.integration.conftest import FAULT_KEEPALIVE, keep_testbed, make_tempdir
from tests.integration.xmpp_client import Client, run


@dataclass
class Net:
    network: DmucNetwork
    daemons: DmucDaemons
    plugins: tuple[str, ...] = ()
    clients: list[Client] = field(default_factory=list)

    def client(self, jid: str) -> Client:
        server = self.network.server(jid)
        client = Client(jid, host=server.ip, port=server.c2s_port)
        for plugin in self.plugins:
            client.xmpp.register_plugin(plugin)
        self.clients.append(client)
        run(client.connect())
        return client


def module_net(prefix: str, ips: tuple[str, ...], plugins: tuple[str, ...]) -> Iterator[Net]:
    """The network on `ips` with the daemons at FAULT_KEEPALIVE (a split is found and
    healed quickly); every client and process stopped at the end."""
    net_dir, daemons_dir = make_tempdir(f"{prefix}-net-"), make_tempdir(f"{prefix}-")
    network = DmucNetwork(net_dir, ips=ips, log_level="info")
    network.start()
    daemons = DmucDaemons(network, daemons_dir, keepalive=FAULT_KEEPALIVE)
    net = Net(network, daemons, plugins)
    try:
        daemons.start()
        yield net
    finally:
        run(asyncio.gather(*(c.disconnect() for c in net.clients), return_exceptions=True))
        network.heal_all()
        daemons.stop()
        network.stop()
        if not keep_testbed():
            for d in (net_dir, daemons_dir):
                shutil.rmtree(d, ignore_errors=True)
