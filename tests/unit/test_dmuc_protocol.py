"""XEP-0282 master and slaves, core to core: §4 and the use cases of §5, stanza by stanza."""

from __future__ import annotations

from dmuc import xmlns
from dmuc.protocol import stanzas, xep0282
from dmuc.slave.link import LinkState
from dmuc.slave.room import SlaveRoom
from dmuc.slave.service import SlaveService
from tests.unit.dmuc_net import Net, slave_jid
from tests.unit.muc_helpers import (
    BIGCHEESE,
    EFCHEN,
    PHAEDRUS,
    ROOM,
    TROY,
    VALDIS,
    WIZ,
    WUMPUS,
    codes,
    item,
    parse,
)

DIRECT = "ludwig@efnet.irc/vt100"  # a user whose server has no slave
TEXT = "Phaedrus, we're all having a truly rotten time."


def occupied_room() -> Net:
    net = Net()
    net.join(WUMPUS, "Wumpus", ROOM)
    for who, nick in ((VALDIS, "Valdis"), (PHAEDRUS, "Phaedrus"), (WIZ, "WiZ"), (TROY, "Troy"),
                      (EFCHEN, "Efchen")):
        net.join(who, nick, ROOM)
    for who in (WUMPUS, VALDIS, PHAEDRUS, WIZ, TROY, EFCHEN):
        net.take(who)
    net.s2s.clear()
    return net


def dmuc_x(stanza):
    return stanzas.child(stanza, "x", xmlns.DMUC)


def test_first_local_join_registers_the_slave_and_enters_through_it():
    net = Net()
    net.join(BIGCHEESE, "BigCheese", ROOM)
    link = net.master.distribution.link(ROOM, slave_jid("vesa.yeggmaex.irc"))
    assert link is not None and not link.split
    got = net.take(BIGCHEESE)
    own = [s for s in got if s.name == "presence"]
    assert [s["from"] for s in own] == [f"{ROOM}/BigCheese"]  # (no avatar presence: none)
    assert {"110", "201"} <= codes(own[0])
    assert all(dmuc_x(s) is None for s in got)  # the slave strips its protocol element
    subject = [s for s in got if s.name == "message"]
    assert stanzas.child(subject[-1], "subject") is not None


def test_entering_a_room_listings_8_to_15():
    net = occupied_room()
    for n in range(3):
        net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat'><body>h{n}</body>"
                       "</message>")
    for who in (WUMPUS, VALDIS, PHAEDRUS, WIZ, TROY, EFCHEN):
        net.take(who)
    net.s2s.clear()
    net.join(BIGCHEESE, "BigCheese", ROOM, "<history maxstanzas='2'/>")
    # Listing 8: one presence per slave server crosses s2s (vesa also gets the ENTER).
    assert net.s2s[("killrc.oulubox.irc", "presence")] == 1
    assert net.s2s[("eris.dclxvii.irc", "presence")] == 1
    assert net.s2s[("vesa.yeggmaex.irc", "presence")] == 2  # the update and the ENTER
    # Listings 9/10: each slave distributes the update to its users, without real JIDs
    # for participants (semi-anonymous room), with them for moderators.
    for who in (VALDIS, PHAEDRUS):
        [p] = net.take(who)
        assert p["from"] == f"{ROOM}/BigCheese" and "jid" not in item(p)
    [p] = net.take(WUMPUS)  # owner, moderator
    assert item(p)["jid"] == BIGCHEESE
    # Listings 13-15: roster, own presence, history, subject, in that order.
    got = net.take(BIGCHEESE)
    kinds = [(s.name, s["from"].split("/")[-1]) for s in got]
    roster = [nick for kind, nick in kinds if kind == "presence"]
    assert roster == ["Wumpus", "Valdis", "Phaedrus", "WiZ", "Troy", "Efchen", "BigCheese"]
    assert "110" in codes(got[6])
    history = got[7:9]
    assert [str(stanzas.child(m, "body")) for m in history] == ["h1", "h2"]
    assert all(stanzas.child(m, "delay", xmlns.DELAY) is not None for m in history)
    assert stanzas.child(got[9], "subject") is not None
    assert len(got) == 10


