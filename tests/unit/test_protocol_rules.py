"""The rules master and slave share (dmuc.protocol), each as one table."""

from __future__ import annotations

from enum import Enum

import pytest

from dmuc import xmlns
from dmuc.errors import IllegalTransition
from dmuc.outbox import Outbox
from dmuc.protocol import keepalive, stanzas, visibility
from dmuc.protocol.history import History, delayed, with_default
from dmuc.protocol.statemachine import StateMachine

# --- who may see a real JID ----------------------------------------------------------------

VISIBILITY = [
    # whois, viewer role, sees real JIDs
    ("moderators", "moderator", True),
    ("moderators", "participant", False),
    ("moderators", "visitor", False),
    ("moderators", "none", False),
    ("anyone", "moderator", True),
    ("anyone", "participant", True),
    ("anyone", "visitor", True),
    ("anyone", "none", True),
]


@pytest.mark.parametrize(("whois", "role", "sees"), VISIBILITY)
def test_who_sees_real_jids(whois: str, role: str, sees: bool) -> None:
    assert visibility.sees_real_jids(whois, role) is sees


@pytest.mark.parametrize(("whois", "moderator_behind", "sees"), [
    ("moderators", True, True), ("moderators", False, False),
    ("anyone", True, True), ("anyone", False, True)])
def test_which_slaves_get_real_jids(whois: str, moderator_behind: bool, sees: bool) -> None:
    assert visibility.slave_sees_real_jids(whois, moderator_behind) is sees


@pytest.mark.parametrize(("extra", "codes"), [
    ((), ["110"]), (("210", "201"), ["110", "210", "201"]), (("303",), ["110", "303"])])
def test_self_presence_codes(extra: tuple[str, ...], codes: list[str]) -> None:
    assert visibility.self_status_codes(extra) == codes


@pytest.mark.parametrize(("whois", "codes"), [("moderators", []), ("anyone", ["100"])])
def test_100_only_as_one_enters(whois: str, codes: list[str]) -> None:
    """As mod_muc: 100 on entering a non-anonymous room, not on every own presence."""
    assert visibility.entering_status_codes(whois) == codes


def _presence(jid: str | None) -> stanzas.Element:
    item = {"affiliation": "none", "role": "participant", "jid": jid}
    return stanzas.occupant_presence(None, "r@muc/n", stanzas.muc_user_x([item]))


def test_deliver_presence_one_copy_per_kind() -> None:
    out = Outbox(0.0)
    built: list[str] = []

    def variant(kind: str) -> stanzas.Element:
        built.append(kind)
        presence = _presence(None if kind == "without_jid" else "u@h/r")
        return visibility.with_self_status(presence) if kind == "self" \
            else presence

    recipients = [("mod@h/1", "moderator"), ("p@h/1", "participant"), ("v@h/1", "visitor"),
                  ("u@h/r", "participant")]
    visibility.deliver_presence(out, variant, recipients, {"u@h/r"}, "moderators")
    assert built == ["with_jid", "without_jid", "self"]
    by_kind = {tuple(d.recipients): d.stanza for d in out.deliveries}
    assert stanzas.muc_item(by_kind[("mod@h/1",)])["jid"] == "u@h/r"
    assert stanzas.muc_item(by_kind[("p@h/1", "v@h/1")]).getAttribute("jid") is None
    assert stanzas.has_status(by_kind[("u@h/r",)], "110")


HIDES = [
    # presence type, item role, status codes, hides the occupant (still inside)
    ("unavailable", "participant", (), True),  # its role no longer broadcast (mod_muc)
    ("unavailable", "visitor", (), True),      # voice revoked into a role not broadcast
    ("unavailable", "none", (), False),        # it left
    ("unavailable", "none", ("307",), False),  # kicked
    ("unavailable", "participant", ("303",), False),  # a nick change
    (None, "participant", (), False),          # an ordinary presence
    ("unavailable", None, (), False),          # no muc#user item at all
]


