"""Tests of the test harness itself: Prosody/dnsmasq/twistd launchers and the XMPP client."""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from testbed import (
    ComponentSpec,
    Dnsmasq,
    ProsodyInstance,
    TestbedError,
    TwistdDaemon,
    free_port,
    stop_all,
)
from testbed.daemon import TWISTD
from tests.integration.conftest import MUC_DOMAIN, SPARE_COMPONENT, MakeClient, make_tempdir
from tests.integration.xmpp_client import (
    NS_PING,
    Client,
    body,
    error_condition,
    is_iq,
    is_message,
    is_presence,
    run,
    xml_str,
)

pytestmark = pytest.mark.integration


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


@pytest.fixture
def tmpdir_for_prosody() -> Iterator[Path]:
    path = make_tempdir("dmuc-testbed-")
    yield path
    shutil.rmtree(path, ignore_errors=True)


# -- Prosody


def test_prosody_starts_and_stops(tmpdir_for_prosody: Path) -> None:
    inst = ProsodyInstance(tmpdir_for_prosody, virtualhosts=["avalon.irc"])
    with inst:
        pid = inst.pid
        assert pid is not None and inst.running()
        socket.create_connection((inst.ip, inst.c2s_port), timeout=1).close()
        assert "Hello and welcome to Prosody" in inst.log_text()
    assert gone(pid)
    assert not inst.running()
    with pytest.raises(OSError):
        socket.create_connection((inst.ip, inst.c2s_port), timeout=1).close()


def test_prosody_bad_config_raises_with_log(tmpdir_for_prosody: Path) -> None:
    inst = ProsodyInstance(tmpdir_for_prosody, virtualhosts=["avalon.irc"],
                           extra_config="this is not lua")
    with pytest.raises(TestbedError, match="exited"):
        inst.start()
    assert inst.proc is not None and gone(inst.proc.pid)


def test_component_handshake(prosody: ProsodyInstance) -> None:
    """The component port takes an XEP-0114 handshake with the configured secret."""
    secret = prosody.component(SPARE_COMPONENT).secret
    with socket.create_connection((prosody.ip, prosody.component_port), timeout=5) as s:
        s.sendall(
            b"<stream:stream xmlns='jabber:component:accept' "
            b"xmlns:stream='http://etherx.jabber.org/streams' to='"
            + SPARE_COMPONENT.encode() + b"'>")
        data = b""
        while b"id=" not in data or b">" not in data.split(b"id=", 1)[1]:
            data += s.recv(4096)
        stream_id = re.search(rb"""id=['"]([^'"]+)""", data).group(1).decode()
        digest = hashlib.sha1((stream_id + secret).encode()).hexdigest()
        s.sendall(f"<handshake>{digest}</handshake>".encode())
        reply = b""
        while b"handshake" not in reply and b"error" not in reply:
            chunk = s.recv(4096)
            assert chunk, "connection closed"
            reply += chunk
        assert b"<handshake/>" in reply, reply


# -- clients


def test_chat_between_virtual_hosts(client_factory: MakeClient) -> None:
    argl = client_factory("argl@killrc.oulubox.irc/laptop")
    rubenro = client_factory("rubenro@vesa.yeggmaex.irc/shaver")
    assert argl.jid == "argl@killrc.oulubox.irc/laptop"
    argl.send_raw(
        f"<message to='{rubenro.jid}' type='chat'><body>moi &amp; terve</body></message>")
    msg = run(rubenro.expect(is_message(from_=argl.jid, type_="chat")))
    assert body(msg) == "moi & terve"
    assert msg.get("to") == rubenro.jid


def test_iq_ping_server(client_factory: MakeClient) -> None:
    c = client_factory("argl@avalon.irc/ping")
    res = run(c.iq(f"<iq type='get' to='avalon.irc'><ping xmlns='{NS_PING}'/></iq>"))
    assert res.get("type") == "result"
    assert res.get("from") == "avalon.irc"
    # a given id is kept; an error reply is returned too
    res = run(c.iq("<iq type='get' id='mine' to='avalon.irc'><nope xmlns='x:y'/></iq>"))
    assert res.get("id") == "mine" and res.get("type") == "error"
    assert error_condition(res) == "service-unavailable"
    # vCard (mod_vcard_legacy) answers
    res = run(c.iq("<iq type='get'><vCard xmlns='vcard-temp'/></iq>"))
    assert res.get("type") == "result", xml_str(res)
    assert c.inbox == []


