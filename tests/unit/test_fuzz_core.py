"""Fuzz the master's core (issue 8 point 6), in-process: random, well-formed but hostile
stanzas (fuzz_stanzas.py) from users, an allowed slave (for itself and for its users), a
server that is not allowed, and the service's own addresses; after each one, the room state
must be consistent:

* every occupant in the roster has a session, its nick and a role; every session maps to the
  occupant that has it (and nothing else); every room has an owner;
* the routing indexes (sessions reached directly or through each slave, moderators behind
  each slave) agree with the roster;
* what the core sends renders, is addressed, never goes to the service itself, never
  answers an error with an error; every log line is one line.

Seeded and bounded: each seed is a fixed run (DMUC_FUZZ_SEED=n runs seed n alone, and
DMUC_FUZZ_STANZAS the number of stanzas); a failure names its seed, step and stanza.
"""

from __future__ import annotations

import os
import random

import pytest

from dmuc import jids
from dmuc.master.features.limits import Limits
from dmuc.master.model import ROLES
from dmuc.master.service import MUCService, ServiceSettings
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from tests.unit.fuzz_stanzas import StanzaFuzzer
from tests.unit.muc_helpers import SERVICE, parse

SLAVE = "dmuc.vesa.yeggmaex.irc"
SLAVE_DOMAIN = "vesa.yeggmaex.irc"
ROOMS = [f"{name}@{SERVICE}" for name in ("wallops", "ops", "fuzz")]
USERS = ["argl@killrc.oulubox.irc/laptop", "argl@killrc.oulubox.irc/phone",
         "squit@eris.dclxvii.irc/jupiter", "ludwig@efnet.irc/vt100", "admin@avalon.irc/x",
         f"rubenro@{SLAVE_DOMAIN}/shaver", f"rubenro@{SLAVE_DOMAIN}/phone",
         f"msa@{SLAVE_DOMAIN}/bicycle"]
NICKS = ["WiZ", "Troy", "wumpus", "Ludwig", "n1", "BigCheese", "efchen"]
STANZAS = int(os.environ.get("DMUC_FUZZ_STANZAS", "1500"))
SEEDS = [int(os.environ["DMUC_FUZZ_SEED"])] if os.environ.get("DMUC_FUZZ_SEED") else \
    [1, 2, 3, 4]


def check_room_state(service: MUCService) -> None:
    for room_jid, room in service.rooms.items():
        assert room.jid == room_jid and not room.destroyed
        assert "owner" in room.affiliations.values(), f"{room_jid} has no owner"
        for nick, occupant in room.occupants.items():
            assert occupant.nick == nick
            assert occupant.sessions, f"{nick} in {room_jid} has no session"
            assert occupant.primary in occupant.sessions
            assert occupant.role in ROLES and occupant.role != "none", occupant.role
            for session in occupant.sessions:
                assert room.nick_of.get(session) == nick, (session, nick)
        for session, nick in room.nick_of.items():
            assert session in room.occupants[nick].sessions, (session, nick)
        routes = service.distribution.routes.get(room_jid)
        if routes is None:
            assert not room.occupants, f"{room_jid}: occupants but no routes"
            continue
        assert set(routes.direct) | set(routes.via) == set(room.nick_of)
        assert not set(routes.direct) & set(routes.via)
        behind: dict[str, set[str]] = {}
        for session, slave in routes.via.items():
            behind.setdefault(slave, set()).add(session)
        assert routes.sessions == behind
        moderating = {s for s in routes.via if room.occupant_by_session(s).role == "moderator"}
        assert routes.moderating == moderating
        counts = {slave: sum(1 for s in moderating if routes.via[s] == slave)
                  for slave in behind}
        assert {k: v for k, v in routes.moderators.items() if v} == \
            {k: v for k, v in counts.items() if v}