@pytest.mark.parametrize(("ptype", "role", "codes", "hides"), HIDES)
def test_which_presence_hides_an_occupant(ptype: str | None, role: str | None,
                                          codes: tuple[str, ...], hides: bool) -> None:
    items = [{"affiliation": "none", "role": role}] if role is not None else []
    presence = stanzas.occupant_presence(None, "r@muc/n", stanzas.muc_user_x(items, list(codes)),
                                         ptype)
    assert visibility.hides_occupant(presence) is hides


ALL = ("moderator", "participant", "visitor")
NO_VISITORS = ("moderator", "participant")
# mod_muc's presence_broadcast on the room's side: (role now, role before, roles broadcast,
# hide, nick change, probe) -> (the others see it, they are told it is gone)
SHOWN = [
    ("participant", None, ALL, False, False, False, True, False),   # a status update
    ("visitor", None, NO_VISITORS, False, False, False, False, False),  # a hidden one's
    ("visitor", "participant", NO_VISITORS, False, False, False, True, True),  # voice revoked
    ("participant", "visitor", NO_VISITORS, False, False, False, True, False),  # voice granted
    ("visitor", "moderator", ("moderator",), False, False, False, True, True),
    ("visitor", None, NO_VISITORS, True, False, False, True, True),  # the setting changed
    ("participant", None, NO_VISITORS, True, False, False, True, False),  # still broadcast
    ("visitor", None, NO_VISITORS, False, True, False, True, False),  # its nick change
    ("visitor", None, NO_VISITORS, False, False, True, True, False),  # a probe's answer
    ("visitor", "participant", NO_VISITORS, False, False, True, True, False),
    ("none", "participant", NO_VISITORS, False, False, False, True, False),  # it leaves
    ("none", "visitor", NO_VISITORS, False, False, False, False, False),  # unseen, leaves
    ("none", "visitor", (*NO_VISITORS, "none"), False, False, False, True, False),
    ("none", None, NO_VISITORS, False, False, False, True, False),  # one session leaves
    ("none", "visitor", NO_VISITORS, True, False, False, False, False),
]


@pytest.mark.parametrize(("role", "prev_role", "broadcast", "hide", "nick_change", "probe",
                          "visible", "hiding"), SHOWN)
def test_which_presence_changes_the_others_see(role: str, prev_role: str | None,
                                               broadcast: tuple[str, ...], hide: bool,
                                               nick_change: bool, probe: bool, visible: bool,
                                               hiding: bool) -> None:
    shown = visibility.presence_shown(role, prev_role, broadcast, hide=hide,
                                      nick_change=nick_change, probe=probe)
    assert shown == visibility.PresenceShown(visible, hiding)


def test_deliver_presence_skips_a_kind_without_a_copy() -> None:
    """A hidden occupant's own sessions get nothing from a slave (the master sends theirs)."""
    out = Outbox(0.0)
    recipients = [("p@h/1", "participant"), ("u@h/r", "participant")]
    visibility.deliver_presence(
        out, lambda kind: None if kind == "self" else _presence(None), recipients, {"u@h/r"},
        "moderators")
    assert [d.recipients for d in out.deliveries] == [["p@h/1"]]


def test_without_real_jid_and_self_status_leave_the_original_alone() -> None:
    original = _presence("u@h/r")
    stripped = visibility.without_real_jid(original)
    own = visibility.with_self_status(original)
    assert stanzas.muc_item(stripped).getAttribute("jid") is None
    assert stanzas.has_status(own, "110") and not stanzas.has_status(own, "100")
    assert stanzas.muc_item(original)["jid"] == "u@h/r"
    assert not stanzas.has_status(original, "110")


@pytest.mark.parametrize(("came_with", "real_jid", "shown"), [
    ("u@h/r", "u@h/r", "u@h/r"),   # the master's copy: already there
    (None, "u@h/r", "u@h/r"),      # a slave without a moderator: the slave adds its user's
    ("u@h/r", "u@h/other", "u@h/r"),  # one the master gave is kept
    (None, None, None)])           # nothing known: nothing invented
