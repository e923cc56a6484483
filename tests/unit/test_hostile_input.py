"""Hostile and malformed input (issue 8): each test sends exactly the hostile input and
asserts the error XEP-0045 / RFC 6120 names (or mod_muc's documented behaviour), one log
line, no traceback, and the state unchanged.

The shell guard (dmuc.shell.daemon.CoreHandler) is driven without a reactor: stanzas are
parsed as the component stream parses them, and what it sends and logs is captured.
"""

from __future__ import annotations

import copy as copy_module
from collections.abc import Callable

import pytest
from twisted.logger import LogLevel, formatEvent
from twisted.words.xish import domish

from dmuc import xmlns
from dmuc.log import LevelLogger
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas
from dmuc.shell import daemon
from tests.unit.muc_helpers import (
    BIGCHEESE,
    ROOM,
    SERVICE,
    TROY,
    VALDIS,
    WIZ,
    WUMPUS,
    Harness,
    error_condition,
)
from tests.unit.muc_steps import admin_set, iq, messages, one, owner_submit, presences

WIZ_BARE = "squit@eris.dclxvii.irc"
TROY_BARE = "troy@eris.dclxvii.irc"
WUMPUS_BARE = "argl@killrc.oulubox.irc"
BIGCHEESE_BARE = "rubenro@vesa.yeggmaex.irc"
SLAVE = "dmuc.vesa.yeggmaex.irc"
BAD_JID = "x@bad..example"  # an empty label: IndexError in Twisted's nameprep


def refusal_lines(out: Outbox) -> list[str]:
    return [m for level, m in out.log if level == "info" and m.startswith("refused ")]


def iq_reply(out: Outbox, who: str) -> domish.Element:
    return one([s for s in out.stanzas_for(who) if s.name == "iq"])


# ==========================================================================================
# the shell guard


def wire(xml: str) -> domish.Element:
    """A stanza as the component stream hands it to CoreHandler.on_stanza (namespaced,
    not yet stripped)."""
    found: list[domish.Element] = []
    stream = domish.elementStream()
    stream.DocumentStartEvent = lambda root: None
    stream.ElementEvent = found.append
    stream.DocumentEndEvent = lambda: None
    stream.parse(f"<stream xmlns='{xmlns.COMPONENT}'>".encode() + xml.encode())
    assert len(found) == 1
    return found[0]


def nested(depth: int, inner: str = "x") -> str:
    """`depth` elements nested one in another."""
    return "<a>" * depth + inner + "</a>" * depth


