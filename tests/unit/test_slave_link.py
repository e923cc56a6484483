"""The slave's per-room link to its master (dmuc.slave.link.LINK_TRANSITIONS): every
transition in the table, every one not in it, and the slave core driven through the
states (hold while registering, flush at <synced/>, passthrough, split, netjoin)."""

from __future__ import annotations

import itertools

import pytest

from dmuc import xmlns
from dmuc.errors import IllegalTransition
from dmuc.master.service import MUCService
from dmuc.outbox import Outbox, SaveRoom
from dmuc.protocol import stanzas, xep0282
from dmuc.records import MIRROR_SESSION, OccupantRecord
from dmuc.slave.link import (
    FLUSH_SLICE,
    LINK_TRANSITIONS,
    LinkConfig,
    LinkState,
    SlaveLink,
    restored_state,
)
from dmuc.slave.room import SlaveRoom
from dmuc.slave.service import SlaveService, SlaveSettings
from tests.unit.dmuc_net import Net, slave_jid
from tests.unit.muc_helpers import BIGCHEESE, EFCHEN, ROOM, SERVICE, WUMPUS, parse

L = LinkState
EVENTS = sorted({event for _, event in LINK_TRANSITIONS})


def _link_in(state: LinkState) -> SlaveLink:
    config = LinkConfig("dmuc.vesa.example", 60, 20, lambda kind, room: f"{kind}-1")
    return SlaveLink(SlaveRoom("room@muc.example"), config, state)


@pytest.mark.parametrize(("start", "event", "end"),
                         [(s, e, t) for (s, e), t in LINK_TRANSITIONS.items()])
def test_every_transition_in_the_table(start: LinkState, event: str, end: LinkState) -> None:
    link = _link_in(start)
    assert link.machine.can(event)
    assert link.machine.fire(event) is end
    assert link.state is end


ILLEGAL = [(s, e) for s, e in itertools.product(LinkState, EVENTS)
           if (s, e) not in LINK_TRANSITIONS]


@pytest.mark.parametrize(("start", "event"), ILLEGAL)
def test_every_transition_not_in_the_table_is_refused(start: LinkState, event: str) -> None:
    link = _link_in(start)
    assert not link.machine.can(event)
    with pytest.raises(IllegalTransition):
        link.machine.fire(event)
    assert link.state is start


def test_the_table_knows_every_event_and_state() -> None:
    assert EVENTS == sorted(["register", "registered", "synced", "refused", "bounced",
                             "netjoin", "forgotten", "master-restarted"])
    reached = set(LINK_TRANSITIONS.values()) | {L.UNREGISTERED}
    left = {start for start, _ in LINK_TRANSITIONS}
    assert reached == set(LinkState) == left


def test_a_new_link_is_unregistered() -> None:
    link = SlaveLink(SlaveRoom(ROOM), LinkConfig("s", 60, 20, lambda kind, room: "x"))
    assert link.state is L.UNREGISTERED


@pytest.mark.parametrize(("stored", "restored"), [
    ({"link": "live"}, L.LIVE),
    ({"link": "syncing"}, L.LIVE),
    ({"link": "registering"}, L.LIVE),  # what it holds goes out after registering again
    ({"link": "split"}, L.LIVE),  # killed during a split: netjoin once connected
    ({"link": "passthrough"}, L.UNREGISTERED),
    ({"link": "unregistered"}, L.UNREGISTERED),
    ({"registered": True}, L.LIVE),  # stored before the link had states
    ({"registered": False}, L.UNREGISTERED),
    ({}, L.UNREGISTERED),
])
def test_a_restored_link_registers_again_if_it_was_or_was_trying_to_be_registered(
        stored: dict[str, object], restored: LinkState) -> None:
    assert restored_state(stored) is restored


# --- the slave core through the link states -------------------------------------------------

SLAVE = slave_jid("vesa.yeggmaex.irc")
DMUC = xmlns.DMUC