def test_an_occupant_always_sees_its_own_real_jid(came_with: str | None, real_jid: str | None,
                                                  shown: str | None) -> None:
    own = visibility.with_self_status(_presence(came_with), real_jid)
    assert stanzas.muc_item(own).getAttribute("jid") == shown
    assert stanzas.has_status(own, "110")


# --- history ---------------------------------------------------------------------------------


def _history(n: int) -> History:
    history = History()
    for i in range(n):
        message = stanzas.new("message", {"from": "r@muc/n", "type": "groupchat"})
        message.addElement("body", content=f"m{i}")
        history.add(message, 1000.0 + i, limit=10)
    return history


def _bodies(entries) -> list[str]:  # type: ignore[no-untyped-def]
    return [str(stanzas.child(e.stanza, "body")) for e in entries]


def _request(**attrs: str) -> stanzas.Element:
    request = stanzas.new("history", attrs, ns=xmlns.MUC)
    return request


CHARS = len(_history(1)[0].xml)

SELECTION = [
    # request attributes, now, bodies selected
    (None, 2000.0, [f"m{i}" for i in range(2, 12)]),
    ({"maxstanzas": "2"}, 2000.0, ["m10", "m11"]),
    ({"maxstanzas": "0"}, 2000.0, []),
    ({"seconds": "3"}, 1011.0, ["m8", "m9", "m10", "m11"]),
    ({"since": "1970-01-01T00:16:50Z"}, 2000.0, ["m10", "m11"]),
    ({"maxchars": str(3 * CHARS + 2)}, 2000.0, ["m9", "m10", "m11"]),  # m10, m11: +1 char
    ({"maxchars": str(3 * CHARS + 1)}, 2000.0, ["m10", "m11"]),
    ({"maxchars": "0"}, 2000.0, []),
    ({"maxstanzas": "x"}, 2000.0, [f"m{i}" for i in range(2, 12)]),
    ({"maxstanzas": "9" * 5000}, 2000.0, [f"m{i}" for i in range(2, 12)]),
]


@pytest.mark.parametrize(("attrs", "now", "bodies"), SELECTION)
def test_history_selection(attrs: dict[str, str] | None, now: float, bodies: list[str]) -> None:
    history = _history(12)  # limit 10: m0 and m1 were trimmed
    request = _request(**attrs) if attrs is not None else None
    assert _bodies(history.select(request, now)) == bodies


DEFAULTED = [
    # the join's <history/> attributes (None: no <history/>), what is asked for then
    (None, {"maxstanzas": "5"}),
    ({}, {"maxstanzas": "5"}),
    ({"maxstanzas": "x"}, {"maxstanzas": "5"}),  # unreadable: no limit (mod_muc's tonumber)
    ({"since": "yesterday"}, {"maxstanzas": "5"}),
    ({"maxstanzas": "30"}, {"maxstanzas": "30"}),
    ({"maxchars": "0"}, {"maxchars": "0"}),
    ({"seconds": "60"}, {"seconds": "60"}),
    ({"since": "1970-01-01T00:16:50Z"}, {"since": "1970-01-01T00:16:50Z"}),
]


@pytest.mark.parametrize(("attrs", "asked"), DEFAULTED)
def test_a_join_without_limits_asks_for_the_default(attrs: dict[str, str] | None,
                                                    asked: dict[str, str]) -> None:
    """mod_muc's send_history: no limit at all asks for default_history_messages."""
    request = _request(**attrs) if attrs is not None else None
    assert dict(with_default(request, 5).attributes) == asked


def test_history_limit_and_delay() -> None:
    history = _history(3)
    history.trim(1)
    assert _bodies(history) == ["m2"]
    assert history.add(history[0].stanza, 5.0, limit=0) is None
    stamped = delayed(history[0], "r@muc")
    delay = stanzas.child(stamped, "delay", xmlns.DELAY)
    assert delay["from"] == "r@muc" and delay["stamp"] == "1970-01-01T00:16:42Z"
    assert stanzas.child(history[0].stanza, "delay", xmlns.DELAY) is None


