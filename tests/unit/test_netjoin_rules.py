"""The rules the master enforces at a netjoin (docs/protocol.md §4.11.3): the master is the
one authority; a slave never grants a nickname, a role or an affiliation on its own, so
nothing done on the split side can take over the room."""

from __future__ import annotations

from dmuc import xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from dmuc.slave.link import LinkState
from tests.unit.dmuc_net import Net, slave_jid
from tests.unit.muc_helpers import BIGCHEESE, EFCHEN, ROOM, WIZ, WUMPUS, error_condition

VESA = "vesa.yeggmaex.irc"
DIRECT = "ludwig@efnet.irc/vt100"


def room_with_a_split_slave() -> Net:
    """Wumpus (killrc, owner), WiZ (eris), Efchen (vesa); then vesa is split off."""
    net = Net()
    net.join(WUMPUS, "Wumpus", ROOM)
    net.join(WIZ, "WiZ", ROOM)
    net.join(EFCHEN, "Efchen", ROOM)
    for who in (WUMPUS, WIZ, EFCHEN):
        net.take(who)
    link = net.master.distribution.link(ROOM, slave_jid(VESA))
    net.down.add(VESA)
    net.tick(link.keepalive)
    net.tick(link.keepalive)
    assert link.split and net.slaves[VESA].links[ROOM].state is LinkState.SPLIT
    return net


def heal(net: Net) -> None:
    net.down.clear()
    for _ in range(4):
        net.tick(15)
    assert net.slaves[VESA].links[ROOM].state is LinkState.LIVE


def test_a_nick_taken_on_the_master_side_during_the_split_stays_with_its_holder():
    """BigCheese (vesa) asks for 'Troy' during the split: the slave grants nothing, the
    join waits; meanwhile a direct user takes 'Troy'. At the netjoin the master, the one
    authority, refuses BigCheese's join (conflict) — IRC would kill both."""
    net = room_with_a_split_slave()
    net.join(BIGCHEESE, "Troy", ROOM)
    assert net.take(BIGCHEESE) == []  # no local grant, no error yet: it waits
    net.join(DIRECT, "Troy", ROOM)
    heal(net)
    replies = [s for s in net.take(BIGCHEESE) if s.name == "presence"]
    assert [error_condition(s) for s in replies] == ["conflict"]
    room = net.master.rooms[ROOM]
    assert room.occupants["Troy"].bare_jid == DIRECT.split("/")[0]
    assert "Troy" in net.slaves[VESA].rooms[ROOM].roster  # the slave learns the winner


def test_moderation_from_a_split_slave_waits_for_the_netjoin_and_is_never_applied_locally():
    """A local moderator's kick during the split is answered remote-server-timeout at once
    (an IQ cannot wait); nothing changes on either side."""
    net = Net()
    net.join(EFCHEN, "Efchen", ROOM)  # the room's creator: owner, moderator, on vesa
    net.join(WIZ, "WiZ", ROOM)
    net.join(BIGCHEESE, "BigCheese", ROOM)
    for who in (WIZ, EFCHEN, BIGCHEESE):
        net.take(who)
    link = net.master.distribution.link(ROOM, slave_jid(VESA))
    net.down.add(VESA)
    net.tick(link.keepalive)
    net.tick(link.keepalive)
    net.user_sends(f"<iq type='set' id='k1' from='{EFCHEN}' to='{ROOM}'>"
                   f"<query xmlns='{xmlns.MUC_ADMIN}'><item nick='BigCheese' role='none'/>"
                   "</query></iq>")
    [answer] = net.take(EFCHEN)
    assert answer["type"] == "error" and error_condition(answer) == "remote-server-timeout"
    assert "BigCheese" in net.slaves[VESA].rooms[ROOM].roster
    heal(net)
    assert {"Efchen", "WiZ", "BigCheese"} <= set(net.master.rooms[ROOM].occupants)


def test_what_a_user_banned_during_the_split_said_meanwhile_never_reaches_the_room():
    """Efchen is banned on the master side while vesa is split; Efchen's held messages are
    refused at the netjoin (shown only on vesa, provisionally, while split)."""
    net = room_with_a_split_slave()
    net.user_sends(f"<message from='{EFCHEN}' to='{ROOM}' type='groupchat' id='s1'>"
                   "<body>from the far side</body></message>")
    net.user_sends(f"<iq type='set' id='b1' from='{WUMPUS}' to='{ROOM}'>"
                   f"<query xmlns='{xmlns.MUC_ADMIN}'><item affiliation='outcast' "
                   "jid='msa@vesa.yeggmaex.irc'/></query></iq>")
    net.take(WIZ)
    heal(net)
    bodies = [str(stanzas.child(m, "body")) for m in net.take(WIZ)
              if m.name == "message" and stanzas.child(m, "body") is not None]
    assert bodies == []
    assert "Efchen" not in net.master.rooms[ROOM].occupants
    assert net.master.rooms[ROOM].affiliation("msa@vesa.yeggmaex.irc") == "outcast"


def test_a_split_in_the_middle_of_a_snapshot_shows_nothing_twice():
    """The link dies after <resync/> and half the roster and history: the next snapshot
    is compared with what local occupants were last told, not with the half one."""
    net = Net()
    net.join(WUMPUS, "Wumpus", ROOM)
    net.join(WIZ, "WiZ", ROOM)
    net.join(EFCHEN, "Efchen", ROOM)
    for n in range(5):
        net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat' id='m{n}'>"
                       f"<body>m{n}</body></message>")
    for who in (WUMPUS, WIZ, EFCHEN):
        net.take(who)
    vesa = net.slaves[VESA]
    link = net.master.distribution.link(ROOM, slave_jid(VESA))
    out = Outbox(net.now)
    net.master.distribution.snapshot(link, out)
    stanzas_sent = [d.stanza for d in out.deliveries]
    half = len(stanzas_sent) // 2
    for stanza in stanzas_sent[:half]:  # the rest is lost: the link dies here
        copy = stanzas.copy(stanza)
        copy["to"] = vesa.jid
        net._route(vesa.receive(copy, net.now), source=vesa.jid)
    bounce = stanzas.new("message", {"from": ROOM, "to": vesa.jid, "type": "error"})
    net._route(vesa.receive(bounce, net.now), source=vesa.jid)
    assert vesa.links[ROOM].state is LinkState.SPLIT
    heal(net)
    assert [s for s in net.take(EFCHEN) if s.name in ("presence", "message")] == []
    net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat' id='after'>"
                   "<body>after</body></message>")
    assert [str(stanzas.child(m, "body")) for m in net.take(EFCHEN)] == ["after"]