class Slave:
    """One slave core; the test plays its master."""

    def __init__(self) -> None:
        self.now = 1_000_000.0
        self.core = SlaveService(SlaveSettings(SLAVE, frozenset({"vesa.yeggmaex.irc"}),
                                               frozenset({SERVICE})))
        self.core.connected(self.now)

    def send(self, xml: str) -> Outbox:
        self.now += 0.001
        return self.core.receive(parse(xml), self.now)

    def tick(self, seconds: float) -> Outbox:
        self.now += seconds
        return self.core.tick(self.now)

    @property
    def state(self) -> LinkState:
        return self.core.links[ROOM].state

    def join(self, who: str, nick: str) -> Outbox:
        return self.send(f"<presence from='{who}' to='{ROOM}/{nick}'>"
                         f"<x xmlns='{xmlns.MUC}'/></presence>")

    def say(self, who: str, text: str, msg_id: str) -> Outbox:
        return self.send(f"<message from='{who}' to='{ROOM}' type='groupchat' id='{msg_id}'>"
                         f"<body>{text}</body></message>")

    def registered(self, register: stanzas.Element) -> Outbox:
        return self.send(f"<iq type='result' from='{ROOM}' to='{SLAVE}' id='{register['id']}'>"
                         f"<registered xmlns='{DMUC}' keepalive='60' history='20' "
                         "whois='moderators'/></iq>")

    def snapshot(self, *nicks: str) -> Outbox:
        """<resync/>, a roster presence per nick, <synced/>; the outbox of <synced/>."""
        self.send(f"<presence from='{ROOM}' to='{SLAVE}'><x xmlns='{DMUC}'><resync/></x>"
                  "</presence>")
        for nick in nicks:
            self.send(f"<presence from='{ROOM}/{nick}' to='{SLAVE}'>"
                      f"<x xmlns='{xmlns.MUC_USER}'><item affiliation='none' "
                      "role='participant'/></x></presence>")
        return self.send(f"<presence from='{ROOM}' to='{SLAVE}'><x xmlns='{DMUC}'><synced/>"
                         "</x></presence>")

    def enter(self, who: str, nick: str) -> Outbox:
        return self.send(f"<presence from='{ROOM}/{nick}' to='{SLAVE}'>"
                         f"<x xmlns='{xmlns.MUC_USER}'><item affiliation='none' "
                         f"role='participant' jid='{who}'/><status code='110'/></x>"
                         f"<x xmlns='{DMUC}'><enter jid='{who}'/></x></presence>")


def _sent(out: Outbox) -> list[stanzas.Element]:
    """What goes to its own 'to' (the master, a user): not the local fan-out."""
    return [d.stanza for d in out.deliveries if d.recipients is None]


def _payload(stanza: stanzas.Element) -> str | None:
    child = next(stanza.elements(), None)
    return child.name if child is not None else None


def _live_with_occupants() -> Slave:
    """BigCheese and Efchen are in the room through the slave, whose link is LIVE."""
    s = Slave()
    [register] = _sent(s.join(BIGCHEESE, "BigCheese"))
    s.join(EFCHEN, "Efchen")
    s.registered(register)
    s.snapshot("Wumpus")
    s.enter(BIGCHEESE, "BigCheese")
    s.enter(EFCHEN, "Efchen")
    assert s.state is L.LIVE and set(s.core.rooms[ROOM].local) == {BIGCHEESE, EFCHEN}
    return s


def test_local_stanzas_are_held_while_registering_and_syncing_then_sent_in_order() -> None:
    s = Slave()
    [register] = _sent(s.join(BIGCHEESE, "BigCheese"))
    assert _payload(register) == "register" and register["to"] == ROOM
    assert s.state is L.REGISTERING
    out = s.send(f"<message from='{BIGCHEESE}' to='{ROOM}/Wumpus' type='chat' id='pm1'>"
                 "<body>psst</body></message>")
    assert _sent(out) == []  # held, and no second <register/>
    out = s.registered(register)
    assert s.state is L.SYNCING and _sent(out) == []
    assert any("registered with" in line for _, line in out.log)
    s.join(EFCHEN, "Efchen")  # still held while the snapshot arrives
    out = s.snapshot("Wumpus")
    assert s.state is L.LIVE
    assert [(m.name, m["from"], m["to"]) for m in _sent(out)] == [
        ("presence", BIGCHEESE, f"{ROOM}/BigCheese"),
        ("message", BIGCHEESE, f"{ROOM}/Wumpus"),
        ("presence", EFCHEN, f"{ROOM}/Efchen")]
    out = s.say(BIGCHEESE, "now", "n1")
    assert [m["id"] for m in _sent(out)] == ["n1"]  # LIVE: forwarded at once, unchanged