class Shell:
    """A CoreHandler whose writes and log lines are kept."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch,
                 receive: Callable[[domish.Element, float], Outbox] | None = None) -> None:
        self.sent: list[str] = []
        self.events: list[dict] = []
        self.received: list[domish.Element] = []
        monkeypatch.setattr(daemon, "log", LevelLogger(namespace="dmuc",
                                                       observer=self.events.append))

        def keep(element: domish.Element, now: float) -> Outbox:
            self.received.append(element)
            return Outbox(now)

        self.handler = daemon.CoreHandler(receive or keep, None, SERVICE)  # type: ignore[arg-type]
        self.handler.send = self.sent.append  # type: ignore[method-assign]

    def feed(self, xml: str) -> None:
        self.handler.on_stanza(wire(xml))

    def lines(self) -> list[str]:
        return [formatEvent(e) for e in self.events]

    def reply(self) -> domish.Element:
        assert len(self.sent) == 1, self.sent
        return stanzas.parse_stanza(self.sent[0])


def assert_one_clean_line(shell: Shell, level: LogLevel) -> str:
    lines = shell.lines()
    assert len(lines) == 1, lines
    assert "\n" not in lines[0] and "Traceback" not in lines[0]
    assert shell.events[0]["log_level"] == level
    return lines[0]


def error_of(reply: domish.Element) -> domish.Element:
    err = stanzas.child(reply, "error")
    assert err is not None, reply.toXml()
    return err


GROUPCHAT = ("<message from='{who}' to='{room}' type='groupchat' id='deep'>"
             "<body>hi</body>{payload}</message>")
PRESENCE = "<presence from='{who}' to='{room}/troy' id='deep'>{payload}</presence>"
IQ = "<iq from='{who}' to='{room}' type='get' id='deep'>{payload}</iq>"


@pytest.mark.parametrize("template", [GROUPCHAT, PRESENCE, IQ],
                         ids=["groupchat", "presence", "iq"])
def test_a_thousand_nested_elements_are_refused_once_with_one_line(
        monkeypatch: pytest.MonkeyPatch, template: str) -> None:
    shell = Shell(monkeypatch)
    shell.feed(template.format(who=TROY, room=ROOM, payload=nested(1000)))
    assert shell.received == []  # the core never sees it
    reply = shell.reply()
    assert reply["type"] == "error" and reply["to"] == TROY and reply["id"] == "deep"
    err = error_of(reply)
    assert err["type"] == "modify" and err["by"] == SERVICE
    assert error_condition(reply) == "policy-violation"
    assert "nested more than 32 levels" in str(stanzas.child(err, "text"))
    assert stanzas.child(reply, "a") is None  # the payload is not echoed back
    line = assert_one_clean_line(shell, LogLevel.info)
    assert "policy-violation" in line and TROY in line


def test_ninety_thousand_nested_elements_cost_no_recursion(
        monkeypatch: pytest.MonkeyPatch) -> None:
    shell = Shell(monkeypatch)
    shell.feed(GROUPCHAT.format(who=TROY, room=ROOM, payload=nested(90_000)))
    assert error_condition(shell.reply()) == "policy-violation"
    assert_one_clean_line(shell, LogLevel.info)


def test_nesting_up_to_the_limit_reaches_the_core(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = Shell(monkeypatch)
    depth = daemon.USER_LIMITS.depth - 2  # message > a... > text: the body is level 2
    shell.feed(GROUPCHAT.format(who=TROY, room=ROOM, payload=nested(depth)))
    assert len(shell.received) == 1 and shell.sent == [] and shell.lines() == []
    # made namespace-neutral for the core
    assert shell.received[0].uri is None


def test_too_many_elements_is_stanza_too_big(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = Shell(monkeypatch)
    shell.feed(GROUPCHAT.format(who=TROY, room=ROOM,
                                payload="<a/>" * (daemon.USER_LIMITS.elements + 1)))
    assert shell.received == []
    err = error_of(shell.reply())
    assert error_condition(shell.reply()) == "policy-violation"
    assert stanzas.child(err, "stanza-too-big", daemon.NS_XMPP_ERRORS) is not None
    assert "elements" in assert_one_clean_line(shell, LogLevel.info)


def test_too_many_characters_is_stanza_too_big(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = Shell(monkeypatch)
    shell.feed(GROUPCHAT.format(who=TROY, room=ROOM,
                                payload=f"<a>{'x' * (daemon.USER_LIMITS.chars + 1)}</a>"))
    assert shell.received == []
    err = error_of(shell.reply())
    assert stanzas.child(err, "stanza-too-big", daemon.NS_XMPP_ERRORS) is not None
    assert "characters" in assert_one_clean_line(shell, LogLevel.info)


def test_servers_and_components_have_their_own_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    """A slave's broadcast is a user's stanza plus the dmuc wrapper: a little more room."""
    shell = Shell(monkeypatch)
    shell.feed(GROUPCHAT.format(who=SLAVE, room=ROOM, payload=nested(40)))
    assert len(shell.received) == 1 and shell.sent == []
    shell.feed(GROUPCHAT.format(who=SLAVE, room=ROOM,
                                payload=nested(daemon.PEER_LIMITS.depth + 1)))
    assert error_condition(shell.reply()) == "policy-violation"


def test_an_error_stanza_over_the_limits_is_not_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    """RFC 6120 §8.3.1: an error is never answered with an error."""
    shell = Shell(monkeypatch)
    shell.feed(f"<message from='{TROY}' to='{ROOM}' type='error'>{nested(1000)}</message>")
    assert shell.sent == [] and shell.received == []
    assert_one_clean_line(shell, LogLevel.info)


@pytest.mark.parametrize("exc", [RuntimeError("boom\nwith a second line"),
                                 RecursionError("maximum recursion depth exceeded"),
                                 KeyError("k"), IndexError("string index out of range")],
                         ids=["runtime", "recursion", "key", "index"])
def test_an_exception_in_the_core_is_one_answer_and_one_line(
        monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    def broken(element: domish.Element, now: float) -> Outbox:
        raise exc

    shell = Shell(monkeypatch, broken)
    shell.feed(f"<iq from='{TROY}' to='{ROOM}' type='set' id='i1'>"
               "<query xmlns='urn:example:x'/></iq>")
    reply = shell.reply()
    err = error_of(reply)
    assert error_condition(reply) == "internal-server-error"
    assert err["type"] == "wait" and err["by"] == SERVICE
    assert reply["to"] == TROY and reply["from"] == ROOM and reply["id"] == "i1"
    assert stanzas.child(reply, "query") is None
    line = assert_one_clean_line(shell, LogLevel.error)
    assert type(exc).__name__ in line


def test_a_failing_write_is_inside_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    def odd(element: domish.Element, now: float) -> Outbox:
        out = Outbox(now)
        out.store(object())  # type: ignore[arg-type]  # no storage operation
        return out

    shell = Shell(monkeypatch, odd)
    shell.feed(f"<message from='{TROY}' to='{ROOM}' type='groupchat'><body>x</body></message>")
    assert error_condition(shell.reply()) == "internal-server-error"
    assert_one_clean_line(shell, LogLevel.error)


def test_no_answer_to_an_errored_result(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken(element: domish.Element, now: float) -> Outbox:
        raise RuntimeError("boom")

    shell = Shell(monkeypatch, broken)
    shell.feed(f"<iq from='{TROY}' to='{ROOM}' type='result' id='r1'/>")
    assert shell.sent == []
    assert_one_clean_line(shell, LogLevel.error)


def test_the_guard_lets_the_next_stanza_through(monkeypatch: pytest.MonkeyPatch) -> None:
    shell = Shell(monkeypatch)
    shell.feed(GROUPCHAT.format(who=TROY, room=ROOM, payload=nested(1000)))
    shell.feed(GROUPCHAT.format(who=TROY, room=ROOM, payload=""))
    assert len(shell.received) == 1


def test_the_real_core_behind_the_guard(monkeypatch: pytest.MonkeyPatch) -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    before = [o.nick for o in h.service.rooms[ROOM].occupants.values()]
    shell = Shell(monkeypatch, h.service.receive)
    shell.feed(PRESENCE.format(who=TROY, room=ROOM, payload=nested(1000)))
    assert error_condition(shell.reply()) == "policy-violation"
    assert [o.nick for o in h.service.rooms[ROOM].occupants.values()] == before
    shell.sent.clear()
    shell.feed(GROUPCHAT.format(who=TROY, room=ROOM, payload=""))
    assert any(f"to='{WIZ}'" in chunk for chunk in shell.sent)


# --- the recursive helpers are iterative ---------------------------------------------------


def test_strip_stream_namespace_and_copy_are_iterative() -> None:
    el = wire(GROUPCHAT.format(who=TROY, room=ROOM, payload=nested(50_000)))
    stanzas.strip_stream_namespace(el)  # was recursive: RecursionError
    dup = stanzas.copy(el)  # was recursive
    node, depth = dup, 1
    while True:
        inner = next(node.elements(), None) if node.name != "message" else stanzas.child(node, "a")
        if inner is None:
            break
        assert inner.parent is node and inner.uri is None
        node, depth = inner, depth + 1
    assert depth == 50_001 and str(node) == "x"


def test_copy_keeps_order_text_and_attributes() -> None:
    el = stanzas.parse_stanza("<message to='a@b' id='1'><body>one</body>text<x xmlns='urn:x' "
                              "k='v'><y>two</y><z/></x>tail</message>")
    dup = stanzas.copy(el)
    assert dup.toXml() == el.toXml()
    assert dup is not el and stanzas.child(dup, "x") is not stanzas.child(el, "x")
    assert stanzas.child(dup, "x").parent is dup
    assert copy_module.copy(dup.attributes) == el.attributes


def test_measure_stops_at_the_limit() -> None:
    el = wire(GROUPCHAT.format(who=TROY, room=ROOM, payload=nested(90_000)))
    size = stanzas.measure(el, max_depth=32)
    assert size.depth == 33 and size.elements < 100
    size = stanzas.measure(stanzas.parse_stanza("<message a='12'><b>xyz</b><c/></message>"))
    assert size == stanzas.StanzaSize(depth=2, elements=3, chars=len("message") + 3 + 1 + 3 + 1)


# ==========================================================================================
# integers from stanzas


@pytest.mark.parametrize(("text", "expected"), [
    ("0", 0), ("42", 42), (" 7 ", 7), ("+5", 5), ("2147483647", 2147483647),
    ("9999999999", None),  # 10 digits, above hi
    ("1" * 11, None), ("9" * 5000, None), ("0" * 5000 + "1", None),
    ("", None), (None, None), ("-1", None), ("1.5", None), ("1e3", None), ("0x10", None),
    ("\u00b2", None),  # superscript two: isdigit()
    ("\u0663", None),  # ARABIC-INDIC DIGIT THREE: isdecimal(), and int() reads it
    ("\uff13", None),  # FULLWIDTH DIGIT THREE: int() reads it too
    ("1_000", None),  # int() reads it
    ("--1", None), ("1 2", None),
])
def test_parse_bounded_int(text: str | None, expected: int | None) -> None:
    assert stanzas.parse_bounded_int(text, 0, 2**31 - 1) == expected


def test_parse_bounded_int_with_negative_bounds() -> None:
    assert stanzas.parse_bounded_int("-5", -10, 10) == -5
    assert stanzas.parse_bounded_int("-11", -10, 10) is None
    assert stanzas.parse_bounded_int("123", 0, 10**12, max_digits=2) is None


# ==========================================================================================
# muc#owner


def _owned_room() -> Harness:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    return h


@pytest.mark.parametrize("var", ["muc#roomconfig_maxusers", "muc#roomconfig_historylength"])
@pytest.mark.parametrize("value", ["9" * 5000, "1" * 11, "\u0663", "\uff13", "1_0", "-3"],
                         ids=["5000 digits", "11 digits", "arabic-indic", "fullwidth",
                              "underscore", "negative"])
def test_config_integer_out_of_bounds_is_bad_request(var: str, value: str) -> None:
    h = _owned_room()
    before = h.service.rooms[ROOM].config.to_dict()
    out = owner_submit(h, WIZ, {var: value, "muc#roomconfig_roomname": "changed"})
    reply = iq_reply(out, WIZ)
    assert reply["type"] == "error" and error_condition(reply) == "bad-request"
    assert stanzas.child(reply, "error")["type"] == "modify"
    assert h.service.rooms[ROOM].config.to_dict() == before  # nothing applied
    assert len(refusal_lines(out)) == 1 and len(out.log) == 1
    assert messages(out, TROY) == []  # no 104


def test_config_integers_within_bounds_still_work() -> None:
    h = _owned_room()
    out = owner_submit(h, WIZ, {"muc#roomconfig_maxusers": " 30 ",
                                "muc#roomconfig_historylength": "5"})
    assert iq_reply(out, WIZ)["type"] == "result"
    config = h.service.rooms[ROOM].config
    assert (config.max_users, config.history_length) == (30, 5)
    owner_submit(h, WIZ, {"muc#roomconfig_maxusers": "", "muc#roomconfig_historylength":
                          "2147483647"})
    config = h.service.rooms[ROOM].config
    assert config.max_users == 0
    assert config.history_length == h.service.settings.max_history_length


def test_a_thousand_values_of_a_list_field_are_stored_once() -> None:
    h = _owned_room()
    values = ["moderator", "participant"] * 500
    out = owner_submit(h, WIZ, {"muc#roomconfig_presencebroadcast": values})
    assert iq_reply(out, WIZ)["type"] == "result"
    assert h.service.rooms[ROOM].config.presence_broadcast == ["moderator", "participant"]
    saved = h.service.rooms[ROOM].config.to_dict()["presence_broadcast"]
    assert saved == ["moderator", "participant"]


def test_a_single_valued_field_with_many_values_takes_the_first() -> None:
    h = _owned_room()
    out = owner_submit(h, WIZ, {"muc#roomconfig_roomname": ["first"] + ["other"] * 999,
                                "muc#roomconfig_maxusers": ["20", "9" * 5000],
                                "muc#roomconfig_moderatedroom": ["1", "0"]})
    assert iq_reply(out, WIZ)["type"] == "result"
    config = h.service.rooms[ROOM].config
    assert (config.name, config.max_users, config.moderated) == ("first", 20, True)


def test_a_field_submitted_twice_counts_the_first_time() -> None:
    h = _owned_room()
    out = iq(h, WIZ, ROOM, "set",
             "<query xmlns='http://jabber.org/protocol/muc#owner'>"
             "<x xmlns='jabber:x:data' type='submit'>"
             "<field var='muc#roomconfig_roomname'><value>first</value></field>"
             "<field var='muc#roomconfig_roomname'><value>second</value></field>"
             "</x></query>")
    assert iq_reply(out, WIZ)["type"] == "result"
    assert h.service.rooms[ROOM].config.name == "first"


def test_owner_refusals_are_logged_once() -> None:
    h = _owned_room()
    for actor, fields, kind, condition in [
        (TROY, {"muc#roomconfig_roomname": "x"}, "submit", "forbidden"),
        (WIZ, {"muc#roomconfig_whois": "everybody"}, "submit", "bad-request"),
        (WIZ, {"muc#roomconfig_moderatedroom": "perhaps"}, "submit", "bad-request"),
        (WIZ, {"muc#roomconfig_roomname": "x"}, "result", "bad-request"),
    ]:
        out = owner_submit(h, actor, fields, form_type=kind)
        assert error_condition(iq_reply(out, actor)) == condition
        assert len(refusal_lines(out)) == 1 and len(out.log) == 1, out.log


# ==========================================================================================
# invitations


def _invite_room(**config: str) -> Harness:
    h = Harness()
    h.create_instant(WIZ, "wiz", **config)
    h.join(TROY, "troy")
    return h


def test_a_thousand_invites_in_one_message_send_one_invitation() -> None:
    h = _invite_room()
    invites = "".join(f"<invite to='user{i}@example.com'/>" for i in range(1000))
    out = h.send(f"<message from='{TROY}' to='{ROOM}' id='i'>"
                 f"<x xmlns='{xmlns.MUC_USER}'>{invites}</x></message>")
    sent = [d for d in out.deliveries]
    assert len(sent) == 1 and sent[0].stanza["to"] == "user0@example.com"
    assert len([m for _, m in out.log if "only the first is relayed" in m]) == 1


def test_a_thousand_declines_in_one_message_send_one_decline() -> None:
    h = _invite_room()
    declines = "".join(f"<decline to='user{i}@example.com'/>" for i in range(1000))
    out = h.send(f"<message from='{BIGCHEESE}' to='{ROOM}' id='d'>"
                 f"<x xmlns='{xmlns.MUC_USER}'>{declines}</x></message>")
    assert len(out.deliveries) == 1 and out.deliveries[0].stanza["to"] == "user0@example.com"


@pytest.mark.parametrize("kind", ["invite", "decline"])
@pytest.mark.parametrize("to", [BAD_JID, "@", "a@b@c/d", "x@" + "a" * 64 + ".com",
                                "x@example.com/\U0001f916", "x@xn--zz.example"])
def test_invitation_to_a_malformed_jid_is_jid_malformed(kind: str, to: str) -> None:
    h = _invite_room()
    out = h.send(f"<message from='{TROY}' to='{ROOM}' id='m'>"
                 f"<x xmlns='{xmlns.MUC_USER}'><{kind} to='{to}'/></x></message>")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error" and error_condition(reply) == "jid-malformed"
    assert stanzas.child(reply, "error")["type"] == "cancel"  # as mod_muc
    assert len(out.deliveries) == 1
    assert len(refusal_lines(out)) == 1 and len(out.log) == 1


def test_a_visitor_may_not_invite() -> None:
    """mod_muc's muc-pre-invite: the inviter needs a role above visitor."""
    h = _invite_room(moderatedroom="1")
    out = h.send(f"<message from='{TROY}' to='{ROOM}' id='v'>"
                 f"<x xmlns='{xmlns.MUC_USER}'><invite to='{BIGCHEESE_BARE}'/></x></message>")
    assert error_condition(one(out.stanzas_for(TROY))) == "forbidden"
    assert out.stanzas_for(BIGCHEESE_BARE) == []
    assert len(refusal_lines(out)) == 1


