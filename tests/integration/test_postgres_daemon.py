"""The daemons on PostgreSQL: a master and its slaves sharing one database (started at
once on it while it is empty), and ``twistd dmuc-master`` when the database goes away:
stanzas are still answered from memory, the writes wait in order (one log line per retry,
with backoff) and are applied when PostgreSQL is back, nothing dropped. (The restart
scenario of test_master_daemon.py runs on PostgreSQL too.)"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from dmuc.records import status_service
from dmuc.storage import sql
from testbed import ProsodyInstance, TwistdDaemon
from testbed.faults import DmucDaemons
from testbed.network import MUC_SERVICE, DmucNetwork, slave_jid
from testbed.postgres import PostgresInstance
from tests.integration.cast import CAST, DIRECT_USER, room_jid
from tests.integration.conftest import MakeClient, keep_testbed, make_tempdir, write_master_config
from tests.integration.test_master_daemon import (
    assert_no_traceback,
    configure,
    discard,
    join,
    new_prosody,
)
from tests.integration.xmpp_client import NS_CLIENT, Client, all_of, body, is_message, run

pytestmark = pytest.mark.integration

RETRY = re.compile(r"storage (\S+): (\w+) failed: .*; (\d+) operations waiting, "
                   r"retry (\d+) in ([\d.]+) s$")


@pytest.fixture
def prosody_and_workdir() -> Iterator[tuple[ProsodyInstance, Path]]:
    prosody = new_prosody("dmuc-pg-daemon-prosody-")
    prosody.start()
    workdir = make_tempdir("dmuc-pg-daemon-")
    try:
        yield prosody, workdir
    finally:
        discard(prosody)
        if not keep_testbed():
            shutil.rmtree(workdir, ignore_errors=True)


def say(client: Client, room: str, nick: str, text: str) -> None:
    """Send a groupchat message and wait for the room's echo: the stanza was answered."""
    client.send_raw(f"<message to='{room}' type='groupchat'><body>{text}</body></message>")
    run(client.expect(all_of(is_message(from_=f"{room}/{nick}", type_="groupchat"),
                             lambda e: body(e) == text)))


def stored_history(url: str, room: str) -> list[str]:
    with psycopg.connect(url) as conn:
        rows = conn.execute("SELECT xml FROM history WHERE room = %s ORDER BY id",
                            (room,)).fetchall()
    return [re.search(r"<body>(.*?)</body>", xml).group(1) for (xml,) in rows]


def room_state(url: str, room: str) -> str:
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT state FROM rooms WHERE jid = %s", (room,)).fetchone()
    return row[0] if row else ""


