"""A client's catch-up of a room's last 1,000 messages (XEP-0313), through a slave, from
the master directly and from mod_muc + mod_muc_mam, on the real five-server network.

One room of each system gets the same `--messages` lines (said by Ludwig of efnet.irc):
``catchup@channel.avalon.irc`` (dmuc) and ``catchup@archive.avalon.irc`` (Prosody's mod_muc
with mod_muc_mam, a Component on the master's Prosody). Then each path catches up
`--repeats` times, as a client that reconnects with no local history asks: the last page
(an empty RSM ``<before/>``, ``max`` `--page`), then the page before the oldest id it got,
until ``<fin complete='true'/>`` or `--messages` messages:

* ``dmuc, through the vesa slave``: BigCheese of vesa.yeggmaex.irc, an occupant; the slave
  answers from its copy of the archive (docs/protocol.md §4.17);
* ``dmuc, master directly``: Ludwig of efnet.irc (no slave), over s2s to the master;
* ``mod_muc + mod_muc_mam``: BigCheese again, over s2s to archive.avalon.irc.

Figures: the catch-up's latency (the first query sent to the last ``<fin/>`` read, in the
client: p50/p99 over the repeats), the pages and messages it got, and what crossed s2s
between the client's server and avalon.irc during the repeats (both directions, counted by
the testbed's s2s proxy: stanzas and bytes, divided by the repeats). The table goes into
docs/benchmarks.md (section ``catchup``), the raw figures into docs/bench/catchup.json.

    python -m benchmarks.catchup [--messages 1000] [--page 50] [--repeats 20] [--no-doc]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.realnet import replace_section
from testbed.faults import DmucDaemons, wait_for_text
from testbed.network import MASTER_DOMAIN, MUC_SERVICE, DmucNetwork
from testbed.prosody import ComponentSpec
from tests.integration.cast import CAST, DIRECT_USER
from tests.integration.test_dmuc_slaves import join
from tests.integration.xmpp_client import Client, fresh_id, local, run, xml_str

REPO = Path(__file__).resolve().parent.parent
RAW = REPO / "docs" / "bench" / "catchup.json"
SECTION = "catchup"
IPS = ("127.0.26.2", "127.0.26.3", "127.0.26.4", "127.0.26.5", "127.0.26.6")
MAM_SERVICE = f"archive.{MASTER_DOMAIN}"
VESA = "vesa.yeggmaex.irc"
NS_MAM, NS_RSM = "urn:xmpp:mam:2", "http://jabber.org/protocol/rsm"
LINE = "a line of about sixty characters, as people say them here: {n:05d}"


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(fraction * (len(ordered) - 1)))]


def say_all(sender: Client, witness: Client, room: str, messages: int) -> None:
    """`messages` lines into `room`, in bursts of 100 each awaited at the witness."""
    for start in range(0, messages, 100):
        last = min(start + 100, messages)
        for n in range(start, last):
            sender.send_raw(f"<message to='{room}' type='groupchat' id='c{n}'>"
                            f"<body>{LINE.format(n=n)}</body></message>")
        text = LINE.format(n=last - 1)
        run(witness.expect(lambda e, t=text: local(e.tag) == "message"
                           and any(local(b.tag) == "body" and b.text == t for b in e),
                           timeout=120), timeout=130)
        witness.drain()


def page(client: Client, room: str, size: int, before: str) -> tuple[list[str], bool]:
    """One page before `before` ('' : the last page): its stanza-ids, oldest first, and
    whether the answer said complete."""
    queryid = fresh_id("cq")
    answer = run(client.iq(
        f"<iq type='set' to='{room}'><query xmlns='{NS_MAM}' queryid='{queryid}'>"
        f"<set xmlns='{NS_RSM}'><max>{size}</max><before>{before}</before></set>"
        "</query></iq>", timeout=30))
    assert answer.get("type") == "result", xml_str(answer)
    ids = []
    for message in client.inbox:
        for result in message:
            if local(result.tag) == "result" and result.get("queryid") == queryid:
                ids.append(result.get("id", ""))
    client.inbox = []
    fin = next(c for c in answer if local(c.tag) == "fin")
    return ids, fin.get("complete") == "true"


def catch_up(client: Client, room: str, size: int, messages: int) -> dict[str, Any]:
    started = time.perf_counter()
    got: list[str] = []
    pages, complete, before = 0, False, ""
    while not complete and len(got) < messages:
        ids, complete = page(client, room, size, before)
        pages += 1
        if not ids:
            break
        got[:0] = ids
        before = ids[0]
    return {"seconds": time.perf_counter() - started, "pages": pages, "messages": len(got),
            "complete": complete, "ids": got}


def measure(network: DmucNetwork, client: Client, room: str, args: argparse.Namespace
            ) -> dict[str, Any]:
    domain = network.server(client.jid).domain
    client.drain()
    network.reset_counts()
    runs = [catch_up(client, room, args.page, args.messages) for _ in range(args.repeats)]
    ids = runs[0].pop("ids")
    assert all(r.pop("ids") == ids for r in runs[1:]), "the catch-ups differ"
    stanzas = sum(sum(network.s2s_counts(a, b).values())
                  for a, b in ((domain, MASTER_DOMAIN), (MASTER_DOMAIN, domain)))
    sent = sum(network.s2s_bytes(a, b) for a, b in ((domain, MASTER_DOMAIN),
                                                    (MASTER_DOMAIN, domain)))
    latencies = [r["seconds"] * 1000 for r in runs]
    return {"client": client.jid, "room": room, "runs": runs, "ids": len(ids),
            "first_id": ids[0] if ids else None,
            "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99),
            "mean_ms": statistics.fmean(latencies),
            "s2s_stanzas_per_catchup": stanzas / args.repeats,
            "s2s_bytes_per_catchup": sent / args.repeats}


def run_benchmark(args: argparse.Namespace, net_dir: Path, workdir: Path) -> dict[str, Any]:
    mam = ComponentSpec(MAM_SERVICE, "", plugin="muc", modules=["muc_mam"],
                        options={"muc_room_locking": False, "muc_room_default_public": True,
                                 "max_archive_query_results": args.page})
    network = DmucNetwork(net_dir, ips=IPS, extra_components={MASTER_DOMAIN: [mam]},
                          log_level="info")
    network.start()
    daemons = DmucDaemons(network, workdir / "daemons",
                          master_toml="[muc.limits]\nrate = 0\n")
    clients: list[Client] = []
    try:
        daemons.start()
        for jid in (DIRECT_USER[1], CAST["BigCheese"]):
            server = network.server(jid)
            clients.append(Client(jid, host=server.ip, port=server.c2s_port))
            run(clients[-1].connect())
        ludwig, cheese = clients
        ours, theirs = f"catchup@{MUC_SERVICE}", f"catchup@{MAM_SERVICE}"
        for room in (ours, theirs):
            join(ludwig, room, "Ludwig")
            join(cheese, room, "BigCheese")
        wait_for_text(daemons.slaves[VESA].log_text, f"{ours}: archive copy complete",
                      timeout=30)
        for room in (ours, theirs):
            say_all(ludwig, cheese, room, args.messages)
        results = {
            "dmuc, through the vesa slave": measure(network, cheese, ours, args),
            "dmuc, master directly (efnet.irc, no slave)": measure(network, ludwig, ours,
                                                                     args),
            "mod_muc + mod_muc_mam (vesa user, over s2s)": measure(network, cheese, theirs,
                                                                     args),
        }
    finally:
        for client in clients:
            run(client.disconnect(), timeout=10)
        daemons.stop()
        network.stop()
    return {"settings": vars(args), "when": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": f"{platform.node()} ({os.cpu_count()} CPUs)", "results": results,
            "slave_storage": archive_storage(workdir / "daemons" / VESA / "slave.db")}


def archive_storage(db: Path) -> dict[str, Any]:
    """What the vesa slave's copy of the archive takes in its SQLite file (stopped, so
    the WAL is in the file): the pages of the archive table and its indexes (SQLite's
    dbstat), per message."""
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = conn.execute("SELECT count(*) FROM archive").fetchone()[0]
        tables = [name for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE tbl_name = 'archive'")]
        size = sum(conn.execute("SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = ?",
                                (name,)).fetchone()[0] for name in tables)
        xml = conn.execute("SELECT coalesce(avg(length(xml)), 0) FROM archive").fetchone()[0]
    finally:
        conn.close()
    return {"messages": rows, "bytes": size, "bytes_per_message": size / rows if rows else None,
            "xml_chars_per_message": xml, "btrees": tables}


def table(report: dict[str, Any]) -> list[str]:
    s = report["settings"]
    lines = [f"A catch-up of the last {s['messages']} messages, pages of {s['page']}, "
             f"{s['repeats']} catch-ups per path:", "",
             "| path | p50 ms | p99 ms | pages | messages | s2s stanzas / catch-up "
             "| s2s bytes / catch-up |", "|---|---|---|---|---|---|---|"]
    for name, r in report["results"].items():
        run0 = r["runs"][0]
        lines.append(f"| {name} | {r['p50_ms']:.0f} | {r['p99_ms']:.0f} | {run0['pages']} | "
                     f"{run0['messages']} | {r['s2s_stanzas_per_catchup']:.0f} | "
                     f"{r['s2s_bytes_per_catchup']:,.0f} |")
    return lines


HOW = [
    "How: the five-server testbed with the daemons, and a Component "
    f"`{MAM_SERVICE}` (Prosody's mod_muc with mod_muc_mam) on the master's Prosody. Ludwig "
    "(efnet.irc, no slave) says the same lines in `catchup@channel.avalon.irc` (dmuc) and "
    f"`catchup@{MAM_SERVICE}`; BigCheese (vesa.yeggmaex.irc, behind the vesa slave) is in "
    "both. A catch-up is what a client with no local history asks on reconnect: the last "
    "page (RSM `<before/>`), then the page before the oldest id it got, until "
    "`<fin complete='true'/>`; latency is from the first query sent to the last `<fin/>` "
    "read, in the slixmpp client (p50/p99 over the repeats; the client and every server "
    "share the machine). s2s stanzas and bytes are counted by the testbed's s2s proxy on "
    "the link between the client's server and avalon.irc, both directions, over all the "
    "repeats of a path, divided by the repeats (keepalives between slave and master "
    "included). Every repeat of a path must return the same ids.",
]


def storage_line(report: dict[str, Any]) -> list[str]:
    st = report.get("slave_storage") or {}
    if not st.get("messages"):
        return []
    return [f"The vesa slave's copy of that archive: {st['messages']} messages in "
            f"{st['bytes']:,} bytes of SQLite pages (the archive table and its indexes, "
            f"dbstat), {st['bytes_per_message']:.0f} bytes a message "
            f"({st['xml_chars_per_message']:.0f} characters of XML each).", ""]


def write_doc(report: dict[str, Any], command: str) -> None:
    begin, end = f"<!-- {SECTION}:begin -->", f"<!-- {SECTION}:end -->"
    body = [begin, "", f"Run {report['when']} on {report['machine']}, command:", "",
            "```sh", command, "```", "", *HOW, "", *table(report), "",
            *storage_line(report),
            f"Raw figures: [docs/bench/{RAW.name}](bench/{RAW.name}).", "", end]
    replace_section(SECTION, body, heading="## A client's catch-up (issue 20)")
    RAW.write_text(json.dumps(report, indent=1) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--messages", type=int, default=1000)
    p.add_argument("--page", type=int, default=50)
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--no-doc", action="store_true", help="do not update docs/benchmarks.md")
    args = p.parse_args(argv)
    # each its own mkdtemp: Prosody's (chowned to it) and the daemons'
    net_dir = Path(tempfile.mkdtemp(prefix="dmuc-catchup-net-"))
    workdir = Path(tempfile.mkdtemp(prefix="dmuc-catchup-"))
    try:
        report = run_benchmark(args, net_dir, workdir)
    finally:
        for d in (net_dir, workdir):
            shutil.rmtree(d, ignore_errors=True)
    print("\n".join(table(report) + storage_line(report)))
    if not args.no_doc:
        command = "python -m benchmarks.catchup " + " ".join(sys.argv[1:] if argv is None
                                                             else argv)
        write_doc(report, command.strip())
    return 0


if __name__ == "__main__":
    sys.exit(main())