# ==========================================================================================
# muc#admin: the whole request, all or nothing


def _two_owners() -> Harness:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    h.join(WUMPUS, "wumpus")
    admin_set(h, WIZ, f"<item affiliation='owner' jid='{TROY_BARE}'/>")
    assert h.service.rooms[ROOM].affiliations == {WIZ_BARE: "owner", TROY_BARE: "owner"}
    return h


@pytest.mark.parametrize("first", [WIZ_BARE, TROY_BARE])
@pytest.mark.parametrize("new", ["none", "member", "admin", "outcast"])
def test_one_request_removing_both_owners_is_refused(first: str, new: str) -> None:
    h = _two_owners()
    second = TROY_BARE if first == WIZ_BARE else WIZ_BARE
    room = h.service.rooms[ROOM]
    before = (dict(room.affiliations), {n: o.role for n, o in room.occupants.items()})
    out = admin_set(h, WIZ, f"<item affiliation='{new}' jid='{first}'/>"
                            f"<item affiliation='{new}' jid='{second}'/>")
    reply = iq_reply(out, WIZ)
    assert reply["type"] == "error" and error_condition(reply) == "conflict"
    assert stanzas.child(reply, "error")["type"] == "cancel"  # mod_muc's last-owner answer
    assert (dict(room.affiliations), {n: o.role for n, o in room.occupants.items()}) == before
    assert len(out.deliveries) == 1 and out.storage == []  # the error only
    assert len(refusal_lines(out)) == 1 and len(out.log) == 1


