"""A distributed dmuc on loopback: five Prosody servers linked by s2s, the master, three slaves.

``python -m testbed.demo_network`` starts :class:`~testbed.network.DmucNetwork`
(avalon.irc with the master's component channel.avalon.irc; killrc.oulubox.irc,
eris.dclxvii.irc and vesa.yeggmaex.irc each with a dmuc slave; efnet.irc whose users join the
master directly), writes the daemons' configs under ./run/, starts ``twistd dmuc-master`` and
one ``twistd dmuc-slave`` per slave server, prints where to log in, and stops everything on
Ctrl-C. Room state is kept in ./run/*.db across runs.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from pathlib import Path

from testbed.daemon import TwistdDaemon
from testbed.demo import interruptible, watch
from testbed.network import (
    DIRECT_DOMAIN,
    MUC_SERVICE,
    SLAVE_DOMAINS,
    DmucNetwork,
    NetServer,
)
from testbed.prosody import TestbedError, stop_all

ROOM = f"wallops@{MUC_SERVICE}"
# the seed's cast (nick, account), plus a user of the server without a slave
ACCOUNTS = [
    ("Wumpus", "argl@killrc.oulubox.irc"),
    ("Valdis", "valdis@killrc.oulubox.irc"),
    ("Phaedrus", "phaedrus@killrc.oulubox.irc"),
    ("WiZ", "squit@eris.dclxvii.irc"),
    ("Troy", "troy@eris.dclxvii.irc"),
    ("BigCheese", "rubenro@vesa.yeggmaex.irc"),
    ("Efchen", "msa@vesa.yeggmaex.irc"),
    ("Jarkko", f"jarkko@{DIRECT_DOMAIN}"),
]
WAIT_FOR = "component connected"


def _describe(server: NetServer) -> str:
    role = {
        "master": f"the master's server ({MUC_SERVICE})",
        "slave": f"users served by the slave {server.component}",
        "direct": "no slave: users join the master over s2s",
    }[server.role]
    return f"{server.domain:20} {server.ip}:{server.c2s_port:<6} {role}"


def start_daemon(daemon: TwistdDaemon, what: str) -> None:
    try:
        daemon.start(WAIT_FOR, timeout=30)
    except TestbedError as exc:
        raise TestbedError(f"{what} did not start (log: {daemon.log_path}):\n{exc}") from None


def main() -> int:
    state = Path("run").resolve()
    state.mkdir(exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="dmuc-demo-network-"))
    network = DmucNetwork(workdir, c2s_port=5222, log_level="info")
    daemons: list[TwistdDaemon] = []
    stop = interruptible()
    try:
        network.start()
        master_cfg = state / "dmuc-master.toml"
        master_cfg.write_text(network.master_config(state / "master.db"))
        master = TwistdDaemon("dmuc-master", master_cfg, state)
        daemons.append(master)
        start_daemon(master, f"dmuc-master ({MUC_SERVICE})")
        for domain in SLAVE_DOMAINS:
            name = f"dmuc-slave-{domain}"
            cfg = state / f"{name}.toml"
            cfg.write_text(network.slave_config(domain, state / f"slave-{domain}.db"))
            # one workdir per slave: TwistdDaemon names its log after the plugin
            slave = TwistdDaemon("dmuc-slave", cfg, state / name)
            daemons.append(slave)
            start_daemon(slave, f"dmuc-slave for {domain}")

        print(f"""
dmuc is running: {len(network.servers)} Prosody servers linked by s2s (plain TCP, any password),
dmuc-master as {MUC_SERVICE}, a dmuc-slave on each of {", ".join(SLAVE_DOMAINS)}.
Each server has its own loopback address; the domains do not resolve outside this network, so
set your client's server and port (Gajim: Advanced > custom host/port; poezio: custom_host/port).
Servers (c2s address):""")
        for server in network.servers.values():
            print(f"  {_describe(server)}")
        print("\nAccounts (any password works), then join", ROOM, "as:")
        for nick, jid in ACCOUNTS:
            server = network.server(jid)
            print(f"  {jid:30} via {server.ip}:{server.c2s_port:<6} nick {nick}")
        print(f"""
Room state: {state}/*.db; daemon logs: {state}/dmuc-master.log, {state}/dmuc-slave-*/;
Prosody logs: {workdir}/<domain>/prosody.log.
Press Ctrl-C to stop.""", flush=True)
        return watch(stop, [*daemons, *(s.prosody for s in network.servers.values())])
    except TestbedError as exc:
        print(f"dmuc network demo: {exc}", file=sys.stderr)
        return 1
    finally:
        stop_all(*daemons)
        network.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        print("stopped.")


if __name__ == "__main__":
    sys.exit(main())
