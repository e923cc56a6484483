"""Fuzz ``twistd dmuc-master`` behind a real Prosody (issue 8 point 6), bounded (~60 s).

Three clients and a raw XEP-0114 component that the master allows as a slave send random,
well-formed but hostile stanzas (tests/unit/fuzz_stanzas.py: odd types, attributes,
children, namespaces, sizes, malformed JIDs and numbers; to the service, to rooms, to
occupants; the component also as a slave speaking for itself and for its users) while a
fourth client pings the service. Afterwards the master must still be running (its PID),
answer a ping within PING_BOUND, have logged no traceback and no internal error, and its
room must be consistent: after an admin clears the room's entry conditions, a fresh client
joins, the occupant list it gets is exactly the fuzzing clients that are still in the room
(each one's own view, from the presences it got), the master's disco#items agree, and a
message reaches every one of them.

One fixed seed (DMUC_FUZZ_SEED=n to try another); a failure names it.
"""

from __future__ import annotations

import asyncio
import os
import random
import secrets
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from types import SimpleNamespace

import pytest

from testbed import ComponentSpec, ProsodyInstance, TwistdDaemon
from testbed.configs import daemon_toml
from tests.integration.conftest import MUC_DOMAIN, TEST_DOMAINS, make_tempdir, master_on
from tests.integration.test_network import RawComponent
from tests.integration.xmpp_client import (
    NS_CLIENT,
    NS_DATA,
    NS_DISCO_ITEMS,
    NS_MUC,
    NS_MUC_OWNER,
    Client,
    all_of,
    body,
    has_status,
    is_message,
    is_presence,
    local,
    run,
    status_codes,
    take_through,
    xml_str,
)
from tests.unit.fuzz_stanzas import StanzaFuzzer

pytestmark = pytest.mark.integration

SEED = int(os.environ.get("DMUC_FUZZ_SEED", "20260"))
FUZZ_SECONDS = 30.0  # of random stanzas, at most
MAX_STANZAS = int(os.environ.get("DMUC_FUZZ_STANZAS", "12000"))
MAX_BYTES = 100_000  # a stanza, well under Prosody's limits (a client over them is cut off)
PING_BOUND = 2.0  # seconds for the service to answer a ping afterwards
SLAVE = "dmuc.killrc.oulubox.irc"  # allowed in [[slaves]] for killrc's users
SLAVE_DOMAIN = "killrc.oulubox.irc"
CHECK_ROOM = f"fuzzcheck@{MUC_DOMAIN}"
FUZZ_ROOMS = [f"fuzz1@{MUC_DOMAIN}", f"fuzz2@{MUC_DOMAIN}"]
FUZZERS = ["fuzz1@avalon.irc/f", "fuzz2@eris.dclxvii.irc/f", "fuzz3@vesa.yeggmaex.irc/f"]
PINGER = "pinger@eris.dclxvii.irc/p"
CHECKER = "checker@avalon.irc/c"  # a service admin: clears the room's entry conditions
SLAVE_USERS = [f"u{n}@{SLAVE_DOMAIN}/r" for n in range(3)]
NICKS = ["WiZ", "Troy", "n1", "n2", "c1", "c2", "c3"]


@pytest.fixture
def fuzz_master() -> Iterator[tuple[ProsodyInstance, TwistdDaemon]]:
    """A Prosody of our own with the MUC component and a slave component (that may speak
    for killrc's users), and a master allowing it."""
    workdir, prosody_dir = make_tempdir("dmuc-fuzz-"), make_tempdir("dmuc-fuzz-prosody-")
    prosody = ProsodyInstance(
        prosody_dir, virtualhosts=TEST_DOMAINS, log_level="info",
        components=[ComponentSpec(MUC_DOMAIN, secrets.token_hex(16)),
                    ComponentSpec(SLAVE, secrets.token_hex(16),
                                  options={"validate_from_addresses": False})])
    config = workdir / "master.toml"
    spec = prosody.component(MUC_DOMAIN)
    config.write_text(daemon_toml(
        jid=MUC_DOMAIN, host=prosody.ip, port=prosody.component_port, secret=spec.secret,
        db_path=workdir / "master.db", level="info",
        tables={"muc": {"admins": [CHECKER.split("/")[0]]}},
        slaves={SLAVE: [SLAVE_DOMAIN]},
        # the limits' own tests are elsewhere: here most stanzas should reach the core
        extra_toml="[muc.limits]\nrate = 300\nburst = 3000\n"))
    master = TwistdDaemon("dmuc-master", config, workdir)
    with master_on(prosody, master, workdir, prosody_dir):
        yield prosody, master


def component(prosody: ProsodyInstance, domain: str) -> RawComponent:
    """test_network's RawComponent, on a single Prosody."""
    server = SimpleNamespace(ip=prosody.ip, component_port=prosody.component_port,
                             secrets={domain: prosody.component(domain).secret})
    network = SimpleNamespace(server=lambda _domain: server)
    return run(RawComponent(network, domain).connect())  # type: ignore[arg-type]


