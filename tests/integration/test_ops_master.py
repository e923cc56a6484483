"""Operations of a real ``twistd dmuc-master`` on the session Prosody (as its spare
component): systemd's notification protocol on a test-owned $NOTIFY_SOCKET (READY=1 after
the handshake, STATUS=, WATCHDOG=1, RELOADING=1/READY=1, STOPPING=1), the Prometheus
endpoint scraped over HTTP while clients talk, and SIGHUP reloads (log level, room
defaults, metrics moved and turned off, a key that needs a restart, a bad file) without
the component connection being dropped."""

from __future__ import annotations

import asyncio
import shutil
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import ProsodyInstance, TwistdDaemon, free_port
from tests.integration.cast import CAST
from tests.integration.conftest import (
    SPARE_COMPONENT,
    keep_testbed,
    make_tempdir,
    write_master_config,
)
from tests.integration.ops_helpers import (
    NotifySocket,
    hear,
    join,
    refused,
    say,
    scrape,
    sighup,
    value,
)
from tests.integration.xmpp_client import NS_DISCO_INFO, Client, run

pytestmark = pytest.mark.integration

ROOM = f"ops@{SPARE_COMPONENT}"
LATER_ROOM = f"later@{SPARE_COMPONENT}"


def master_toml(metrics_port: int | None, *, whois: str = "moderators") -> str:
    metrics = f'\n[metrics]\nlisten = "127.0.0.1:{metrics_port}"\n' if metrics_port else ""
    return ("[muc]\nroom_locking = false\n"
            f'[muc.room_defaults]\npersistent = true\nwhois = "{whois}"\n' + metrics)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_tempdir("dmuc-ops-master-")
    yield path
    if not keep_testbed():
        shutil.rmtree(path, ignore_errors=True)


def say_and_hear(speaker: Client, listener: Client, text: str) -> None:
    say(speaker, ROOM, text)
    hear(listener, text)


def disco_features(client: Client, to: str) -> set[str]:
    reply = run(client.iq(f"<iq type='get' to='{to}'><query xmlns='{NS_DISCO_INFO}'/></iq>"))
    return {f.get("var", "") for f in reply.iter(f"{{{NS_DISCO_INFO}}}feature")}


