"""Hostile input against the real ``twistd dmuc-master`` behind the real Prosody, from raw
clients (issue 8): the error reply XEP-0045 / RFC 6120 names, one log line, no traceback,
the room unchanged and still working.

The master is the session's (``master`` fixture); each test uses its own room and reads only
the part of the master's log written during the test.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator

import pytest

from testbed import TwistdDaemon
from tests.integration.cast import CAST
from tests.integration.conftest import MUC_DOMAIN, MakeClient
from tests.integration.xmpp_client import (
    NS_CLIENT,
    NS_DATA,
    NS_MUC,
    NS_MUC_ADMIN,
    NS_MUC_OWNER,
    NS_MUC_USER,
    Client,
    all_of,
    body,
    error_condition,
    has_status,
    is_message,
    is_presence,
    run,
    xml_str,
)

pytestmark = pytest.mark.integration

NS_STANZAS = "urn:ietf:params:xml:ns:xmpp-stanzas"
NS_ROOMCONFIG = "http://jabber.org/protocol/muc#roomconfig"
BAD_JID = "x@bad..example"


def bare(nick: str) -> str:
    return CAST[nick].split("/", 1)[0]


class MasterLog:
    """The master's log from the moment this object is made."""

    def __init__(self, master: TwistdDaemon) -> None:
        self.master = master
        self.start = len(master.log_text())

    def text(self) -> str:
        return self.master.log_text()[self.start:]

    def lines(self, needle: str) -> list[str]:
        return [line for line in self.text().splitlines() if needle in line]

    def assert_clean(self) -> None:
        text = self.text()
        assert "Traceback" not in text and "Unhandled" not in text, text[-4000:]
        assert self.master.running()


@pytest.fixture
def people(master: TwistdDaemon,
           client_factory: MakeClient) -> Iterator[Callable[..., list[Client]]]:
    def make(*nicks: str) -> list[Client]:
        return [client_factory(CAST[n]) for n in nicks]

    yield make


def join(client: Client, room: str, nick: str) -> None:
    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'/></presence>")
    run(client.expect(all_of(is_presence(from_=f"{room}/{nick}"), lambda e: has_status(e, 110))))
    run(client.expect(lambda e: e.find(f"{{{NS_CLIENT}}}subject") is not None))
    client.drain()


def configure(owner: Client, room: str, fields: str = "") -> ET.Element:
    return run(owner.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_OWNER}'>"
                        f"<x xmlns='{NS_DATA}' type='submit'>{fields}</x></query></iq>"))


def admin(client: Client, room: str, items: str) -> ET.Element:
    return run(client.iq(f"<iq type='set' to='{room}'><query xmlns='{NS_MUC_ADMIN}'>"
                         f"{items}</query></iq>"))


def owners(client: Client, room: str) -> set[str]:
    res = run(client.iq(f"<iq type='get' to='{room}'><query xmlns='{NS_MUC_ADMIN}'>"
                        "<item affiliation='owner'/></query></iq>"))
    assert res.get("type") == "result", xml_str(res)
    return {i.get("jid", "") for i in res.iter(f"{{{NS_MUC_ADMIN}}}item")}


def room_of(people: Callable[..., list[Client]], name: str,
            *nicks: str) -> tuple[str, list[Client]]:
    """A configured room `name` owned by the first of `nicks`, all of them in it."""
    room = f"{name}@{MUC_DOMAIN}"
    clients = people(*nicks)
    join(clients[0], room, nicks[0])
    assert configure(clients[0], room).get("type") == "result"
    for client, nick in zip(clients[1:], nicks[1:], strict=True):
        join(client, room, nick)
    for client in clients:
        run(client.barrier(MUC_DOMAIN))
        client.drain()
    return room, clients


def error_of(reply: ET.Element) -> ET.Element:
    err = reply.find(f"{{{NS_CLIENT}}}error")
    assert reply.get("type") == "error" and err is not None, xml_str(reply)
    return err


def is_error(kind: str, stanza_id: str) -> Callable[[ET.Element], bool]:
    return lambda e: (e.tag == f"{{{NS_CLIENT}}}{kind}" and e.get("type") == "error"
                      and e.get("id") == stanza_id)


def nested(depth: int) -> str:
    return "<a>" * depth + "x" + "</a>" * depth


# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["message", "presence"])
def test_a_thousand_nested_elements_cost_one_error_and_one_line(
        master: TwistdDaemon, people: Callable[..., list[Client]], kind: str) -> None:
    room, (wiz, troy) = room_of(people, f"hostile-nest-{kind}", "WiZ", "Troy")
    log = MasterLog(master)
    stanza_id = f"deep-{kind}"
    if kind == "message":
        sent = (f"<message to='{room}' type='groupchat' id='{stanza_id}'><body>hi</body>"
                f"{nested(1000)}</message>")
    else:
        sent = f"<presence to='{room}/Troy' id='{stanza_id}'>{nested(1000)}</presence>"
    troy.send_raw(sent)
    reply = run(troy.expect(is_error(kind, stanza_id)))
    err = error_of(reply)
    assert err.find(f"{{{NS_STANZAS}}}policy-violation") is not None, xml_str(reply)
    assert err.get("by") == MUC_DOMAIN and err.get("type") == "modify"
    # the room never relayed it, and still works
    run(wiz.expect_none(lambda e: e.get("id") == stanza_id, barrier_to=MUC_DOMAIN))
    troy.send_raw(f"<message to='{room}' type='groupchat' id='after'><body>still here</body>"
                  "</message>")
    assert body(run(wiz.expect(is_message(from_=f"{room}/Troy", type_="groupchat")))) \
        == "still here"
    # one log line for the hostile stanza, a few hundred bytes where there were 263 KB
    assert len(log.lines(stanza_id)) == 1, log.text()[-4000:]
    assert "policy-violation" in log.lines(stanza_id)[0]
    assert len(log.text()) < 4000, log.text()[-4000:]
    log.assert_clean()


