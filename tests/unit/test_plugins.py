"""The example plugins shipped with dmuc (dmuc/plugins/), through their hooks: slow mode (a
per-room minimum interval between one occupant's messages, set in the configuration form)
and the block list (JIDs and domains refused at join and at message time, re-read on a
configuration reload); each on the master directly and for users behind a slave."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
from twisted.words.xish.domish import Element

from dmuc.hooks import load_plugins
from dmuc.outbox import Outbox
from dmuc.plugins import blocklist, slowmode
from dmuc.protocol import stanzas
from tests.unit.dmuc_net import Net
from tests.unit.muc_helpers import ROOM, TROY, VALDIS, WIZ, WUMPUS, Harness

SLOWMODE = "dmuc.plugins.slowmode"
BLOCKLIST = "dmuc.plugins.blocklist"


def error_of(stanza: Element) -> tuple[str | None, str | None]:
    error = stanzas.child(stanza, "error")
    assert error is not None, stanza.toXml()
    condition = next(iter(error.elements()), None)
    return error.getAttribute("type"), condition.name if condition is not None else None


def sent(out: Outbox) -> list[Element]:
    """Every stanza the outbox sends, one per recipient, each with its 'to'."""
    found: list[Element] = []
    for delivery in out.deliveries:
        if delivery.recipients is None:
            found.append(delivery.stanza)
            continue
        for recipient in delivery.recipients:
            copy = stanzas.copy(delivery.stanza)
            copy["to"] = recipient
            found.append(copy)
    return found


def say(h: Harness, who: str, text: str) -> Outbox:
    return h.send(f"<message from='{who}' to='{ROOM}' type='groupchat' id='m'>"
                  f"<body>{text}</body></message>")


def lines(out: Outbox, word: str) -> list[str]:
    return [message for _, message in out.log if word in message]


# --- slow mode ------------------------------------------------------------------------------


def slow_room(seconds: str) -> Harness:
    h = Harness()
    load_plugins([SLOWMODE], h.service.hooks, h.service)
    h.join(WUMPUS, "Wumpus")
    out = h.send(f"<iq type='set' id='cfg' from='{WUMPUS}' to='{ROOM}'>"
                 "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                 "<x xmlns='jabber:x:data' type='submit'>"
                 f"<field var='dmuc#slowmode'><value>{seconds}</value></field>"
                 "</x></query></iq>")
    # the iq's result, then (as mod_muc) the 104 to the creator
    [answer] = [s for s in sent(out) if s.name == "iq"]
    assert answer.getAttribute("type") == "result", answer.toXml()
    h.join(VALDIS, "Valdis")
    return h


def test_slow_mode_is_a_field_of_the_configuration_form() -> None:
    h = slow_room("30")
    form = sent(h.send(f"<iq type='get' id='f' from='{WUMPUS}' to='{ROOM}'>"
                       "<query xmlns='http://jabber.org/protocol/muc#owner'/></iq>"))[0]
    x = next(next(form.elements()).elements())  # <query><x xmlns='jabber:x:data'>
    field = next(f for f in x.elements() if f.getAttribute("var") == "dmuc#slowmode")
    assert stanzas.text_of(stanzas.child(field, "value")) == "30"
    assert h.service.rooms[ROOM].config.extra["slowmode"] == 30
    bad = sent(h.send(f"<iq type='set' id='cfg' from='{WUMPUS}' to='{ROOM}'>"
                 "<query xmlns='http://jabber.org/protocol/muc#owner'>"
                 "<x xmlns='jabber:x:data' type='submit'>"
                 "<field var='dmuc#slowmode'><value>soon</value></field>"
                 "</x></query></iq>"))[0]
    assert error_of(bad) == ("modify", "bad-request")
    assert h.service.rooms[ROOM].config.extra["slowmode"] == 30


@pytest.mark.parametrize(("after", "refused"), [(1, True), (9, True), (10, False), (11, False)])
def test_slow_mode_refuses_a_message_too_soon(after: float, refused: bool) -> None:
    h = slow_room("10")
    first = say(h, VALDIS, "one")
    assert {s["to"] for s in sent(first)} == {WUMPUS, VALDIS}
    h.now += after - 1  # say() adds 1 s
    second = say(h, VALDIS, "two")
    if not refused:
        assert {s["to"] for s in sent(second)} == {WUMPUS, VALDIS}
        assert not lines(second, "slow mode")
        return
    (reply,) = sent(second)
    assert reply["to"] == VALDIS and error_of(reply) == ("wait", "policy-violation")
    assert stanzas.text_of(stanzas.child(reply, "body")) == "two"  # sent back
    (line,) = lines(second, "slow mode")
    assert VALDIS in line and ROOM in line


def test_slow_mode_spares_moderators_and_rooms_without_it() -> None:
    h = slow_room("10")
    for text in ("a", "b", "c"):  # the owner is a moderator
        assert len(sent(say(h, WUMPUS, text))) == 2
    h = slow_room("0")
    for text in ("a", "b", "c"):
        assert len(sent(say(h, VALDIS, text))) == 2


def test_slow_mode_forgets_an_occupant_that_left() -> None:
    """Its memory is per occupant in the room: nothing grows beyond the occupants."""
    h = Harness()
    slow = slowmode.setup(h.service.hooks, h.service)
    h.create_instant(WUMPUS, "Wumpus")
    h.join(VALDIS, "Valdis")
    h.service.rooms[ROOM].config.extra["slowmode"] = 10
    say(h, VALDIS, "one")
    assert slow.last[ROOM] == {"valdis@killrc.oulubox.irc": h.now}
    h.send(f"<presence from='{VALDIS}' to='{ROOM}/Valdis' type='unavailable'/>")
    assert slow.last[ROOM] == {}


def test_slow_mode_through_a_slave() -> None:
    net = Net(room_defaults={"extra": {"slowmode": 10}})
    load_plugins([SLOWMODE], net.master.hooks, net.master)
    net.join(WUMPUS, "Wumpus", ROOM)  # through killrc's slave: the owner
    net.join(VALDIS, "Valdis", ROOM)  # through the same slave
    net.join(TROY, "Troy", ROOM)  # through eris's slave
    for who in (WUMPUS, VALDIS, TROY):
        net.take(who)
    for text in ("one", "two"):
        net.user_sends(f"<message from='{VALDIS}' to='{ROOM}' type='groupchat' id='{text}'>"
                       f"<body>{text}</body></message>")
    heard = [stanzas.text_of(stanzas.child(m, "body")) for m in net.take(TROY)
             if m.name == "message" and m.getAttribute("type") == "groupchat"]
    assert heard == ["one"]
    errors = [m for m in net.take(VALDIS) if m.getAttribute("type") == "error"]
    assert [error_of(m) for m in errors] == [("wait", "policy-violation")]
    net.tick(10)
    net.user_sends(f"<message from='{VALDIS}' to='{ROOM}' type='groupchat' id='three'>"
                   "<body>three</body></message>")
    assert any(stanzas.text_of(stanzas.child(m, "body")) == "three" for m in net.take(TROY))


# --- the block list -------------------------------------------------------------------------


def blocking(tmp_path: Path, text: str) -> tuple[Harness, Path]:
    path = tmp_path / "blocklist"
    path.write_text(text)
    h = Harness(room_locking=False, plugin_config={"blocklist": {"file": str(path)}})
    load_plugins([BLOCKLIST], h.service.hooks, h.service)
    out = Outbox(h.now)
    h.service.hooks.fire("tick", now=h.now, out=out)
    assert lines(out, "block list: 2 entries from") != [], out.log
    return h, path


def test_block_list_file_format() -> None:
    entries, bad = blocklist.parse("# trolls\ntroy@eris.dclxvii.irc  # again\n\n"
                                   "spam.example\nnot a jid\nx@y/resource\n")
    assert entries == {"troy@eris.dclxvii.irc", "spam.example"}
    assert bad == ["line 5: 'not a jid'", "line 6: 'x@y/resource'"]


def test_blocked_jids_and_domains_cannot_join(tmp_path: Path) -> None:
    h, _ = blocking(tmp_path, "troy@eris.dclxvii.irc\nkillrc.oulubox.irc\n")
    h.join(WIZ, "Wiz")  # eris.dclxvii.irc, not blocked: creates the room
    for who, nick in ((TROY, "Troy"), (VALDIS, "Valdis")):
        out = h.join(who, nick)
        (reply,) = sent(out)
        assert reply["to"] == who and error_of(reply) == ("auth", "forbidden")
        assert lines(out, f"refused join of {who}")
    assert set(h.service.rooms[ROOM].occupants) == {"Wiz"}


def test_the_block_list_is_read_again_on_reload(tmp_path: Path) -> None:
    h, path = blocking(tmp_path, "troy@eris.dclxvii.irc\nspam.example\n")
    h.join(WIZ, "Wiz")
    h.join(WUMPUS, "Wumpus")
    assert len(sent(say(h, WUMPUS, "hello"))) == 2
    path.write_text("argl@killrc.oulubox.irc\n")
    out = h.service.reconfigure(h.service.settings, h.now)
    assert lines(out, "block list: 1 entries from")
    refused = say(h, WUMPUS, "still here")
    (reply,) = sent(refused)
    assert reply["to"] == WUMPUS and error_of(reply) == ("auth", "forbidden")
    assert lines(refused, f"refused a message to {ROOM} (block list) from {WUMPUS}")
    assert len(sent(h.join(TROY, "Troy"))) > 1  # no longer blocked
    # a file that cannot be read keeps the list in force
    path.unlink()
    out = h.service.reconfigure(replace(h.service.settings), h.now)
    assert lines(out, "cannot read")
    assert error_of(sent(say(h, WUMPUS, "again"))[0]) == ("auth", "forbidden")


def test_block_list_through_a_slave(tmp_path: Path) -> None:
    path = tmp_path / "blocklist"
    path.write_text("eris.dclxvii.irc\n")
    net = Net(plugin_config={"blocklist": {"file": str(path)}})
    load_plugins([BLOCKLIST], net.master.hooks, net.master)
    net.join(WUMPUS, "Wumpus", ROOM)
    net.join(TROY, "Troy", ROOM)  # through eris's slave
    replies = [p for p in net.take(TROY) if p.getAttribute("type") == "error"]
    assert [error_of(p) for p in replies] == [("auth", "forbidden")]
    assert set(net.master.rooms[ROOM].occupants) == {"Wumpus"}