def test_a_slave_gives_a_join_without_limits_the_rooms_default_history():
    """mod_muc's default_history_messages behind a slave: the ENTER carries what the
    master would select by (a join without limits: the room's default number)."""
    net = occupied_room()
    net.user_sends(
        f"<iq type='set' id='c1' from='{WUMPUS}' to='{ROOM}'>"
        f"<query xmlns='{xmlns.MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value>"
        "</field><field var='muc#roomconfig_defaulthistorymessages'><value>2</value>"
        "</field></x></query></iq>")
    for n in range(4):
        net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat'><body>h{n}</body>"
                       "</message>")
    net.join(BIGCHEESE, "BigCheese", ROOM)
    history = [str(stanzas.child(m, "body")) for m in net.take(BIGCHEESE)
               if m.name == "message" and stanzas.child(m, "body") is not None]
    assert history == ["h2", "h3"]


def test_sending_a_message_to_all_occupants_listings_16_to_20():
    net = occupied_room()
    net.join(BIGCHEESE, "BigCheese", ROOM)
    net.join(DIRECT, "Ludwig", ROOM)
    for who in (WUMPUS, VALDIS, PHAEDRUS, WIZ, TROY, EFCHEN, BIGCHEESE, DIRECT):
        net.take(who)
    net.s2s.clear()
    net.user_sends(f"<message from='{BIGCHEESE}' to='{ROOM}' type='groupchat' id='r1'>"
                   f"<body>{TEXT}</body></message>")
    # Listing 17: exactly one copy per slave server, one per direct remote occupant.
    assert net.s2s == {("killrc.oulubox.irc", "message"): 1, ("eris.dclxvii.irc", "message"): 1,
                       ("vesa.yeggmaex.irc", "message"): 1, ("efnet.irc", "message"): 1}
    # Listings 18-20: every occupant gets it from the room, without the dmuc element.
    for who in (WUMPUS, VALDIS, PHAEDRUS, WIZ, TROY, BIGCHEESE, EFCHEN, DIRECT):
        [m] = net.take(who)
        assert m["from"] == f"{ROOM}/BigCheese" and str(stanzas.child(m, "body")) == TEXT
        assert dmuc_x(m) is None
    # §4.9: the slave stored it as history with the master's timestamp.
    vesa = net.slaves["vesa.yeggmaex.irc"].rooms[ROOM]
    assert str(stanzas.child(vesa.history[-1].stanza, "body")) == TEXT


def test_leave_goes_through_the_slave_first():
    net = occupied_room()
    net.join(BIGCHEESE, "BigCheese", ROOM)
    net.take(BIGCHEESE)
    net.take(EFCHEN)
    net.user_sends(f"<presence from='{BIGCHEESE}' to='{ROOM}/BigCheese' type='unavailable'/>")
    [own] = net.take(BIGCHEESE)
    assert own["type"] == "unavailable" and "110" in codes(own)
    [seen] = net.take(EFCHEN)
    assert seen["type"] == "unavailable" and "110" not in codes(seen)
    vesa = net.slaves["vesa.yeggmaex.irc"].rooms[ROOM]
    assert BIGCHEESE not in vesa.local and "BigCheese" not in vesa.roster
    assert ROOM in net.master.rooms and "BigCheese" not in net.master.rooms[ROOM].occupants


def test_master_never_sends_real_jids_to_a_slave_without_moderators():
    net = occupied_room()
    net.s2s.clear()
    net.join(BIGCHEESE, "BigCheese", ROOM)
    eris = net.slaves["eris.dclxvii.irc"].rooms[ROOM]
    vesa = net.slaves["vesa.yeggmaex.irc"].rooms[ROOM]
    killrc = net.slaves["killrc.oulubox.irc"].rooms[ROOM]
    assert "jid" not in item(vesa.roster["Wumpus"].presence())  # vesa has no moderator
    assert vesa.roster["Wumpus"].jid is None
    assert "jid" not in item(eris.roster["BigCheese"].presence())
    assert item(killrc.roster["BigCheese"].presence())["jid"] == BIGCHEESE  # Wumpus moderates
    assert killrc.roster["BigCheese"].jid == BIGCHEESE