def test_what_was_held_goes_out_a_slice_per_turn_and_newer_stanzas_wait_behind_it() -> None:
    """1,200 joins held while the room registers go out FLUSH_SLICE at a time, one slice
    at <synced/> and the rest when the shell asks for the core's work (a turn each, so no
    one call holds the reactor); a message said meanwhile goes after all of them, and is
    remembered as in flight like any message said while LIVE."""
    s = Slave()
    count = 2 * FLUSH_SLICE + 200
    users = [f"user{i}@vesa.yeggmaex.irc/r" for i in range(count)]
    [register] = _sent(s.join(users[0], "n0"))
    for i, who in enumerate(users[1:], 1):
        assert _sent(s.join(who, f"n{i}")) == []
    s.registered(register)
    assert s.core.work(s.now) is None  # nothing to send until <synced/>
    out = s.snapshot()
    first = [m["to"] for m in _sent(out)]
    assert first == [f"{ROOM}/n{i}" for i in range(FLUSH_SLICE)]
    s.enter(users[0], "n0")  # the master's answer to the first join: n0 is in
    s.join(users[5], "n5")  # (a presence update of one of them: behind the backlog)
    message = s.say(users[0], "hello", "m1")
    assert _sent(message) == []  # waits behind what is still going out
    second = s.core.work(s.now)
    assert second is not None
    assert [m["to"] for m in _sent(second)] == [
        f"{ROOM}/n{i}" for i in range(FLUSH_SLICE, 2 * FLUSH_SLICE)]
    third = s.core.work(s.now)
    assert third is not None
    assert [m["to"] for m in _sent(third)] == [
        *(f"{ROOM}/n{i}" for i in range(2 * FLUSH_SLICE, count)), f"{ROOM}/n5", ROOM]
    assert _sent(third)[-1]["id"] == "m1"
    assert ("n0", "m1") in s.core.rooms[ROOM].inflight  # as if said while LIVE
    assert s.core.work(s.now) is None
    numbers = [xep0282.sequence_number(m) for out in (out, second, third) for m in _sent(out)]
    assert numbers == list(range(1, count + 3))  # one numbering, in order


def test_a_split_while_the_held_stanzas_go_out_keeps_the_rest_for_the_netjoin() -> None:
    """A netsplit after the first slice: nothing more goes while split; at the netjoin
    the rest goes, each join once, then what was said behind them, in order."""
    s = Slave()
    count = FLUSH_SLICE + 100
    users = [f"user{i}@vesa.yeggmaex.irc/r" for i in range(count)]
    [register] = _sent(s.join(users[0], "n0"))
    for i, who in enumerate(users[1:], 1):
        s.join(who, f"n{i}")
    s.registered(register)
    first = _sent(s.snapshot())
    s.enter(users[0], "n0")
    assert _sent(s.say(users[0], "behind", "m1")) == []
    s.send(f"<message from='{ROOM}' to='{SLAVE}' type='error'/>")  # the link breaks
    assert s.state is L.SPLIT
    assert s.core.work(s.now) is None  # nothing goes while split
    out = s.send(f"<iq type='get' from='{ROOM}' to='{SLAVE}' id='ping1'>"
                 f"<ping xmlns='{xmlns.PING}'/></iq>")  # the master is back
    [register, _pong] = _sent(out)
    s.registered(register)
    rest = _sent(s.snapshot("n0"))
    assert s.state is L.LIVE and s.core.work(s.now) is None  # all of it in one slice
    joins = [m["to"] for m in [*first, *rest] if m.name == "presence"]
    assert joins == [f"{ROOM}/n{i}" for i in range(count)]  # each once, in order
    assert rest[-1]["id"] == "m1"
    assert ("n0", "m1") in s.core.rooms[ROOM].inflight