# --- keepalive schedule -------------------------------------------------------------------------


# (now, heard: anything from the peer, asked: our last question, said: anything we sent it)
@pytest.mark.parametrize(("now", "heard", "asked", "said", "every", "split", "due"), [
    (100.0, 40.0, 0.0, 0.0, 60, False, True),  # silent for an interval: ask
    (100.0, 41.0, 0.0, 90.0, 60, False, False),
    (100.0, 0.0, 41.0, 41.0, 60, False, False),  # asked lately: wait for the bound
    (100.0, 99.0, 0.0, 69.0, 60, False, True),  # it floods us, we said nothing: be heard
    (100.0, 99.0, 0.0, 70.0, 60, False, False),  # (twice an interval)
    (100.0, 99.0, 40.0, 90.0, 60, False, False),  # our forwards make us heard
    (100.0, 99.0, 70.0, 0.0, 60, False, False),  # a question is saying something
    (100.0, 70.1, 70.0, 70.0, 60, False, False),  # idle: the answer to our question
    (100.0, 99.5, 0.0, 99.0, 2, False, False),  # at least a second
    (100.0, 99.5, 0.0, 98.5, 2, False, True),
    (100.0, 85.0, 0.0, 0.0, 60, True, True),
    (100.0, 86.0, 86.0, 86.0, 60, True, False),
    (100.0, 99.0, 85.0, 99.0, 60, True, True),  # split: ask every keepalive/4, heard or not
    (100.0, 99.0, 0.0, 0.0, 2, True, True),
])
def test_keepalive_schedule(now: float, heard: float, asked: float, said: float, every: int,
                            split: bool, due: bool) -> None:
    assert keepalive.due(now, heard, asked, said, every, split) is due


# (now, heard, asked, every, split?): anything heard counts, the question must be newer
@pytest.mark.parametrize(("now", "heard", "asked", "every", "expired"), [
    (100.0, 96.0, 97.0, 2, True),  # asked, then nothing at all for 2 intervals
    (100.0, 96.5, 97.0, 2, False),  # heard something (a forward, a broadcast) lately
    (100.0, 96.0, 95.0, 2, False),  # heard after our question: answered
    (100.0, 40.0, 41.0, 30, True),
])
def test_link_split_when_nothing_heard(now: float, heard: float, asked: float, every: int,
                                       expired: bool) -> None:
    assert keepalive.expired(now, heard, asked, every) is expired


@pytest.mark.parametrize(("proposed", "accepted"), [(1, 2), (2, 2), (60, 60), (10**6, 3600)])
def test_keepalive_clamp(proposed: int, accepted: int) -> None:
    assert keepalive.clamp(proposed) == accepted


# --- the state machine ---------------------------------------------------------------------------


class Light(Enum):
    OFF = 1
    ON = 2


def test_state_machine_follows_its_table_and_refuses_the_rest() -> None:
    machine = StateMachine("light", {(Light.OFF, "press"): Light.ON,
                                     (Light.ON, "press"): Light.OFF}, Light.OFF)
    assert machine.fire("press") is Light.ON
    assert machine.can("press") and not machine.can("cut")
    with pytest.raises(IllegalTransition):
        machine.fire("cut")
    assert machine.state is Light.ON


def test_a_muc_user_x_is_written_in_mod_muc_order() -> None:
    """publicise_occupant_status: the change's codes (in their order), the items, 110."""
    x = stanzas.muc_user_x([{"affiliation": "owner", "role": "moderator"}],
                           ["110", "201", "100", "201"], actor_nick="a", reason="r")
    kids = [(c.name, c.getAttribute("code")) for c in x.elements()]
    assert kids == [("status", "201"), ("status", "100"), ("item", None), ("status", "110")]
