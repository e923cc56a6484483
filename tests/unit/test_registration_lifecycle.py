"""A slave's registration for a room lives as long as one of its users is in the room
(docs/protocol.md §4.12): it ends when the last local session leaves for any reason (quit,
kick, ban, a refused join) and when the room is destroyed; a registration for a room that
does not exist brings nothing of a destroyed room back."""

from __future__ import annotations

import pytest

from dmuc.protocol import stanzas
from tests.unit.dmuc_net import Net, slave_jid
from tests.unit.muc_helpers import BIGCHEESE, EFCHEN, ROOM

VESA = "vesa.yeggmaex.irc"
OWNER = "ludwig@efnet.irc/vt100"  # a direct user (no slave on efnet.irc)
ADMIN_NS = "http://jabber.org/protocol/muc#admin"
OWNER_NS = "http://jabber.org/protocol/muc#owner"


def registered(net: Net) -> tuple[bool, bool]:
    """Whether the slave mirrors the room, and whether the master has it registered."""
    return (ROOM in net.slaves[VESA].rooms,
            net.master.distribution.link(ROOM, slave_jid(VESA)) is not None)


def owner_room(**config: str) -> Net:
    net = Net()
    net.join(OWNER, "Ludwig", ROOM)
    for var, value in config.items():
        net.user_sends(
            f"<iq from='{OWNER}' to='{ROOM}' type='set' id='c-{var}'><query xmlns='{OWNER_NS}'>"
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
            "http://jabber.org/protocol/muc#roomconfig</value></field>"
            f"<field var='muc#roomconfig_{var}'><value>{value}</value></field></x>"
            "</query></iq>")
    net.take(OWNER)
    return net


def admin(net: Net, item: str) -> None:
    net.user_sends(f"<iq from='{OWNER}' to='{ROOM}' type='set' id='a1'>"
                   f"<query xmlns='{ADMIN_NS}'>{item}</query></iq>")
    [answer] = [s for s in net.take(OWNER) if s.name == "iq"]
    assert answer["type"] == "result", answer.toXml()


def after_a_while(net: Net) -> None:
    net.tick(net.slaves[VESA].settings.keepalive + 1)


def quit_(net: Net) -> None:
    net.user_sends(f"<presence from='{EFCHEN}' to='{ROOM}/Efchen' type='unavailable'/>")


def kick(net: Net) -> None:
    admin(net, "<item nick='Efchen' role='none'/>")


def ban(net: Net) -> None:
    admin(net, f"<item jid='{EFCHEN.split('/')[0]}' affiliation='outcast'/>")


def destroy(net: Net) -> None:
    net.user_sends(f"<iq from='{OWNER}' to='{ROOM}' type='set' id='d1'>"
                   f"<query xmlns='{OWNER_NS}'><destroy/></query></iq>")


@pytest.mark.parametrize("leave", [quit_, kick, ban, destroy])
def test_the_registration_ends_with_the_last_local_session(leave):
    net = owner_room()
    net.join(EFCHEN, "Efchen", ROOM)
    assert registered(net) == (True, True)
    leave(net)
    after_a_while(net)
    assert registered(net) == (False, False)
    gone = [s for s in net.take(EFCHEN) if s.name == "presence"
            and s.getAttribute("type") == "unavailable"]
    assert [s["from"] for s in gone][-1:] == [f"{ROOM}/Efchen"]


def _nick_taken(net: Net) -> str:
    return "Ludwig"


def _banned(net: Net) -> str:
    admin(net, f"<item jid='{EFCHEN.split('/')[0]}' affiliation='outcast'/>")
    return "Efchen"


def _members_only(net: Net) -> str:
    net.user_sends(
        f"<iq from='{OWNER}' to='{ROOM}' type='set' id='m1'><query xmlns='{OWNER_NS}'>"
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
        "http://jabber.org/protocol/muc#roomconfig</value></field>"
        "<field var='muc#roomconfig_membersonly'><value>1</value></field></x></query></iq>")
    net.take(OWNER)
    return "Efchen"


@pytest.mark.parametrize("refusal,condition", [(_nick_taken, "conflict"),
                                               (_banned, "forbidden"),
                                               (_members_only, "registration-required")])
def test_a_refused_join_leaves_no_registration(refusal, condition):
    net = owner_room()
    nick = refusal(net)
    net.join(EFCHEN, nick, ROOM)
    errors = [stanzas.error_condition(s) for s in net.take(EFCHEN)
              if s.getAttribute("type") == "error"]
    assert errors == [condition]
    after_a_while(net)
    assert registered(net) == (False, False)


def test_a_quiet_registration_for_a_room_that_is_gone_is_dropped():
    """A slave that kept a registration without users (an old slave, or one that missed
    the destroy during a split) is told of the destroy, or, registering again for a room
    that no longer exists, gets an empty snapshot and unregisters."""
    net = owner_room()
    net.join(EFCHEN, "Efchen", ROOM)
    vesa = net.slaves[VESA]
    net.down.add(VESA)  # it misses the destroy
    destroy(net)
    net.down.clear()
    for _ in range(6):
        net.tick(vesa.settings.keepalive)
    assert registered(net) == (False, False)


def test_a_recreated_room_shows_none_of_the_destroyed_rooms_subject():
    """The repro of issue 16: a direct owner creates a room and sets a subject; a user
    behind a slave joins; the owner bans that user, then destroys the room; later the room
    is created again and another user of that slave joins: no old subject."""
    net = owner_room()
    net.user_sends(f"<message from='{OWNER}' to='{ROOM}' type='groupchat'>"
                   "<subject>OLD SUBJECT</subject></message>")
    net.join(EFCHEN, "Efchen", ROOM)
    ban(net)
    destroy(net)
    net.tick(60)
    net.join(OWNER, "Ludwig", ROOM)
    net.join(BIGCHEESE, "BigCheese", ROOM)
    subjects = [stanzas.child(s, "subject") for s in net.take(BIGCHEESE) if s.name == "message"]
    assert [str(s) for s in subjects if s is not None] == [""]
    assert registered(net) == (True, True)
    assert stanzas.child(net.slaves[VESA].rooms[ROOM].subject, "subject", None) is not None
