"""Sequence numbers on the link (docs/protocol.md §4.11.2): the one rule of both
directions (xep0282.missing_before), the master's record of what a slave forwarded
(master/numbering.py: a hole is a loss once it lasted GAP_GRACE), and the slave's resend."""

from __future__ import annotations

import pytest

from dmuc import xmlns
from dmuc.master.numbering import GAP_GRACE, MAX_RESEND, ForwardedNumbers
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas, xep0282
from tests.unit.muc_helpers import ROOM, VALDIS, WUMPUS
from tests.unit.test_ambiguous_faults import KILLRC, talking_net


@pytest.mark.parametrize(("expected", "seq", "missing"), [
    (None, 7, 0),  # nothing expected yet: in order
    (5, 5, 0),
    (5, 8, 3),
    (5, 4, None),  # a repeat
])
def test_missing_before(expected: int | None, seq: int, missing: int | None) -> None:
    assert xep0282.missing_before(expected, seq) == missing


# events: ("heard", seq, at) | ("sent", n, at) | ("lost", at, expected ranges)
CASES = {
    "in order: nothing lost": [("heard", 1, 0.0), ("heard", 2, 0.1), ("lost", 5.0, [])],
    "a hole filled late (another stream) is no loss": [
        ("heard", 1, 0.0), ("heard", 3, 0.1), ("lost", 0.5, []), ("heard", 2, 0.6),
        ("lost", 5.0, [])],
    "a hole that lasts is asked for, once": [
        ("heard", 1, 0.0), ("heard", 4, 0.1), ("heard", 6, 0.2),
        ("lost", 0.1 + GAP_GRACE, [(2, 3), (5, 5)]), ("lost", 9.0, []),
        ("heard", 7, 9.1), ("lost", 20.0, [])],
    "a keepalive names a lost tail": [
        ("heard", 1, 0.0), ("sent", 3, 1.0), ("lost", 1.5, []),
        ("lost", 1.0 + GAP_GRACE, [(2, 3)])],
    "a keepalive behind what arrived": [("heard", 1, 0.0), ("heard", 2, 0.0),
                                        ("sent", 1, 1.0), ("lost", 9.0, [])],
    "repeats are ignored": [("heard", 1, 0.0), ("heard", 1, 0.1), ("lost", 9.0, [])],
    "a hole larger than the slave remembers": [
        ("heard", MAX_RESEND + 10, 0.0), ("lost", 9.0, [(11, MAX_RESEND + 9)])],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_forwarded_numbers(case: str) -> None:
    numbers = ForwardedNumbers()
    for event in CASES[case]:
        if event[0] == "heard":
            numbers.heard(event[1], event[2])
        elif event[0] == "sent":
            numbers.said_sent(event[1], event[2])
        else:
            assert numbers.lost(event[1]) == event[2], event


def test_a_registration_restarts_the_count_where_the_slave_is() -> None:
    numbers = ForwardedNumbers()
    numbers.heard(1, 0.0)
    numbers.heard(5, 0.0)
    numbers.restart(40)  # it registered again: what it sent before is resynced
    numbers.heard(38, 0.1)  # a straggler from before
    numbers.heard(41, 0.2)
    assert numbers.lost(9.0) == []


def test_the_slave_sends_again_what_the_master_names() -> None:
    """A groupchat message goes again as a resubmission with the time it was said, a
    presence as it was; a lost IQ is answered (it cannot go again unasked)."""
    net, _ = talking_net()
    link = net.slaves[KILLRC].links[ROOM]
    first = link.sent_seq + 1
    net.one_way.add((KILLRC, "avalon.irc"))
    said = net.now
    net.user_sends(f"<message from='{WUMPUS}' to='{ROOM}' type='groupchat' id='w1'>"
                   "<body>lost</body></message>")
    net.user_sends(f"<presence from='{VALDIS}' to='{ROOM}/Valdis'><show>away</show>"
                   "</presence>")
    net.user_sends(f"<iq from='{VALDIS}' to='{ROOM}/Wumpus' type='get' id='v1'>"
                   "<vCard xmlns='vcard-temp'/></iq>")
    net.one_way.clear()
    request = xep0282.resend_request(ROOM, link.config.slave_jid, first, first + 2)
    out = Outbox(net.now + 2)
    link.resend(stanzas.child(request, "x", xmlns.DMUC).firstChildElement(), out)
    sent = [d.stanza for d in out.deliveries]
    message, presence, answer = sent
    assert message["id"] == "dmuc-resent-w1"
    assert said - 1 < xep0282.held_stamp(message) <= said  # whole seconds
    assert xep0282.sequence_number(message) == first + 3  # numbered anew
    assert presence.name == "presence" and presence["to"] == f"{ROOM}/Valdis"
    assert answer["type"] == "error" and answer["to"] == VALDIS
    assert stanzas.error_condition(answer) == "remote-server-timeout"
