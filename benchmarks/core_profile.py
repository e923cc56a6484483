"""What a burst costs the sans-I/O cores, profiled (the figures docs/benchmarks.md quotes
for the burst pings and the CPU per delivered stanza):

- the master: N users' joins through one slave into a room that broadcasts the
  moderators' presence only (as the bursts of ``make bench-scale``): CPU per ENTER,
  function calls per ENTER, and the objects the collector tracks per occupant afterwards
  with the time of one full collection;
- a slave: M broadcasts of the master to L local users: CPU per broadcast.

Parsing each received stanza and serialising what goes out are counted (the shell does
both around the core); the socket, the reactor and the storage are not.

    python -m benchmarks.core_profile [--joins 10000] [--local 30 1000] [--top 12]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import io
import pstats
import time
from collections.abc import Callable

from benchmarks import memory
from dmuc import xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas

ROOM, SLAVE, SLAVE_DOMAIN, NOW = memory.ROOM, memory.SLAVE, memory.SLAVE_DOMAIN, memory.NOW


def _written(out: Outbox) -> int:
    """Serialise what the core handed out, as the shell writes it."""
    return sum(len(d.xml) if d.xml is not None else len(stanzas.render(d.stanza))
               for d in out.deliveries)


def _timed(receive: Callable[[stanzas.Element, float], Outbox], xmls: list[str],
           profile: cProfile.Profile | None) -> float:
    """CPU seconds to parse, handle and serialise each of `xmls`."""
    began = time.process_time()
    if profile is not None:
        profile.enable()
    for xml in xmls:
        _written(receive(stanzas.parse_stanza(xml), NOW))
    if profile is not None:
        profile.disable()
    return time.process_time() - began


def master_burst(joins: int, profile: cProfile.Profile | None) -> None:
    service, _join = memory.master(joins, True)
    service.rooms[ROOM].config.presence_broadcast = ["moderator"]
    xmls = [f"<presence from='user{i}@{SLAVE_DOMAIN}/r' to='{ROOM}/nick{i}'>"
            f"<x xmlns='{xmlns.MUC}'><history maxstanzas='0'/></x><show>away</show>"
            "<status>on the road</status><c xmlns='http://jabber.org/protocol/caps' "
            "hash='sha-1' node='https://slixmpp.com' ver='q0VvkSjAkNlTLG6i2WIJlYumxYo='/>"
            "</presence>" for i in range(joins)]
    gc.collect()
    tracked = len(gc.get_objects())
    cpu = _timed(service.receive, xmls, profile)
    gc.collect()
    per_occupant = (len(gc.get_objects()) - tracked) / joins
    began = time.perf_counter()
    gc.collect()
    print(f"master: {joins:,} joins through a slave (moderators' presence only): "
          f"{1e6 * cpu / joins:.0f} us CPU per ENTER; {per_occupant:.1f} objects tracked "
          f"by the collector per occupant, a full collection "
          f"{1000 * (time.perf_counter() - began):.0f} ms")


def slave_broadcasts(local: int, messages: int, profile: cProfile.Profile | None) -> None:
    slave = memory.registered_slave(memory._join(f"local0@{SLAVE_DOMAIN}/r", "local0"))
    for i in range(local):
        if i:
            slave.receive(memory._join(f"local{i}@{SLAVE_DOMAIN}/r", f"local{i}"), NOW)
        slave.receive(memory.enter_stanza(i), NOW)
    xmls = [f"<message from='{ROOM}/nick0' to='{SLAVE}' type='groupchat' id='m{n}'>"
            f"<body>Phaedrus, we're all having a truly rotten time. ({n})</body>"
            f"<stanza-id xmlns='urn:xmpp:sid:0' id='s{n}' by='{ROOM}'/>"
            f"<x xmlns='{xmlns.DMUC}'><delay xmlns='urn:xmpp:delay' from='{ROOM}/nick0' "
            "stamp='1990-10-13T23:58:37Z'/></x></message>" for n in range(messages)]
    cpu = _timed(slave.receive, xmls, profile)
    print(f"slave: {messages:,} broadcasts to {local:,} local users: "
          f"{1e6 * cpu / messages:.0f} us CPU per broadcast")


def _top(profile: cProfile.Profile, lines: int) -> str:
    text = io.StringIO()
    stats = pstats.Stats(profile, stream=text)
    stats.sort_stats("tottime").print_stats(lines)
    return "\n".join(line for line in text.getvalue().splitlines() if line.strip())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--joins", type=int, default=10_000)
    parser.add_argument("--local", type=int, nargs="+", default=[30, 1000])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--top", type=int, default=12, help="profile lines (0: none)")
    args = parser.parse_args()
    # timed without the profiler (it doubles the time), then profiled
    master_burst(args.joins, None)
    for local in args.local:
        slave_broadcasts(local, args.messages, None)
    if args.top:
        profile = cProfile.Profile()
        master_burst(args.joins, profile)
        print(_top(profile, args.top))
        profile = cProfile.Profile()
        slave_broadcasts(args.local[0], args.messages, profile)
        print(_top(profile, args.top))


if __name__ == "__main__":
    main()
