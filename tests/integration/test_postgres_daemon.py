"""``twistd dmuc-master`` on PostgreSQL when the database goes away: stanzas are still
answered from memory, the writes wait in order (one log line per retry, with backoff) and
are applied when PostgreSQL is back, nothing dropped. (The restart scenario of
test_master_daemon.py runs on PostgreSQL too.)"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from cast import CAST, room_jid
from conftest import keep_testbed, make_tempdir, write_master_config
from test_master_daemon import assert_no_traceback, configure, discard, join, new_prosody
from xmpp_client import NS_CLIENT, Client, all_of, body, is_message, run

from testbed import ProsodyInstance, TwistdDaemon
from testbed.postgres import PostgresInstance

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
        assert stored_history(url, room) == ["before"]

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
        assert stored_history(url, room) == ["before", *during]
        with psycopg.connect(url) as conn:
            (state,) = conn.execute("SELECT state FROM rooms WHERE jid = %s",
                                    (room,)).fetchone()
        assert "Written later" in state

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