def test_own_presence_behind_a_slave_shows_own_real_jid_even_when_hidden():
    """As mod_muc: an occupant always sees its own presence with its own real JID; behind
    a slave without moderators (no real JIDs from the master, §4.7) and when its role's
    presence is not broadcast (then no slave gets it: the master sends the own copy)."""
    net = occupied_room()
    net.join(BIGCHEESE, "BigCheese", ROOM)
    net.take(BIGCHEESE)
    net.user_sends(f"<presence from='{BIGCHEESE}' to='{ROOM}/BigCheese'><show>away</show>"
                   "</presence>")
    [own] = [p for p in net.take(BIGCHEESE) if "110" in codes(p)]
    assert item(own)["jid"] == BIGCHEESE
    room = net.master.rooms[ROOM]
    room.config.presence_broadcast = ["moderator"]
    net.take(VALDIS)
    net.user_sends(f"<presence from='{BIGCHEESE}' to='{ROOM}/BigCheese'><show>dnd</show>"
                   "</presence>")
    [own] = net.take(BIGCHEESE)
    assert "110" in codes(own) and item(own)["jid"] == BIGCHEESE
    assert str(stanzas.child(own, "show")) == "dnd"
    assert [p for p in net.take(VALDIS) if p["from"] == f"{ROOM}/BigCheese"] == []


def test_a_nick_failing_strict_validation_is_answered_by_the_slave_as_by_the_master():
    """The one stanza that got no answer: behind a slave, a join whose nick fails strict
    resourceprep (U+1F916). Answered as the master answers it, as mod_muc."""
    net = occupied_room()
    nick = "bot\U0001F916"
    for who in (BIGCHEESE, TROY):  # behind vesa's slave; behind eris's (registered)
        net.join(who, nick, ROOM)
        [err] = net.take(who)
        assert err["type"] == "error" and err["from"] == f"{ROOM}/{nick}"
        error = stanzas.child(err, "error")
        assert error["by"] == ROOM and stanzas.error_condition(err) == "jid-malformed"
        assert str(stanzas.child(error, "text")) == "Nickname must pass strict validation"


def test_private_messages_cross_servers_both_ways():
    net = occupied_room()
    net.join(BIGCHEESE, "BigCheese", ROOM)
    net.take(BIGCHEESE)
    net.take(VALDIS)
    net.user_sends(f"<message from='{BIGCHEESE}' to='{ROOM}/Valdis' type='chat'>"
                   "<body>psst</body></message>")
    [pm] = net.take(VALDIS)
    assert pm["from"] == f"{ROOM}/BigCheese"
    net.user_sends(f"<message from='{VALDIS}' to='{ROOM}/BigCheese' type='chat'>"
                   "<body>what</body></message>")
    [pm] = net.take(BIGCHEESE)
    assert pm["from"] == f"{ROOM}/Valdis" and str(stanzas.child(pm, "body")) == "what"


def test_enter_without_directed_presence_is_refused_and_the_master_drops_it():
    net = occupied_room()
    vesa = net.slaves["vesa.yeggmaex.irc"]
    net.join(BIGCHEESE, "BigCheese", ROOM)  # registers vesa's slave
    master_room = net.master.rooms[ROOM]
    # A forged ENTER for Efchen's second resource, which never sent presence.
    forged = stanzas.copy(master_room.presence_of(master_room.occupants["BigCheese"], True,
                                                  ["110"]))
    forged["from"] = f"{ROOM}/Mallory"
    forged["to"] = vesa.jid
    x = forged.addElement((xmlns.DMUC, "x"))
    x.addElement("enter")["jid"] = "msa@vesa.yeggmaex.irc/other"
    out = vesa.receive(forged, net.now)
    assert "msa@vesa.yeggmaex.irc/other" not in vesa.rooms[ROOM].local
    [refusal] = out.deliveries
    assert stanzas.child(dmuc_x(refusal.stanza), "refuse")["jid"] == "msa@vesa.yeggmaex.irc/other"
    assert any("refused ENTER" in line for _, line in out.log)


