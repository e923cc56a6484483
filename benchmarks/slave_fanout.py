"""Fan-out throughput of ``twistd dmuc-slave``: one copy from the master, N local copies.

The benchmark plays both the users' Prosody (it is the server end of the slave's XEP-0114
stream, and hands it the users' diverted presences) and the master (it answers the slave's
registration and sends ENTERs, then broadcasts with the delay inside the dmuc element, as
in §4.9). It times until every local occupant's copy of M messages has come back.

    python -m benchmarks.slave_fanout [--occupants 100 1000] [--messages 200]
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.fake_prosody import (
    SECRET,
    daemon_on_fake_server,
    median_batch,
    print_header,
    print_row,
    result,
)
from testbed.configs import daemon_toml

DOMAIN = "vesa.yeggmaex.irc"
SLAVE = f"dmuc.{DOMAIN}"
ROOM = "wallops@channel.avalon.irc"
DMUC = "urn:xmpp:tmp:dmuc:0"


def user(i: int) -> str:
    return f"user{i}@{DOMAIN}/r"


async def run_slave(occupants: int, messages: int, workdir: Path) -> dict[str, float]:
    def config(port: int) -> str:
        return daemon_toml(
            jid=SLAVE, host="127.0.0.1", port=port, secret=SECRET, db_path=workdir / "slave.db",
            level="warn", tables={"slave": {"domains": [DOMAIN],
                                            "masters": ["channel.avalon.irc"],
                                            "keepalive": 3600, "history": 20}})

    async with daemon_on_fake_server("dmuc-slave", SLAVE, workdir, config) as server:
        register = server.expect(rb"<iq[^>]*id=['\"](dmuc-register-[0-9]+)['\"]")
        t0 = time.perf_counter()
        for i in range(occupants):  # the users' joins, as mod_dmuc_slave diverts them
            server.send(f"<presence from='{user(i)}' to='{ROOM}/nick{i}'>"
                        "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
        reg_id = (await asyncio.wait_for(register, 30)).group(1).decode()
        server.send(f"<iq type='result' from='{ROOM}' to='{SLAVE}' id='{reg_id}'>"
                    f"<registered xmlns='{DMUC}' keepalive='3600' history='20' "
                    "whois='moderators'/></iq>"
                    f"<presence from='{ROOM}' to='{SLAVE}'><x xmlns='{DMUC}'><resync/></x>"
                    f"</presence><presence from='{ROOM}' to='{SLAVE}'><x xmlns='{DMUC}'>"
                    "<synced/></x></presence>")
        for i in range(occupants):  # the master: the broadcast presence, then the ENTER
            item = "<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none' " \
                   "role='participant'/></x>"
            server.send(f"<presence from='{ROOM}/nick{i}' to='{SLAVE}'>{item}</presence>")
            server.send(f"<presence from='{ROOM}/nick{i}' to='{SLAVE}'>"
                        "<x xmlns='http://jabber.org/protocol/muc#user'><item affiliation='none'"
                        f" role='participant' jid='{user(i)}'/><status code='110'/></x>"
                        f"<x xmlns='{DMUC}'><enter jid='{user(i)}'/>"
                        "<history maxstanzas='0'/></x></presence>")
        done = server.expect(rb"id=['\"]joins-done['\"]")
        server.send(f"<iq type='get' from='{ROOM}' to='{SLAVE}' id='joins-done'>"
                    "<ping xmlns='urn:xmpp:ping'/></iq>")
        await asyncio.wait_for(done, 300)
        join_time = time.perf_counter() - t0

        def send_batch(batch: int) -> None:
            for n in range(messages):
                server.send(
                    f"<message from='{ROOM}/nick0' to='{SLAVE}' type='groupchat' "
                    f"id='m{batch}-{n}'><body>Phaedrus, we're all having a truly rotten "
                    f"time. ({n})</body><stanza-id xmlns='urn:xmpp:sid:0' id='s{batch}-{n}' "
                    f"by='{ROOM}'/><x xmlns='{DMUC}'><delay xmlns='urn:xmpp:delay' "
                    f"from='{ROOM}/nick0' stamp='1990-10-13T23:58:37Z'/></x></message>")

        seconds = await median_batch(server, occupants * messages, send_batch)
    return result(occupants, messages, seconds, join_seconds=join_time)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--occupants", type=int, nargs="+", default=[100, 1000])
    parser.add_argument("--messages", type=int, default=200)
    args = parser.parse_args()
    print_header(f"{'joins s':>10}")
    for n in args.occupants:
        workdir = Path(tempfile.mkdtemp(prefix="dmuc-bench-slave-"))
        try:
            r = asyncio.run(run_slave(n, args.messages, workdir))
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        print_row("twistd dmuc-slave", r, f"{r['join_seconds']:>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
