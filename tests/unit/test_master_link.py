"""The master's per-slave link state machine (dmuc.master.distribution.REGISTRATION_TRANSITIONS):
every transition in the table, every one not in it, and the events that drive them."""

from __future__ import annotations

import itertools

import pytest

from dmuc import xmlns
from dmuc.errors import IllegalTransition
from dmuc.master.distribution import REGISTRATION_TRANSITIONS, RegistrationState, SlaveRegistration
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import ROOM, SERVICE, parse

EVENTS = sorted({event for _, event in REGISTRATION_TRANSITIONS})


def _link_in(state: RegistrationState) -> SlaveRegistration:
    link = SlaveRegistration("dmuc.vesa.example", "room@muc.example",
                             frozenset({"vesa.example"}), 60, 20)
    link.machine.state = state
    return link


@pytest.mark.parametrize(("start", "event", "end"),
                         [(s, e, t) for (s, e), t in REGISTRATION_TRANSITIONS.items()])
def test_every_transition_in_the_table(start: RegistrationState, event: str,
                                       end: RegistrationState) -> None:
    link = _link_in(start)
    assert link.machine.fire(event) is end
    assert link.state is end and link.split is (end is RegistrationState.SPLIT)


ILLEGAL = [(s, e) for s, e in itertools.product(RegistrationState, EVENTS)
           if (s, e) not in REGISTRATION_TRANSITIONS]


@pytest.mark.parametrize(("start", "event"), ILLEGAL)
def test_every_transition_not_in_the_table_is_refused(start: RegistrationState, event: str) -> None:
    link = _link_in(start)
    with pytest.raises(IllegalTransition):
        link.machine.fire(event)
    assert link.state is start


def test_a_new_link_is_live() -> None:
    link = SlaveRegistration("s", "r@m", frozenset(), 60, 0)
    assert link.state is RegistrationState.LIVE


def test_every_state_is_reachable_and_left() -> None:
    reached = {end for end in REGISTRATION_TRANSITIONS.values()} | {RegistrationState.LIVE}
    left = {start for start, _ in REGISTRATION_TRANSITIONS}
    assert reached == set(RegistrationState) == left


# --- the events that drive a link, through the master core ----------------------------------

SLAVE = "dmuc.vesa.example"
USER = "rubenro@vesa.example/shaver"
DIRECT = "wumpus@avalon.example/pc"


class Master:
    def __init__(self) -> None:
        self.now = 1000.0
        self.core = MUCService(ServiceSettings(jid=SERVICE, room_locking=False,
                                               slaves={SLAVE: frozenset({"vesa.example"})}))

    def send(self, xml: str) -> Outbox:
        self.now += 1
        return self.core.receive(parse(xml), self.now)

    def link(self) -> SlaveRegistration:
        link = self.core.distribution.link(ROOM, SLAVE)
        assert link is not None
        return link


def _to_slave(out: Outbox) -> list[stanzas.Element]:
    return [d.stanza for d in out.deliveries
            if d.recipients is None and d.stanza.getAttribute("to") == SLAVE
            or d.recipients is not None and SLAVE in d.recipients]


def _dmuc(stanza: stanzas.Element) -> str | None:
    x = stanzas.child(stanza, "x", xmlns.DMUC)
    child = next(x.elements(), None) if x is not None else None
    return child.name if child is not None else None


def test_link_lifecycle_through_the_core() -> None:
    m = Master()
    m.send(f"<presence from='{DIRECT}' to='{ROOM}/Wumpus'><x xmlns='{xmlns.MUC}'/></presence>")
    out = m.send(f"<iq type='set' from='{SLAVE}' to='{ROOM}' id='r1'>"
                 f"<register xmlns='{xmlns.DMUC}' keepalive='60' history='5'/></iq>")
    assert m.link().state is RegistrationState.LIVE
    kinds = [_dmuc(s) for s in _to_slave(out)]
    assert kinds[0] is None and kinds[1] == "resync" and kinds[-1] == "synced"  # result first
    out = m.send(f"<presence from='{USER}' to='{ROOM}/BigCheese'><x xmlns='{xmlns.MUC}'/>"
                 "</presence>")
    assert "enter" in [_dmuc(s) for s in _to_slave(out)]
    # Its last occupant leaves: the link goes stale and gets no broadcasts.
    m.send(f"<presence from='{USER}' to='{ROOM}/BigCheese' type='unavailable'/>")
    assert m.link().state is RegistrationState.STALE
    out = m.send(f"<message from='{DIRECT}' to='{ROOM}' type='groupchat'><body>x</body>"
                 "</message>")
    assert _to_slave(out) == []
    # A bounce splits it; a ping answer while it has no occupants makes it stale again.
    m.send(f"<message from='{SLAVE}' to='{ROOM}' type='error'/>")
    assert m.link().state is RegistrationState.SPLIT
    m.now += 20  # keepalive/4 while split
    out = m.core.tick(m.now)
    [ping] = _to_slave(out)
    m.send(f"<iq type='result' from='{SLAVE}' to='{ROOM}' id='{ping['id']}'/>")
    assert m.link().state is RegistrationState.STALE
    # The next ENTER through it is preceded by a fresh snapshot.
    out = m.send(f"<presence from='{USER}' to='{ROOM}/BigCheese'><x xmlns='{xmlns.MUC}'/>"
                 "</presence>")
    kinds = [_dmuc(s) for s in _to_slave(out)]
    assert kinds.index("resync") < kinds.index("synced") < kinds.index("enter")
    assert m.link().state is RegistrationState.LIVE
    # Split with an occupant behind it: the ping answer asks the slave to register again
    # (it says what it has, and gets exactly what it missed).
    m.send(f"<presence from='{SLAVE}' to='{ROOM}' type='error'/>")
    m.now += 20
    [ping] = _to_slave(m.core.tick(m.now))
    out = m.send(f"<iq type='result' from='{SLAVE}' to='{ROOM}' id='{ping['id']}'/>")
    assert m.link().state is RegistrationState.SPLIT
    assert [_dmuc(s) for s in _to_slave(out)] == ["rejoin"]
    out = m.send(f"<iq type='set' from='{SLAVE}' to='{ROOM}' id='r2'>"
                 f"<register xmlns='{xmlns.DMUC}' keepalive='60' history='5' last=''/></iq>")
    assert m.link().state is RegistrationState.LIVE
    assert [_dmuc(s) for s in _to_slave(out)][1] == "resync"