def test_master_notifies_systemd_serves_metrics_and_reloads(
        prosody: ProsodyInstance, workdir: Path) -> None:
    port, new_port = free_port("127.0.0.1"), free_port("127.0.0.1")
    url, new_url = f"http://127.0.0.1:{port}/metrics", f"http://127.0.0.1:{new_port}/metrics"
    config = workdir / "master.toml"
    db = workdir / "master.db"

    def write(extra: str, level: str = "info") -> None:
        write_master_config(config, prosody, db, extra, component=SPARE_COMPONENT)
        config.write_text(config.read_text().replace('level = "debug"', f'level = "{level}"'))

    write(master_toml(port))
    notify = NotifySocket(workdir / "notify.sock")
    # the watchdog pings every 0.15 s (half of WATCHDOG_USEC)
    daemon = TwistdDaemon("dmuc-master", config, workdir,
                          env_extra={**notify.env, "WATCHDOG_USEC": "300000"})
    clients = [Client(CAST[n], "pw", host=prosody.ip, port=prosody.c2s_port)
               for n in ("Wumpus", "Troy")]
    try:
        daemon.start()
        # READY=1 once the state is restored and the handshake done, with a status line
        ready = notify.expect("READY", "1")
        assert ready["STATUS"].startswith(f"connected to Prosody as {SPARE_COMPONENT}: 0 rooms")
        assert any("restored 0 persistent rooms" in m.get("STATUS", "")
                   for m in notify.received[:-1])
        for _ in range(3):
            notify.expect("WATCHDOG", "1", timeout=5)

        # metrics while two clients talk
        wumpus, troy = clients
        run(asyncio.gather(*(c.connect() for c in clients)))
        join(wumpus, ROOM, "Wumpus")
        join(troy, ROOM, "Troy")
        for n in range(3):
            say_and_hear(wumpus, troy, f"hello {n}")
        samples = scrape(url)
        assert value(samples, "dmuc_rooms") == 1
        assert value(samples, "dmuc_occupants") == 2
        assert value(samples, "dmuc_master_sessions", route="direct") == 2
        assert value(samples, "dmuc_component_connected") == 1
        assert value(samples, "dmuc_reactor_stalls_total") >= 0
        assert value(samples, "dmuc_stanzas_in_total", kind="message") >= 3
        assert value(samples, "dmuc_stanzas_in_total", kind="presence") >= 2
        # each groupchat went to both occupants
        assert value(samples, "dmuc_stanzas_out_total", kind="message") >= 6
        assert value(samples, "dmuc_broadcast_fanout_seconds_count") >= 5  # 2 joins, 3 says
        assert value(samples, "dmuc_storage_write_seconds_count") >= 1  # a persistent room
        assert value(samples, "dmuc_storage_queue_length") >= 0
        assert value(samples, "dmuc_netsplits_total") == 0
        assert "process_cpu_seconds_total" in {name for name, _ in samples}

        # reload: room defaults, metrics moved; component.port needs a restart
        write(master_toml(new_port, whois="anyone"))
        config.write_text(config.read_text().replace(
            f"port = {prosody.component_port}", f"port = {prosody.component_port + 1}"))
        sighup(daemon)
        notify.expect("RELOADING", "1")
        assert notify.expect("READY", "1")["STATUS"].startswith("connected to Prosody")
        line = daemon.wait_for_log("configuration reloaded")
        assert "log level info" in line and f"metrics at {new_url}" in line, line
        assert "not applied until a restart: component.port" in daemon.wait_for_log(
            "not applied until a restart")
        assert refused(url)
        assert value(scrape(new_url), "dmuc_occupants") == 2

        # reload: log level warn (its own line is info, so the notification says it is done)
        write(master_toml(new_port, whois="anyone"), level="warn")
        sighup(daemon)
        notify.expect("RELOADING", "1")
        notify.expect("READY", "1")
        # a room created from now on has the new default; the existing one keeps its own
        join(wumpus, LATER_ROOM, "Wumpus")
        assert "muc_nonanonymous" in disco_features(wumpus, LATER_ROOM)
        assert "muc_semianonymous" in disco_features(wumpus, ROOM)
        say_and_hear(wumpus, troy, "after the reload")
        log = daemon.log_text()
        assert f"created {ROOM}" in log and f"created {LATER_ROOM}" not in log

        # a bad file: one line, the running configuration kept, still connected
        config.write_text("[component\njid = 'oops'\n")
        sighup(daemon)
        notify.expect("RELOADING", "1")
        notify.expect("READY", "1")
        refusal = daemon.wait_for_log("configuration reload refused")
        assert f"{config}: not valid TOML" in refusal, refusal
        # a bad value: likewise, naming the key
        write(master_toml(None).replace("[muc]", '[metrics]\nlisten = "localhost:9250"\n[muc]'))
        sighup(daemon)
        notify.expect("READY", "1")
        refusal = daemon.wait_for_log("configuration reload refused", count=2)
        assert f"{config}: metrics.listen: 'localhost:9250' is not ADDRESS:PORT" in refusal
        assert daemon.log_text().count("configuration reload refused") == 2
        assert value(scrape(new_url), "dmuc_rooms") == 2
        say_and_hear(wumpus, troy, "after the bad file")

        # metrics off
        write(master_toml(None))
        sighup(daemon)
        notify.expect("READY", "1")
        assert "metrics off" in daemon.wait_for_log("configuration reloaded", count=2)
        assert refused(new_url)
        say_and_hear(troy, wumpus, "metrics are off")

        # not once did the component connection drop
        assert daemon.log_text().count("component connected") == 1
        assert daemon.running()
        assert "Traceback" not in daemon.log_text()
        run(asyncio.gather(*(c.disconnect() for c in clients)))
        daemon.proc.send_signal(signal.SIGTERM)  # type: ignore[union-attr]
        notify.expect("STOPPING", "1")
    finally:
        run(asyncio.gather(*(c.disconnect() for c in clients), return_exceptions=True))
        daemon.stop()
        notify.close()