def test_a_handover_in_one_request_is_allowed() -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = admin_set(h, WIZ, f"<item affiliation='admin' jid='{WIZ_BARE}'/>"
                            f"<item affiliation='owner' jid='{TROY_BARE}'/>")
    assert iq_reply(out, WIZ)["type"] == "result"
    assert h.service.rooms[ROOM].affiliations == {WIZ_BARE: "admin", TROY_BARE: "owner"}


def test_one_owner_may_remove_the_other() -> None:
    h = _two_owners()
    out = admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>")
    assert iq_reply(out, WIZ)["type"] == "result"
    assert h.service.rooms[ROOM].affiliations[TROY_BARE] == "member"


@pytest.mark.parametrize("jid", [BAD_JID, "@", "x@.example", "x@" + "a" * 64 + ".com",
                                 "x@example.com/" + "r" * 1100, "a@b@c"])
def test_admin_item_with_a_malformed_jid_is_jid_malformed_and_applies_nothing(jid: str) -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    room = h.service.rooms[ROOM]
    out = admin_set(h, WIZ, f"<item affiliation='member' jid='{TROY_BARE}'/>"
                            f"<item affiliation='outcast' jid='{jid}'/>")
    reply = iq_reply(out, WIZ)
    assert error_condition(reply) == "jid-malformed"
    assert stanzas.child(reply, "error")["type"] == "modify"  # as mod_muc
    assert room.affiliations == {WIZ_BARE: "owner"}  # the valid first item is not applied
    assert len(out.deliveries) == 1
    assert len(refusal_lines(out)) == 1 and len(out.log) == 1


