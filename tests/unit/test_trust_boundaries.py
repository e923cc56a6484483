"""Hostile input the room core refuses (issue 8): each sends exactly the input, and checks
the error reply, the one log line and that the room's state did not change."""

from __future__ import annotations

import pytest

from dmuc import xmlns
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import ROOM, SERVICE, TROY, WIZ, WUMPUS, Harness, error_condition
from tests.unit.muc_steps import private

SLAVE = "dmuc.eris.dclxvii.irc"


def test_a_private_message_never_relays_a_forged_muc_user_payload() -> None:
    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")
    h.join(WIZ, "WiZ")
    forged = (f"<x xmlns='{xmlns.MUC_USER}'><item jid='admin@evil.example/x' role='moderator'/>"
              f"<status code='110'/><invite from='boss@evil.example'/></x>")
    out = h.send(f"<message from='{WIZ}' to='{ROOM}/Wumpus' type='chat' id='p1'>"
                 f"<body>hi</body>{forged}</message>")
    [relayed] = out.stanzas_for(WUMPUS)
    [x] = stanzas.children(relayed, "x", xmlns.MUC_USER)
    assert list(x.elements()) == []  # only the empty marker mod_muc adds
    assert "evil.example" not in relayed.toXml()
    assert str(stanzas.child(relayed, "body")) == "hi"
    assert private(h, WIZ, "Wumpus").stanzas_for(WUMPUS)  # an ordinary PM still passes


def test_a_stanza_from_the_service_itself_is_refused_not_looped() -> None:
    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")
    ghost = f"{ROOM}/ghost"
    out = h.send(f"<presence from='{ghost}' to='{ROOM}/ghost'><x xmlns='{xmlns.MUC}'/></presence>")
    [reply] = out.deliveries
    assert reply.stanza["to"] == ghost and reply.stanza["type"] == "error"
    assert error_condition(reply.stanza) == "not-allowed"
    assert stanzas.child(reply.stanza, "error")["by"] == SERVICE
    assert len([line for _, line in out.log if "own address" in line]) == 1
    assert set(h.service.rooms[ROOM].occupants) == {"Wumpus"}
    # The error bouncing back from ourselves ends there.
    bounced = stanzas.copy(reply.stanza)
    bounced["from"], bounced["to"] = ghost, ROOM + "/ghost"
    assert h.service.receive(bounced, h.now).deliveries == []


def test_a_slave_may_not_refuse_a_session_it_did_not_enter() -> None:
    h = Harness(room_locking=False, slaves={SLAVE: frozenset({"eris.dclxvii.irc"})})
    h.join(WUMPUS, "Wumpus")
    h.join(TROY, "Troy")  # eris user, joined directly: the slave never registered
    h.send(f"<iq type='set' id='r' from='{SLAVE}' to='{ROOM}'>"
           f"<register xmlns='{xmlns.DMUC}' keepalive='60' history='0'/></iq>")
    out = h.send(f"<presence type='unavailable' from='{SLAVE}' to='{ROOM}'>"
                 f"<x xmlns='{xmlns.DMUC}'><refuse jid='{TROY}'/></x></presence>")
    # No error reply: to the slave an error from the room would mean a netsplit.
    assert out.deliveries == []
    assert [level for level, line in out.log if "did not enter through it" in line] == ["warn"]
    assert "Troy" in h.service.rooms[ROOM].occupants


def test_every_error_the_room_or_the_service_generates_says_by_whom() -> None:
    """As mod_muc: `by` names the room (or the service) on each error it sends."""
    h = Harness(room_locking=False)
    h.join(WUMPUS, "Wumpus")
    outs = [
        h.send(f"<message from='{WIZ}' to='{ROOM}' type='groupchat'><body>x</body></message>"),
        h.send(f"<iq type='get' id='q' from='{WIZ}' to='{ROOM}'><query xmlns='nope'/></iq>"),
        h.send(f"<iq type='get' id='q' from='{WIZ}' to='{SERVICE}'><query xmlns='nope'/></iq>"),
        h.join(TROY, "Wumpus"),
    ]
    errors = [d.stanza for out in outs for d in out.deliveries if d.stanza["type"] == "error"]
    assert len(errors) == 4
    assert [stanzas.child(e, "error")["by"] for e in errors] == [ROOM, ROOM, SERVICE, ROOM]


UNLISTED = "dmuc.unlisted.example"
DMUC_X = f"xmlns='{xmlns.DMUC}'"
# (who, stanza, condition): every XEP-0282 stanza a slave may not send, refused with one
# log line (docs/operations.md: every refusal is logged once)
SLAVE_REFUSALS = [
    (UNLISTED, f"<presence type='unavailable'><x {DMUC_X}><refuse jid='{TROY}'/></x></presence>",
     "item-not-found"),
    (UNLISTED, f"<presence><x {DMUC_X}><enter jid='{TROY}'/></x></presence>", "bad-request"),
    (SLAVE, f"<presence><x {DMUC_X}><enter jid='{TROY}'/></x></presence>", "bad-request"),
    (SLAVE, f"<presence><x {DMUC_X}><garbage/><more>x</more></x></presence>", "bad-request"),
    (SLAVE, f"<presence><x {DMUC_X}/></presence>", "bad-request"),
    (SLAVE, f"<iq type='get' id='k'><keepalive {DMUC_X}/></iq>", "item-not-found"),
]


@pytest.mark.parametrize(("sender", "xml", "condition"), SLAVE_REFUSALS,
                         ids=["refuse from an unlisted component",
                              "enter from an unlisted component", "enter from a slave",
                              "x with garbage", "empty x", "keepalive unregistered"])
def test_each_refused_slave_stanza_is_answered_and_logged_once(sender: str, xml: str,
                                                               condition: str) -> None:
    h = Harness(room_locking=False, slaves={SLAVE: frozenset({"eris.dclxvii.irc"})})
    h.join(WUMPUS, "Wumpus")
    stanza = stanzas.parse_stanza(xml)
    stanza["from"], stanza["to"] = sender, ROOM
    h.now += 1
    out = h.service.receive(stanza, h.now)
    [reply] = out.deliveries
    assert reply.stanza["to"] == sender and error_condition(reply.stanza) == condition
    refusals = [line for _, line in out.log if "refused" in line]
    assert len(refusals) == 1 and sender in refusals[0], out.log