def eventually(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    """Until `condition()` holds: the daemon writes after it answers, and its database
    offers the test no event to wait for, so it is polled (bounded)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s"
        time.sleep(0.02)


def test_master_serves_and_queues_writes_while_postgres_is_down(
        own_postgres: PostgresInstance, prosody_and_workdir: tuple[ProsodyInstance, Path]
) -> None:
    prosody, workdir = prosody_and_workdir
    url = own_postgres.create_database("dmuc")
    # with a password (trust authentication ignores it), which no log line may show
    with_password = url.replace("dmuc@", "dmuc:hunter2@", 1)
    config = write_master_config(workdir / "master.toml", prosody, workdir / "unused.db",
                                 storage_url=with_password)
    master = TwistdDaemon("dmuc-master", config, workdir)
    wumpus = Client(CAST["Wumpus"], "pw", host=prosody.ip, port=prosody.c2s_port)
    valdis = Client(CAST["Valdis"], "pw", host=prosody.ip, port=prosody.c2s_port)
    room = room_jid("ledger")
    try:
        master.start()
        run(wumpus.connect())
        run(valdis.connect())
        join(wumpus, room, "Wumpus")
        configure(wumpus, room, persistentroom=True, historylength=50)
        say(wumpus, room, "Wumpus", "before")
        eventually(lambda: stored_history(url, room) == ["before"])

        own_postgres.stop("immediate")  # by PID, like a crash
        during = [f"during {n}" for n in range(1, 6)]
        for text in during:
            say(wumpus, room, "Wumpus", text)  # answered from memory
        wumpus.send_raw(f"<message to='{room}' type='groupchat'><subject>Written later"
                        "</subject></message>")
        run(wumpus.expect(lambda e: e.findtext(f"{{{NS_CLIENT}}}subject") == "Written later"))
        # a newcomer gets the whole history, from memory
        _, history, _ = join(valdis, room, "Valdis")
        assert [body(m) for m in history] == ["before", *during]

        master.wait_for_log("retry 3 in", timeout=20)  # three failed attempts so far
        own_postgres.start()
        master.wait_for_log("database reachable again", timeout=30)
        eventually(lambda: "Written later" in room_state(url, room))  # the last write
        assert stored_history(url, room) == ["before", *during]

        log = master.log_text().splitlines()
        retries = [m for line in log if (m := RETRY.search(line))]
        assert retries, "\n".join(log[-30:])
        # one line per attempt: numbered 1, 2, 3..., each waiting longer (up to the cap)
        assert [int(m.group(4)) for m in retries] == list(range(1, len(retries) + 1))
        delays = [float(m.group(5)) for m in retries]
        assert delays[:3] == [0.5, 1.0, 2.0] and delays == sorted(delays)
        assert all(m.group(1) == url for m in retries)
        # the writes issued during the outage (5 messages, the subject) waited behind the
        # first failed one
        assert int(retries[-1].group(3)) >= len(during) + 1
        reached = [line for line in log if "database reachable again" in line]
        assert len(reached) == 1 and f"after {len(retries)} failed attempts" in reached[0]
        assert_no_traceback(master)
        assert "storage write failed" not in master.log_text()
        assert f"restored 0 persistent rooms from {url}" in master.log_text()
        assert "hunter2" not in master.log_text()

        # and a new master finds it all
        master.stop()
        master.start(keep_log=True)
        (phaedrus,) = [Client(CAST["Phaedrus"], "pw", host=prosody.ip,
                              port=prosody.c2s_port)]
        run(phaedrus.connect())
        try:
            _, history, subject = join(phaedrus, room, "Phaedrus")
            assert [body(m) for m in history] == ["before", *during]
            assert subject.findtext(f"{{{NS_CLIENT}}}subject") == "Written later"
        finally:
            run(phaedrus.disconnect())
    finally:
        for client in (wumpus, valdis):
            run(client.disconnect())
        master.stop()


def test_master_and_slaves_share_one_database(network: DmucNetwork,
                                              net_client_factory: MakeClient,
                                              new_database: Callable[[], str]) -> None:
    """The master and three slaves start at the same moment on one empty database (each
    migrates it under the lock: one schema), keep their rows apart (the same room is a
    master's persistent room and two slaves' mirrored copy), and all restore their own."""
    url = new_database()
    workdir = make_tempdir("dmuc-pg-shared-")
    daemons = DmucDaemons(network, workdir, storage_url=url)
    room = f"shared@{MUC_SERVICE}"
    killrc, eris = "killrc.oulubox.irc", "eris.dclxvii.irc"
    try:
        daemons.start()  # in parallel
        with psycopg.connect(url) as conn:
            assert conn.execute("SELECT version FROM dmuc_schema").fetchall() == [
                (sql.schema_version(),)]
        wumpus = net_client_factory(CAST["Wumpus"])  # behind killrc's slave
        wiz = net_client_factory(CAST["WiZ"])  # behind eris's slave
        ludwig = net_client_factory(DIRECT_USER[1])  # straight to the master
        join(wumpus, room, "Wumpus")
        configure(wumpus, room, persistentroom=True, historylength=10)
        join(wiz, room, "WiZ")
        join(ludwig, room, DIRECT_USER[0])
        for client in (wumpus, wiz, ludwig):
            client.drain()
        for nick, client in (("Wumpus", wumpus), ("WiZ", wiz)):
            text = f"{nick} was here"
            client.send_raw(f"<message to='{room}' type='groupchat'><body>{text}</body>"
                            "</message>")
            run(asyncio.gather(*(c.expect(all_of(is_message(from_=f"{room}/{nick}"),
                                                  lambda e, t=text: body(e) == t))
                                 for c in (wumpus, wiz, ludwig))))
        daemons.stop()  # SIGTERM: everything issued is written

        with psycopg.connect(url) as conn:
            # (the slaves may also mirror the rooms of their config, e.g. the testbed's wallops)
            rooms = conn.execute("SELECT service, jid FROM rooms WHERE jid = %s"
                                 " ORDER BY service", (room,)).fetchall()
            # the master's record of its slaves' links (dmuc-admin list-slaves) is apart
            status = conn.execute("SELECT jid FROM rooms WHERE service = %s ORDER BY jid",
                                  (status_service(MUC_SERVICE),)).fetchall()
            keys = conn.execute("SELECT room, count(*) FROM history GROUP BY room"
                                " ORDER BY room").fetchall()
        assert rooms == sorted([(MUC_SERVICE, room), (slave_jid(killrc), room),
                                (slave_jid(eris), room)])
        assert ("@daemon",) in status
        # two entries each: the master's under the room JID, each slave's under its own key
        assert keys == sorted([(room, 2), (f"{slave_jid(killrc)}|{room}", 2),
                               (f"{slave_jid(eris)}|{room}", 2)])

        daemons.master.start(keep_log=True)
        daemons.master.wait_for_log(f"restored 1 persistent rooms from {url}")
        for domain in (killrc, eris):
            slave = daemons.start_slave(domain)
            slave.wait_for_log(f"restored 1 mirrored rooms from {url}")
            slave.wait_for_log(f"registered with {room}", count=2)
        # the slaves' users are back in the restored room (their slaves entered them again)
        wumpus.send_raw(f"<message to='{room}' type='groupchat'><body>still here</body>"
                        "</message>")
        run(asyncio.gather(*(c.expect(all_of(is_message(from_=f"{room}/Wumpus"),
                                              lambda e: body(e) == "still here"))
                             for c in (wumpus, wiz))))
        for daemon in daemons.all:
            assert_no_traceback(daemon)
    finally:
        daemons.stop()
        if not keep_testbed():
            shutil.rmtree(workdir, ignore_errors=True)
