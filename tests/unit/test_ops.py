"""Operations without a reactor: [metrics] listen validation, the keys a reload cannot
apply, the sd_notify datagrams (path and abstract sockets, the watchdog interval), netsplit
and netjoin counts from the link state machines, and a reload's new allow list and slave
settings applied to the cores."""

from __future__ import annotations

import configparser
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from dmuc import xmlns
from dmuc.config import ConfigError, load_master_config, load_slave_config, restart_keys
from dmuc.master import distribution as master_link
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.protocol.statemachine import SplitCounter, StateMachine
from dmuc.shell.sdnotify import Notifier, socket_address, watchdog_interval
from dmuc.slave import link as slave_link
from dmuc.slave.service import SlaveService, SlaveSettings
from tests.unit.muc_helpers import ROOM, SERVICE, parse

MASTER = """
[component]
jid = "channel.avalon.irc"
secret = "s"
[storage]
url = "sqlite:///{db}"
"""


def master_file(tmp_path: Path, extra: str = "") -> str:
    path = tmp_path / "master.toml"
    path.write_text(MASTER.format(db=tmp_path / "x.db") + extra)
    return str(path)


# --- [metrics] listen --------------------------------------------------------------------


@pytest.mark.parametrize(("listen", "address"), [
    ("127.0.0.1:9250", ("127.0.0.1", 9250)),
    ("[::1]:9250", ("::1", 9250)),
    ("0.0.0.0:1", ("0.0.0.0", 1)),
])
def test_metrics_listen(tmp_path: Path, listen: str, address: tuple[str, int]) -> None:
    cfg = load_master_config(master_file(tmp_path, f'[metrics]\nlisten = "{listen}"\n'))
    assert cfg.metrics_listen == address


def test_metrics_are_off_by_default(tmp_path: Path) -> None:
    assert load_master_config(master_file(tmp_path)).metrics_listen is None
    assert load_master_config(master_file(tmp_path, '[metrics]\nlisten = ""\n')) \
        .metrics_listen is None


@pytest.mark.parametrize(("extra", "key", "reason"), [
    ('listen = "localhost:9250"', "metrics.listen", "is not ADDRESS:PORT"),
    ('listen = "127.0.0.1"', "metrics.listen", "is not ADDRESS:PORT"),
    ('listen = "127.0.0.1:0"', "metrics.listen", "is not ADDRESS:PORT"),
    ('listen = "127.0.0.1:65536"', "metrics.listen", "is not ADDRESS:PORT"),
    ('listen = "::1:9250"', "metrics.listen", "is not ADDRESS:PORT"),
    ('listen = "[127.0.0.1]:9250"', "metrics.listen", "is not ADDRESS:PORT"),
    ("listen = 9250", "metrics.listen", "must be str, not int"),
    ('port = 9250', "metrics.port", "unknown key"),
])
def test_bad_metrics_listen_is_one_line(tmp_path: Path, extra: str, key: str,
                                        reason: str) -> None:
    path = master_file(tmp_path, f"[metrics]\n{extra}\n")
    with pytest.raises(ConfigError) as caught:
        load_master_config(path)
    assert caught.value.key == key and reason in caught.value.reason
    assert str(caught.value).startswith(f"{path}: {key}: ") and "\n" not in str(caught.value)


def test_the_slave_has_metrics_too(tmp_path: Path) -> None:
    path = tmp_path / "slave.toml"
    path.write_text(MASTER.replace("channel.avalon.irc", "dmuc.vesa.yeggmaex.irc")
                    .format(db=tmp_path / "x.db")
                    + '[slave]\ndomains = ["vesa.yeggmaex.irc"]\nmasters = ["channel.avalon.irc"]\n'
                    + '[metrics]\nlisten = "127.0.0.1:9251"\n')
    assert load_slave_config(str(path)).metrics_listen == ("127.0.0.1", 9251)


def test_restart_keys(tmp_path: Path) -> None:
    old = load_master_config(master_file(tmp_path))
    assert restart_keys(old, old) == []
    new = replace(old, component=replace(old.component, port=5348), storage_url="sqlite://",
                  log_level="debug", plugins=["x"])
    assert restart_keys(old, new) == ["component.port", "storage.url", "muc.plugins"]


# --- sd_notify ---------------------------------------------------------------------------


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[socket.socket]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(tmp_path / "notify"))
    sock.settimeout(5)
    yield sock
    sock.close()


def messages(sock: socket.socket, count: int) -> list[str]:
    return [sock.recv(4096).decode() for _ in range(count)]


