"""When a local user said a groupchat message travels with it (docs/protocol.md §4.11.2):
mod_dmuc_slave stamps it (<said/>), the slave holds it with that time whatever kept it
waiting (the module while the slave was down, the slave's socket while it was stopped),
and the room shows it with that time. A client cannot claim one."""

from __future__ import annotations

import pytest
from twisted.words.protocols.jabber.jid import JID

from dmuc import xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas, xep0282
from dmuc.slave.link import LinkState
from tests.unit.dmuc_net import Net, module_stamp
from tests.unit.muc_helpers import ROOM, VALDIS, WIZ, WUMPUS, parse
from tests.unit.test_ambiguous_faults import KEEPALIVE, KILLRC, talking_net

NOW = 1_000_000.0


@pytest.mark.parametrize(("stamp", "expected"), [
    (None, None),
    (NOW, NOW),
    (NOW - 30.5, NOW - 30.5),
    (NOW - xep0282.MAX_HELD_SECONDS, NOW - xep0282.MAX_HELD_SECONDS),
    (NOW - xep0282.MAX_HELD_SECONDS - 1, None),  # older than a day: the replay's time
    (NOW + 1, None),  # in the future
])
def test_plausible_said_time(stamp: float | None, expected: float | None) -> None:
    assert xep0282.plausible_said_time(stamp, NOW) == expected


def _marked(stamp: str | None) -> stanzas.Element:
    said = "" if stamp is None else f"<said stamp='{stamp}'/>"
    return parse(f"<message from='{WUMPUS}' to='{ROOM}' type='groupchat' id='m'>"
                 f"<body>hi</body><x xmlns='{xmlns.DMUC}'>{said}</x></message>")


@pytest.mark.parametrize(("trusted", "stamp", "expected"), [
    (True, stanzas.format_stamp(NOW - 30), NOW - 30),  # from the module in front of us
    (True, "1970-01-12T13:46:10.250Z", NOW - 29.75),  # with milliseconds, as the module
    (False, stanzas.format_stamp(NOW - 30), None),  # no module said it is there: a client's
    (True, None, None),  # missing
    (True, "yesterday", None),  # malformed
    (True, "", None),
    (True, stanzas.format_stamp(NOW + 60), None),  # in the future
    (True, stanzas.format_stamp(NOW - 2 * xep0282.MAX_HELD_SECONDS), None),  # too old
])
def test_said_time_the_one_rule_of_master_and_slave(
        trusted: bool, stamp: str | None, expected: float | None) -> None:
    assert xep0282.said_time(_marked(stamp), trusted, NOW) == expected


def _delay_of(stanza: stanzas.Element) -> float | None:
    delay = stanzas.child(stanza, "delay", xmlns.DELAY)
    return None if delay is None else stanzas.parse_stamp(delay["stamp"])


def _line(net: Net, who: str, text: str) -> None:
    net.user_sends(f"<message from='{who}' to='{ROOM}' type='groupchat' id='{text}'>"
                   f"<body>{text}</body></message>")


def _settle(net: Net) -> None:
    """Time passes until every link is LIVE again (what users got stays in their inbox)."""
    for _ in range(12):
        net.tick(KEEPALIVE)
    for slave in net.slaves.values():
        assert {link.state for link in slave.links.values()} <= {LinkState.LIVE}


def _received(net: Net, who: str) -> dict[str, float | None]:
    """The groupchat lines `who` got: body -> the delay stamp it came with (None: live)."""
    return {str(stanzas.child(m, "body")): _delay_of(m) for m in net.take(who)
            if m.name == "message" and stanzas.child(m, "body") is not None}


def test_what_waited_in_a_stopped_slave_keeps_the_time_each_line_was_said() -> None:
    """What waited in the slave's socket while it was stopped (its link down too) is
    forwarded, lost, and held when the split is found: with the module's time, so the
    room shows each line when it was said, not when the slave read it."""
    net, _ = talking_net()
    net.take(WIZ)
    net.pause(KILLRC)
    net.down.add(KILLRC)
    said = {}
    for n in range(20):
        said[f"stopped {n}"] = net.now
        _line(net, WUMPUS, f"stopped {n}")
        net.tick(1)
    net.resume(KILLRC, timers_first=True)
    for _ in range(3):  # what it forwarded on is lost: the silence goes on, a split
        net.tick(KEEPALIVE)
    assert net.slaves[KILLRC].links[ROOM].state is LinkState.SPLIT
    net.down.clear()
    _settle(net)
    late = {line: stamp for line, stamp in _received(net, WIZ).items() if line in said}
    assert set(late) == set(said)
    for line, stamp in late.items():  # held: with when it was said (whole seconds)
        assert stamp is not None and said[line] - 1 < stamp <= said[line], line