def test_a_slave_not_allowed_is_refused_and_users_talk_to_the_master_directly():
    net = Net(allowed=("killrc.oulubox.irc", "eris.dclxvii.irc"))
    net.join(WUMPUS, "Wumpus", ROOM)
    net.join(BIGCHEESE, "BigCheese", ROOM)
    assert net.master.distribution.link(ROOM, slave_jid("vesa.yeggmaex.irc")) is None
    assert net.slaves["vesa.yeggmaex.irc"].links[ROOM].state is LinkState.PASSTHROUGH
    got = net.take(BIGCHEESE)
    assert [s["from"].split("/")[-1] for s in got if s.name == "presence"] == [
        "Wumpus", "BigCheese"]
    net.user_sends(f"<message from='{BIGCHEESE}' to='{ROOM}' type='groupchat'>"
                   "<body>hi</body></message>")
    assert [str(stanzas.child(m, "body")) for m in net.take(WUMPUS)[-1:]] == ["hi"]


def test_netsplit_keeps_local_users_talking_and_netjoin_resyncs():
    net = occupied_room()
    net.join(BIGCHEESE, "BigCheese", ROOM)
    for who in (BIGCHEESE, EFCHEN, WUMPUS):
        net.take(who)
    net.down.add("vesa.yeggmaex.irc")
    # The master's broadcast bounces: here the test injects the bounce Prosody would send.
    bounce = stanzas.new("message", {"from": slave_jid("vesa.yeggmaex.irc"), "to": ROOM,
                                     "type": "error"})
    net.master.receive(bounce, net.now)
    link = net.master.distribution.link(ROOM, slave_jid("vesa.yeggmaex.irc"))
    assert link.split
    net.user_sends(f"<message from='{WUMPUS}' to='{ROOM}' type='groupchat' id='w1'>"
                   "<body>during the split</body></message>")
    # The slave notices via a bounced keepalive.
    vesa = net.slaves["vesa.yeggmaex.irc"]
    keepalive = stanzas.new("iq", {"from": ROOM, "to": vesa.jid, "type": "error", "id": "x"})
    out = vesa.receive(keepalive, net.now)
    assert vesa.links[ROOM].state is LinkState.SPLIT
    assert any("netsplit" in line for _, line in out.log)
    net.user_sends(f"<message from='{BIGCHEESE}' to='{ROOM}' type='groupchat' id='b1'>"
                   "<body>still here</body></message>")
    [echo] = net.take(EFCHEN)  # local users keep talking
    assert str(stanzas.child(echo, "body")) == "still here"
    net.take(BIGCHEESE)
    net.down.clear()
    for _ in range(3):
        net.tick(61)
    assert not link.split and vesa.links[ROOM].state is LinkState.LIVE
    missed = [str(stanzas.child(m, "body")) for m in net.take(EFCHEN) if m.name == "message"]
    assert "during the split" in missed  # delivered at the netjoin, never lost
    assert "still here" not in missed  # already shown locally
    later = [str(stanzas.child(m, "body")) for m in net.take(WUMPUS) if m.name == "message"]
    assert "still here" in later  # the held message reached the master at the netjoin


def test_a_slave_without_occupants_gets_no_broadcasts_and_is_refreshed_on_the_next_enter():
    net = occupied_room()
    net.user_sends(f"<presence from='{EFCHEN}' to='{ROOM}/Efchen' type='unavailable'/>")
    net.s2s.clear()
    net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat'><body>unseen</body>"
                   "</message>")
    assert ("vesa.yeggmaex.irc", "message") not in net.s2s  # nobody there to read it
    net.join(BIGCHEESE, "BigCheese", ROOM)
    got = net.take(BIGCHEESE)
    bodies = [str(stanzas.child(m, "body")) for m in got if stanzas.child(m, "body")]
    assert bodies == ["unseen"]  # the refreshed slave has the history it missed
    roster = [s["from"].split("/")[-1] for s in got if s.name == "presence"]
    assert roster == ["Wumpus", "Valdis", "Phaedrus", "WiZ", "Troy", "BigCheese"]


