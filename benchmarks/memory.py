"""Memory per occupant in the sans-I/O cores, measured with tracemalloc: N occupants join
one room of the master (through one slave, and directly) and N remote occupants fill one
slave's mirrored roster (the master's broadcast presences, then one local user enters
and is sent them all, and the room is saved), and N local users of one slave join
through it. Direct joins are measured at N <= 1,000.
Reported: bytes the core holds per occupant once the room is full (after a collection),
so the shell, the parser's buffers and the interpreter are not counted.

    python -m benchmarks.memory [--occupants 1000 10000] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from dmuc import xmlns
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.protocol import stanzas
from dmuc.slave.service import SlaveService, SlaveSettings

SERVICE = "channel.avalon.irc"
ROOM = f"wallops@{SERVICE}"
SLAVE = "dmuc.vesa.yeggmaex.irc"
SLAVE_DOMAIN = "vesa.yeggmaex.irc"
NOW = 1_000_000.0


def _join(who: str, nick: str) -> stanzas.Element:
    return stanzas.parse_stanza(
        f"<presence from='{who}' to='{ROOM}/{nick}'><x xmlns='{xmlns.MUC}'>"
        "<history maxstanzas='0'/></x><show>away</show><status>on the road</status>"
        "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='https://slixmpp.com'"
        " ver='q0VvkSjAkNlTLG6i2WIJlYumxYo='/></presence>")


def _broadcast(i: int) -> stanzas.Element:
    """The master's broadcast of a remote occupant's presence, as a slave receives it."""
    return stanzas.parse_stanza(
        f"<presence from='{ROOM}/nick{i}' to='{SLAVE}'><show>away</show>"
        "<status>on the road</status><c xmlns='http://jabber.org/protocol/caps' "
        "hash='sha-1' node='https://slixmpp.com' ver='q0VvkSjAkNlTLG6i2WIJlYumxYo='/>"
        f"<occupant-id xmlns='urn:xmpp:occupant-id:0' id='oid{i:032d}'/>"
        f"<x xmlns='{xmlns.MUC_USER}'><item affiliation='none' role='participant'/></x>"
        "</presence>")


def master(occupants: int, through_slave: bool) -> tuple[MUCService, Callable[[int], None]]:
    service = MUCService(ServiceSettings(jid=SERVICE, room_locking=False,
                                         slaves={SLAVE: frozenset({SLAVE_DOMAIN})}))
    service.receive(_join("owner@avalon.irc/pc", "owner"), NOW)
    if through_slave:
        service.receive(stanzas.parse_stanza(
            f"<iq type='set' id='r' from='{SLAVE}' to='{ROOM}'>"
            f"<register xmlns='{xmlns.DMUC}' keepalive='60' history='0'/></iq>"), NOW)
    domain = SLAVE_DOMAIN if through_slave else "efnet.irc"

    def join(i: int) -> None:
        service.receive(_join(f"user{i}@{domain}/r", f"nick{i}"), NOW)
    return service, join


# N direct joins cost N² copies (each newcomer is sent the occupant list), hours under
# tracemalloc at 10,000: measured up to this size only
DIRECT_MAX = 1000


def direct(occupants: int) -> tuple[MUCService, Callable[[int], None]]:
    return master(occupants, False)


def registered_slave(first_join: stanzas.Element) -> SlaveService:
    """A sans-I/O slave whose link to ROOM is LIVE: a local user's `first_join` made it
    register, the master accepted it and sent an empty snapshot."""
    service = SlaveService(SlaveSettings(jid=SLAVE, domains=frozenset({SLAVE_DOMAIN}),
                                         masters=frozenset({SERVICE}), keepalive=3600))
    out = service.receive(first_join, NOW)
    register = next(d.stanza for d in out.deliveries if d.stanza.name == "iq")
    for xml in (f"<iq type='result' from='{ROOM}' to='{SLAVE}' id='{register['id']}'>"
                f"<registered xmlns='{xmlns.DMUC}' keepalive='3600' history='20' "
                "whois='moderators'/></iq>",
                f"<presence from='{ROOM}' to='{SLAVE}'><x xmlns='{xmlns.DMUC}'><resync/></x>"
                "</presence>",
                f"<presence from='{ROOM}' to='{SLAVE}'><x xmlns='{xmlns.DMUC}'><synced/></x>"
                "</presence>"):
        service.receive(stanzas.parse_stanza(xml), NOW)
    return service


def slave(occupants: int) -> tuple[SlaveService, Callable[[int], None]]:
    service = registered_slave(_join(f"local@{SLAVE_DOMAIN}/r", "local"))

    def join(i: int) -> None:
        service.receive(_broadcast(i), NOW)
        if i == occupants - 1:  # the local user enters last: it is sent the whole roster
            service.receive(stanzas.parse_stanza(
                f"<presence from='{ROOM}/local' to='{SLAVE}'><x xmlns='{xmlns.MUC_USER}'>"
                f"<item affiliation='none' role='participant' jid='local@{SLAVE_DOMAIN}/r'/>"
                f"<status code='110'/></x><x xmlns='{xmlns.DMUC}'>"
                f"<enter jid='local@{SLAVE_DOMAIN}/r'/><history maxstanzas='0'/></x>"
                "</presence>"), NOW)
            room = service.rooms[ROOM]
            assert len(room.roster) == occupants and len(room.local) == 1
            room.to_state()  # as the shell saves the room: its state and its changed rows
            room.changed_entries()
    return service, join


def enter_stanza(i: int) -> stanzas.Element:
    """The master's ENTER of local user i, as the slave receives it."""
    full = f"local{i}@{SLAVE_DOMAIN}/r"
    return stanzas.parse_stanza(
        f"<presence from='{ROOM}/local{i}' to='{SLAVE}'><x xmlns='{xmlns.MUC_USER}'>"
        f"<item affiliation='none' role='participant' jid='{full}'/><status code='110'/>"
        f"</x><x xmlns='{xmlns.DMUC}'><enter jid='{full}'/><history maxstanzas='0'/></x>"
        "</presence>")