def test_admin_item_with_a_malformed_nick_is_jid_malformed() -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = admin_set(h, WIZ, "<item nick='\U0001f916' role='none'/>")
    assert error_condition(iq_reply(out, WIZ)) == "jid-malformed"


def test_a_role_item_is_checked_against_the_affiliation_the_request_leaves() -> None:
    """[make troy admin, make troy visitor]: checked one by one against the state before,
    both pass and an admin ends up a visitor; against the state after, the role change is
    refused (nobody changes an admin's role), and nothing is applied."""
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    room = h.service.rooms[ROOM]
    out = admin_set(h, WIZ, f"<item affiliation='admin' jid='{TROY_BARE}'/>"
                            "<item nick='troy' role='visitor'/>")
    assert error_condition(iq_reply(out, WIZ)) == "not-allowed"
    assert TROY_BARE not in room.affiliations and room.occupants["troy"].role == "participant"
    assert presences(out, TROY) == []


def test_a_thousand_items_for_one_target_make_one_change() -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    items = "".join(f"<item affiliation='{a}' jid='{TROY_BARE}'/>"
                    for a in ("member", "none") * 499 + ("outcast", "member"))
    out = admin_set(h, WIZ, items)
    assert iq_reply(out, WIZ)["type"] == "result"
    assert h.service.rooms[ROOM].affiliations[TROY_BARE] == "member"
    assert len(presences(out, TROY)) == 1  # one affiliation change, not a thousand


