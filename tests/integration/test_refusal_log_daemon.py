"""Every refusal logged once, read in the real ``twistd dmuc-master``'s log (issue 17,
docs/operations.md): the XEP-0282 stanzas a component may not send, from a component the
master does not list and from a listed slave, each get the error reply and exactly one
line naming the sender in the master's log, no traceback; the room keeps working.

A Prosody of this module's own holds the master's component, a slave component the master
lists (for killrc's users) and one it does not; both speak as raw XEP-0114 components.
"""

from __future__ import annotations

import secrets
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from testbed import ComponentSpec, ProsodyInstance, TwistdDaemon
from testbed.configs import daemon_toml
from tests.integration.conftest import MUC_DOMAIN, TEST_DOMAINS, make_tempdir, master_on
from tests.integration.test_fuzz import component
from tests.integration.xmpp_client import (
    NS_DATA,
    NS_MUC,
    NS_MUC_OWNER,
    Client,
    all_of,
    has_status,
    is_presence,
    run,
    xml_str,
)

pytestmark = pytest.mark.integration

NS_DMUC = "urn:xmpp:tmp:dmuc:0"
NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
SLAVE = "dmuc.killrc.oulubox.irc"  # listed: may speak for killrc's users
UNLISTED = "dmuc.stranger.avalon.irc"  # a component the master does not list
ROOM = f"refusals@{MUC_DOMAIN}"
OWNER = "wumpus@avalon.irc/desk"
USER = "argl@killrc.oulubox.irc/laptop"


@dataclass
class Rig:
    prosody: ProsodyInstance
    master: TwistdDaemon


@pytest.fixture(scope="module")
def rig() -> Iterator[Rig]:
    workdir, prosody_dir = make_tempdir("dmuc-refusals-"), make_tempdir("dmuc-refusals-p-")
    prosody = ProsodyInstance(
        prosody_dir, virtualhosts=TEST_DOMAINS, log_level="info",
        components=[ComponentSpec(MUC_DOMAIN, secrets.token_hex(16)),
                    *(ComponentSpec(c, secrets.token_hex(16),
                                    options={"validate_from_addresses": False})
                      for c in (SLAVE, UNLISTED))])
    config = workdir / "master.toml"
    spec = prosody.component(MUC_DOMAIN)
    config.write_text(daemon_toml(
        jid=MUC_DOMAIN, host=prosody.ip, port=prosody.component_port, secret=spec.secret,
        db_path=workdir / "master.db", level="info", slaves={SLAVE: ["killrc.oulubox.irc"]}))
    master = TwistdDaemon("dmuc-master", config, workdir)
    with master_on(prosody, master, workdir, prosody_dir):
        yield Rig(prosody, master)


@pytest.fixture(scope="module")
def owner(rig: Rig) -> Iterator[Client]:
    """The room's owner, inside it: the room exists for every refusal below."""
    client = run(Client(OWNER, "pw", host=rig.prosody.ip, port=rig.prosody.c2s_port).connect())
    client.send_raw(f"<presence to='{ROOM}/owner'><x xmlns='{NS_MUC}'/></presence>")
    run(client.expect(all_of(is_presence(from_=f"{ROOM}/owner"), lambda e: has_status(e, 110))))
    res = run(client.iq(f"<iq type='set' to='{ROOM}'><query xmlns='{NS_MUC_OWNER}'>"
                        f"<x xmlns='{NS_DATA}' type='submit'/></query></iq>"))
    assert res.get("type") == "result", xml_str(res)
    yield client
    run(client.disconnect())


X = f"xmlns='{NS_DMUC}'"
# (sender, stanza, condition): docs/operations.md "every refusal is logged once"
REFUSALS = [
    (UNLISTED, f"<presence type='unavailable' id='r1'><x {X}><refuse jid='{USER}'/></x>"
               "</presence>", "item-not-found"),
    (UNLISTED, f"<presence id='r2'><x {X}><enter jid='{USER}'/></x></presence>",
     "bad-request"),
    (SLAVE, f"<presence id='r3'><x {X}><enter jid='{USER}'/></x></presence>", "bad-request"),
    (SLAVE, f"<presence id='r4'><x {X}><garbage/><more>x</more></x></presence>",
     "bad-request"),
    (SLAVE, f"<presence id='r5'><x {X}/></presence>", "bad-request"),
    (SLAVE, f"<iq type='get' id='r6'><keepalive {X}/></iq>", "item-not-found"),
    (UNLISTED, f"<iq type='get' id='r7'><keepalive {X}/></iq>", "item-not-found"),
]
IDS = ["refuse from an unlisted component", "enter from an unlisted component",
       "enter from a listed slave", "x with garbage from a listed slave",
       "empty x from a listed slave", "keepalive from an unregistered slave",
       "keepalive from an unlisted component"]


@pytest.mark.parametrize(("sender", "xml", "condition"), REFUSALS, ids=IDS)
def test_each_refusal_is_answered_and_logged_once(rig: Rig, owner: Client, sender: str,
                                                  xml: str, condition: str) -> None:
    start = len(rig.master.log_text())
    comp = component(rig.prosody, sender)
    try:
        stanza_id = ET.fromstring(xml.replace(f"xmlns='{NS_DMUC}'", "")).get("id")
        comp.send(xml.replace(">", f" from='{sender}' to='{ROOM}'>", 1))
        reply = run(comp.expect(lambda e: e.get("id") == stanza_id, 10))
    finally:
        run(comp.close())
    error = reply.find("{jabber:component:accept}error")
    assert reply.get("type") == "error" and error is not None, xml_str(reply)
    assert error.find(f"{{{NS_STANZAS}}}{condition}") is not None, xml_str(reply)
    # the line is written before the answer leaves; then the room still answers its owner
    ping = run(owner.iq(f"<iq type='get' to='{ROOM}'><query "
                        "xmlns='http://jabber.org/protocol/disco#info'/></iq>"))
    assert ping.get("type") == "result", xml_str(ping)
    text = rig.master.log_text()[start:]
    refused = [line for line in text.splitlines() if "refused" in line and sender in line]
    assert len(refused) == 1, text[-3000:]
    assert "Traceback" not in text and "Unhandled" not in text, text[-3000:]
