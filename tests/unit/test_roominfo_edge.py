"""The room's disco#info and vCard at the edge (docs/protocol.md §4.18): one rule
(protocol/roominfo.py) on the master and on each slave, which answers its local users'
gets from the mirror the master keeps current (snapshot, config change, vCard change),
with the master's very answer, no s2s stanza, and during a netsplit too. What a room
hides stays hidden: the answer is the same for an occupant, a member and a stranger, as
mod_muc 0.12.3's get_disco_info."""

from __future__ import annotations

import pytest

from dmuc.protocol.roominfo import RoomInfoIq, kind
from dmuc.slave.room import SlaveRoom
from tests.unit.dmuc_net import Net
from tests.unit.muc_helpers import EFCHEN, ROOM, WUMPUS, error_condition, parse
from tests.unit.test_occupant_id_vcard import VCARD, occupied_net
from tests.unit.test_self_ping_edge import answer_of, masters_answer, split_vesa

MEMBER = "newbie@vesa.yeggmaex.irc/laptop"  # a member of the room, not in it
STRANGER = "someone@vesa.yeggmaex.irc/tty"  # neither
DISCO = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
VCARD_GET = "<vCard xmlns='vcard-temp'/>"
OWNER_NS = "http://jabber.org/protocol/muc#owner"


def get(sender: str, payload: str, iq_id: str = "g1") -> str:
    return f"<iq type='get' id='{iq_id}' from='{sender}' to='{ROOM}'>{payload}</iq>"


@pytest.mark.parametrize(("xml", "expected"), [
    (get(EFCHEN, DISCO), RoomInfoIq.DISCO_INFO),
    (get(EFCHEN, "<query xmlns='http://jabber.org/protocol/disco#info' "
                 "node='x-roomuser-item'/>"), RoomInfoIq.OTHER),  # asker-dependent
    (get(EFCHEN, "<query xmlns='http://jabber.org/protocol/disco#info' node=''/>"),
     RoomInfoIq.OTHER),
    (get(EFCHEN, VCARD_GET), RoomInfoIq.VCARD),
    (get(EFCHEN, VCARD_GET).replace("type='get'", "type='set'"), RoomInfoIq.OTHER),
    (get(EFCHEN, DISCO).replace("type='get'", "type='set'"), RoomInfoIq.OTHER),
    (get(EFCHEN, DISCO + VCARD_GET), RoomInfoIq.OTHER),  # two payloads: the master's
    (get(EFCHEN, "<query xmlns='http://jabber.org/protocol/disco#items'/>"),
     RoomInfoIq.OTHER),
    (get(EFCHEN, "<vcard xmlns='vcard-temp'/>"), RoomInfoIq.OTHER),  # not a vCard
])
def test_the_rule(xml, expected):
    assert kind(parse(xml)) is expected


def configure(net: Net, fields: dict[str, str]) -> None:
    """The owner (Wumpus, behind killrc) submits the configuration form."""
    inner = "".join(f"<field var='{var}'><value>{value}</value></field>"
                    for var, value in fields.items())
    net.user_sends(f"<iq type='set' id='c1' from='{WUMPUS}' to='{ROOM}'><query "
                   f"xmlns='{OWNER_NS}'><x xmlns='jabber:x:data' type='submit'>"
                   "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig"
                   f"</value></field>{inner}</x></query></iq>")
    got = [s for s in net.take(WUMPUS) if s.name == "iq" and s["id"] == "c1"]
    assert [s["type"] for s in got] == ["result"], got[0].toXml()


def make_member(net: Net, jid: str) -> None:
    net.user_sends(f"<iq type='set' id='m1' from='{WUMPUS}' to='{ROOM}'><query "
                   "xmlns='http://jabber.org/protocol/muc#admin'><item affiliation='member' "
                   f"jid='{jid.split('/')[0]}'/></query></iq>")
    assert [s["type"] for s in net.take(WUMPUS) if s.name == "iq"] == ["result"]


KINDS = {
    "public": {"muc#roomconfig_roomname": "Wallops", "muc#roomconfig_roomdesc": "ops"},
    "hidden": {"muc#roomconfig_publicroom": "0", "muc#roomconfig_roomname": "Secret"},
    "members-only": {"muc#roomconfig_membersonly": "1", "muc#roomconfig_publicroom": "0"},
    "password": {"muc#roomconfig_passwordprotectedroom": "1",
                 "muc#roomconfig_roomsecret": "sekrit"},
}


def the_same_from_the_slave(net: Net, xml: str, sender: str) -> str:
    """The slave's answer, which must be the master's byte for byte and cross no s2s."""
    before = sum(net.s2s.values())
    got = answer_of(net, sender, xml)
    assert sum(net.s2s.values()) == before, "the answer came from the master"
    assert got == masters_answer(net, xml)
    return got