def test_a_refused_registration_passes_the_users_through() -> None:
    s = Slave()
    [register] = _sent(s.join(BIGCHEESE, "BigCheese"))
    out = s.send(f"<iq type='error' from='{ROOM}' to='{SLAVE}' id='{register['id']}'>"
                 "<error type='auth'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
                 "</error></iq>")
    assert s.state is L.PASSTHROUGH
    assert any("refused to register" in line for _, line in out.log)
    [join] = _sent(out)  # the held join goes to the master as it was
    assert join["from"] == BIGCHEESE and join["to"] == f"{ROOM}/BigCheese"
    out = s.say(BIGCHEESE, "hi", "h1")
    assert [m["id"] for m in _sent(out)] == ["h1"]
    assert _sent(s.tick(3600)) == []  # no keepalives for a room we do not mirror


def test_a_bounce_splits_the_link_and_local_occupants_keep_talking() -> None:
    s = _live_with_occupants()
    out = s.send(f"<message from='{ROOM}' to='{SLAVE}' type='error'/>")
    assert s.state is L.SPLIT and any("netsplit" in line for _, line in out.log)
    out = s.send(f"<iq type='get' from='{BIGCHEESE}' to='{ROOM}/Wumpus' id='v1'>"
                 "<query xmlns='jabber:iq:version'/></iq>")
    [error] = _sent(out)
    assert error["type"] == "error" and stanzas.error_condition(error) == "remote-server-timeout"
    out = s.say(BIGCHEESE, "still here", "b1")
    [echo] = [d for d in out.deliveries if d.recipients is not None]
    assert set(echo.recipients or ()) == {BIGCHEESE, EFCHEN}
    assert echo.stanza["from"] == f"{ROOM}/BigCheese" and echo.stanza["id"] == "b1"
    assert _sent(out) == []
    assert [m.getAttribute("id") for m in s.core.rooms[ROOM].queue] == [
        xep0282.SPLIT_ID_PREFIX + "b1"]
    [keepalive] = _sent(s.tick(15))  # keepalive/4 while split
    assert _payload(keepalive) == "keepalive"


def test_netjoin_registers_again_and_submits_what_was_held() -> None:
    s = _live_with_occupants()
    s.send(f"<message from='{ROOM}' to='{SLAVE}' type='error'/>")
    s.say(BIGCHEESE, "still here", "b1")
    out = s.send(f"<iq type='get' from='{ROOM}' to='{SLAVE}' id='ping1'>"
                 f"<ping xmlns='{xmlns.PING}'/></iq>")  # the master is back
    assert s.state is L.REGISTERING
    register, pong = _sent(out)
    assert _payload(register) == "register" and pong["type"] == "result"
    assert any("netjoin" in line for _, line in out.log)
    # The master's own netjoin snapshot arrives first: our registration's follows.
    out = s.snapshot("Wumpus", "BigCheese", "Efchen")
    assert s.state is L.REGISTERING and _sent(out) == []
    out = s.registered(register)
    assert s.state is L.SYNCING
    assert any("after a netsplit" in line for _, line in out.log)
    out = s.snapshot("Wumpus", "BigCheese", "Efchen")
    assert s.state is L.LIVE
    assert [m["id"] for m in _sent(out)] == [xep0282.SPLIT_ID_PREFIX + "b1"]
    # Its broadcast is not shown here a second time.
    out = s.send(f"<message from='{ROOM}/BigCheese' to='{SLAVE}' type='groupchat' "
                 f"id='{xep0282.SPLIT_ID_PREFIX}b1'><body>still here</body>"
                 f"<x xmlns='{DMUC}'/></message>")
    assert out.deliveries == []