def connect(prosody: ProsodyInstance, jid: str) -> Client:
    return run(Client(jid, "pw", host=prosody.ip, port=prosody.c2s_port).connect())


def join(client: Client, room: str, nick: str) -> ET.Element:
    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'/></presence>")
    return run(client.expect(all_of(is_presence(from_=f"{room}/{nick}"),
                                    lambda e: has_status(e, 110))))


def occupants(client: Client) -> list[str]:
    """The nicks disco#items of the room lists ([] if there is no such room)."""
    items = run(client.iq(f"<iq type='get' to='{CHECK_ROOM}'>"
                          f"<query xmlns='{NS_DISCO_ITEMS}'/></iq>"))
    return sorted((i.get("jid") or "").partition("/")[2]
                  for i in items.iter(f"{{{NS_DISCO_ITEMS}}}item"))


def connected(client: Client) -> bool:
    return client.xmpp.transport is not None


def own_view(client: Client, room: str) -> str | None:
    """The nick `client` is in `room` with, as the presences it received tell it (None:
    not in it): its own presence (110) puts it in; an unavailable presence of that nick
    takes it out (303: under a new nick, whose own presence follows)."""
    nick: str | None = None
    for elem in client.received(lambda e: local(e.tag) == "presence"):
        sender = elem.get("from") or ""
        room_of, _, from_nick = sender.partition("/")
        if room_of != room or not from_nick or elem.get("type") == "error":
            continue
        if elem.get("type") == "unavailable":
            if from_nick == nick and "303" not in status_codes(elem):
                nick = None
        elif "110" in status_codes(elem):
            nick = from_nick
    return nick


async def fuzz(rng: random.Random, fuzzers: list[Client], slave: RawComponent,
               pinger: Client) -> tuple[int, list[float]]:
    """Random stanzas until FUZZ_SECONDS or MAX_STANZAS; the pinger's latencies meanwhile."""
    users = [c.jid for c in fuzzers] + SLAVE_USERS + [PINGER]
    rooms = [CHECK_ROOM, *FUZZ_ROOMS]
    for_clients = StanzaFuzzer(rng, MUC_DOMAIN, rooms, users, NICKS)
    for_slave = StanzaFuzzer(rng, MUC_DOMAIN, FUZZ_ROOMS, users, NICKS)
    latencies: list[float] = []
    done = asyncio.Event()

    async def ping() -> None:
        while not done.is_set():
            started = time.monotonic()
            reply = await pinger.barrier(MUC_DOMAIN, timeout=30)
            assert reply.get("type") == "result", xml_str(reply)
            latencies.append(time.monotonic() - started)
            pinger.drain()
            await asyncio.sleep(0.2)

    pinging = asyncio.ensure_future(ping())
    deadline = time.monotonic() + FUZZ_SECONDS
    sent = 0
    try:
        while sent < MAX_STANZAS and time.monotonic() < deadline:
            r = rng.random()
            if r < 0.8:
                client = rng.choice(fuzzers)
                xml = for_clients.stanza(max_bytes=MAX_BYTES)
                if connected(client):
                    client.send_raw(xml)
            elif r < 0.9:
                slave.send(for_slave.slave_request(rng.choice(FUZZ_ROOMS), SLAVE))
            else:  # as a slave forwarding its users' stanzas, or as itself
                slave.send(for_slave.stanza(rng.choice([*SLAVE_USERS, SLAVE]),
                                            max_bytes=MAX_BYTES))
            sent += 1
            if sent % 40 == 0:  # keep pace with the master; let the clients read
                await rng.choice(fuzzers).barrier(MUC_DOMAIN, timeout=30)
                slave.inbox.clear()
    finally:
        done.set()
        await pinging
    return sent, latencies