def test_malformed_jids_in_payloads_are_jid_malformed(
        master: TwistdDaemon, people: Callable[..., list[Client]]) -> None:
    room, (wiz, troy) = room_of(people, "hostile-jids", "WiZ", "Troy")
    log = MasterLog(master)
    reply = admin(wiz, room, f"<item affiliation='outcast' jid='{BAD_JID}'/>")
    assert error_condition(reply) == "jid-malformed", xml_str(reply)
    for kind in ("invite", "decline"):
        troy.send_raw(f"<message to='{room}' id='{kind}-bad'><x xmlns='{NS_MUC_USER}'>"
                      f"<{kind} to='{BAD_JID}'/></x></message>")
        reply = run(troy.expect(is_error("message", f"{kind}-bad")))
        assert error_condition(reply) == "jid-malformed", xml_str(reply)
    assert owners(wiz, room) == {bare("WiZ")}
    assert len(log.lines("refused")) == 3, log.text()[-4000:]
    assert "internal-server-error" not in log.text()
    log.assert_clean()


@pytest.mark.parametrize("var", ["maxusers", "historylength"])
def test_an_integer_of_5000_digits_is_bad_request(
        master: TwistdDaemon, people: Callable[..., list[Client]], var: str) -> None:
    room, (wiz,) = room_of(people, f"hostile-int-{var}", "WiZ")
    log = MasterLog(master)
    reply = configure(wiz, room, f"<field var='muc#roomconfig_{var}'><value>{'9' * 5000}"
                                 "</value></field>")
    assert error_condition(reply) == "bad-request", xml_str(reply)
    assert len(log.lines("refused")) == 1, log.text()[-4000:]
    log.assert_clean()


def test_a_thousand_invites_in_one_message_send_one_invitation(
        master: TwistdDaemon, people: Callable[..., list[Client]]) -> None:
    room, (wiz, troy) = room_of(people, "hostile-invites", "WiZ", "Troy")
    (bigcheese,) = people("BigCheese")
    log = MasterLog(master)
    invites = f"<invite to='{bare('BigCheese')}'/>" * 1000
    troy.send_raw(f"<message to='{room}' id='many'><x xmlns='{NS_MUC_USER}'>{invites}</x>"
                  "</message>")
    run(troy.barrier(MUC_DOMAIN))  # the master has handled it
    run(bigcheese.barrier(MUC_DOMAIN))  # and what it sent bigcheese before has arrived
    invitations = bigcheese.received(lambda e: e.get("from") == room
                                     and e.find(f"{{{NS_MUC_USER}}}x") is not None)
    assert len(invitations) == 1, bigcheese.dump()
    assert len(log.lines("only the first is relayed")) == 1
    log.assert_clean()


def test_one_request_removing_both_owners_is_refused(
        master: TwistdDaemon, people: Callable[..., list[Client]]) -> None:
    room, (wiz, troy) = room_of(people, "hostile-owners", "WiZ", "Troy")
    assert admin(wiz, room, f"<item affiliation='owner' jid='{bare('Troy')}'/>") \
        .get("type") == "result"
    log = MasterLog(master)
    reply = admin(wiz, room, f"<item affiliation='member' jid='{bare('WiZ')}'/>"
                             f"<item affiliation='member' jid='{bare('Troy')}'/>")
    assert error_condition(reply) == "conflict", xml_str(reply)
    assert owners(wiz, room) == {bare("WiZ"), bare("Troy")}
    assert len(log.lines("refused")) == 1, log.text()[-4000:]
    log.assert_clean()


def test_a_nick_of_spaces_cannot_join(master: TwistdDaemon,
                                      people: Callable[..., list[Client]]) -> None:
    room, (wiz,) = room_of(people, "hostile-spaces", "WiZ")
    (troy,) = people("Troy")
    log = MasterLog(master)
    troy.send_raw(f"<presence to='{room}/   ' id='spaces'><x xmlns='{NS_MUC}'/></presence>")
    reply = run(troy.expect(is_error("presence", "spaces")))
    # as mod_muc: not-allowed "Invisible Nicknames are forbidden"
    assert error_condition(reply) == "not-allowed", xml_str(reply)
    run(wiz.expect_none(is_presence(from_=f"{room}/   "), barrier_to=MUC_DOMAIN))
    log.assert_clean()