def test_admin_refusals_are_logged_once() -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    for actor, items in [
        (TROY, f"<item affiliation='outcast' jid='{WIZ_BARE}'/>"),  # forbidden
        (WIZ, "<item nick='nobody' role='none'/>"),  # item-not-found
        (WIZ, "<item affiliation='emperor' jid='a@b'/>"),  # bad-request
        (WIZ, f"<item affiliation='none' jid='{WIZ_BARE}'/>"),  # conflict
    ]:
        out = admin_set(h, actor, items)
        assert iq_reply(out, actor)["type"] == "error"
        assert len(refusal_lines(out)) == 1 and len(out.log) == 1, out.log


# ==========================================================================================
# nicknames made only of spaces


def test_a_nick_of_spaces_cannot_join() -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = h.join(TROY, "   ")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error"
    assert error_condition(reply) in ("not-allowed", "jid-malformed")
    assert [o.nick for o in h.service.rooms[ROOM].occupants.values()] == ["wiz"]


def test_a_nick_of_spaces_cannot_create_a_room() -> None:
    h = Harness()
    out = h.join(TROY, " ")
    assert one(out.stanzas_for(TROY))["type"] == "error"
    assert ROOM not in h.service.rooms


def test_a_nick_change_to_spaces_is_refused() -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = h.send(f"<presence from='{TROY}' to='{ROOM}/  '/>")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error"
    assert error_condition(reply) in ("not-allowed", "jid-malformed")
    assert set(h.service.rooms[ROOM].occupants) == {"wiz", "troy"}


