"""XEP-0410 self-ping at the edge, on the real five-server network with the real daemons,
driven by slixmpp's own xep_0410 / xep_0199 plugins: the vesa slave answers its local
occupant's self-ping and a local non-occupant's ping itself (nothing crosses s2s), with
the master's very answer, and goes on answering them during a netsplit, so that no client
leaves and rejoins because a link is down; a direct user's self-ping is the master's as
before.

The module runs its own network (127.0.23.x) with the daemons at a 5 s keepalive, so that
a split is found and healed quickly.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from slixmpp import JID
from slixmpp.plugins.xep_0410 import PingStatus

from testbed.faults import wait_for_text
from testbed.network import MASTER_DOMAIN, MUC_SERVICE
from tests.integration.cast import CAST, DIRECT_USER
from tests.integration.conftest import FAULT_KEEPALIVE
from tests.integration.module_net import Net, module_net
from tests.integration.test_dmuc_slaves import join
from tests.integration.xmpp_client import Client, error_condition, run

pytestmark = pytest.mark.integration

IPS = ("127.0.23.2", "127.0.23.3", "127.0.23.4", "127.0.23.5", "127.0.23.6")
VESA = "vesa.yeggmaex.irc"
LUDWIG = DIRECT_USER[1]
CHEESE = CAST["BigCheese"]
CHEESE_PHONE = "rubenro@vesa.yeggmaex.irc/phone"  # BigCheese's other client, not joined
LUDWIG_PHONE = "ludwig@efnet.irc/phone"  # Ludwig's, not joined either


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    yield from module_net("dmuc-ping", IPS, ("xep_0410",))


def self_ping(client: Client, occupant_jid: str) -> PingStatus:
    """One XEP-0410 self-ping, as slixmpp's plugin sends and judges it."""
    return run(client.xmpp.plugin["xep_0410"].send_self_ping(JID(occupant_jid), timeout=8))


def ping_error(client: Client, occupant_jid: str) -> ET.Element:
    """A raw ping that must be refused: the error answer."""
    answer = run(client.iq(f"<iq type='get' to='{occupant_jid}'>"
                           "<ping xmlns='urn:xmpp:ping'/></iq>"))
    assert answer.get("type") == "error", ET.tostring(answer)
    assert answer.get("from") == occupant_jid
    return answer


def canonical(elem: ET.Element) -> tuple[object, ...]:
    """An element as data: Prosody may write the attributes in another order."""
    return (elem.tag, sorted(elem.attrib.items()), (elem.text or "").strip(),
            [canonical(c) for c in elem])


def error_xml(answer: ET.Element) -> tuple[object, ...]:
    [error] = [e for e in answer if e.tag.endswith("}error")]
    return canonical(error)


def crossed_vesa(net: Net, occupant_jid: str) -> list[object]:
    """IQs to or from `occupant_jid` that crossed the link between vesa and avalon."""
    log = net.network.s2s_log(MASTER_DOMAIN, VESA) + net.network.s2s_log(VESA, MASTER_DOMAIN)
    return [s for s in log if s.kind == "iq" and occupant_jid in (s.to, s.from_)]


def occupied(net: Net, name: str) -> tuple[str, Client, Client]:
    room = f"{name}@{MUC_SERVICE}"
    ludwig, cheese = net.client(LUDWIG), net.client(CHEESE)
    join(ludwig, room, "Ludwig")  # Ludwig (direct) creates it
    join(cheese, room, "BigCheese")  # BigCheese through the vesa slave
    return room, ludwig, cheese


def test_the_slave_answers_self_pings_as_the_master_and_nothing_crosses_s2s(net: Net) -> None:
    room, ludwig, cheese = occupied(net, "selfping")
    phone, ludwig_phone = net.client(CHEESE_PHONE), net.client(LUDWIG_PHONE)
    assert self_ping(cheese, f"{room}/BigCheese") is PingStatus.JOINED
    assert self_ping(phone, f"{room}/BigCheese") is PingStatus.DISCONNECTED  # not joined
    assert self_ping(ludwig, f"{room}/Ludwig") is PingStatus.JOINED  # direct: unchanged
    assert self_ping(ludwig_phone, f"{room}/Ludwig") is PingStatus.DISCONNECTED
    # the slave's refusal is the master's, element for element
    from_slave = ping_error(phone, f"{room}/Ludwig")
    from_master = ping_error(ludwig_phone, f"{room}/Ludwig")
    assert error_condition(from_slave) == "not-acceptable"
    assert error_xml(from_slave) == error_xml(from_master)
    assert crossed_vesa(net, f"{room}/BigCheese") == []
    assert crossed_vesa(net, f"{room}/Ludwig") == []


def test_during_a_netsplit_the_local_occupant_is_still_joined(net: Net) -> None:
    room, ludwig, cheese = occupied(net, "selfping-split")
    phone = net.client(CHEESE_PHONE)
    slave = net.daemons.slaves[VESA]
    registered = slave.log_text().count(f"registered with {room}")
    net.network.cut(VESA, MASTER_DOMAIN)
    try:
        # BigCheese talks on (shown on vesa, held): its bounce shows the slave the split
        cheese.send_raw(f"<message to='{room}' type='groupchat' id='held-1'>"
                        "<body>held</body></message>")
        wait_for_text(slave.log_text, f"netsplit from {room}", timeout=3 * FAULT_KEEPALIVE)
        assert self_ping(cheese, f"{room}/BigCheese") is PingStatus.JOINED
        assert self_ping(phone, f"{room}/BigCheese") is PingStatus.DISCONNECTED
        # a ping TO another occupant needs the master: it says so at once (§4.11.1)
        assert error_condition(ping_error(cheese, f"{room}/Ludwig")) == \
            "remote-server-timeout"
    finally:
        net.network.heal(VESA, MASTER_DOMAIN)
    wait_for_text(slave.log_text, f"registered with {room}", registered + 1,
                  timeout=3 * FAULT_KEEPALIVE)
    assert self_ping(cheese, f"{room}/BigCheese") is PingStatus.JOINED
    assert self_ping(ludwig, f"{room}/Ludwig") is PingStatus.JOINED