def test_notify_ready_once_then_status(tmp_path: Path, listener: socket.socket) -> None:
    notifier = Notifier({"NOTIFY_SOCKET": str(tmp_path / "notify")})
    notifier.mark_ready("connected, 2 rooms")
    notifier.mark_ready("connected, 3 rooms")
    notifier.reloading()
    notifier.reloaded("connected, 3 rooms")
    notifier.stopping()
    ready, status, reloading, reloaded, stopping = messages(listener, 5)
    assert ready == "READY=1\nSTATUS=connected, 2 rooms"
    assert status == "STATUS=connected, 3 rooms"
    assert reloading.startswith("RELOADING=1\nMONOTONIC_USEC=")
    assert reloaded == "READY=1\nSTATUS=connected, 3 rooms"
    assert stopping == "STOPPING=1\nSTATUS=stopping"
    notifier.stop()


def test_notify_abstract_socket() -> None:
    name = f"@dmuc-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(socket_address(name))
        sock.settimeout(5)
        notifier = Notifier({"NOTIFY_SOCKET": name})
        assert notifier.notify("WATCHDOG=1")
        assert sock.recv(100) == b"WATCHDOG=1"
        notifier.stop()


def test_notify_without_systemd_does_nothing(tmp_path: Path) -> None:
    assert not Notifier({}).notify("READY=1")
    # systemd gone away: False, and never an exception
    assert not Notifier({"NOTIFY_SOCKET": str(tmp_path / "nobody")}).notify("READY=1")