def check_outbox(stanza_in, out: Outbox) -> list:  # type: ignore[no-untyped-def]
    """The checks on what one stanza caused; returns the stanzas it sends to the service
    itself (Prosody would route them back to us)."""
    was_error = stanza_in.getAttribute("type") == "error"
    sender = stanza_in.getAttribute("from")
    to_ourselves = []
    for delivery in out.deliveries:
        recipients = delivery.recipients or [delivery.stanza.getAttribute("to")]
        for to in recipients:
            assert to, delivery.stanza.toXml()
            if was_error and to == sender:
                assert delivery.stanza.getAttribute("type") != "error", "error to an error"
            if jids.bare(to).split("@")[-1] == SERVICE:
                copy = stanzas.copy(delivery.stanza)
                copy["to"] = to
                to_ourselves.append(copy)
        list(stanzas.render_many(delivery.stanza, recipients, delivery.xml))
    for _level, message in out.log:
        assert "\n" not in message and "\r" not in message, message
    return to_ourselves


def loop_back(service: MUCService, pending: list, now: float) -> None:  # type: ignore[no-untyped-def]
    """What the core sends to its own addresses comes back to it through Prosody (an
    invitation to an occupant JID, the error answering a stanza from a room JID): it
    must die out within a few rounds, never loop."""
    for _round in range(4):
        if not pending:
            return
        returned = []
        for stanza in pending:
            returned += check_outbox(stanza, service.receive(stanza, now))
        pending = returned
    raise AssertionError(f"a loop through our own addresses: {pending[0].toXml()[:500]}")


def run(seed: int, limits: Limits | None) -> int:
    rng = random.Random(seed)
    service = MUCService(ServiceSettings(jid=SERVICE, slaves={SLAVE: frozenset({SLAVE_DOMAIN})},
                                         limits=limits, admins=frozenset({"admin@avalon.irc"})))
    fuzz = StanzaFuzzer(rng, SERVICE, ROOMS, USERS, NICKS, big=5000,
                        other_services=["example.org", "conference.example.org"])
    now = 1_000_000.0
    sent = 0
    for step in range(STANZAS):
        now += rng.choice([0.0, 0.001, 0.01, 0.5, 3.0])
        r = rng.random()
        who = rng.choice(USERS)
        room = rng.choice(ROOMS)
        if r < 0.15:  # a plain join, so that rooms fill up
            xml = (f"<presence from='{who}' to='{room}/{rng.choice(NICKS)}'>"
                   "<x xmlns='http://jabber.org/protocol/muc'/></presence>")
        elif r < 0.2:  # an owner's configuration (unlocks a new room)
            xml = (f"<iq type='set' id='c' from='{who}' to='{room}'><query "
                   "xmlns='http://jabber.org/protocol/muc#owner'><x xmlns='jabber:x:data' "
                   "type='submit'/></query></iq>")
        elif r < 0.3:
            xml = fuzz.slave_request(room, SLAVE)
        elif r < 0.35:
            xml = fuzz.stanza(rng.choice([SLAVE, "dmuc.forged.example", SERVICE,
                                          f"{room}/ghost", "killrc.oulubox.irc"]))
        else:
            xml = fuzz.stanza(who)
        if r > 0.99:
            out = service.tick(now + rng.choice([30.0, 300.0, 3600.0]))
            check_room_state(service)
        stanza = parse(xml)
        where = f"seed {seed}, step {step}: {xml[:3000]}"
        try:
            out = service.receive(stanza, now)
        except Exception as exc:
            raise AssertionError(f"{type(exc).__name__}: {exc} at {where}") from exc
        sent += 1
        try:
            loop_back(service, check_outbox(stanza, out), now)
            check_room_state(service)
        except AssertionError as exc:
            raise AssertionError(f"{exc} at {where}") from exc
    return sent


@pytest.mark.parametrize("seed", SEEDS)
def test_random_hostile_stanzas_keep_the_core_consistent(seed: int) -> None:
    print(f"fuzz seed {seed} (rerun alone: DMUC_FUZZ_SEED={seed})")
    assert run(seed, None) == STANZAS


@pytest.mark.parametrize("seed", SEEDS[:2])
def test_the_same_with_tight_rate_limits(seed: int) -> None:
    print(f"fuzz seed {seed} (rerun alone: DMUC_FUZZ_SEED={seed})")
    assert run(seed, Limits(rate=2, burst=20, slave_rate=5, slave_burst=30,
                            max_nick_length=10, max_char_count=2000)) == STANZAS