def test_a_restarted_master_gets_its_slaves_and_their_users_back_at_once():
    from dmuc.master.service import MUCService
    from tests.unit.muc_helpers import SERVICE

    net = occupied_room()
    net.join(BIGCHEESE, "BigCheese", ROOM)
    for who in (WUMPUS, VALDIS, PHAEDRUS, WIZ, TROY, EFCHEN, BIGCHEESE):
        net.take(who)
    net.master = MUCService(net.master.settings)  # a restart: the temporary room is gone
    net._route(net.master.connected(net.now), source=SERVICE)
    room = net.master.rooms[ROOM]
    assert set(room.occupants) == {"Wumpus", "Valdis", "Phaedrus", "WiZ", "Troy", "Efchen",
                                   "BigCheese"}
    # The users were not shown a second join: their slaves knew them already.
    assert not [s for s in net.take(BIGCHEESE) if s.name == "message"]
    net.user_sends(f"<message from='{BIGCHEESE}' to='{ROOM}' type='groupchat'>"
                   "<body>back</body></message>")
    for who in (WUMPUS, WIZ, EFCHEN):
        assert "back" in [str(stanzas.child(m, "body")) for m in net.take(who)
                          if m.name == "message"]


def test_a_slave_back_late_after_a_master_restart_gets_all_it_missed():
    """The master restarts; vesa's users talk at once, killrc's slave is cut off until
    later: it registers with a `last` the new master never had, and its users get every
    message said since the restart, not only the newest history-length of them."""
    from dmuc.master.service import MUCService
    from tests.unit.muc_helpers import SERVICE

    net = occupied_room()
    net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat' id='before'>"
                   "<body>before the restart</body></message>")
    assert _bodies(net, WUMPUS) == ["before the restart"]  # killrc's `last` from now on
    net.take(WIZ)
    net.master = MUCService(net.master.settings)  # a restart: the temporary room is gone
    net.down.add("killrc.oulubox.irc")
    net._route(net.master.connected(net.now), source=SERVICE)
    said = [f"while killrc was away {n}" for n in range(30)]  # more than the history (20)
    for n, text in enumerate(said):
        net.user_sends(f"<message from='{EFCHEN}' to='{ROOM}' type='groupchat' id='k{n}'>"
                       f"<body>{text}</body></message>")
    assert _bodies(net, WUMPUS) == []
    assert _bodies(net, WIZ) == said  # eris's slave was back at once
    net.down.clear()
    killrc = net.slaves["killrc.oulubox.irc"]
    for _ in range(12):
        net.tick(killrc.settings.keepalive / 4)
        if killrc.links[ROOM].state is LinkState.LIVE \
                and "Wumpus" in net.master.rooms[ROOM].occupants:
            break
    assert _bodies(net, WUMPUS) == said
    assert _bodies(net, WIZ) == []  # and nothing twice


def test_the_slave_unregisters_when_its_last_local_occupant_leaves():
    net = occupied_room()
    vesa = net.slaves["vesa.yeggmaex.irc"]
    assert net.master.distribution.link(ROOM, vesa.jid) is not None
    net.user_sends(f"<presence from='{EFCHEN}' to='{ROOM}/Efchen' type='unavailable'/>")
    assert ROOM not in vesa.rooms
    assert net.master.distribution.link(ROOM, vesa.jid) is None
    net.s2s.clear()
    net.tick(120)  # no keepalives for a room nobody here is in
    assert ("vesa.yeggmaex.irc", "iq") not in net.s2s
    net.join(BIGCHEESE, "BigCheese", ROOM)  # and the next local join registers again
    assert net.master.distribution.link(ROOM, vesa.jid) is not None
    assert "BigCheese" in net.master.rooms[ROOM].occupants


def test_a_silent_link_is_detected_by_unanswered_keepalives_on_both_sides():
    """A blackholed link (nothing bounces, nothing arrives): each side notices within two
    keepalive intervals, and the netjoin follows once packets flow again."""
    net = occupied_room()
    vesa = net.slaves["vesa.yeggmaex.irc"]
    link = net.master.distribution.link(ROOM, vesa.jid)
    keepalive = link.keepalive
    net.down.add("vesa.yeggmaex.irc")  # drops silently: no error comes back
    net.tick(keepalive)  # both sides ask; nothing arrives
    assert not link.split and vesa.links[ROOM].state is LinkState.LIVE
    net.tick(keepalive)  # two intervals without an answer
    assert link.split and vesa.links[ROOM].state is LinkState.SPLIT
    net.down.clear()
    for _ in range(3):
        net.tick(keepalive / 4)
    assert not link.split and vesa.links[ROOM].state is LinkState.LIVE


