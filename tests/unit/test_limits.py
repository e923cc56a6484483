"""Rate limits (dmuc/master/features/limits.py, issue 8 point 3), as Prosody's
mod_muc_limits: a token bucket per user session and a larger one per allowed slave; over
the limit, wait/policy-violation by the room, one log line per refused burst; what the room
must accept (errors, IQ results, leaving) is never limited. Virtual time throughout."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.config import ConfigError, load_master_config
from dmuc.master.features import limits as rate_limits
from dmuc.master.features.limits import (
    MAX_TRACKED,
    OVERACTIVE_ROOM,
    OVERACTIVE_SERVICE,
    Limiter,
    Limits,
)
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from tests.unit.muc_helpers import (
    BIGCHEESE,
    ROOM,
    SERVICE,
    TROY,
    WIZ,
    Harness,
    error_condition,
    parse,
)

SLAVE = "dmuc.vesa.yeggmaex.irc"


def at(h: Harness, xml: str, now: float | None = None) -> Outbox:
    """Send without moving the clock (Harness.send adds a second a stanza)."""
    return h.service.receive(parse(xml), h.now if now is None else now)


def say(who: str, text: str, stanza_id: str = "m") -> str:
    return (f"<message from='{who}' to='{ROOM}' type='groupchat' id='{stanza_id}'>"
            f"<body>{text}</body></message>")


def room(limits: Limits, **settings: object) -> Harness:
    """WiZ owns an instant room, Troy is in it; the clock is then left alone."""
    h = Harness(limits=limits, **settings)
    h.create_instant(WIZ, "WiZ")
    h.join(TROY, "Troy")
    h.now += 1000  # every bucket full again
    return h


def refusals(out: Outbox) -> list[Element]:
    return [d.stanza for d in out.deliveries if d.stanza.getAttribute("type") == "error"]


def relayed(out: Outbox) -> int:
    return sum(len(d.recipients or ()) for d in out.deliveries
               if d.stanza.name == "message" and d.stanza.getAttribute("type") == "groupchat")


def limit_lines(out: Outbox) -> list[str]:
    return [m for level, m in out.log if "rate limit" in m and level == "info"]


def test_a_burst_passes_then_wait_policy_violation_by_the_room() -> None:
    h = room(Limits(rate=1, burst=5))
    outs = [at(h, say(TROY, f"flood {n}", f"f{n}")) for n in range(8)]
    assert [relayed(o) for o in outs[:5]] == [2] * 5  # WiZ and Troy's echo
    for n, out in enumerate(outs[5:], start=5):
        assert relayed(out) == 0
        (reply,) = refusals(out)
        assert reply.name == "message" and reply["to"] == TROY and reply["from"] == ROOM
        assert reply["id"] == f"f{n}"
        err = stanzas.child(reply, "error")
        assert err["type"] == "wait" and err["by"] == ROOM
        assert error_condition(reply) == "policy-violation"
        assert stanzas.text_of(stanzas.child(err, "text")) == OVERACTIVE_ROOM
        # as mod_muc_limits: the body comes back, so the client can tell what was not sent
        assert stanzas.text_of(stanzas.child(reply, "body")) == f"flood {n}"
    # one log line for the refused burst, not one a stanza
    assert [len(limit_lines(o)) for o in outs] == [0] * 5 + [1, 0, 0]
    assert TROY in limit_lines(outs[5])[0] and ROOM in limit_lines(outs[5])[0]
    # the bucket refills at `rate`: a second later one more message goes through
    assert relayed(at(h, say(TROY, "later"), h.now + 1)) == 2


def test_a_long_flood_logs_once_every_ten_seconds_with_the_count() -> None:
    h = room(Limits(rate=1, burst=2))
    start = h.now
    lines: list[tuple[float, str]] = []
    refused = 0
    for n in range(300):  # 10 stanzas a second for 30 s: 1 a second gets through
        now = start + n / 10
        out = at(h, say(TROY, "x", f"x{n}"), now)
        refused += len(refusals(out))
        lines += [(now, line) for line in limit_lines(out)]
    assert 265 <= refused <= 272
    assert len(lines) == 3, lines  # at the first refusal, then after 10 s, after 20 s
    assert "refusing stanzas from" in lines[0][1]
    assert lines[1][0] - lines[0][0] >= 10 and lines[2][0] - lines[1][0] >= 10
    assert "refused" in lines[1][1] and "in the last 10 s" in lines[1][1]


def test_one_flooder_does_not_limit_another_occupant() -> None:
    h = room(Limits(rate=1, burst=3))
    for n in range(20):
        at(h, say(TROY, "flood", f"f{n}"))
    assert relayed(at(h, say(WIZ, "still here"))) == 2
    ping = at(h, f"<iq type='get' id='p' from='{WIZ}' to='{ROOM}/Troy'>"
                 "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert not refusals(ping) and ping.deliveries  # forwarded to Troy
    service_ping = at(h, f"<iq type='get' id='p2' from='{WIZ}' to='{SERVICE}'>"
                         "<ping xmlns='urn:xmpp:ping'/></iq>")
    assert service_ping.deliveries[0].stanza["type"] == "result"


def test_a_session_has_one_bucket_per_room_as_mod_muc_limits() -> None:
    h = room(Limits(rate=1, burst=3))
    for n in range(3):
        at(h, say(TROY, "x", f"x{n}"))
    assert refusals(at(h, say(TROY, "x", "x3")))  # this room's bucket is empty
    # the service itself has a bucket of its own: served, then refused with `by` it
    for _ in range(3):
        assert not refusals(at(h, f"<iq type='get' id='d' from='{TROY}' to='{SERVICE}'>"
                                   "<query xmlns='http://jabber.org/protocol/disco#items'/>"
                                   "</iq>"))
    out = at(h, f"<iq type='get' id='d' from='{TROY}' to='{SERVICE}'>"
                "<query xmlns='http://jabber.org/protocol/disco#items'/></iq>")
    (reply,) = refusals(out)
    err = stanzas.child(reply, "error")
    assert err["by"] == SERVICE and err["type"] == "wait"
    assert stanzas.text_of(stanzas.child(err, "text")) == OVERACTIVE_SERVICE
    # so has another room: the join goes through
    other = "ops@channel.avalon.irc"
    out = at(h, f"<presence from='{TROY}' to='{other}/Troy'>"
                f"<x xmlns='{xmlns.MUC}'/></presence>")
    assert not refusals(out)
    assert other in h.service.rooms


def test_errors_results_and_leaving_are_never_limited() -> None:
    h = room(Limits(rate=0.001, burst=2))
    assert relayed(at(h, say(TROY, "one"))) == 2
    assert relayed(at(h, say(TROY, "two"))) == 2
    assert refusals(at(h, say(TROY, "three")))
    # an IQ result, an error: never answered, never limited (no error to an error)
    assert not at(h, f"<iq type='result' id='r' from='{TROY}' to='{ROOM}/WiZ'/>").deliveries
    # leaving goes through: everyone sees Troy go
    out = at(h, f"<presence type='unavailable' from='{TROY}' to='{ROOM}/Troy'/>")
    assert not refusals(out) and "Troy" not in h.service.rooms[ROOM].occupants
    # a bounce removes a ghost session, even over the limit
    h.join(BIGCHEESE, "BigCheese")
    for n in range(3):
        at(h, say(BIGCHEESE, "x", f"b{n}"))
    out = at(h, f"<message type='error' from='{BIGCHEESE}' to='{ROOM}/WiZ'>"
                "<error type='cancel'><recipient-unavailable "
                "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>")
    assert not refusals(out)
    assert "BigCheese" not in h.service.rooms[ROOM].occupants


def register(slave: str, stanza_id: str, room_jid: str = ROOM) -> str:
    return (f"<iq type='set' id='{stanza_id}' from='{slave}' to='{room_jid}'>"
            f"<register xmlns='{xmlns.DMUC}' keepalive='60' history='20'/></iq>")


def keepalive(slave: str, stanza_id: str, room_jid: str = ROOM) -> str:
    return (f"<iq type='get' id='{stanza_id}' from='{slave}' to='{room_jid}'>"
            f"<keepalive xmlns='{xmlns.DMUC}'/></iq>")


def test_an_allowed_slave_has_its_own_larger_bucket() -> None:
    h = room(Limits(rate=1, burst=2, slave_rate=1, slave_burst=10),
             slaves={SLAVE: frozenset({"vesa.yeggmaex.irc"})})
    assert at(h, register(SLAVE, "reg")).deliveries[0].stanza["type"] == "result"
    answers = [at(h, keepalive(SLAVE, f"ka{n}")) for n in range(12)]
    assert [o.deliveries[0].stanza["type"] for o in answers] == ["result"] * 9 + ["error"] * 3
    err = stanzas.child(answers[9].deliveries[0].stanza, "error")
    assert err["type"] == "wait" and err["by"] == ROOM
    assert error_condition(answers[9].deliveries[0].stanza) == "policy-violation"
    assert len(limit_lines(answers[9])) == 1 and f"slave {SLAVE}" in limit_lines(answers[9])[0]
    assert sum(len(limit_lines(o)) for o in answers) == 1
    # its pongs and bounces still count as heard (never limited)
    assert not refusals(at(h, f"<iq type='result' id='nope' from='{SLAVE}' to='{ROOM}'/>"))
    # a refuse (an unavailable presence of the slave's own) is limited like the rest
    out = at(h, f"<presence type='unavailable' from='{SLAVE}' to='{ROOM}'>"
                f"<x xmlns='{xmlns.DMUC}'><refuse jid='{BIGCHEESE}'/></x></presence>")
    assert error_condition(refusals(out)[0]) == "policy-violation"
    # a user's stanzas count against that user alone, not against the slave
    assert relayed(at(h, say(WIZ, "fine"))) == 2


def test_a_server_jid_that_is_not_an_allowed_slave_gets_a_session_bucket() -> None:
    h = room(Limits(rate=1, burst=2, slave_rate=1, slave_burst=100))
    answers = [at(h, register("dmuc.forged.example", f"r{n}")) for n in range(4)]
    conditions = [error_condition(o.deliveries[0].stanza) for o in answers]
    assert conditions == ["forbidden", "forbidden", "policy-violation", "policy-violation"]


def test_a_rate_of_zero_turns_a_limit_off() -> None:
    h = room(Limits(rate=0, burst=1, slave_rate=0))
    assert all(relayed(at(h, say(TROY, "x", f"x{n}"))) == 2 for n in range(200))
    assert rate_limits.setup(h.service.hooks, h.service) is not None  # hooked, but idle
    assert Harness().service.settings.limits is None  # the core's default: no limits


def test_nick_and_body_length_bounds_are_opt_in() -> None:
    h = room(Limits(rate=0, slave_rate=0, max_nick_length=5, max_char_count=10))
    out = at(h, f"<presence from='{BIGCHEESE}' to='{ROOM}/BigCheese'>"
                f"<x xmlns='{xmlns.MUC}'/></presence>")
    (reply,) = refusals(out)
    assert error_condition(reply) == "policy-violation" and reply["from"] == f"{ROOM}/BigCheese"
    assert stanzas.child(reply, "error")["type"] == "modify"
    assert "BigCheese" not in h.service.rooms[ROOM].occupants
    assert not refusals(at(h, f"<presence from='{BIGCHEESE}' to='{ROOM}/Big'>"
                              f"<x xmlns='{xmlns.MUC}'/></presence>"))
    # a nick change to a long nick is refused too; a presence update is not
    assert refusals(at(h, f"<presence from='{BIGCHEESE}' to='{ROOM}/Cheesecake'/>"))
    assert not refusals(at(h, f"<presence from='{BIGCHEESE}' to='{ROOM}/Big'>"
                              "<show>away</show></presence>"))
    out = at(h, say(TROY, "x" * 11))
    (reply,) = refusals(out)
    assert error_condition(reply) == "policy-violation" and relayed(out) == 0
    assert stanzas.child(reply, "error")["by"] == ROOM
    assert len(out.log) == 1 and "refused" in out.log[0][1]
    assert relayed(at(h, say(TROY, "x" * 10))) == 3


def test_buckets_are_forgotten_once_full_again() -> None:
    limiter = Limiter(rate=10, burst=50)  # a bucket refills in 5 s
    for n in range(1000):
        assert limiter.take(f"user{n}@example/r", 100.0 + n / 1000) is None
    assert len(limiter.buckets) == 1000
    limiter.take("late@example/r", 106.0)
    assert list(limiter.buckets) == ["late@example/r"]
    assert MAX_TRACKED >= 10_000


def test_a_clock_going_backwards_refills_nothing() -> None:
    limiter = Limiter(rate=1, burst=1)
    assert limiter.take("a@b/c", 100.0) is None
    assert limiter.take("a@b/c", 50.0) is not None
    assert limiter.take("a@b/c", 51.5) is None


# --- configuration ---------------------------------------------------------------------

MASTER = """
[component]
jid = "channel.avalon.irc"
secret = "s"
[storage]
url = "sqlite:///{db}"
"""


def load(tmp_path: Path, extra: str = "") -> object:
    path = tmp_path / "m.toml"
    path.write_text(MASTER.format(db=tmp_path / "x.db") + extra)
    return load_master_config(str(path))


def test_config_defaults_are_on_and_generous(tmp_path: Path) -> None:
    limits = load(tmp_path).muc.limits  # type: ignore[attr-defined]
    assert limits == Limits() and (limits.rate, limits.burst) == (10, 50)
    assert (limits.slave_rate, limits.slave_burst) == (100, 1000)
    etc = Path(__file__).resolve().parents[2] / "etc" / "dmuc-master.toml"
    shipped = (tmp_path / "etc.toml")
    shipped.write_text(etc.read_text().replace("/var/lib/dmuc/", f"{tmp_path}/"))
    assert load_master_config(str(shipped)).muc.limits == Limits()


def test_config_values(tmp_path: Path) -> None:
    limits = load(tmp_path, "[muc.limits]\nrate = 0.5\nburst = 6\nslave_rate = 20\n"
                            "max_nick_length = 23\n").muc.limits  # type: ignore[attr-defined]
    assert limits == Limits(rate=0.5, burst=6, slave_rate=20, max_nick_length=23)
    inline = load(tmp_path, "[muc]\nlimits = { rate = 2, burst = 4 }\n")
    assert inline.muc.limits == Limits(rate=2, burst=4)  # type: ignore[attr-defined]
    off = load(tmp_path, "[muc.limits]\nrate = 0\nslave_rate = 0\n")
    assert off.muc.limits is None  # type: ignore[attr-defined]


@pytest.mark.parametrize(("extra", "key"), [
    ("[muc.limits]\nrate = -1\n", "muc.limits.rate"),
    ("[muc.limits]\nrate = nan\n", "muc.limits.rate"),
    ("[muc.limits]\nrate = inf\n", "muc.limits.rate"),
    ('[muc.limits]\nrate = "10"\n', "muc.limits.rate"),
    ("[muc.limits]\nburst = 0\n", "muc.limits.burst"),
    ("[muc.limits]\nburst = 2.5\n", "muc.limits.burst"),
    ("[muc.limits]\nslave_burst = true\n", "muc.limits.slave_burst"),
    ("[muc.limits]\nmax_nick_length = -3\n", "muc.limits.max_nick_length"),
    ("[muc.limits]\nspeed = 3\n", "muc.limits.speed"),
    ("[muc]\nlimits = 3\n", "muc.limits"),
])
def test_config_mistakes_name_the_key(tmp_path: Path, extra: str, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        load(tmp_path, extra)
    assert err.value.key == key and err.value.reason
    assert "\n" not in str(err.value) and str(err.value).startswith(str(tmp_path))