def test_a_resubmission_while_registering_is_held_with_its_time_not_shown() -> None:
    """mod_dmuc_slave's replay (dmuc-resent-) of what it handed a slave that then died
    may have been shown already: the slave does not show it, and holds it with its time,
    so wherever it is shown late it is shown as said then, not after later lines."""
    net, _ = talking_net()
    for who in (WIZ, WUMPUS, VALDIS):
        net.take(who)
    slave = net.slaves[KILLRC]
    net.down.add(KILLRC)
    net.tick(1)
    slave.connected(net.now)  # the restarted slave registers; nothing gets through
    assert slave.links[ROOM].state is LinkState.REGISTERING
    replay = parse(f"<message from='{WUMPUS}' to='{ROOM}' type='groupchat' "
                   "id='dmuc-resent-k1'><body>in flight at the kill</body></message>")
    module_stamp(replay, net.now - 1.5)  # said before the kill
    said = net.now - 1.5
    net.now += 0.001
    net._route(slave.receive(replay, net.now), source=slave.jid)
    _line(net, WUMPUS, "said while it was down")
    assert list(_received(net, VALDIS)) == ["said while it was down"]  # the echo only
    net.down.clear()
    _settle(net)
    for who in (WIZ, VALDIS):
        got = _received(net, who)
        stamp = got.get("in flight at the kill")
        assert stamp is not None and said - 1 < stamp <= said, (who, got)


def test_a_host_whose_module_does_not_stamp_has_its_stamps_ignored() -> None:
    """An older mod_dmuc_slave passes on what its clients put in: once its answer to the
    mirror list shows it does not stamp, a <said/> from its users is not believed."""
    net, _ = talking_net()
    slave = net.slaves[KILLRC]
    out = slave.connected(net.now)
    mirror = next(d.stanza for d in out.deliveries if d.stanza.getAttribute("to") == KILLRC)
    answer = stanzas.iq_result(mirror)
    answer["from"], answer["to"] = KILLRC, slave.jid
    warned = slave.receive(answer, net.now)
    assert KILLRC in slave.unstamped_hosts
    assert any("does not stamp" in line for _, line in warned.log)
    forged = parse(f"<message from='{WUMPUS}' to='{ROOM}' type='groupchat' id='f'>"
                   "<body>f</body></message>")
    module_stamp(forged, net.now - 3600)
    assert slave._said_at(forged, JID(WUMPUS), net.now) == net.now
    out = slave.connected(net.now)
    mirror = next(d.stanza for d in out.deliveries if d.stanza.getAttribute("to") == KILLRC)
    answer = stanzas.iq_result(mirror)
    answer.addElement((xmlns.DMUC, "mirror")).addElement("said")
    answer["from"], answer["to"] = KILLRC, slave.jid
    slave.receive(answer, net.now)
    assert KILLRC not in slave.unstamped_hosts
    assert slave._said_at(forged, JID(WUMPUS), net.now) == pytest.approx(net.now - 3600, abs=0.001)


def test_a_message_in_flight_shown_late_at_a_split_carries_its_time() -> None:
    """A split found after messages went out (a loss that ends in a bounce): what was in
    flight is shown to its own server only now, possibly after what its sender said
    since, so it comes with when it was said (as elsewhere), not as if said now."""
    net, _ = talking_net()
    for who in (WUMPUS, VALDIS):
        net.take(who)
    net.one_way.add((KILLRC, "avalon.irc"))
    said = net.now
    _line(net, WUMPUS, "in flight")
    net.now += 3
    _line(net, WUMPUS, "said after")
    link = net.slaves[KILLRC].links[ROOM]
    out = Outbox(net.now)
    link.bounced("a forward bounced", out)
    echoes = {str(stanzas.child(d.stanza, "body")): _delay_of(d.stanza)
              for d in out.deliveries if d.stanza.name == "message"}
    assert said - 1 < echoes["in flight"] <= said
    # just said, but in flight too: a later one of its sender may have been shown already
    assert net.now - 1 < echoes["said after"] <= net.now