def test_a_nick_of_spaces_is_refused_as_mod_muc_does() -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    for out in (h.join(VALDIS, "   "), h.send(f"<presence from='{TROY}' to='{ROOM}/  '/>")):
        reply = [s for s in out.deliveries if s.stanza.getAttribute("type") == "error"][0].stanza
        assert error_condition(reply) == "not-allowed"
        text = stanzas.child(stanzas.child(reply, "error"), "text")
        assert str(text) == "Invisible Nicknames are forbidden"


def test_a_nick_of_spaces_cannot_be_registered() -> None:
    h = Harness(allow_unaffiliated_register=True)
    h.create_instant(WIZ, "wiz")
    out = iq(h, TROY, ROOM, "set",
             "<query xmlns='jabber:iq:register'><x xmlns='jabber:x:data' type='submit'>"
             "<field var='FORM_TYPE'><value>http://jabber.org/protocol/muc#register</value>"
             "</field><field var='muc#register_roomnick'><value>   </value></field>"
             "</x></query>", "rs")
    assert error_condition(iq_reply(out, TROY)) == "bad-request"
    assert h.service.rooms[ROOM].reserved_nicks == {}
    assert len(refusal_lines(out)) == 1 and len(out.log) == 1


@pytest.mark.parametrize(("to", "answered_from"), [
    (f"{ROOM}/" + "x" * 1100, f"{ROOM}/" + "x" * 1100),
    ("bad..example", SERVICE),
    (f"{ROOM}/\U0001f916", f"{ROOM}/\U0001f916"),
])
def test_a_stanza_to_a_malformed_address_is_jid_malformed(to: str, answered_from: str) -> None:
    """Prosody's prep is not strict: such addresses reach us. The service answers RFC 6120's
    jid-malformed instead of dropping the stanza; a nickname that fails strict validation
    is answered from the occupant JID, as mod_muc does."""
    h = Harness()
    out = h.send(f"<presence from='{TROY}' to='{to}'><x xmlns='{xmlns.MUC}'/></presence>")
    reply = one(out.stanzas_for(TROY))
    assert reply["type"] == "error" and error_condition(reply) == "jid-malformed"
    assert reply["from"] == answered_from
    assert len(out.log) == 1
    assert h.service.rooms == {}
