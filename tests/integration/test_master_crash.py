"""A master killed -9 and started again, seen by users who reach it directly (on its own
Prosody, with mod_dmuc_hold on the master's Component): they stay in the room without
noticing, what they said meanwhile arrives with its time, and whoever left meanwhile is
removed (docs/protocol.md §4.11.5).

One Prosody of its own (mod_dmuc_hold with a short dmuc_hold_seconds, so that a leave can
outlast the hold and be lost, as when the master stays down long), one master daemon,
three clients.
"""

from __future__ import annotations

import secrets
import shutil
from collections.abc import Iterator

import pytest

from testbed import ComponentSpec, ProsodyInstance, TwistdDaemon
from testbed.faults import wait_for_text
from testbed.network import MODULES_DIR
from tests.integration.cast import CAST, room_jid
from tests.integration.conftest import (
    MUC_DOMAIN,
    TEST_DOMAINS,
    keep_testbed,
    make_tempdir,
    write_master_config,
)
from tests.integration.xmpp_client import (
    NS_DELAY,
    Client,
    all_of,
    body,
    is_message,
    is_presence,
    run,
    status_codes,
    xml_str,
)

pytestmark = pytest.mark.integration

HOLD_SECONDS = 6  # a leave outlasts it; the master is back well within it after a message
ROOM = room_jid("crash")


@pytest.fixture
def setup() -> Iterator[tuple[ProsodyInstance, TwistdDaemon]]:
    workdir = make_tempdir("dmuc-master-crash-")
    prosody = ProsodyInstance(
        make_tempdir("dmuc-master-crash-prosody-"), virtualhosts=TEST_DOMAINS,
        plugin_paths=[MODULES_DIR],
        components=[ComponentSpec(MUC_DOMAIN, secrets.token_hex(16), modules=["dmuc_hold"],
                                  options={"dmuc_hold_seconds": HOLD_SECONDS})])
    prosody.start()
    config = write_master_config(workdir / "master.toml", prosody, workdir / "master.db")
    master = TwistdDaemon("dmuc-master", config, workdir / "master")
    try:
        master.start("component connected")
        yield prosody, master
    finally:
        master.stop()
        prosody.stop()
        if not keep_testbed():
            shutil.rmtree(workdir, ignore_errors=True)
            shutil.rmtree(prosody.workdir, ignore_errors=True)


def connect(prosody: ProsodyInstance, nick: str) -> Client:
    client = Client(CAST[nick], "pw", host=prosody.ip, port=prosody.c2s_port)
    run(client.connect())
    return client


def enter(client: Client, nick: str) -> None:
    client.send_raw(f"<presence to='{ROOM}/{nick}'>"
                    "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
    run(client.expect(all_of(is_presence(from_=f"{ROOM}/{nick}"),
                             lambda e: "110" in status_codes(e))))


def say(client: Client, text: str) -> None:
    client.send_raw(f"<message to='{ROOM}' type='groupchat' id='{text}'>"
                    f"<body>{text}</body></message>")


def test_direct_users_through_a_master_crash(
        setup: tuple[ProsodyInstance, TwistdDaemon]) -> None:
    prosody, master = setup
    wiz, troy, wumpus = (connect(prosody, n) for n in ("WiZ", "Troy", "Wumpus"))
    try:
        # an instant room (groupchat 1.0 join: no lock) with three direct occupants
        wiz.send_raw(f"<presence to='{ROOM}/WiZ'/>")
        run(wiz.expect(is_presence(from_=f"{ROOM}/WiZ")))
        enter(troy, "Troy")
        enter(wumpus, "Wumpus")
        # stored as they changed (coalesced over 0.1 s): the last join is written
        wait_for_text(lambda: "\n".join(line for line in master.log_text().splitlines()
                                        if "stored direct occupants:" in line),
                      f"{ROOM}/Wumpus")

        master.kill()
        # Prosody must see the component gone first: a leave it writes into the dead
        # socket before it noticed is lost with the process (§4.11.5), not held
        wait_for_text(prosody.log_text, f"component disconnected: {MUC_DOMAIN}")
        run(wumpus.disconnect())  # its leave is held, and outlasts the hold: lost
        wait_for_text(prosody.log_text, f"unavailable for {HOLD_SECONDS} s",
                      timeout=HOLD_SECONDS + 10)
        say(troy, "while-down")  # held by mod_dmuc_hold, not bounced
        master.start("component connected", keep_log=True)

        # what Troy said while the master was down arrives, with its time
        held = run(wiz.expect(all_of(is_message(from_=f"{ROOM}/Troy", type_="groupchat"),
                                     lambda e: body(e) == "while-down"), 15))
        delay = held.find(f"{{{NS_DELAY}}}delay")
        assert delay is not None and delay.get("from") == ROOM, xml_str(held)
        # Wumpus, gone meanwhile, is removed as a session whose broadcast bounced
        gone = run(wiz.expect(all_of(is_presence(from_=f"{ROOM}/Wumpus", type_="unavailable")),
                              15))
        assert {"307", "333"} <= status_codes(gone), xml_str(gone)
        # Troy is still in: its next message is accepted and reaches everyone
        say(troy, "after")
        for client in (wiz, troy):
            run(client.expect(all_of(is_message(from_=f"{ROOM}/Troy", type_="groupchat"),
                                     lambda e: body(e) == "after"), 15))
        assert not troy.received(is_message(type_="error")), troy.dump()
        # nobody saw WiZ or Troy leave or enter again
        for client in (wiz, troy):
            for nick in ("WiZ", "Troy"):
                assert not client.received(is_presence(from_=f"{ROOM}/{nick}",
                                                       type_="unavailable")), client.dump()
        assert "restored 3 of 3 stored occupants" in master.log_text()
        assert "Traceback" not in master.log_text()
    finally:
        run(wiz.disconnect())
        run(troy.disconnect())