def slave_sessions(occupants: int) -> tuple[SlaveService, Callable[[int], None]]:
    """N local users of one slave join (the slave forwards each join, the master's ENTER
    comes back), and the room is saved: what a slave keeps per local session."""
    service = registered_slave(_join(f"local0@{SLAVE_DOMAIN}/r", "local0"))

    def join(i: int) -> None:
        if i:
            service.receive(_join(f"local{i}@{SLAVE_DOMAIN}/r", f"local{i}"), NOW)
        service.receive(enter_stanza(i), NOW)
        if i == occupants - 1:
            room = service.rooms[ROOM]
            assert len(room.local) == occupants
            room.to_state()
            room.changed_entries()
    return service, join


def per_occupant(occupants: int, make: Callable[[int], tuple[object, Callable[[int], None]]]
                 ) -> float:
    """Bytes held per occupant: traced memory after the joins less before them."""
    gc.collect()
    tracemalloc.start()
    core, join = make(occupants)
    join(0)  # the first occupant settles the room's own structures
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(1, occupants):
        join(i)
    gc.collect()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del core
    return (after - before) / (occupants - 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--occupants", type=int, nargs="+", default=[1000, 10_000])
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    cases: list[tuple[str, Callable[[int], tuple[object, Callable[[int], None]]]]] = [
        ("master, through one slave", lambda n: master(n, True)),
        ("master, direct", direct),
        ("slave, mirrored roster", slave),
        ("slave, local sessions", slave_sessions),
    ]
    rows = []
    print(f"{'bytes per occupant (tracemalloc)':<34}{'occupants':>10}{'bytes':>10}{'KiB':>8}")
    for label, make in cases:
        for n in args.occupants:
            if make is direct and n > DIRECT_MAX:
                continue
            size = per_occupant(n, make)
            rows.append({"what": label, "occupants": n, "bytes_per_occupant": round(size)})
            print(f"{label:<34}{n:>10}{size:>10.0f}{size / 1024:>8.2f}", flush=True)
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        command = "python -m benchmarks.memory --occupants " + " ".join(map(str, args.occupants))
        args.json.write_text(json.dumps({"command": command, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