def test_expect_none_and_timeout(client_factory: MakeClient) -> None:
    a = client_factory("hupu@eris.dclxvii.irc/a")
    b = client_factory("hupu@eris.dclxvii.irc/b")
    # each resource got the other's presence, and nothing else
    run(a.expect(is_presence(from_=b.jid, type_="available")))
    run(b.expect(is_presence(from_=a.jid, type_="available")))
    run(b.expect_none(is_message()))
    a.send_raw(f"<message to='{b.jid}' type='chat'><body>x</body></message>")
    with pytest.raises(AssertionError, match="unexpected"):
        run(b.expect_none(is_message(from_=a.jid), barrier_to="eris.dclxvii.irc"))
    with pytest.raises(AssertionError, match="no matching stanza"):
        run(b.expect(is_message(type_="groupchat"), timeout=0.2))
    assert len(b.drain()) == 1 and b.inbox == []


def test_xep_0045_plugin_available(client_factory: MakeClient) -> None:
    c = client_factory("argl@killrc.oulubox.irc/muc")
    assert "xep_0045" in c.xmpp.plugin
    assert hasattr(c.xmpp.plugin["xep_0045"], "join_muc_wait")


def test_server_pings_client(client_factory: MakeClient, prosody: ProsodyInstance) -> None:
    """slixmpp still answers iqs itself (the recording filter is not a handler)."""
    a = client_factory("argl@avalon.irc/one")
    b = client_factory("argl@avalon.irc/two")
    res = run(a.iq(f"<iq type='get' to='{b.jid}'><ping xmlns='{NS_PING}'/></iq>"))
    assert res.get("type") == "result"
    run(b.expect(is_iq(type_="get", from_=a.jid)))  # b recorded the ping it answered


def test_unconnected_client_fails_fast() -> None:
    port = socket.socket()
    port.bind(("127.0.0.1", 0))  # bound, not listening: connection refused
    c = Client("x@avalon.irc/y", host="127.0.0.1", port=port.getsockname()[1])
    with pytest.raises(AssertionError):
        run(c.connect(timeout=5))
    port.close()


# -- twistd


def test_twistd_daemon_start_stop(tmp_path: Path) -> None:
    d = TwistdDaemon("web", workdir=tmp_path, wait_for="Site starting on", args=[
        "--listen", "tcp:0:interface=127.0.0.1", "--path", str(tmp_path)])
    with d:
        assert d.running()
        line = d.wait_for_log("Site starting on")
        port = int(line.rsplit(" ", 1)[1])
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    pid = d.pid
    assert pid is not None and gone(pid)
    assert "Server Shut Down" in d.log_text()


def test_twistd_daemon_early_exit(tmp_path: Path) -> None:
    d = TwistdDaemon("web", workdir=tmp_path, args=["--no-such-option"])
    with pytest.raises(TestbedError, match=r"exited with code \d+ before logging") as info:
        d.start(wait_for="Site starting on", timeout=15)
    assert "no-such-option" in str(info.value)
    assert d.pid is not None and gone(d.pid)


def test_twistd_finds_in_tree_plugin(tmp_path: Path) -> None:
    d = TwistdDaemon("dmuc-master", tmp_path / "none.toml", tmp_path)
    out = subprocess.run([sys.executable, "-c", TWISTD, "--help"], env=d.environment(),
                         cwd=tmp_path, capture_output=True, text=True, timeout=30)
    assert "dmuc-master" in out.stdout


# -- two servers over s2s, names served by dnsmasq


def test_s2s_between_two_instances() -> None:
    dirs = [make_tempdir(f"dmuc-s2s-{n}-") for n in "abd"]
    a = ProsodyInstance(dirs[0], s2s_port=free_port(), virtualhosts=["avalon.irc"],
                        components=[ComponentSpec(MUC_DOMAIN, "x")])
    b = ProsodyInstance(dirs[1], s2s_port=free_port(), virtualhosts=["vesa.yeggmaex.irc"])
    dns = Dnsmasq(dirs[2], records={**a.dns_records(), **b.dns_records()})
    assert a.dns_records()[MUC_DOMAIN] == (a.ip, a.s2s_port)
    a.dns_port = b.dns_port = dns.port
    try:
        dns.start()
        a.start()
        b.start()
        ca = Client("wallops@avalon.irc/x", host=a.ip, port=a.c2s_port)
        cb = Client("rubenro@vesa.yeggmaex.irc/shaver", host=b.ip, port=b.c2s_port)
        run(ca.connect())
        run(cb.connect())
        ca.send_raw(f"<message to='{cb.jid}' type='chat'><body>hi</body></message>")
        assert body(run(cb.expect(is_message(from_=ca.jid, type_="chat")))) == "hi"
        cb.send_raw(f"<message to='{ca.jid}' type='chat'><body>moi</body></message>")
        assert body(run(ca.expect(is_message(from_=cb.jid, type_="chat")))) == "moi"
        run(ca.disconnect())
        run(cb.disconnect())
    finally:
        stop_all(a, b, dns)
        for d in dirs:
            shutil.rmtree(d, ignore_errors=True)
    assert all(gone(s.pid) for s in (a, b)) and gone(dns.proc.pid)