def _bodies(net: Net, who: str) -> list[str]:
    return [str(stanzas.child(m, "body")) for m in net.take(who)
            if m.name == "message" and stanzas.child(m, "body") is not None]


def _split_vesa_silently(net: Net) -> None:
    """Cut vesa's link without anything bouncing, and let both sides notice (2 intervals)."""
    link = net.master.distribution.link(ROOM, slave_jid("vesa.yeggmaex.irc"))
    net.down.add("vesa.yeggmaex.irc")
    net.tick(link.keepalive)
    net.tick(link.keepalive)
    assert link.split and net.slaves["vesa.yeggmaex.irc"].links[ROOM].state is LinkState.SPLIT


def _heal(net: Net) -> None:
    net.down.clear()
    link = net.master.distribution.link(ROOM, slave_jid("vesa.yeggmaex.irc"))
    for _ in range(4):
        net.tick(link.keepalive / 4)
    assert not link.split
    assert net.slaves["vesa.yeggmaex.irc"].links[ROOM].state is LinkState.LIVE


def test_netjoin_replays_exactly_the_gap_however_long():
    """50 messages while vesa is split, with a history length of 20: vesa's occupants get
    all 50 at the netjoin, each once, in order (from the master's archive, by stanza-id)."""
    net = occupied_room()
    _split_vesa_silently(net)
    net.take(EFCHEN)
    for n in range(50):
        net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat' id='w{n}'>"
                       f"<body>gap {n}</body></message>")
    _heal(net)
    assert _bodies(net, EFCHEN) == [f"gap {n}" for n in range(50)]
    net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat' id='after'>"
                   "<body>after</body></message>")
    assert _bodies(net, EFCHEN) == ["after"]


def test_a_message_in_flight_when_the_link_silently_dies_is_submitted_again_once():
    net = occupied_room()
    link = net.master.distribution.link(ROOM, slave_jid("vesa.yeggmaex.irc"))
    net.down.add("vesa.yeggmaex.irc")  # not yet noticed by anyone
    net.user_sends(f"<message from='{EFCHEN}' to='{ROOM}' type='groupchat' id='e1'>"
                   "<body>into the void</body></message>")
    assert _bodies(net, WIZ) == []  # lost on the way
    net.tick(link.keepalive)
    net.tick(link.keepalive)
    _heal(net)
    assert _bodies(net, WIZ) == ["into the void"]
    assert _bodies(net, EFCHEN) == ["into the void"]  # its sender sees it once, from the room


def test_a_resubmitted_message_the_master_already_had_is_not_broadcast_twice():
    """The message arrived, its broadcast back was lost: the slave cannot know, submits
    it again at the netjoin, and the master drops the copy."""
    net = occupied_room()
    vesa = net.slaves["vesa.yeggmaex.irc"]
    net.user_sends(f"<message from='{EFCHEN}' to='{ROOM}' type='groupchat' id='e2'>"
                   "<body>once</body></message>")
    sent = stanzas.parse_stanza(f"<message from='{EFCHEN}' to='{ROOM}' type='groupchat' "
                                "id='e2'><body>once</body></message>")
    vesa.rooms[ROOM].inflight[("Efchen", "e2")] = (sent, net.now)  # its echo "was lost"
    assert _bodies(net, WIZ) == ["once"]
    _split_vesa_silently(net)
    _heal(net)
    assert _bodies(net, WIZ) == []
    assert vesa.rooms[ROOM].inflight == {}


def test_what_a_slave_holds_and_where_it_was_survive_its_restart():
    net = occupied_room()
    vesa = net.slaves["vesa.yeggmaex.irc"]
    _split_vesa_silently(net)
    net.user_sends(f"<message from='{EFCHEN}' to='{ROOM}' type='groupchat' id='e3'>"
                   "<body>held</body></message>")
    stored = {**vesa.rooms[ROOM].to_state(), **vesa.links[ROOM].to_state()}
    restarted = SlaveService(vesa.settings)  # killed during the split, started again
    restarted.restore(SlaveRoom.from_state(ROOM, stored, vesa.rooms[ROOM].all_entries()), [],
                      stored)
    net.slaves["vesa.yeggmaex.irc"] = restarted
    net.down.clear()
    net._route(restarted.connected(net.now), source=restarted.jid)
    assert "held" in _bodies(net, WIZ)


def test_a_bounced_forward_splits_at_once_and_its_sender_sees_no_error():
    """mod_dmuc_slave hands the slave Prosody's bounce of a local user's stanza: the room
    is split at once; the groupchat in flight is submitted again, so the user sees no
    error; a bounced private message's error goes on to its sender."""
    net = occupied_room()
    vesa = net.slaves["vesa.yeggmaex.irc"]
    net.down.add("vesa.yeggmaex.irc")
    net.user_sends(f"<message from='{EFCHEN}' to='{ROOM}' type='groupchat' id='e9'>"
                   "<body>bounced</body></message>")
    net.user_sends(f"<message from='{EFCHEN}' to='{ROOM}/WiZ' type='chat' id='p9'>"
                   "<body>psst</body></message>")
    for mid in ("e9", "p9"):
        bounce = stanzas.parse_stanza(
            f"<message from='{ROOM}' to='{EFCHEN}' type='error' id='{mid}'>"
            "<error type='cancel'><remote-server-not-found "
            "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
        net._route(vesa.receive(bounce, net.now), source=vesa.jid)
    assert vesa.links[ROOM].state is LinkState.SPLIT
    errors = [m.getAttribute("id") for m in net.take(EFCHEN) if m.getAttribute("type") == "error"]
    assert errors == ["p9"]
    _heal(net)
    assert _bodies(net, WIZ) == ["bounced"]


def test_a_message_without_an_id_lost_on_the_way_is_submitted_again_once():
    """A client may send groupchat without an id: its slave gives it one, so that a
    message bounced (or silently lost) before the split is noticed is submitted again at
    the netjoin like any other, and its sender sees neither an error nor a copy twice."""
    net = occupied_room()
    vesa = net.slaves["vesa.yeggmaex.irc"]
    net.down.add("vesa.yeggmaex.irc")
    net.user_sends(f"<message from='{EFCHEN}' to='{ROOM}' type='groupchat'>"
                   "<body>no id, bounced</body></message>")
    [(_, given)] = vesa.rooms[ROOM].inflight
    assert given.startswith(xep0282.SLAVE_ID_PREFIX)
    bounce = stanzas.parse_stanza(
        f"<message from='{ROOM}' to='{EFCHEN}' type='error' id='{given}'>"
        "<error type='cancel'><remote-server-not-found "
        "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    net._route(vesa.receive(bounce, net.now), source=vesa.jid)
    got = net.take(EFCHEN)
    assert [m for m in got if m.getAttribute("type") == "error"] == []
    # shown to its sender at once, as any message said during the split
    assert [str(stanzas.child(m, "body")) for m in got] == ["no id, bounced"]
    _heal(net)
    assert _bodies(net, WIZ) == ["no id, bounced"]
    assert _bodies(net, EFCHEN) == []  # and not again


def test_a_held_message_reaches_the_room_with_the_time_it_was_said():
    net = occupied_room()
    _split_vesa_silently(net)
    said_at = net.now
    net.user_sends(f"<message from='{EFCHEN}' to='{ROOM}' type='groupchat' id='h1'>"
                   "<body>said during the split</body></message>")
    net.now += 30
    _heal(net)
    [got] = [m for m in net.take(WIZ) if m.name == "message"]
    delay = stanzas.child(got, "delay", xmlns.DELAY)
    assert delay is not None and delay["from"] == ROOM
    assert stanzas.parse_stamp(delay["stamp"]) == int(said_at)
    assert stanzas.child(got, "x", xmlns.DMUC) is None  # the marker stays between us
    entry = net.master.rooms[ROOM].history[-1]
    assert int(entry.stamp) == int(said_at)
    assert stanzas.child(entry.stanza, "delay", xmlns.DELAY) is None


def test_only_a_session_behind_a_slave_may_claim_when_it_spoke():
    net = occupied_room()
    net.user_sends(f"<message from='{DIRECT}' to='{ROOM}' type='groupchat' id='x'/>")
    net.join(DIRECT, "Ludwig", ROOM)
    net.take(WIZ)
    net.user_sends(f"<message from='{DIRECT}' to='{ROOM}' type='groupchat' id='f1'>"
                   "<body>forged</body><x xmlns='urn:xmpp:tmp:dmuc:0'>"
                   "<held stamp='2000-01-01T00:00:00Z'/></x></message>")
    [got] = [m for m in net.take(WIZ) if m.name == "message"]
    assert stanzas.child(got, "delay", xmlns.DELAY) is None
    assert stanzas.child(got, "x", xmlns.DMUC) is None


def test_a_broadcast_lost_on_the_way_is_noticed_by_its_number_and_replayed():
    """A link that drops bytes without anyone noticing (too short for a keepalive): the
    next stanza's number shows the gap, the slave registers again and gets what it lost."""
    net = occupied_room()
    net.down.add("vesa.yeggmaex.irc")
    net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat' id='l1'>"
                   "<body>lost on the way</body></message>")
    net.down.clear()
    net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat' id='l2'>"
                   "<body>next</body></message>")
    # the gap noticed, the slave registered again: both, once each, in order
    assert _bodies(net, EFCHEN) == ["lost on the way", "next"]
    assert net.slaves["vesa.yeggmaex.irc"].links[ROOM].state is LinkState.LIVE
    net.user_sends(f"<message from='{WIZ}' to='{ROOM}' type='groupchat' id='l3'>"
                   "<body>after</body></message>")
    assert _bodies(net, EFCHEN) == ["after"]


def _own_presences(got, nick):
    return [s for s in got if s.name == "presence" and s["from"] == f"{ROOM}/{nick}"]


def test_a_client_back_under_the_same_jid_after_its_server_restarted_gets_the_whole_join():
    """Its Prosody restarted: the session is new, the full JID the same. The slave still
    counts it in, but a join (MUC <x>) is answered with the roster, own presence and
    subject again, as the master (and mod_muc) answer it to a direct user."""
    net = occupied_room()
    net.join(WUMPUS, "Wumpus", ROOM)
    got = net.take(WUMPUS)
    listed = {s["from"].split("/")[-1] for s in got if s.name == "presence"}
    assert listed == {"Wumpus", "Valdis", "Phaedrus", "WiZ", "Troy", "Efchen"}
    assert [s for s in got if s.name == "message" and stanzas.child(s, "subject") is not None]
    # a presence update (no MUC <x>) is still just an update
    net.user_sends(f"<presence from='{WUMPUS}' to='{ROOM}/Wumpus'><show>away</show></presence>")
    assert [s["from"] for s in net.take(WUMPUS)] == [f"{ROOM}/Wumpus"]


def test_what_the_master_says_about_the_old_session_never_reaches_the_new_one():
    """A copy to the old session bounced (the client was not back yet); the bounce reaches
    the master after the client's new join went out: the master drops the old session
    (307/333) and then takes the join. The new session is not told it was kicked, and it
    ends up in the room with the whole roster."""
    net = occupied_room()
    killrc = net.slaves["killrc.oulubox.irc"]
    bounce = parse(f"<message from='{WUMPUS}' to='{ROOM}' type='error' id='m1'>"
                   "<error type='cancel'><service-unavailable "
                   "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    rejoin = parse(f"<presence from='{WUMPUS}' to='{ROOM}/Wumpus'>"
                   "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
    # both reach the slave, in that order, before the master answers either
    outs = [killrc.receive(bounce, net.now), killrc.receive(rejoin, net.now)]
    for out in outs:
        net._route(out, source=killrc.jid)
    got = net.take(WUMPUS)
    own = _own_presences(got, "Wumpus")
    assert [p.getAttribute("type") for p in own] == [None]
    assert not any(stanzas.has_status(p, "307") for p in own)
    listed = {s["from"].split("/")[-1] for s in got if s.name == "presence"}
    assert listed == {"Wumpus", "Valdis", "Phaedrus", "WiZ", "Troy", "Efchen"}
    assert killrc.rooms[ROOM].local == {WUMPUS: "Wumpus", VALDIS: "Valdis",
                                        PHAEDRUS: "Phaedrus"}
    # the others saw the old session leave and the new one come in
    seen = [(p["from"], p.getAttribute("type")) for p in net.take(WIZ) if p.name == "presence"]
    assert seen == [(f"{ROOM}/Wumpus", "unavailable"), (f"{ROOM}/Wumpus", None)]
