"""Operator-level behaviour of ``twistd dmuc-master``: restarts with persistent state, bad
configuration, a wrong secret, Prosody absent or restarting, malformed stanzas.

Each test runs master daemons of its own (TwistdDaemon, stopped by PID) against a Prosody of
this module (or of the test itself, when the test stops and starts Prosody), never the
session's ``master``.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import shutil
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed import ComponentSpec, ProsodyInstance, TwistdDaemon, free_port
from tests.integration.cast import CAST, bare, room_jid
from tests.integration.conftest import (
    MUC_DOMAIN,
    TEST_DOMAINS,
    keep_testbed,
    make_tempdir,
    write_master_config,
)
from tests.integration.xmpp_client import (
    NS_CLIENT,
    NS_DATA,
    NS_DELAY,
    NS_DISCO_INFO,
    NS_MUC,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_MUC_USER,
    NS_PING,
    Client,
    Predicate,
    all_of,
    body,
    error_condition,
    has_status,
    is_message,
    is_presence,
    muc_item,
    run,
    status_codes,
    xml_str,
)

pytestmark = pytest.mark.integration

NS_REGISTER = "jabber:iq:register"
NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
NS_MUC_REGISTER = "http://jabber.org/protocol/muc#register"



# ----------------------------------------------------------------------------------------------
# fixtures


def new_prosody(prefix: str, **kwargs: object) -> ProsodyInstance:
    return ProsodyInstance(
        make_tempdir(prefix), virtualhosts=TEST_DOMAINS,
        components=[ComponentSpec(MUC_DOMAIN, secrets.token_hex(16))], **kwargs)


def discard(inst: ProsodyInstance) -> None:
    inst.stop()
    if not keep_testbed():
        shutil.rmtree(inst.workdir, ignore_errors=True)


@pytest.fixture(scope="module")
def own_prosody() -> Iterator[ProsodyInstance]:
    """A Prosody of this module's own: its MUC component is free for our daemons (the
    session's ``master`` holds the session Prosody's)."""
    inst = new_prosody("dmuc-daemon-prosody-")
    inst.start()
    try:
        yield inst
    finally:
        discard(inst)


@pytest.fixture
def workdir() -> Iterator[Path]:
    path = make_tempdir("dmuc-daemon-")
    yield path
    if not keep_testbed():
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def daemons() -> Iterator[Callable[[Path, Path], TwistdDaemon]]:
    """``make(config, workdir)`` -> an unstarted master; every one is stopped at the end."""
    made: list[TwistdDaemon] = []

    def make(config: Path, workdir: Path) -> TwistdDaemon:
        daemon = TwistdDaemon("dmuc-master", config, workdir)
        made.append(daemon)
        return daemon

    yield make
    for daemon in made:
        daemon.stop()


def _client_factory() -> Iterator[Callable[..., list[Client]]]:
    made: list[Client] = []

    def make(prosody: ProsodyInstance, *nicks: str) -> list[Client]:
        new = [Client(CAST[n], "pw", host=prosody.ip, port=prosody.c2s_port) for n in nicks]
        made.extend(new)
        run(asyncio.gather(*(c.connect() for c in new)))
        return new

    yield make
    if made:
        run(asyncio.gather(*(c.disconnect() for c in made), return_exceptions=True))


@pytest.fixture
def clients() -> Iterator[Callable[..., list[Client]]]:
    """``make(prosody, "Wumpus", "Troy")`` -> connected clients of that Prosody, all
    disconnected when the test ends."""
    yield from _client_factory()


def wait_for_count(daemon: TwistdDaemon, text: str, count: int, timeout: float = 15) -> float:
    """Wait until ``text`` occurs ``count`` times in the daemon's log; returns the monotonic
    time it was seen."""
    daemon.wait_for_log(text, timeout=timeout, count=count)
    return time.monotonic()


def assert_no_traceback(daemon: TwistdDaemon) -> None:
    log = daemon.log_text()
    assert "Traceback" not in log, log[-4000:]
    assert "Unhandled" not in log, log[-4000:]


# ----------------------------------------------------------------------------------------------
# XMPP helpers


def form_xml(form_type: str, fields: dict[str, object]) -> str:
    parts = [f"<x xmlns='{NS_DATA}' type='submit'>",
             f"<field var='FORM_TYPE'><value>{form_type}</value></field>"]
    for var, value in fields.items():
        v = ("1" if value else "0") if isinstance(value, bool) else value
        parts.append(f"<field var='{var}'><value>{v}</value></field>")
    return "".join(parts) + "</x>"


def is_subject(room: str) -> Predicate:
    return all_of(is_message(type_="groupchat"),
                  lambda e: (e.get("from") or "").split("/")[0] == room,
                  lambda e: e.find(f"{{{NS_CLIENT}}}subject") is not None)


def is_error(kind: str, from_: str | None = None) -> Predicate:
    return lambda e: e.tag.endswith("}" + kind) and e.get("type") == "error" and (
        from_ is None or e.get("from") == from_)


def send_join(client: Client, room: str, nick: str) -> None:
    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'/></presence>")


def join(client: Client, room: str, nick: str) -> tuple[ET.Element, list[ET.Element], ET.Element]:
    """Enter a room; returns (self-presence, history messages, subject message)."""
    send_join(client, room, nick)
    pres = run(client.expect(all_of(is_presence(from_=f"{room}/{nick}", type_="available"),
                                    lambda e: has_status(e, 110))))
    subject = run(client.expect(is_subject(room)))
    history = client.received(lambda e: e.tag.endswith("}message")
                              and e.find(f"{{{NS_DELAY}}}delay") is not None)
    client.drain()
    return pres, history, subject


def iq(client: Client, xml: str) -> ET.Element:
    return run(client.iq(xml))


def assert_result(res: ET.Element) -> None:
    assert res.get("type") == "result", xml_str(res)


def assert_error(res: ET.Element, condition: str) -> None:
    assert res.get("type") == "error", xml_str(res)
    assert error_condition(res) == condition, xml_str(res)


def configure(owner: Client, room: str, **fields: object) -> None:
    values = {f"muc#roomconfig_{k}": v for k, v in fields.items()}
    assert_result(iq(owner, f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_OWNER}'>"
                            f"{form_xml(NS_ROOMCONFIG, values)}</query></iq>"))


def admin_set(client: Client, room: str, items: str) -> None:
    assert_result(iq(client, f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_ADMIN}'>"
                             f"{items}</query></iq>"))


def admin_list(client: Client, room: str, affiliation: str) -> dict[str, dict[str, str]]:
    res = iq(client, f"<iq type='get' to='{room}'><query xmlns='{NS_MUC_ADMIN}'>"
                     f"<item affiliation='{affiliation}'/></query></iq>")
    assert_result(res)
    return {i.get("jid", ""): dict(i.attrib) for i in res.iter(f"{{{NS_MUC_ADMIN}}}item")}


def disco_info(client: Client, to: str) -> ET.Element:
    return iq(client, f"<iq type='get' to='{to}'><query xmlns='{NS_DISCO_INFO}'/></iq>")


def features(res: ET.Element) -> set[str]:
    return {f.get("var", "") for f in res.iter(f"{{{NS_DISCO_INFO}}}feature")}


def ping(client: Client, to: str = MUC_DOMAIN) -> ET.Element:
    return iq(client, f"<iq type='get' to='{to}'><ping xmlns='{NS_PING}'/></iq>")


# ----------------------------------------------------------------------------------------------
# restarts


class Restarted:
    """What the restart scenario leaves for its tests."""

    def __init__(self, **kw: object) -> None:
        self.__dict__.update(kw)


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def restarted(request: pytest.FixtureRequest) -> Iterator[Restarted]:
    """A master with a persistent room (config, a member with a registered nick, an outcast,
    a subject, history) and an occupied temporary room, stopped (SIGTERM) and replaced by
    a new master on the same database (an SQLite file, or a database of the session's
    PostgreSQL). It has a Prosody of its own, as the new master stays connected until the
    module ends."""
    own_prosody = new_prosody("dmuc-daemon-restart-prosody-")
    own_prosody.start()
    workdir = make_tempdir("dmuc-daemon-restart-")
    storage_url = None
    if request.param == "postgresql":
        storage_url = request.getfixturevalue("postgres").create_database("dmuc_restart")
    config = write_master_config(workdir / "master.toml", own_prosody, workdir / "master.db",
                                 storage_url=storage_url)
    factory = _client_factory()
    clients = next(factory)
    first = TwistdDaemon("dmuc-master", config, workdir)
    second = TwistdDaemon("dmuc-master", config, workdir)
    try:
        room, temp = room_jid("keep"), room_jid("fleeting")
        first.start()
        wumpus, valdis, wiz = clients(own_prosody, "Wumpus", "Valdis", "WiZ")
        pres, _, _ = join(wumpus, room, "Wumpus")
        assert "201" in status_codes(pres)
        configure(wumpus, room, persistentroom=True, roomname="Keep of Avalon",
                  roomdesc="Stays put", moderatedroom=True, historylength=10)
        admin_set(wumpus, room, f"<item jid='{bare('Valdis')}' affiliation='member'/>"
                                f"<item jid='{bare('Troy')}' affiliation='outcast'>"
                                "<reason>Flooding</reason></item>")
        assert_result(iq(valdis, f"<iq type='set' to='{room}'><query xmlns='{NS_REGISTER}'>"
                                 + form_xml(NS_MUC_REGISTER, {"muc#register_roomnick": "Valdis"})
                                 + "</query></iq>"))
        wumpus.send_raw(f"<message to='{room}' type='groupchat'><subject>Welcome to the Keep"
                        "</subject></message>")
        run(wumpus.expect(is_subject(room)))
        for text in ("first words", "second words"):
            wumpus.send_raw(f"<message to='{room}' type='groupchat'><body>{text}</body>"
                            "</message>")
            run(wumpus.expect(is_message(from_=f"{room}/Wumpus", type_="groupchat")))
        before = disco_info(wumpus, room)
        assert_result(before)
        # a temporary room, occupied at the time of the restart
        join(wiz, temp, "WiZ")
        configure(wiz, temp, roomname="Fleeting")
        assert_result(disco_info(wumpus, temp))

        first_status = first.stop()  # SIGTERM
        first_log = first.log_text()  # the next start in this workdir replaces the log
        second.start()
        yield Restarted(room=room, temp=temp, first_log=first_log, second=second,
                        storage=storage_url or f"sqlite:///{workdir / 'master.db'}",
                        first_status=first_status, before=before, wumpus=wumpus,
                        clients=clients, prosody=own_prosody)
    finally:
        first.stop()
        second.stop()
        next(factory, None)
        discard(own_prosody)
        if not keep_testbed():
            shutil.rmtree(workdir, ignore_errors=True)


def test_persistent_room_survives_restart(restarted: Restarted) -> None:
    r = restarted
    room = r.room
    # a clean stop (twistd re-raises SIGTERM, so the status is -15), writes flushed
    assert r.first_status in (0, -15)
    assert "Server Shut Down" in r.first_log
    assert "Traceback" not in r.first_log, r.first_log
    assert f"restored 1 persistent rooms from {r.storage}" in r.second.log_text()

    bigcheese, troy, phaedrus = r.clients(r.prosody, "BigCheese", "Troy", "Phaedrus")
    pres, history, subject = join(bigcheese, room, "BigCheese")
    assert "201" not in status_codes(pres)
    assert muc_item(pres)["role"] == "visitor"  # still moderated
    assert subject.findtext(f"{{{NS_CLIENT}}}subject") == "Welcome to the Keep"
    assert subject.get("from") == f"{room}/Wumpus"
    assert [body(m) for m in history] == ["first words", "second words"]
    for m in history:
        delay = m.find(f"{{{NS_DELAY}}}delay")
        assert delay.get("from") == room and delay.get("stamp"), xml_str(m)
        assert m.get("from") == f"{room}/Wumpus"
    after = disco_info(bigcheese, room)
    assert_result(after)
    assert features(after) == features(r.before)
    assert {"muc_persistent", "muc_moderated"} <= features(after)
    identity = after.find(f"{{{NS_DISCO_INFO}}}query/{{{NS_DISCO_INFO}}}identity")
    assert identity.get("name") == "Keep of Avalon"
    # the outcast is still banned, the registered nick still reserved
    send_join(troy, room, "Troy")
    assert_error(run(troy.expect(is_error("presence"))), "forbidden")
    send_join(phaedrus, room, "Valdis")
    assert_error(run(phaedrus.expect(is_error("presence"))), "conflict")
    # the owner is still the owner and sees the same lists
    wumpus = r.wumpus
    assert admin_list(wumpus, room, "member") == {
        bare("Valdis"): {"jid": bare("Valdis"), "affiliation": "member", "nick": "Valdis"}}
    assert set(admin_list(wumpus, room, "outcast")) == {bare("Troy")}
    assert set(admin_list(wumpus, room, "owner")) == {bare("Wumpus")}
    assert_no_traceback(r.second)


def test_temporary_room_kept_with_its_occupant_after_restart(restarted: Restarted) -> None:
    """An occupied temporary room survives the restart with its occupant reached directly
    (docs/protocol.md §4.11.5; mod_muc keeps it through a clean shutdown too): still
    there, its owner still in, and the next joiner enters it rather than creating it."""
    r = restarted
    assert re.search(r"restored (\d+) of \1 stored occupants reached directly "
                     r"\(1 temporary rooms kept", r.second.log_text()), r.second.log_text()
    (efchen,) = r.clients(r.prosody, "Efchen")
    assert_result(disco_info(efchen, r.temp))
    items = iq(efchen, f"<iq type='get' to='{MUC_DOMAIN}'>"
                       "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    listed = {i.get("jid") for i in items.iter("{http://jabber.org/protocol/disco#items}item")}
    assert {r.temp, r.room} <= listed
    pres, _, _ = join(efchen, r.temp, "Efchen")
    assert "201" not in status_codes(pres)
    assert muc_item(pres)["affiliation"] == "none"
    # WiZ is still in it (a public room lists its occupants to anyone, XEP-0045 §6.5)
    items = iq(efchen, f"<iq type='get' to='{r.temp}'>"
                       "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    jids = {i.get("jid") for i in items.iter("{http://jabber.org/protocol/disco#items}item")}
    assert f"{r.temp}/WiZ" in jids, xml_str(items)


# ----------------------------------------------------------------------------------------------
# configuration errors


BAD_CONFIGS = {
    "missing-file": (None, None, "file not found"),
    "invalid-toml": ("[component\njid = 'x'\n", None, "not valid TOML"),
    "no-secret": ("[component]\njid = 'channel.avalon.irc'\nport = 5347\n"
                  "[storage]\nurl = 'sqlite:///{db}'\n", "component.secret", "missing"),
    "port-type": ("[component]\njid = 'channel.avalon.irc'\nport = 'five'\nsecret = 's'\n"
                  "[storage]\nurl = 'sqlite:///{db}'\n", "component.port", "must be int"),
    "unknown-key": ("[component]\njid = 'channel.avalon.irc'\nsecret = 's'\ncolour = 'red'\n"
                    "[storage]\nurl = 'sqlite:///{db}'\n", "component.colour", "unknown key"),
}


@pytest.fixture(scope="module")
def bad_config_runs() -> Iterator[dict[str, tuple[Path, int, str, float]]]:
    """Run ``twistd -n dmuc-master --config FILE`` for every BAD_CONFIGS case, all at once:
    case -> (config path, exit status, stdout + stderr, seconds)."""
    workdir = make_tempdir("dmuc-daemon-badconf-")
    procs = {}
    for case, (text, _, _) in BAD_CONFIGS.items():
        path = workdir / f"{case}.toml"
        if text is not None:
            path.write_text(text.format(db=workdir / f"{case}.db"))
        daemon = TwistdDaemon("dmuc-master", path, workdir / case)
        (workdir / case).mkdir()
        started = time.monotonic()
        procs[case] = (path, started, subprocess.Popen(
            daemon.command(), cwd=workdir / case, env=daemon.environment(),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True))
    results = {}
    try:
        for case, (path, started, proc) in procs.items():
            output, _ = proc.communicate(timeout=30)
            results[case] = (path, proc.returncode, output, time.monotonic() - started)
        yield results
    finally:
        for _, _, proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if not keep_testbed():
            shutil.rmtree(workdir, ignore_errors=True)


@pytest.mark.parametrize("case", list(BAD_CONFIGS))
def test_bad_configuration(case: str,
                           bad_config_runs: dict[str, tuple[Path, int, str, float]]) -> None:
    _, key, reason = BAD_CONFIGS[case]
    path, status, output, _ = bad_config_runs[case]
    assert status != 0, output
    assert "Traceback" not in output, output
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    line = lines[0]
    assert str(path) in line and reason in line, line
    if key is not None:
        assert key in line, line
    # nothing was started: no database, no log
    assert not path.with_suffix(".db").exists()
    assert not (path.parent / case / "dmuc-master.log").exists()


# ----------------------------------------------------------------------------------------------
# connection trouble


# each permanent refusal: how to provoke it, and the fix its last line names
PERMANENT = {
    "not-authorized": "check component.secret",
    "host-unknown": "Prosody has no Component block for",
    "conflict": "another process is already connected to Prosody as",
}


@pytest.mark.parametrize("condition", list(PERMANENT))
def test_permanent_refusal_ends_with_status_2(
        condition: str, own_prosody: ProsodyInstance, workdir: Path,
        daemons: Callable[[Path, Path], TwistdDaemon]) -> None:
    """A wrong secret, a JID without a Component block, a second instance: a few attempts
    with backoff (Prosody may be starting), one line each, then one line naming the fix
    and exit status 2 (the unit's RestartPreventExitStatus=2: no restart loop)."""
    config = write_master_config(workdir / "master.toml", own_prosody, workdir / "master.db")
    jid = MUC_DOMAIN
    first = None
    if condition == "not-authorized":
        config.write_text(config.read_text().replace(
            own_prosody.component(MUC_DOMAIN).secret, "not-the-secret"))
    elif condition == "host-unknown":
        jid = "nowhere.avalon.irc"
        config.write_text(config.read_text().replace(f'"{MUC_DOMAIN}"', f'"{jid}"'))
    else:
        first = daemons(config, workdir / "first").start()
    daemon = daemons(config, workdir).start(wait_for=f"refused the stream: {condition}")
    assert daemon.proc is not None
    status = daemon.proc.wait(timeout=30)
    log = daemon.log_text()
    assert status == 2, log
    attempts = [line for line in log.splitlines() if "refused the stream" in line]
    assert len(attempts) == 4, log  # three with a retry, the last one the end
    assert all(PERMANENT[condition] in line and jid in line for line in attempts), attempts
    delays = [float(d) for d in re.findall(r"retrying in ([0-9.]+) s", log)]
    assert len(delays) == 3 and delays[1] > 1.5 * delays[0] and delays[2] > 1.5 * delays[1]
    assert "refused the stream 4 times" in attempts[-1], attempts[-1]
    assert "connection to" not in log and "initialisation failed" not in log, log
    assert "component connected" not in log
    assert_no_traceback(daemon)
    if first is not None:  # the instance already connected was not disturbed
        assert first.running() and "lost" not in first.log_text()


def test_metrics_port_taken_is_one_line(own_prosody: ProsodyInstance, workdir: Path,
                                        daemons: Callable[[Path, Path], TwistdDaemon]) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = write_master_config(workdir / "master.toml", own_prosody,
                                     workdir / "master.db",
                                     extra_toml=f'[metrics]\nlisten = "127.0.0.1:{port}"\n')
        daemon = daemons(config, workdir).start(wait_for="cannot listen")
        assert daemon.proc is not None
        assert daemon.proc.wait(timeout=30) == 1
    log = daemon.log_text()
    assert f"metrics.listen: cannot listen on 127.0.0.1:{port}" in log, log
    assert "Traceback" not in log and "Unhandled" not in log, log
    assert "Traceback" not in daemon.stdout_path.read_text(), daemon.stdout_path.read_text()


def test_prosody_down_at_start_then_up(workdir: Path,
                                       daemons: Callable[[Path, Path], TwistdDaemon],
                                       clients: Callable[..., list[Client]]) -> None:
    prosody = new_prosody("dmuc-daemon-late-", component_port=free_port())
    try:
        config = write_master_config(workdir / "master.toml", prosody, workdir / "master.db")
        daemon = daemons(config, workdir).start(wait_for="cannot connect")
        line = daemon.wait_for_log("cannot connect")
        assert f"{prosody.ip}:{prosody.component_port}" in line, line
        assert daemon.running()
        assert_no_traceback(daemon)

        prosody.start()
        daemon.wait_for_log("component connected")
        (wumpus,) = clients(prosody, "Wumpus")
        pres, _, _ = join(wumpus, room_jid("latecomer"), "Wumpus")
        assert "201" in status_codes(pres)
        assert_no_traceback(daemon)
    finally:
        discard(prosody)


@pytest.mark.parametrize("how", ["stop", "crash"])
def test_prosody_restart_master_reconnects(how: str, workdir: Path,
                                           daemons: Callable[[Path, Path], TwistdDaemon],
                                           clients: Callable[..., list[Client]]) -> None:
    """Prosody goes away (a clean stop: its users leave the rooms; or a crash: the room never
    hears of it) and comes back on the same ports: the master reconnects by itself, and the
    users re-enter with the same resources."""
    prosody = new_prosody("dmuc-daemon-restart-")
    prosody.start()
    try:
        room = room_jid(f"phoenix-{how}")
        config = write_master_config(workdir / "master.toml", prosody, workdir / "master.db")
        daemon = daemons(config, workdir).start()
        wumpus, valdis, phaedrus = clients(prosody, "Wumpus", "Valdis", "Phaedrus")
        join(wumpus, room, "Wumpus")
        configure(wumpus, room, roomname="Phoenix", persistentroom=True)
        join(valdis, room, "Valdis")
        join(phaedrus, room, "Phaedrus")

        if how == "crash":
            assert prosody.proc is not None
            prosody.proc.kill()
            prosody.proc.wait()
        prosody.stop()
        daemon.wait_for_log("lost; retrying in")
        prosody.start()
        wait_for_count(daemon, "component connected", 2)
        assert daemon.running()

        # Wumpus and Valdis come back (same resources) and re-enter: a full join each time,
        # even when the room never saw them leave
        wumpus2, valdis2 = clients(prosody, "Wumpus", "Valdis")
        pres, _, subject = join(wumpus2, room, "Wumpus")
        assert "201" not in status_codes(pres)
        assert muc_item(pres)["affiliation"] == "owner"
        assert subject.get("from") == room
        pres, _, _ = join(valdis2, room, "Valdis")
        assert muc_item(pres)["role"] == "participant"
        run(wumpus2.expect(is_presence(from_=f"{room}/Valdis", type_="available")))
        valdis2.send_raw(f"<message to='{room}' type='groupchat'><body>back</body></message>")
        msg = run(wumpus2.expect(is_message(from_=f"{room}/Valdis", type_="groupchat")))
        assert body(msg) == "back"
        if how == "crash":
            # Phaedrus did not come back: the room asked each session it had at the
            # reconnect (docs/protocol.md §4.11.5), his answered service-unavailable, and
            # the room let him go (XEP-0045 §7.14: 307, 333, removed for a technical reason)
            daemon.wait_for_log(f"{CAST['Phaedrus']} is gone from {room}")
            items = iq(wumpus2, f"<iq type='get' to='{room}'>"
                                "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
            names = {i.get("name") or i.get("jid")
                     for i in items.iter("{http://jabber.org/protocol/disco#items}item")}
            assert not any("Phaedrus" in n for n in names), xml_str(items)
        assert_result(ping(wumpus2, room))
        assert_no_traceback(daemon)
    finally:
        discard(prosody)


# ----------------------------------------------------------------------------------------------
# malformed input


MALFORMED = [
    # (description, stanza template, kind of the error reply, expected condition)
    ("iq with an unknown namespace to a room",
     "<iq type='get' id='m1' to='{room}'><frob xmlns='urn:example:frob'/></iq>",
     "iq", "service-unavailable"),
    ("iq with an unknown namespace to the service",
     "<iq type='set' id='m2' to='{service}'><frob xmlns='urn:example:frob'/></iq>",
     "iq", "service-unavailable"),
    ("iq without a payload", "<iq type='get' id='m3' to='{room}'/>", "iq", "bad-request"),
    ("presence to the room's bare JID", "<presence to='{room}'><x xmlns='{muc}'/></presence>",
     "presence", "jid-malformed"),
    ("message with a garbage type",
     "<message to='{room}' type='frobnicate'><body>hi</body></message>", "message",
     "bad-request"),
    ("groupchat message to an occupant",
     "<message to='{room}/WiZ' type='groupchat'><body>hi</body></message>", "message",
     "bad-request"),
    ("admin item with an unknown role",
     "<iq type='set' id='m4' to='{room}'><query xmlns='{admin}'>"
     "<item nick='WiZ' role='emperor'/></query></iq>", "iq", "bad-request"),
    ("admin item without nick nor jid",
     "<iq type='set' id='m5' to='{room}'><query xmlns='{admin}'>"
     "<item affiliation='member'/></query></iq>", "iq", "bad-request"),
    ("admin get of two lists at once",
     "<iq type='get' id='m6' to='{room}'><query xmlns='{admin}'>"
     "<item affiliation='member'/><item role='moderator'/></query></iq>", "iq", "bad-request"),
    ("owner form with a non-numeric field",
     "<iq type='set' id='m7' to='{room}'><query xmlns='{owner}'>"
     "<x xmlns='jabber:x:data' type='submit'>"
     "<field var='muc#roomconfig_historylength'><value>lots</value></field></x></query></iq>",
     "iq", "bad-request"),
    ("owner form with a non-boolean",
     "<iq type='set' id='m8' to='{room}'><query xmlns='{owner}'>"
     "<x xmlns='jabber:x:data' type='submit'>"
     "<field var='muc#roomconfig_moderatedroom'><value>perhaps</value></field></x></query></iq>",
     "iq", "bad-request"),
    ("invitation to a malformed JID",
     "<message to='{room}'><x xmlns='{muc_user}'><invite to='a@b@c/d'/></x></message>",
     "message", "jid-malformed"),
    ("message to a room that does not exist",
     "<message to='{missing}' type='groupchat'><body>hello?</body></message>", "message",
     "item-not-found"),
    ("join with an empty nick", "<presence to='{room}/'><x xmlns='{muc}'/></presence>",
     "presence", "jid-malformed"),
    ("owner form with a superscript digit (str.isdigit() but not int())",
     "<iq type='set' id='m9' to='{room}'><query xmlns='{owner}'>"
     "<x xmlns='jabber:x:data' type='submit'>"
     "<field var='muc#roomconfig_historylength'><value>\u00b2</value></field></x></query></iq>",
     "iq", "bad-request"),
    ("owner form with a superscript maximum of users",
     "<iq type='set' id='m10' to='{room}'><query xmlns='{owner}'>"
     "<x xmlns='jabber:x:data' type='submit'>"
     "<field var='muc#roomconfig_maxusers'><value>\u00b3</value></field></x></query></iq>",
     "iq", "bad-request"),
    ("invitation without an invitee",
     "<message to='{room}'><x xmlns='{muc_user}'><invite/></x></message>",
     "message", "jid-malformed"),
    ("decline without an inviter",
     "<message to='{room}'><x xmlns='{muc_user}'><decline/></x></message>",
     "message", "jid-malformed"),
]


def test_malformed_stanzas_get_errors_and_daemon_survives(
        own_prosody: ProsodyInstance, workdir: Path,
        daemons: Callable[[Path, Path], TwistdDaemon],
        clients: Callable[..., list[Client]]) -> None:
    room = room_jid("rubble")
    config = write_master_config(workdir / "master.toml", own_prosody, workdir / "master.db")
    daemon = daemons(config, workdir).start()
    wiz, troy = clients(own_prosody, "WiZ", "Troy")
    join(wiz, room, "WiZ")
    configure(wiz, room)
    join(troy, room, "Troy")
    run(wiz.expect(is_presence(from_=f"{room}/Troy")))
    wiz.drain()
    values = {"room": room, "service": MUC_DOMAIN, "missing": room_jid("nowhere"),
              "muc": NS_MUC, "muc_user": NS_MUC_USER, "admin": NS_MUC_ADMIN,
              "owner": NS_MUC_OWNER}
    for what, template, kind, condition in MALFORMED:
        wiz.send_raw(template.format(**values))
        reply = run(wiz.expect(is_error(kind)), timeout=10)
        assert error_condition(reply) == condition, (what, xml_str(reply))
        assert daemon.running(), what
    # a join with a history request the room cannot parse is still a join
    troy.send_raw(f"<presence to='{room}/Troy' type='unavailable'/>")
    run(wiz.expect(is_presence(from_=f"{room}/Troy", type_="unavailable")))
    troy.send_raw(f"<presence to='{room}/Troy'><x xmlns='{NS_MUC}'>"
                  "<history maxstanzas='many' seconds='-x'/></x></presence>")
    run(troy.expect(is_subject(room)))
    # the room and the service still work, and nothing crashed
    wiz.send_raw(f"<message to='{room}' type='groupchat'><body>still alive</body></message>")
    assert body(run(troy.expect(is_message(from_=f"{room}/WiZ", type_="groupchat")))) \
        == "still alive"
    assert_result(ping(wiz))
    assert_result(ping(wiz, room))
    assert daemon.running()
    assert_no_traceback(daemon)
