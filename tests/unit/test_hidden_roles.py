"""Occupants whose role the room stops broadcasting (muc#roomconfig_presencebroadcast), as
mod_muc 0.12: announced as gone to the others, still inside for themselves. Directly
(the room core) and through slaves (XEP-0282 §4.7), core to core."""

from __future__ import annotations

from dmuc import xmlns
from dmuc.protocol import stanzas
from dmuc.slave.room import SlaveRoom
from tests.unit.dmuc_net import Net
from tests.unit.muc_helpers import (
    BIGCHEESE,
    EFCHEN,
    PHAEDRUS,
    ROOM,
    TROY,
    VALDIS,
    WIZ,
    WUMPUS,
    Harness,
    codes,
    item,
)
from tests.unit.muc_steps import admin_set, occ, one, owner_submit, presence_from, presences

BROADCAST = "muc#roomconfig_presencebroadcast"
ALL_ROLES = ["moderator", "participant", "visitor"]


def _room() -> Harness:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    h.join(WUMPUS, "wumpus")
    return h


# --- directly ------------------------------------------------------------------------------


def test_a_role_no_longer_broadcast_is_announced_as_gone_and_its_occupants_stay():
    h = _room()
    out = owner_submit(h, WIZ, {BROADCAST: ["moderator"]})
    gone = one(presence_from(out, WUMPUS, "troy"))
    assert gone["type"] == "unavailable" and codes(gone) == set()
    assert item(gone) == {"affiliation": "none", "role": "participant"}
    assert stanzas.child(gone, "status") is None  # a bare unavailable, as mod_muc
    assert item(one(presence_from(out, WIZ, "troy")))["jid"] == TROY  # the moderator's copy
    own = one(presence_from(out, TROY, "troy"))
    assert own.getAttribute("type") is None and "110" in codes(own)
    assert item(own)["role"] == "participant"
    assert presence_from(out, TROY, "wiz") == []  # moderators are still broadcast
    assert "troy" in h.service.rooms[ROOM].occupants
    # a newcomer is not shown them; shown again, they are announced
    newcomer = h.join(EFCHEN, "efchen")
    assert {p["from"] for p in presences(newcomer, EFCHEN)} == {occ("wiz"), occ("efchen")}
    out = owner_submit(h, WIZ, {BROADCAST: ALL_ROLES})
    back = one(presence_from(out, WUMPUS, "troy"))
    assert back.getAttribute("type") is None and item(back)["role"] == "participant"


def test_voice_revoked_into_a_role_not_broadcast_is_announced_as_unavailable():
    h = _room()
    owner_submit(h, WIZ, {BROADCAST: ["moderator", "participant"]})
    h.send(f"<presence from='{TROY}' to='{ROOM}/troy' id='t1'><show>away</show></presence>")
    out = admin_set(h, WIZ, "<item nick='troy' role='visitor'><reason>hush</reason></item>")
    gone = one(presence_from(out, WUMPUS, "troy"))
    # mod_muc: its presence as broadcast (show, id, actor, reason), marked unavailable
    assert gone["type"] == "unavailable" and gone["id"] == "t1"
    assert str(stanzas.child(gone, "show")) == "away"
    assert item(gone)["role"] == "visitor"
    assert str(stanzas.child(stanzas.muc_item(gone), "reason")) == "hush"
    own = one(presence_from(out, TROY, "troy"))
    assert own.getAttribute("type") is None and "110" in codes(own)
    assert item(own)["role"] == "visitor"
    # voice granted again: shown again
    out = admin_set(h, WIZ, "<item nick='troy' role='participant'/>")
    assert one(presence_from(out, WUMPUS, "troy")).getAttribute("type") is None


# --- through slaves -----------------------------------------------------------------------


def occupied_room() -> Net:
    """Wumpus (owner), Valdis and Phaedrus behind killrc's slave; WiZ and Troy behind
    eris's; Efchen behind vesa's."""
    net = Net()
    for who, nick in ((WUMPUS, "Wumpus"), (VALDIS, "Valdis"), (PHAEDRUS, "Phaedrus"),
                      (WIZ, "WiZ"), (TROY, "Troy"), (EFCHEN, "Efchen")):
        net.join(who, nick, ROOM)
    for who in (WUMPUS, VALDIS, PHAEDRUS, WIZ, TROY, EFCHEN):
        net.take(who)
    return net


def _configure(net: Net, roles: list[str]) -> None:
    net.user_sends(
        f"<iq type='set' id='c1' from='{WUMPUS}' to='{ROOM}'>"
        f"<query xmlns='{xmlns.MUC_OWNER}'><x xmlns='jabber:x:data' type='submit'>"
        "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value>"
        f"</field><field var='{BROADCAST}'>"
        + "".join(f"<value>{r}</value>" for r in roles) + "</field></x></query></iq>")


def _about(net: Net, who: str) -> dict[str, list[stanzas.Element]]:
    found: dict[str, list[stanzas.Element]] = {}
    for p in net.take(who):
        if p.name == "presence":
            found.setdefault(p["from"].partition("/")[2], []).append(p)
    return found