def test_watchdog_interval() -> None:
    assert watchdog_interval({"WATCHDOG_USEC": "10000000"}) == 5.0
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}) \
        == 0.5
    assert watchdog_interval({"WATCHDOG_USEC": "1000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None
    assert watchdog_interval({}) is None


# --- netsplits and netjoins, counted where links change state ------------------------------


def test_split_counter_on_the_masters_links() -> None:
    L = master_link.RegistrationState
    counter = SplitCounter(L.SPLIT)
    machine = StateMachine("link", master_link.REGISTRATION_TRANSITIONS, L.LIVE, counter)
    for event in ("bounce", "bounce", "quiet", "register", "quiet", "bounce", "pong-empty"):
        machine.fire(event)
    assert (counter.netsplits, counter.netjoins) == (2, 2)


def test_split_counter_on_the_slaves_links() -> None:
    L = slave_link.LinkState
    counter = SplitCounter(L.SPLIT)
    machine = StateMachine("link", slave_link.LINK_TRANSITIONS, L.LIVE, counter)
    for event in ("bounced", "bounced", "netjoin", "registered", "synced", "bounced"):
        machine.fire(event)
    assert (counter.netsplits, counter.netjoins) == (2, 1)


# --- a reload applied to the cores ---------------------------------------------------------

SLAVE = "dmuc.vesa.example"
USER = "rubenro@vesa.example/shaver"
DIRECT = "wumpus@avalon.example/pc"


def test_a_slave_removed_from_the_allow_list_is_dropped_and_refused() -> None:
    settings = ServiceSettings(jid=SERVICE, room_locking=False,
                               slaves={SLAVE: frozenset({"vesa.example"})})
    core = MUCService(settings)
    now = 1000.0
    core.receive(parse(f"<presence from='{DIRECT}' to='{ROOM}/Wumpus'>"
                       f"<x xmlns='{xmlns.MUC}'/></presence>"), now)
    core.receive(parse(f"<iq type='set' from='{SLAVE}' to='{ROOM}' id='r1'>"
                       f"<register xmlns='{xmlns.DMUC}' keepalive='60' history='5'/></iq>"), now)
    core.receive(parse(f"<presence from='{USER}' to='{ROOM}/BigCheese'>"
                       f"<x xmlns='{xmlns.MUC}'/></presence>"), now)
    assert core.distribution.sessions_by_route() == (1, {SLAVE: 1})
    assert core.distribution.links_by_state() == {(SLAVE, master_link.RegistrationState.LIVE): 1}

    out = core.reconfigure(replace(settings, slaves={}, room_defaults={"whois": "anyone"}), now)
    assert [m for level, m in out.log if level == "warn"] == [
        f"slave {SLAVE} removed from the [[slaves]] allow list: refused from now on; "
        "dropped its links to 1 room"]
    leave = out.stanzas_for(SLAVE)[0]
    assert b"333" in leave.toXml().encode() and b"leave" in leave.toXml().encode()
    assert core.distribution.sessions_by_route() == (1, {})
    assert core.distribution.links_by_state() == {}
    assert "BigCheese" not in core.rooms[ROOM].occupants
    # from now on it is an unknown slave
    out = core.receive(parse(f"<iq type='set' from='{SLAVE}' to='{ROOM}' id='r2'>"
                             f"<register xmlns='{xmlns.DMUC}' keepalive='60'/></iq>"), now)
    [refusal] = out.stanzas_for(SLAVE)
    assert refusal.getAttribute("type") == "error" and b"forbidden" in refusal.toXml().encode()
    # the new room defaults apply to rooms created afterwards
    core.receive(parse(f"<presence from='{DIRECT}' to='new@{SERVICE}/Wumpus'>"
                       f"<x xmlns='{xmlns.MUC}'/></presence>"), now)
    assert core.rooms[f"new@{SERVICE}"].config.whois == "anyone"
    assert core.rooms[ROOM].config.whois == "moderators"


def test_slave_reconfigure_applies_to_the_next_registrations() -> None:
    slave = SlaveService(SlaveSettings(jid=SLAVE, domains=frozenset({"vesa.example"}),
                                       masters=frozenset({SERVICE})))
    slave.receive(parse(f"<presence from='{USER}' to='{ROOM}/BigCheese'>"
                        f"<x xmlns='{xmlns.MUC}'/></presence>"), 1000.0)
    slave.reconfigure(keepalive=120, history=7)
    # the first <register/> went unanswered: the one sent again proposes the new values
    out = slave.tick(1000.0 + 16)
    registers = [s for s in out.stanzas_for(ROOM) if s.name == "iq"]
    assert registers, out.deliveries
    payload = next(registers[-1].elements())
    assert (payload.getAttribute("keepalive"), payload.getAttribute("history")) == ("120", "7")
    new_room = f"other@{SERVICE}"
    out = slave.receive(parse(f"<presence from='{USER}' to='{new_room}/BigCheese'>"
                              f"<x xmlns='{xmlns.MUC}'/></presence>"), 1002.0)
    payload = next(next(s for s in out.stanzas_for(new_room) if s.name == "iq").elements())
    assert (payload.getAttribute("keepalive"), payload.getAttribute("history")) == ("120", "7")


# --- the systemd units -------------------------------------------------------------------

UNITS = Path(__file__).resolve().parents[2] / "etc" / "systemd"


@pytest.mark.parametrize("name", ["dmuc-master.service", "dmuc-slave.service"])
def test_systemd_unit(tmp_path: Path, name: str) -> None:
    """Type=notify with the watchdog and a reload by SIGHUP, exit status 2 not restarted,
    the state private and the hardening of docs/operations.md; and `systemd-analyze
    verify` accepts it, with ExecStart pointing at this venv's twistd (the installed unit:
    tests/integration/test_install.py)."""
    text = (UNITS / name).read_text()
    unit = configparser.ConfigParser(interpolation=None, strict=False)
    unit.optionxform = str  # type: ignore[assignment,method-assign]
    unit.read_string(text)
    service = unit["Service"]
    assert service["Type"] == "notify" and service["NotifyAccess"] == "main"
    assert service["ExecReload"] == "/bin/kill -HUP $MAINPID"
    assert service["ExecStart"].startswith("/opt/dmuc/bin/twistd ")
    assert int(service["WatchdogSec"]) > 0
    assert service["RestartPreventExitStatus"] == "2"
    assert (service["UMask"], service["StateDirectory"], service["StateDirectoryMode"]) == \
        ("0027", "dmuc", "0750")
    assert service["CapabilityBoundingSet"] == ""
    assert service["RestrictAddressFamilies"] == "AF_UNIX AF_INET AF_INET6"
    for hardening in ("NoNewPrivileges", "ProtectSystem", "ProtectHome", "PrivateTmp",
                      "PrivateDevices", "ProtectKernelTunables", "ProtectKernelModules",
                      "ProtectKernelLogs", "ProtectControlGroups", "LockPersonality",
                      "RestrictNamespaces", "MemoryDenyWriteExecute", "SystemCallFilter"):
        assert hardening in service, hardening
    man = tmp_path / "man" / "man8"
    man.mkdir(parents=True)
    for page in (UNITS.parents[1] / "docs" / "man").glob("*.8"):
        (man / page.name).symlink_to(page)
    twistd = Path(sys.executable).parent / "twistd"
    (tmp_path / name).write_text(text.replace("/opt/dmuc/bin/twistd", str(twistd)))
    result = subprocess.run(["systemd-analyze", "verify", str(tmp_path / name)],
                            env={**os.environ, "MANPATH": f"{tmp_path / 'man'}:"},
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr
