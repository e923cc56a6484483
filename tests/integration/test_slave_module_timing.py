"""mod_dmuc_slave's two clocks, on a Prosody of their own: the stanzas it holds for a slave
that is away get their error once they waited `dmuc_slave_hold_seconds` (each of them,
not the first one's round), and it hands a slave back from a crash the groupchat of the
last `dmuc_slave_replay_seconds` again, counted in fractions of a second (not whole
seconds, which made a 2 s window anything from 1 to 3 s).

A raw XEP-0114 component (test_network's) plays the slave; the mirrored service has no
server: what the module diverts never leaves this Prosody.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testbed import ProsodyInstance
from testbed.network import MODULES_DIR
from testbed.prosody import ComponentSpec
from tests.integration.conftest import keep_testbed, make_tempdir
from tests.integration.test_network import RawComponent
from tests.integration.xmpp_client import Client, error_condition, run

pytestmark = pytest.mark.integration

DOMAIN = "vesa.yeggmaex.irc"
SLAVE = f"dmuc.{DOMAIN}"
SERVICE = "channel.avalon.irc"
ROOM = f"wallops@{SERVICE}"
HOLD_SECONDS = 2
REPLAY_SECONDS = 2
# how late a timer of Prosody's may fire, and a stanza cross loopback, at the most
SLACK = 0.8


@dataclass
class _Server:
    ip: str
    component_port: int
    secrets: dict[str, str]


class _OneProsody:
    """What RawComponent asks of a network, answered by one Prosody."""

    def __init__(self, prosody: ProsodyInstance, secret: str) -> None:
        self._server = _Server(prosody.ip, prosody.component_port, {SLAVE: secret})

    def server(self, domain: str) -> _Server:
        assert domain == SLAVE
        return self._server


@dataclass
class Rig:
    prosody: ProsodyInstance
    network: _OneProsody

    def connect_slave(self) -> RawComponent:
        return run(RawComponent(self.network, SLAVE).connect())  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    secret = secrets.token_hex(16)
    prosody = ProsodyInstance(
        make_tempdir("dmuc-slave-timing-"), virtualhosts=[DOMAIN],
        components=[ComponentSpec(SLAVE, secret, options={"validate_from_addresses": False})],
        plugin_paths=[MODULES_DIR],
        host_options={DOMAIN: {"modules_enabled": ["dmuc_slave"],
                               "dmuc_slave_component": SLAVE,
                               "dmuc_slave_hold_seconds": HOLD_SECONDS,
                               "dmuc_slave_replay_seconds": REPLAY_SECONDS}})
    prosody.start()
    try:
        rig = Rig(prosody, _OneProsody(prosody, secret))
        slave = rig.connect_slave()
        try:
            reply = run(slave.set_mirror([SERVICE], vhost=DOMAIN))
            assert reply.get("type") == "result", ET.tostring(reply)
        finally:
            run(slave.close())
        yield rig
    finally:
        prosody.stop()
        if not keep_testbed():
            shutil.rmtree(prosody.workdir, ignore_errors=True)


@pytest.fixture
def user(rig: Rig) -> Iterator[Client]:
    client = Client(f"rubenro@{DOMAIN}/timing", "pw", host=rig.prosody.ip,
                    port=rig.prosody.c2s_port)
    run(client.connect())
    try:
        yield client
    finally:
        run(client.disconnect())


def _groupchat(user: Client, message_id: str) -> float:
    user.send_raw(f"<message to='{ROOM}' type='groupchat' id='{message_id}'>"
                  f"<body>{message_id}</body></message>")
    return time.monotonic()


async def _error_time(user: Client, message_id: str) -> float:
    """When the error answering one of the user's messages arrived: mod_component's
    "Component unavailable", as without the hold."""
    error = await user.expect(lambda e: e.get("id") == message_id
                              and e.get("type") == "error", timeout=HOLD_SECONDS * 3)
    at = time.monotonic()
    assert error_condition(error) == "remote-server-timeout", ET.tostring(error)
    return at


def test_each_held_stanza_gets_its_error_when_it_has_waited_the_hold(rig: Rig,
                                                                     user: Client) -> None:
    """Two stanzas held a second apart: each is answered hold_seconds after it was sent.
    (A timer that came round every hold_seconds from the first answered the second one
    only at the next round, 2 x hold_seconds after the first.)"""
    first_sent = _groupchat(user, "held-1")
    run(asyncio.sleep(1.0))  # the second one is held a second later: time is the subject
    second_sent = _groupchat(user, "held-2")
    first_answered = run(_error_time(user, "held-1"))
    second_answered = run(_error_time(user, "held-2"))
    for sent, answered in ((first_sent, first_answered), (second_sent, second_answered)):
        assert HOLD_SECONDS - 0.1 <= answered - sent <= HOLD_SECONDS + SLACK, \
            (answered - sent, user.dump())


def test_a_slave_back_from_a_crash_gets_again_only_the_last_seconds(rig: Rig,
                                                                    user: Client) -> None:
    """Said 2.2 s before the last message, a message is out of the 2 s replay window
    (whole seconds saw 2 s there, most of the time, and kept it); the last one is in it
    and is handed again, with the resent prefix."""
    slave = rig.connect_slave()
    try:
        _groupchat(user, "stale")
        run(slave.expect(lambda e: e.get("id") == "stale"))
        run(asyncio.sleep(REPLAY_SECONDS + 0.2))  # the age that puts it out of the window
        _groupchat(user, "fresh")
        run(slave.expect(lambda e: e.get("id") == "fresh"))
    finally:
        run(slave.close())
    back = rig.connect_slave()
    try:
        run(back.expect(lambda e: e.get("id") == "dmuc-resent-fresh"))
        # the replay comes first on the new stream: a message sent now comes after it
        _groupchat(user, "marker")
        run(back.expect(lambda e: e.get("id") == "marker"))
        ids = [e.get("id") for e in back.inbox]
        assert "dmuc-resent-stale" not in ids and "stale" not in ids, ids
    finally:
        run(back.close())
