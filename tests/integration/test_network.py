"""The multi-server testbed (testbed.network) and mod_dmuc_slave, against real Prosody.

Five Prosody servers linked by real s2s; a raw XEP-0114 component plays the slave
(``dmuc.vesa.yeggmaex.irc``) to show what mod_dmuc_slave hands it.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from testbed.network import (
    DIRECT_DOMAIN,
    DMUC_NS,
    DOMAINS,
    MASTER_DOMAIN,
    MUC_SERVICE,
    DmucNetwork,
    slave_jid,
)
from tests.integration.conftest import PROBE_COMPONENT, MakeClient
from tests.integration.xmpp_client import (
    NS_DISCO_INFO,
    NS_MUC,
    NS_STANZAS,
    Predicate,
    body,
    error_condition,
    is_iq,
    is_message,
    is_presence,
    local,
    run,
    xml_str,
)

pytestmark = pytest.mark.integration

VESA = "vesa.yeggmaex.irc"
KILLRC = "killrc.oulubox.irc"
SLAVE = slave_jid(VESA)
ROOM = f"wallops@{MUC_SERVICE}"
NS_COMPONENT = "jabber:component:accept"
NS_PROSODY_COMPONENT = "xmpp:prosody.im/protocol/component"
NOTHING = {"message": 0, "presence": 0, "iq": 0}

_ids = itertools.count(1)


# ----------------------------------------------------------------------------------------------
# a tiny XEP-0114 component client on the clients' event loop


class RawComponent:
    """An external component: stream header, SHA-1 handshake, then raw stanzas both ways."""

    def __init__(self, network: DmucNetwork, domain: str) -> None:
        server = network.server(domain)
        self.domain = domain
        self.host, self.port = server.ip, server.component_port
        self.secret = server.secrets[domain]
        self.inbox: list[ET.Element] = []
        self._arrived = asyncio.Event()
        self._parser = ET.XMLPullParser(events=("start", "end"))
        self._depth = 0
        self._root: ET.Element | None = None
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = asyncio.Event()

    async def connect(self) -> RawComponent:
        self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        self._task = asyncio.ensure_future(self._read())
        self.send(f"<stream:stream xmlns='{NS_COMPONENT}' "
                  f"xmlns:stream='http://etherx.jabber.org/streams' to='{self.domain}'>")
        await self._wait(lambda: self._root is not None)
        assert self._root is not None
        digest = hashlib.sha1((self._root.get("id", "") + self.secret).encode()).hexdigest()
        self.send(f"<handshake>{digest}</handshake>")
        reply = await self.expect(lambda e: local(e.tag) in ("handshake", "error"))
        assert local(reply.tag) == "handshake", f"{self.domain}: {xml_str(reply)}"
        return self

    async def _read(self) -> None:
        assert self._reader is not None
        try:
            while data := await self._reader.read(65536):
                self._parser.feed(data)
                for event, elem in self._parser.read_events():
                    if event == "start":
                        self._depth += 1
                        if self._depth == 1:
                            self._root = elem
                    else:
                        self._depth -= 1
                        if self._depth == 1 and self._root is not None:
                            self._root.remove(elem)
                            self.inbox.append(elem)
                self._arrived.set()
        finally:
            self.closed.set()
            self._arrived.set()

    async def _wait(self, cond: object, timeout: float = 10) -> None:
        async def loop() -> None:
            while not cond():  # type: ignore[operator]
                if self.closed.is_set():
                    raise AssertionError(f"{self.domain}: connection closed")
                self._arrived.clear()
                await self._arrived.wait()
        await asyncio.wait_for(loop(), timeout)

    def send(self, xml: str) -> None:
        assert self._writer is not None
        self._writer.write(xml.encode())

    async def expect(self, predicate: Predicate, timeout: float = 10) -> ET.Element:
        """Remove and return the first received stanza matching ``predicate``."""
        found: list[ET.Element] = []

        def match() -> bool:
            for i, elem in enumerate(self.inbox):
                if predicate(elem):
                    found.append(self.inbox.pop(i))
                    return True
            return False

        try:
            await self._wait(match, timeout)
        except TimeoutError:
            raise AssertionError(f"{self.domain}: no matching stanza in {timeout} s; inbox:\n"
                                 + "\n".join(xml_str(e) for e in self.inbox)) from None
        return found[0]

    async def iq(self, xml_body: str, to: str, type_: str = "set") -> ET.Element:
        iq_id = f"c{next(_ids)}"
        self.send(f"<iq type='{type_}' id='{iq_id}' from='{self.domain}' to='{to}'>"
                  f"{xml_body}</iq>")
        return await self.expect(is_iq(id_=iq_id))

    async def set_mirror(self, services: list[str], vhost: str = VESA) -> ET.Element:
        items = "".join(f"<service jid='{s}'/>" for s in services)
        return await self.iq(f"<mirror xmlns='{DMUC_NS}'>{items}</mirror>", vhost)

    async def close(self) -> None:
        """Close the stream and wait until Prosody has closed the connection."""
        if self._writer is None:
            return
        if not self.closed.is_set():
            self.send("</stream:stream>")
            try:
                await asyncio.wait_for(self.closed.wait(), 5)
            except TimeoutError:
                pass
        self._writer.close()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._writer = None


def connect_component(network: DmucNetwork, domain: str = SLAVE) -> RawComponent:
    return run(RawComponent(network, domain).connect())


def clear_mirror(network: DmucNetwork) -> None:
    """Leave mod_dmuc_slave on vesa with an empty mirror list (the network is shared)."""
    comp = connect_component(network)
    try:
        assert run(comp.set_mirror([])).get("type") == "result"
    finally:
        run(comp.close())


@pytest.fixture
def slave(network: DmucNetwork) -> Iterator[RawComponent]:
    """A raw component connected as dmuc.vesa.yeggmaex.irc that mirrors channel.avalon.irc."""
    comp = connect_component(network)
    try:
        reply = run(comp.set_mirror([MUC_SERVICE]))
        assert reply.get("type") == "result", xml_str(reply)
        # What mod_dmuc_slave held for (or hands again to) a slave that was away comes
        # first on its stream, before this answer: earlier tests' traffic, not this one's.
        comp.inbox.clear()
        yield comp
    finally:
        run(comp.close())
        clear_mirror(network)


def diverted(slave: RawComponent) -> list[ET.Element]:
    """What users' stanzas reached the slave, apart from the bounces mod_dmuc_slave hands
    it (there is no master here: what a slave forwards to it comes back as "Component
    unavailable" from the room, which is the slave's to see, a netsplit)."""
    return [e for e in slave.inbox if e.get("type") != "error"]


def cbody(elem: ET.Element) -> str | None:
    """The body of a stanza a component received (jabber:component:accept)."""
    return elem.findtext(f"{{{NS_COMPONENT}}}body")


def error_of(elem: ET.Element) -> ET.Element:
    err = elem.find("{jabber:client}error")
    assert err is not None, xml_str(elem)
    return err


# ----------------------------------------------------------------------------------------------
# the network itself


def test_network_layout(network: DmucNetwork) -> None:
    assert network.started and network.start_time is not None
    assert [s.domain for s in network.servers.values()] == list(DOMAINS)
    assert len({s.ip for s in network.servers.values()}) == len(DOMAINS)
    assert network.server("argl@killrc.oulubox.irc/x").domain == KILLRC
    assert network.server(MUC_SERVICE) is network.master
    assert network.server(SLAVE).component == SLAVE
    assert network.master.secret == network.master.secrets[MUC_SERVICE]
    assert network.server(DIRECT_DOMAIN).role == "direct"
    assert network.server(DIRECT_DOMAIN).component is None
    records = network.dns_records()
    assert records[SLAVE] == (network.server(VESA).ip, network.server(VESA).s2s_public_port)
    with pytest.raises(KeyError):
        network.server("example.org")


def test_every_pair_exchanges_chat_over_s2s(network: DmucNetwork,
                                            net_client_factory: MakeClient) -> None:
    clients = {d: net_client_factory(f"pairs@{d}/r") for d in DOMAINS}
    network.reset_counts()
    for (a, ca), (b, cb) in itertools.permutations(clients.items(), 2):
        ca.send_raw(f"<message to='{cb.jid}' type='chat'><body>{a} to {b}</body></message>")
    for (a, ca), (b, cb) in itertools.permutations(clients.items(), 2):
        msg = run(cb.expect(is_message(from_=ca.jid, type_="chat")))
        assert body(msg) == f"{a} to {b}"
    # each ordered pair: exactly the one message crossed that link
    for a, b in itertools.permutations(DOMAINS, 2):
        counts = network.wait_counts(b, source=a, message=1)
        assert counts["message"] == 1, (a, b, network.s2s_log(b, a))


def test_counter_counts_one_message_avalon_to_killrc(network: DmucNetwork,
                                                     net_client_factory: MakeClient) -> None:
    sender = net_client_factory(f"count@{MASTER_DOMAIN}/r")
    receiver = net_client_factory(f"count@{KILLRC}/r")
    # the link is up (or comes up now): one message, then start counting afresh
    sender.send_raw(f"<message to='{receiver.jid}' type='chat'><body>warm</body></message>")
    run(receiver.expect(is_message(from_=sender.jid)))
    network.wait_counts(KILLRC, message=1)
    network.reset_counts()

    sender.send_raw(f"<message to='{receiver.jid}' type='chat'><body>one</body></message>")
    assert body(run(receiver.expect(is_message(from_=sender.jid)))) == "one"
    assert run(network.await_counts(KILLRC, message=1)) == {**NOTHING, "message": 1}
    [item] = network.s2s_log(KILLRC)
    assert (item.source, item.target, item.kind) == (MASTER_DOMAIN, KILLRC, "message")
    assert (item.from_, item.to, item.type) == (sender.jid, receiver.jid, "chat")
    # nothing else crossed, in either direction
    assert network.s2s_counts(MASTER_DOMAIN, source=KILLRC) == NOTHING
    assert network.s2s_counts("eris.dclxvii.irc") == NOTHING
    with pytest.raises(TimeoutError, match="wanted at least"):
        network.wait_counts(KILLRC, message=2, timeout=0.1)


def test_master_component_traffic_counts_as_avalons(network: DmucNetwork,
                                                    net_client_factory: MakeClient) -> None:
    """What the master's component sends crosses its own s2s stream (from channel.avalon.irc)
    and is counted as avalon.irc's."""
    user = net_client_factory(f"argl@{KILLRC}/laptop")
    master = connect_component(network, MUC_SERVICE)
    try:
        network.reset_counts()
        master.send(f"<message from='{ROOM}' to='{user.jid}' type='groupchat' id='x1'>"
                    "<body>from the room</body></message>")
        msg = run(user.expect(is_message(from_=ROOM, type_="groupchat")))
        assert body(msg) == "from the room"
        assert run(network.await_counts(KILLRC, message=1)) == {**NOTHING, "message": 1}
        [item] = network.s2s_log(KILLRC)
        assert (item.source, item.from_, item.to) == (MASTER_DOMAIN, ROOM, user.jid)
    finally:
        run(master.close())


# ----------------------------------------------------------------------------------------------
# mod_dmuc_slave


def test_room_traffic_goes_to_the_slave_not_over_s2s(
        network: DmucNetwork, net_client_factory: MakeClient, slave: RawComponent) -> None:
    user = net_client_factory(f"rubenro@{VESA}/shaver")
    elsewhere = net_client_factory(f"valdis@{MASTER_DOMAIN}/r")
    network.reset_counts()

    user.send_raw(f"<presence to='{ROOM}/BigCheese'><x xmlns='{NS_MUC}'/></presence>")
    pres = run(slave.expect(is_presence(from_=user.jid)))
    assert pres.get("to") == f"{ROOM}/BigCheese"
    assert pres.find(f"{{{NS_MUC}}}x") is not None

    user.send_raw(f"<message to='{ROOM}' type='groupchat' id='g1'><body>moi</body></message>")
    msg = run(slave.expect(is_message(from_=user.jid, type_="groupchat")))
    assert (msg.get("to"), msg.get("id"), cbody(msg)) == (ROOM, "g1", "moi")

    user.send_raw(f"<message to='{ROOM}/Efchen' type='chat'><body>pm</body></message>")
    msg = run(slave.expect(is_message(from_=user.jid, type_="chat")))
    assert msg.get("to") == f"{ROOM}/Efchen"

    # an iq to the room: the slave answers as the room (validate_from_addresses = false)
    user.send_raw(f"<iq type='get' id='d1' to='{ROOM}'><query xmlns='{NS_DISCO_INFO}'/></iq>")
    iq = run(slave.expect(is_iq(id_="d1", type_="get")))
    assert (iq.get("from"), iq.get("to")) == (user.jid, ROOM)
    slave.send(f"<iq type='result' id='d1' from='{ROOM}' to='{user.jid}'>"
               f"<query xmlns='{NS_DISCO_INFO}'><identity category='conference' type='text'/>"
               f"</query></iq>")
    reply = run(user.expect(is_iq(id_="d1", type_="result", from_=ROOM)))
    assert reply.find(f"{{{NS_DISCO_INFO}}}query") is not None

    # a barrier over the same s2s link: a chat message to avalon.irc crosses it afterwards
    user.send_raw(f"<message to='{elsewhere.jid}' type='chat'><body>s2s</body></message>")
    run(elsewhere.expect(is_message(from_=user.jid)))
    counts = network.wait_counts(MASTER_DOMAIN, source=VESA, message=1)
    assert counts == {**NOTHING, "message": 1}, network.s2s_log(MASTER_DOMAIN, VESA)
    assert diverted(slave) == [], [xml_str(e) for e in slave.inbox]


def test_stanzas_to_the_service_itself_are_not_diverted(
        network: DmucNetwork, net_client_factory: MakeClient, slave: RawComponent) -> None:
    user = net_client_factory(f"msa@{VESA}/r")
    network.reset_counts()
    # no master runs here: mod_dmuc_hold on avalon holds the query for it; what counts is
    # that it crossed to avalon rather than to the slave
    user.send_raw(f"<iq type='get' id='svc1' to='{MUC_SERVICE}'>"
                  f"<query xmlns='{NS_DISCO_INFO}'/></iq>")
    network.wait_counts(MASTER_DOMAIN, source=VESA, iq=1)
    user.send_raw(f"<presence to='{MUC_SERVICE}'/>")
    network.wait_counts(MASTER_DOMAIN, source=VESA, presence=1)
    # and a room stanza sent afterwards reaches the slave first in its inbox: nothing else came
    user.send_raw(f"<message to='{ROOM}' type='groupchat'><body>after</body></message>")
    run(slave.expect(is_message(from_=user.jid)))
    assert diverted(slave) == [], [xml_str(e) for e in slave.inbox]


def test_other_domains_and_services_are_not_diverted(
        network: DmucNetwork, net_client_factory: MakeClient, slave: RawComponent) -> None:
    user = net_client_factory(f"msa@{VESA}/other")
    friend = net_client_factory(f"msa@{DIRECT_DOMAIN}/r")
    network.reset_counts()
    user.send_raw(f"<message to='{friend.jid}' type='chat'><body>hi</body></message>")
    run(friend.expect(is_message(from_=user.jid)))
    # a JID with a node on a domain that is not mirrored (it bounces there: nobody is online)
    user.send_raw(f"<message to='nobody@{DIRECT_DOMAIN}' type='groupchat'>"
                  "<body>x</body></message>")
    network.wait_counts(DIRECT_DOMAIN, source=VESA, message=2)
    user.send_raw(f"<message to='{ROOM}' type='groupchat'><body>after</body></message>")
    run(slave.expect(is_message(from_=user.jid)))
    assert diverted(slave) == [], [xml_str(e) for e in slave.inbox]


def test_unavailable_presence_on_disconnect_is_diverted(
        network: DmucNetwork, net_client_factory: MakeClient, slave: RawComponent) -> None:
    user = net_client_factory(f"rubenro@{VESA}/leaving")
    full = user.jid
    network.reset_counts()
    user.send_raw(f"<presence to='{ROOM}/BigCheese'><x xmlns='{NS_MUC}'/></presence>")
    run(slave.expect(is_presence(from_=full, type_="available")))
    run(user.disconnect())
    gone = run(slave.expect(is_presence(from_=full)))
    assert (gone.get("type"), gone.get("to")) == ("unavailable", f"{ROOM}/BigCheese")
    assert network.s2s_counts(MASTER_DOMAIN, source=VESA) == NOTHING


def test_mirror_list_only_from_the_slave_component(
        network: DmucNetwork, net_client_factory: MakeClient, slave: RawComponent) -> None:
    # another component of the same server
    probe = connect_component(network, PROBE_COMPONENT)
    try:
        reply = run(probe.set_mirror([]))
    finally:
        run(probe.close())
    assert reply.get("type") == "error", xml_str(reply)
    assert error_condition_component(reply) == ("auth", "forbidden")
    # a local client
    user = net_client_factory(f"msa@{VESA}/sneaky")
    reply = run(user.iq(f"<iq type='set' to='{VESA}'><mirror xmlns='{DMUC_NS}'/></iq>"))
    assert reply.get("type") == "error" and error_condition(reply) == "forbidden"
    # a malformed list is refused too
    reply = run(slave.set_mirror([ROOM]))
    assert error_condition_component(reply) == ("modify", "bad-request")
    # the list is unchanged: room traffic still goes to the slave
    user.send_raw(f"<message to='{ROOM}' type='groupchat'><body>still</body></message>")
    run(slave.expect(is_message(from_=user.jid)))


def test_mirror_list_is_replaced(
        network: DmucNetwork, net_client_factory: MakeClient, slave: RawComponent) -> None:
    user = net_client_factory(f"msa@{VESA}/replace")
    assert run(slave.set_mirror([])).get("type") == "result"
    network.reset_counts()
    user.send_raw(f"<message to='{ROOM}' type='groupchat'><body>direct</body></message>")
    network.wait_counts(MASTER_DOMAIN, source=VESA, message=1)  # to the master over s2s
    assert run(slave.set_mirror([MUC_SERVICE, MUC_SERVICE])).get("type") == "result"
    user.send_raw(f"<message to='{ROOM}' type='groupchat'><body>slave</body></message>")
    msg = run(slave.expect(is_message(from_=user.jid)))
    assert cbody(msg) == "slave"
    assert diverted(slave) == [], [xml_str(e) for e in slave.inbox]


def test_slave_down_its_users_stanzas_wait_for_it(
        network: DmucNetwork, net_client_factory: MakeClient, slave: RawComponent) -> None:
    """mod_dmuc_slave keeps diverting while the slave is away, and holds what would go to
    it (mod_component would answer "Component unavailable"): nothing goes around the slave
    to the master, the user gets no error, and the slave gets it all, in order, once it is
    back."""
    user = net_client_factory(f"rubenro@{VESA}/down")
    run(slave.close())
    network.reset_counts()

    user.send_raw(f"<presence to='{ROOM}/BigCheese' id='p1'><x xmlns='{NS_MUC}'/></presence>")
    user.send_raw(f"<message to='{ROOM}' type='groupchat' id='m1'><body>x</body></message>")
    user.send_raw(f"<iq type='get' to='{ROOM}' id='q1'><query xmlns='{NS_DISCO_INFO}'/></iq>")
    back = connect_component(network)
    try:
        ids = ("p1", "m1", "q1")

        def arrived() -> list[ET.Element]:  # in the order they came (the inbox's)
            return [e for e in back.inbox if e.get("id") in ids]

        run(back._wait(lambda: len(arrived()) >= len(ids)))
        got = arrived()
        assert [e.get("id") for e in got] == list(ids), [xml_str(e) for e in got]
        assert [local(e.tag) for e in got] == ["presence", "message", "iq"]
        assert all(e.get("from") == user.jid for e in got)
        assert not user.received(lambda e: e.get("type") == "error"), user.dump()
        assert network.s2s_counts(MASTER_DOMAIN, source=VESA) == NOTHING
    finally:
        run(back.close())


def error_condition_component(reply: ET.Element) -> tuple[str | None, str | None]:
    """(error type, condition) of an error received by a component (jabber:component:accept)."""
    err = reply.find(f"{{{NS_COMPONENT}}}error")
    if err is None:
        return None, None
    cond = next((local(c.tag) for c in err if c.tag.startswith(f"{{{NS_STANZAS}}}")
                 and local(c.tag) != "text"), None)
    return err.get("type"), cond