def test_random_hostile_stanzas_leave_the_master_up_and_its_room_consistent(
        fuzz_master: tuple[ProsodyInstance, TwistdDaemon]) -> None:
    prosody, master = fuzz_master
    print(f"fuzz seed {SEED} (rerun: DMUC_FUZZ_SEED={SEED})")
    where = f"(seed {SEED}; DMUC_FUZZ_SEED={SEED} to rerun)"
    rng = random.Random(SEED)
    fuzzers = [connect(prosody, jid) for jid in FUZZERS]
    pinger, checker = connect(prosody, PINGER), connect(prosody, CHECKER)
    slave = component(prosody, SLAVE)
    clients = [*fuzzers, pinger, checker]
    try:
        # the room under test: the fuzzers are in it (fuzz1 owns it), and then fuzz it
        join(fuzzers[0], CHECK_ROOM, "c1")
        reply = run(fuzzers[0].iq(f"<iq type='set' to='{CHECK_ROOM}'><query "
                                  f"xmlns='{NS_MUC_OWNER}'><x xmlns='{NS_DATA}' "
                                  "type='submit'/></query></iq>"))
        assert reply.get("type") == "result", xml_str(reply)
        for n, client in enumerate(fuzzers[1:], start=2):
            join(client, CHECK_ROOM, f"c{n}")
        started = time.monotonic()
        sent, latencies = run(fuzz(rng, fuzzers, slave, pinger), timeout=FUZZ_SECONDS + 60)
        fuzz_time = time.monotonic() - started
        print(f"{sent} stanzas in {fuzz_time:.1f} s; the pinger's {len(latencies)} pings: "
              f"max {max(latencies):.3f} s")

        # everything sent has been handled (a barrier each), and everything the master
        # sent because of it has arrived (a second one: streams are in order)
        run(slave.iq("<ping xmlns='urn:xmpp:ping'/>", MUC_DOMAIN, type_="get"))
        for _ in range(2):
            for client in fuzzers:
                run(client.barrier(MUC_DOMAIN, timeout=30))

        # the master is up and answers at once
        assert master.running(), f"the master died {where}:\n{master.log_text()[-4000:]}"
        started = time.monotonic()
        reply = run(pinger.barrier(MUC_DOMAIN))
        assert reply.get("type") == "result", xml_str(reply)
        assert time.monotonic() - started < PING_BOUND, where
        log = master.log_text()
        for bad in ("Traceback", "Unhandled", "internal error"):
            assert bad not in log, f"{bad!r} in the master's log {where}:\n" + "\n".join(
                line for line in log.splitlines() if bad in line)[:4000]

        # the room: an admin lifts what the fuzz may have set up against joining
        # (password, members-only, a user limit, hidden roles, a lock), then the fuzzers
        # that are not in it join again (a ban or a nick taken may still keep one out;
        # a destroyed room comes back, unlocked by its new owner)
        assert all(connected(c) for c in fuzzers), f"a fuzzing client was cut off {where}"
        after_fuzz = sorted(n for c in fuzzers if (n := own_view(c, CHECK_ROOM)) is not None)
        run(checker.iq(
            f"<iq type='set' to='{CHECK_ROOM}'><query xmlns='{NS_MUC_OWNER}'>"
            f"<x xmlns='{NS_DATA}' type='submit'>"
            "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value>"
            "</field><field var='muc#roomconfig_passwordprotectedroom'><value>0</value>"
            "</field><field var='muc#roomconfig_roomsecret'><value></value></field>"
            "<field var='muc#roomconfig_membersonly'><value>0</value></field>"
            "<field var='muc#roomconfig_maxusers'><value></value></field>"
            "<field var='muc#roomconfig_publicroom'><value>1</value></field>"
            "<field var='muc#roomconfig_presencebroadcast'><value>moderator</value>"
            "<value>participant</value><value>visitor</value></field>"
            "</x></query></iq>"))
        # the master's list (disco#items of a public room) is what the clients think
        assert set(occupants(checker)) == set(after_fuzz), (occupants(checker), after_fuzz,
                                                            where)
        for n, client in enumerate(fuzzers, start=1):
            if own_view(client, CHECK_ROOM) is not None:
                continue
            seen = len(client.inbox)
            client.send_raw(f"<presence to='{CHECK_ROOM}/c{n}'><x xmlns='{NS_MUC}'/></presence>")
            run(client.barrier(MUC_DOMAIN))
            if any(has_status(e, 201) for e in client.inbox[seen:]):
                run(client.iq(f"<iq type='set' to='{CHECK_ROOM}'><query xmlns='{NS_MUC_OWNER}'>"
                              f"<x xmlns='{NS_DATA}' type='submit'/></query></iq>"))
        for client in fuzzers:
            run(client.barrier(MUC_DOMAIN))
        inside = {nick: c for c in fuzzers if (nick := own_view(c, CHECK_ROOM)) is not None}
        print(f"in {CHECK_ROOM} after the fuzz: {after_fuzz}; after joining again: "
              f"{sorted(inside)}")
        for client in fuzzers:
            client.drain()
        checker.drain()
        checker.send_raw(f"<presence to='{CHECK_ROOM}/checker'><x xmlns='{NS_MUC}'/>"
                         "</presence>")
        got = run(take_through(checker, all_of(is_presence(from_=f"{CHECK_ROOM}/checker"),
                                               lambda e: has_status(e, 110))))
        assert got[-1].get("type") is None, f"the join failed {where}: {xml_str(got[-1])}"
        listed = {(e.get("from") or "").partition("/")[2] for e in got[:-1]
                  if local(e.tag) == "presence" and e.get("type") is None
                  and (e.get("from") or "").startswith(f"{CHECK_ROOM}/")}
        assert listed == set(inside), (
            f"the occupant list {sorted(listed)} is not the clients in the room "
            f"{sorted(inside)} {where}")
        assert set(occupants(checker)) == {*inside, "checker"}, (occupants(checker), where)
        # a message round-trips to everyone in the room
        text = f"after the fuzz {SEED}"
        checker.send_raw(f"<message to='{CHECK_ROOM}' type='groupchat'><body>{text}</body>"
                         "</message>")
        for client in [checker, *inside.values()]:
            echo = run(client.expect(all_of(is_message(from_=f"{CHECK_ROOM}/checker",
                                                       type_="groupchat"),
                                            lambda e, t=text: body(e) == t)))
            assert echo.find(f"{{{NS_CLIENT}}}body") is not None
    finally:
        run(asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True))
        run(slave.close())
