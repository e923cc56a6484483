"""XEP-0410 self-ping at the edge: one rule (protocol/occupant_iq.py, as mod_muc's
handle_iq_to_occupant) on the master and on each slave, which answers its local occupants'
self-pings and its non-occupants' IQs to an occupant JID itself, with the master's very
answer, with no s2s stanza, and during a netsplit too."""

from __future__ import annotations

import pytest

from dmuc.protocol.occupant_iq import OccupantIq, verdict
from dmuc.slave.link import LinkState
from tests.unit.dmuc_net import Net, slave_jid
from tests.unit.muc_helpers import EFCHEN, ROOM, TROY, WIZ, error_condition, parse
from tests.unit.test_occupant_id_vcard import DIRECT, occupied_net

VESA = "vesa.yeggmaex.irc"
EFCHEN_PHONE = "msa@vesa.yeggmaex.irc/phone"  # Efchen's other resource, not joined
PING = "<ping xmlns='urn:xmpp:ping'/>"
VERSION = "<query xmlns='jabber:iq:version'/>"


def iq_xml(sender: str, nick: str, payload: str = PING, itype: str = "get",
           iq_id: str = "sp1") -> str:
    return f"<iq type='{itype}' id='{iq_id}' from='{sender}' to='{ROOM}/{nick}'>{payload}</iq>"


@pytest.mark.parametrize(("sender_nick", "target", "present", "payload", "itype", "expected"), [
    (None, "Efchen", True, PING, "get", OccupantIq.NOT_IN_ROOM),  # not joined
    (None, "Nobody", False, PING, "get", OccupantIq.NOT_IN_ROOM),  # mod_muc asks this first
    (None, "Efchen", True, VERSION, "get", OccupantIq.NOT_IN_ROOM),  # any IQ, not only pings
    ("Efchen", "Nobody", False, PING, "get", OccupantIq.NO_RECIPIENT),
    ("Efchen", "Efchen", True, PING, "get", OccupantIq.SELF_PING),
    ("Efchen", "Efchen", True, PING, "set", OccupantIq.RELAY),  # a ping is a get
    ("Efchen", "Efchen", True, VERSION, "get", OccupantIq.RELAY),  # to one's own clients
    ("Efchen", "WiZ", True, PING, "get", OccupantIq.RELAY),  # a ping TO WiZ
])
def test_the_rule(sender_nick, target, present, payload, itype, expected):
    stanza = parse(iq_xml(EFCHEN, target, payload, itype))
    assert verdict(stanza, sender_nick, target, present) is expected


def split_vesa(net: Net) -> None:
    link = net.master.distribution.link(ROOM, slave_jid(VESA))
    net.down.add(VESA)
    net.tick(link.keepalive)
    net.tick(link.keepalive)
    assert net.slaves[VESA].links[ROOM].state is LinkState.SPLIT


def answer_of(net: Net, sender: str, xml: str) -> str:
    """What `sender` gets for `xml`, asserting it is exactly one stanza."""
    net.take(sender)
    net.user_sends(xml)
    [got] = net.take(sender)
    return got.toXml()


def masters_answer(net: Net, xml: str) -> str:
    """The master's own answer to the same stanza (as if it had reached it)."""
    out = net.master.receive(parse(xml), net.now)
    [delivery] = out.deliveries
    return delivery.stanza.toXml()


@pytest.mark.parametrize("split", [False, True])
def test_the_slave_answers_a_local_occupants_self_ping_as_the_master_does(split):
    net = occupied_net()
    if split:
        split_vesa(net)
    before = sum(net.s2s.values())
    xml = iq_xml(EFCHEN, "Efchen")
    got = answer_of(net, EFCHEN, xml)
    assert sum(net.s2s.values()) == before  # no round trip to the master
    assert parse(got)["type"] == "result"
    assert parse(got)["from"] == f"{ROOM}/Efchen"
    assert got == masters_answer(net, xml)  # the master answers the same, byte for byte


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("payload", [PING, VERSION])
def test_a_local_non_occupant_gets_the_masters_not_acceptable(split, payload):
    net = occupied_net()
    if split:
        split_vesa(net)
    before = sum(net.s2s.values())
    for target in ("Efchen", "WiZ", "Nobody"):  # own nick from another resource, others
        xml = iq_xml(EFCHEN_PHONE, target, payload)
        got = answer_of(net, EFCHEN_PHONE, xml)
        assert error_condition(parse(got)) == "not-acceptable"
        assert got == masters_answer(net, xml)
    assert sum(net.s2s.values()) == before


def test_a_ping_to_another_occupant_is_relayed_through_the_master():
    net = occupied_net()
    net.user_sends(iq_xml(EFCHEN, "WiZ", iq_id="p2"))
    [relayed] = net.take(WIZ)  # from Efchen's occupant JID, to WiZ's client
    assert relayed["from"] == f"{ROOM}/Efchen"
    net.user_sends(f"<iq type='result' id='{relayed['id']}' from='{WIZ}' "
                   f"to='{ROOM}/Efchen'/>")
    [answer] = net.take(EFCHEN)
    assert (answer["type"], answer["id"], answer["from"]) == ("result", "p2", f"{ROOM}/WiZ")


def test_during_a_split_a_ping_to_another_occupant_still_times_out():
    net = occupied_net()
    split_vesa(net)
    got = parse(answer_of(net, EFCHEN, iq_xml(EFCHEN, "WiZ")))
    assert error_condition(got) == "remote-server-timeout"


def test_a_join_on_its_way_is_left_to_the_master():
    net = occupied_net()
    net.pause("avalon.irc")  # the join and the ping both wait at the master
    net.user_sends(f"<presence from='{EFCHEN_PHONE}' to='{ROOM}/Efchen2'/>")
    net.user_sends(iq_xml(EFCHEN_PHONE, "Efchen2"))
    assert not net.take(EFCHEN_PHONE)  # the slave did not answer it
    net.resume("avalon.irc")
    got = [s for s in net.take(EFCHEN_PHONE) if s.name == "iq"]
    assert [(s["type"], s["from"]) for s in got] == [("result", f"{ROOM}/Efchen2")]


def test_a_direct_users_self_ping_is_unchanged():
    net = occupied_net()
    got = parse(answer_of(net, DIRECT, iq_xml(DIRECT, "Ludwig")))
    assert (got["type"], got["from"]) == ("result", f"{ROOM}/Ludwig")
    got = parse(answer_of(net, "ludwig@efnet.irc/other", iq_xml("ludwig@efnet.irc/other",
                                                                   "Ludwig")))
    assert error_condition(got) == "not-acceptable"


def test_a_troy_who_never_joined_is_refused_by_his_own_slave():
    net = occupied_net()
    before = sum(net.s2s.values())
    got = parse(answer_of(net, TROY, iq_xml(TROY, "WiZ")))
    assert error_condition(got) == "not-acceptable"
    assert got["from"] == f"{ROOM}/WiZ"
    assert sum(net.s2s.values()) == before