def test_a_forgotten_registration_registers_again() -> None:
    s = _live_with_occupants()
    assert _sent(s.tick(59)) == []
    [keepalive] = _sent(s.tick(1))
    out = s.send(f"<iq type='error' from='{ROOM}' to='{SLAVE}' id='{keepalive['id']}'>"
                 "<error type='cancel'><item-not-found "
                 "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    assert s.state is L.REGISTERING
    assert [_payload(m) for m in _sent(out)] == ["register"]


def test_a_restarted_master_makes_its_rooms_register_again() -> None:
    s = _live_with_occupants()
    out = s.send(f"<message type='normal' from='{SERVICE}' to='{SLAVE}'>"
                 f"<x xmlns='{DMUC}'><restarted/></x></message>")
    assert s.state is L.REGISTERING
    assert [_payload(m) for m in _sent(out)] == ["register"]
    # ... and its local occupants' groupchat is shown at once and held meanwhile.
    out = s.say(EFCHEN, "hello?", "e1")
    assert _sent(out) == [] and [d.recipients for d in out.deliveries] == [[BIGCHEESE, EFCHEN]]


def test_an_unanswered_registration_is_sent_again() -> None:
    s = Slave()
    [first] = _sent(s.join(BIGCHEESE, "BigCheese"))
    assert _sent(s.tick(14)) == []
    [again] = _sent(s.tick(1))  # keepalive/4 without an answer
    # the same registration again: if the master did get the first, it answers this one
    # without a second snapshot
    assert _payload(again) == "register" and again["id"] == first["id"]
    assert s.state is L.REGISTERING


def test_a_late_answer_is_ignored_not_an_error() -> None:
    s = _live_with_occupants()
    s.send(f"<message from='{ROOM}' to='{SLAVE}' type='error'/>")
    out = s.send(f"<presence from='{ROOM}' to='{SLAVE}'><x xmlns='{DMUC}'><synced/></x>"
                 "</presence>")  # heard from the master: netjoin first, then a stale synced
    assert s.state is L.REGISTERING
    assert any("ignored 'synced'" in line for _, line in out.log)


def test_the_link_state_is_stored_and_a_registered_room_registers_after_a_restart() -> None:
    s = _live_with_occupants()
    out = s.say(BIGCHEESE, "x", "x1")
    [save] = [op for op in out.storage if isinstance(op, SaveRoom)]
    state = save.state
    assert save.entries is not None  # the entries changed since the room was made: all
    rows = {r.nick: r.state for r in save.entries() if isinstance(r, OccupantRecord)}
    assert state["link"] == "live" and rows[MIRROR_SESSION + BIGCHEESE]["nick"] == "BigCheese"
    restarted = SlaveService(s.core.settings)
    restarted.restore(SlaveRoom.from_state(ROOM, state, rows), [], state)
    assert restarted.links[ROOM].state is L.LIVE
    out = restarted.connected(s.now + 10)
    assert restarted.links[ROOM].state is L.REGISTERING
    assert [_payload(m) for m in _sent(out) if m["to"] == ROOM] == ["register"]


def test_a_master_that_forgot_the_slave_gets_its_users_back_through_a_keepalive() -> None:
    """Through the in-memory network: the master core restarts without telling anyone; the
    slave's next keepalive is answered item-not-found and its users enter again."""
    net = Net()
    net.join(WUMPUS, "Wumpus", ROOM)
    net.join(BIGCHEESE, "BigCheese", ROOM)
    vesa = net.slaves["vesa.yeggmaex.irc"]
    assert vesa.links[ROOM].state is L.LIVE
    net.take(BIGCHEESE)
    net.master = MUCService(net.master.settings)  # its temporary room is gone
    net.tick(61)
    assert vesa.links[ROOM].state is L.LIVE
    assert set(net.master.rooms[ROOM].occupants) == {"Wumpus", "BigCheese"}
    # BigCheese was not told it left: its slave made it enter again.
    assert not [p for p in net.take(BIGCHEESE) if p.name == "presence"
                and p.getAttribute("type") == "unavailable"]
