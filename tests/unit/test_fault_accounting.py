"""The fault tests' accounting (tests/integration/traffic.py), on records made by hand: a
message that reached no one is lost unless its sender got an error for it (then it is
counted apart, never dropped from judgment), and only a direct sender's own server's
errors, for a fault documented to cause them, are allowed."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tests.integration.traffic import Accounting, Copy, Participant, Window, account

KILLRC, EFNET = "killrc.oulubox.irc", "efnet.irc"


def _driver() -> SimpleNamespace:
    roles = {KILLRC: "slave", EFNET: "direct"}
    network = SimpleNamespace(server=lambda domain: SimpleNamespace(role=roles[domain]))
    return SimpleNamespace(network=network)


def _people(sender_domain: str, condition: str | None, reached: bool) -> list[Participant]:
    """A sender and a receiver in the room throughout; the sender said one message (and
    got `condition` for it), which reached the receiver if `reached`."""
    driver = _driver()
    sender = Participant(driver, "s", f"s@{sender_domain}/x")  # type: ignore[arg-type]
    receiver = Participant(driver, "r", f"r@{KILLRC}/x")  # type: ignore[arg-type]
    for p in (sender, receiver):
        p.windows = [Window(0.0)]
        p.lenient_windows = [Window(0.0)]
        p.present = True
        p.roster = {"s", "r"}
        p.client = SimpleNamespace(xmpp=SimpleNamespace(transport=object()))  # type: ignore[assignment]
    sender.sent["run.s.00001"] = 10.0
    if condition is not None:
        sender.bounced["run.s.00001"] = condition
    if reached:
        receiver.copies["run.s.00001"] = [Copy(11.0, "sid", None)]
        sender.copies["run.s.00001"] = [Copy(11.0, "sid", None)]
    return [sender, receiver]


def _judged(people: list[Participant], allowed: bool) -> Accounting:
    acc = account(people, {"s", "r"})
    acc.direct_bounces_allowed = allowed
    return acc


@pytest.mark.parametrize(("domain", "condition", "reached", "allowed", "lost", "told", "ok"), [
    (EFNET, None, True, False, 0, 0, True),  # delivered: nothing to say
    (EFNET, None, False, True, 2, 0, False),  # reached no one, nobody told: lost
    (EFNET, "remote-server-not-found", False, True, 0, 2, True),  # its server said so
    (EFNET, "remote-server-not-found", False, False, 0, 2, False),  # not for this fault
    (EFNET, "recipient-unavailable", False, True, 0, 2, True),  # mod_smacks' bounce
    (EFNET, "remote-server-not-found", True, True, 0, 0, False),  # an error, yet delivered
    (EFNET, "policy-violation", False, True, 0, 2, False),  # the room refused it
    (KILLRC, "remote-server-not-found", False, True, 0, 2, False),  # its slave holds it
])
def test_a_message_that_reached_no_one_is_lost_unless_its_sender_was_told(
        domain: str, condition: str | None, reached: bool, allowed: bool, lost: int,
        told: int, ok: bool) -> None:
    acc = _judged(_people(domain, condition, reached), allowed)
    assert (acc.expected, acc.lost, acc.undelivered_bounced) == (2, lost, told)
    assert (acc.failures == []) is ok, acc.failures