def test_through_slaves_the_others_get_the_unavailable_and_the_occupant_its_own():
    net = occupied_room()
    _configure(net, ["moderator"])
    troy = _about(net, TROY)
    # its own: one presence, available, with 110 (sent by the master, not the slave)
    [own] = troy.pop("Troy")
    assert own.getAttribute("type") is None and "110" in codes(own)
    assert item(own)["jid"] == TROY
    # the others hidden: gone, each once; the moderator not
    assert sorted(troy) == ["Efchen", "Phaedrus", "Valdis", "WiZ"]
    assert all(len(p) == 1 and p[0]["type"] == "unavailable"
               and item(p[0])["role"] == "participant" for p in troy.values())
    wiz = _about(net, WIZ)
    assert wiz["Troy"][0]["type"] == "unavailable" and len(wiz["Troy"]) == 1
    assert wiz["WiZ"][0].getAttribute("type") is None
    # each slave keeps its own hidden occupants, forgets the others'
    eris = net.slaves["eris.dclxvii.irc"].rooms[ROOM]
    killrc = net.slaves["killrc.oulubox.irc"].rooms[ROOM]
    assert eris.hidden == {"WiZ", "Troy"} and set(eris.roster) == {"Wumpus", "WiZ", "Troy"}
    assert eris.role_of("Troy") == "participant"
    assert killrc.hidden == {"Valdis", "Phaedrus"}
    stored = SlaveRoom.from_state(ROOM, killrc.to_state(), killrc.all_entries())
    assert stored.hidden == killrc.hidden
    # a newcomer behind a slave with hidden occupants is shown none of them
    net.join(BIGCHEESE, "BigCheese", ROOM)
    shown = [p["from"] for p in net.take(BIGCHEESE) if p.name == "presence"]
    assert shown == [occ("Wumpus", ROOM), occ("BigCheese", ROOM)]
    for who in (WUMPUS, VALDIS, PHAEDRUS, WIZ, EFCHEN):
        net.take(who)
    # shown again: announced, each once, to the others and to itself
    _configure(net, ["moderator", "participant", "visitor"])
    troy = _about(net, TROY)
    assert sorted(troy) == ["BigCheese", "Efchen", "Phaedrus", "Troy", "Valdis", "WiZ"]
    assert all(len(p) == 1 and p[0].getAttribute("type") is None for p in troy.values())
    assert "110" in codes(troy["Troy"][0])
    assert eris.hidden == set() and "Valdis" in eris.roster


def test_a_netjoin_neither_enters_again_nor_shows_hidden_occupants_leave():
    net = occupied_room()
    _configure(net, ["moderator"])
    for who in (WUMPUS, VALDIS, PHAEDRUS, WIZ, TROY, EFCHEN):
        net.take(who)
    vesa = net.slaves["vesa.yeggmaex.irc"]
    room = vesa.rooms[ROOM]
    net.down.add("vesa.yeggmaex.irc")
    keepalive = net.master.distribution.link(ROOM, vesa.jid).keepalive
    net.tick(keepalive)
    net.tick(keepalive)
    net.down.clear()
    for _ in range(3):
        net.tick(keepalive / 4)
    assert room.hidden == {"Efchen"} and "Efchen" in room.roster
    # no re-entry (it would get the occupant list again), nothing shown leaving
    assert [p for p in net.take(EFCHEN) if p.name == "presence"] == []
    assert [p for p in net.take(WUMPUS) if p.name == "presence"] == []
    assert list(net.master.rooms[ROOM].occupants["Efchen"].sessions) == [EFCHEN]


def test_voice_revoked_behind_a_slave_the_others_there_get_the_unavailable():
    net = occupied_room()
    _configure(net, ["moderator", "participant"])
    for who in (WUMPUS, VALDIS, PHAEDRUS, WIZ, TROY, EFCHEN):
        net.take(who)
    net.user_sends(f"<iq type='set' id='v1' from='{WUMPUS}' to='{ROOM}'>"
                   f"<query xmlns='{xmlns.MUC_ADMIN}'><item nick='Troy' role='visitor'/>"
                   "</query></iq>")
    [own] = _about(net, TROY)["Troy"]
    assert own.getAttribute("type") is None and "110" in codes(own)
    assert item(own)["role"] == "visitor"
    [gone] = _about(net, WIZ)["Troy"]  # behind the same slave
    assert gone["type"] == "unavailable" and item(gone)["role"] == "visitor"
    [gone] = _about(net, VALDIS)["Troy"]
    assert gone["type"] == "unavailable"
    eris = net.slaves["eris.dclxvii.irc"].rooms[ROOM]
    assert eris.hidden == {"Troy"} and eris.role_of("Troy") == "visitor"
    # it leaves: no one is told (they were told it is gone); the slave forgets it
    net.user_sends(f"<presence from='{TROY}' to='{ROOM}/Troy' type='unavailable'/>")
    [left] = _about(net, TROY)["Troy"]
    assert left["type"] == "unavailable" and "110" in codes(left)
    assert "Troy" not in _about(net, WIZ)
    assert "Troy" not in eris.roster and eris.hidden == set()