@pytest.mark.parametrize("split", [False, True])
@pytest.mark.parametrize("room_kind", sorted(KINDS))
def test_the_slave_answers_disco_info_and_the_vcard_as_the_master(room_kind, split):
    net = occupied_net()  # Efchen (vesa) is in; Wumpus (killrc) owns it
    for member in (MEMBER, EFCHEN):  # Efchen stays in a members-only room
        make_member(net, member)
    configure(net, KINDS[room_kind])
    net.user_sends(f"<iq type='set' id='v' from='{WUMPUS}' to='{ROOM}'>{VCARD}</iq>")
    net.take(WUMPUS)
    if split:
        split_vesa(net)
    for sender in (EFCHEN, MEMBER, STRANGER):
        info = the_same_from_the_slave(net, get(sender, DISCO), sender)
        assert "muc#roominfo_occupants" in info
        assert "sekrit" not in info  # a password is never shown
        vcard = the_same_from_the_slave(net, get(sender, VCARD_GET), sender)
        assert "<FN>Wallops</FN>" in vcard


def test_the_mirror_follows_config_and_vcard_changes_and_joins():
    net = occupied_net()
    before = the_same_from_the_slave(net, get(EFCHEN, DISCO), EFCHEN)
    assert error_condition(parse(the_same_from_the_slave(
        net, get(EFCHEN, VCARD_GET), EFCHEN))) == "item-not-found"  # no vCard yet
    configure(net, {"muc#roomconfig_roomname": "Renamed", "muc#roomconfig_moderatedroom": "1"})
    after = the_same_from_the_slave(net, get(EFCHEN, DISCO), EFCHEN)
    assert after != before and "Renamed" in after and "muc_moderated" in after
    net.user_sends(f"<iq type='set' id='v' from='{WUMPUS}' to='{ROOM}'>{VCARD}</iq>")
    with_avatar = the_same_from_the_slave(net, get(EFCHEN, DISCO), EFCHEN)
    assert "muc#roominfo_avatarhash" in with_avatar and with_avatar != after
    the_same_from_the_slave(net, get(EFCHEN, VCARD_GET), EFCHEN)
    net.join("new@vesa.yeggmaex.irc/x", "Newcomer", ROOM)  # the count moves
    joined = the_same_from_the_slave(net, get(EFCHEN, DISCO), EFCHEN)
    assert "<value>5</value>" in joined


def test_a_change_during_a_split_reaches_the_mirror_at_the_netjoin():
    net = occupied_net()
    split_vesa(net)
    configure(net, {"muc#roomconfig_roomname": "Split-time name"})
    net.user_sends(f"<iq type='set' id='v' from='{WUMPUS}' to='{ROOM}'>{VCARD}</iq>")
    stale = answer_of(net, EFCHEN, get(EFCHEN, DISCO))  # what the slave had
    assert "Split-time name" not in stale
    net.down.clear()
    for _ in range(4):
        net.tick(15)
    the_same_from_the_slave(net, get(EFCHEN, DISCO), EFCHEN)
    the_same_from_the_slave(net, get(EFCHEN, VCARD_GET), EFCHEN)


def test_without_every_roles_presence_the_master_answers():
    """The slave's roster cannot count occupants whose presence is not broadcast: the
    master keeps that room's disco#info (the vCard stays at the edge)."""
    net = occupied_net()
    configure(net, {"muc#roomconfig_presencebroadcast": "moderator"})
    before = sum(net.s2s.values())
    got = answer_of(net, EFCHEN, get(EFCHEN, DISCO))
    assert sum(net.s2s.values()) == before + 1  # the master's answer crossed
    assert parse(got)["type"] == "result"
    configure(net, {"muc#roomconfig_presencebroadcast": "visitor"})  # form: a list
    the_same_from_the_slave(net, get(EFCHEN, VCARD_GET), EFCHEN)


def test_sets_and_nodes_still_go_to_the_master():
    net = occupied_net()
    before = sum(net.s2s.values())
    node = "<query xmlns='http://jabber.org/protocol/disco#info' node='x-roomuser-item'/>"
    answer_of(net, EFCHEN, get(EFCHEN, node))
    assert sum(net.s2s.values()) == before + 1


def test_the_mirror_survives_a_slave_restart():
    net = occupied_net()
    net.user_sends(f"<iq type='set' id='v' from='{WUMPUS}' to='{ROOM}'>{VCARD}</iq>")
    room = net.slaves["vesa.yeggmaex.irc"].rooms[ROOM]
    restored = SlaveRoom.from_state(ROOM, room.to_state())
    assert restored.info_xml is not None and restored.info_xml == room.info_xml
    assert restored.vcard_known and restored.vcard_xml == room.vcard_xml
    assert "<FN>Wallops</FN>" in restored.vcard_xml
