"""The one archive query rule (dmuc.protocol.mam) master and slaves answer with, as a table:
each query's form and RSM set, and the ArchiveQuery or the refusal it gives."""

from __future__ import annotations

from typing import Any

import pytest

from dmuc.errors import ArchiveIdNotFound
from dmuc.outbox import Outbox
from dmuc.protocol import mam, stanzas
from dmuc.records import ArchivePage, ArchiveQuery, ArchiveRecord

ROOM = "wallops@channel.avalon.irc"
FORM = "<x xmlns='jabber:x:data' type='submit'>" \
       "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>{}</x>"
RSM = "<set xmlns='http://jabber.org/protocol/rsm'>{}</set>"


def field(var: str, *values: str) -> str:
    return f"<field var='{var}'>" + "".join(f"<value>{v}</value>" for v in values) + "</field>"


def query(form: str | None = None, rsm: str | None = None) -> str:
    inner = (FORM.format(form) if form is not None else "") + \
        (RSM.format(rsm) if rsm is not None else "")
    return f"<query xmlns='urn:xmpp:mam:2'>{inner}</query>"


T0 = 1_700_000_000.0
CASES: list[tuple[str, str, bool, dict[str, Any] | tuple[str, str]]] = [
    ("empty: the default page", query(), False, {"max": 20}),
    ("rsm max", query(rsm="<max>7</max>"), False, {"max": 7}),
    ("rsm max capped", query(rsm="<max>5000</max>"), False, {"max": 50}),
    ("rsm max not a number", query(rsm="<max>lots</max>"), False,
     ("modify", "bad-request")),
    ("rsm after", query(rsm="<after>s1</after>"), False, {"after": "s1"}),
    ("rsm before", query(rsm="<before>s9</before>"), False, {"before": "s9"}),
    ("empty before: the last page", query(rsm="<before/>"), False,
     {"last": True, "before": None}),
    ("start and end", query(field("start", "2023-11-14T22:13:20Z")
                            + field("end", "2023-11-14T22:13:30.5Z")), False,
     {"start": T0, "end": T0 + 10.5}),
    ("bad start", query(field("start", "yesterday")), False, ("modify", "bad-request")),
    ("before-id and after-id", query(field("before-id", "b") + field("after-id", "a")),
     False, {"before": "b", "after": "a"}),
    ("rsm after wins over after-id", query(field("after-id", "a"), "<after>r</after>"),
     False, {"after": "r"}),
    ("ids", query(field("ids", "x", "y")), False, {"ids": ["x", "y"]}),
    ("too many ids", query(field("ids", *[str(i) for i in range(51)])), False,
     ("modify", "policy-violation")),
    ("with an occupant", query(field("with", f"{ROOM}/wiz")), False,
     {"nick": "wiz", "sender": None}),
    ("with the room", query(field("with", ROOM)), False, {"nick": ""}),
    ("with a real JID, moderator", query(field("with", "wiz@avalon.irc/x")), True,
     {"sender": "wiz@avalon.irc", "nick": None}),
    ("with a real JID, not allowed", query(field("with", "wiz@avalon.irc")), False,
     ("auth", "forbidden")),
    ("with not a JID", query(field("with", "@@")), False, ("modify", "bad-request")),
    ("wrong FORM_TYPE", "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' "
     "type='submit'><field var='FORM_TYPE'><value>urn:xmpp:mam:1</value></field></x></query>",
     False, ("modify", "bad-request")),
]


@pytest.mark.parametrize(("payload", "sees", "expected"), [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_a_query_parses_as_the_table_says(payload: str, sees: bool,
                                          expected: dict[str, Any] | tuple[str, str]) -> None:
    asker = mam.Asker(ROOM, 50, sees)
    if isinstance(expected, tuple):
        with pytest.raises(mam.QueryRefused) as refused:
            mam.parse_query(stanzas.parse_xml(payload), asker)
        assert (refused.value.err_type, refused.value.condition) == expected
        return
    parsed = mam.parse_query(stanzas.parse_xml(payload), asker)
    want = ArchiveQuery(max=min(20, 50))
    for key, value in expected.items():
        setattr(want, key, value)
    assert parsed == want


def broadcast(body: str | None = "hi", sid: str | None = "s1", extra: str = "") -> str:
    inner = (f"<body>{body}</body>" if body is not None else "") + extra
    if sid is not None:
        inner += f"<stanza-id xmlns='urn:xmpp:sid:0' id='{sid}' by='{ROOM}'/>"
    return f"<message from='{ROOM}/wiz' type='groupchat' id='m1'>{inner}</message>"


ARCHIVABLE = [
    ("a body", broadcast(), True),
    ("no stanza-id", broadcast(sid=None), False),
    ("a chat state", broadcast(None, extra="<active xmlns="
                               "'http://jabber.org/protocol/chatstates'/>"), False),
    ("a no-store hint", broadcast(extra="<no-store xmlns='urn:xmpp:hints'/>"), False),
    ("a marker", broadcast(None, extra="<displayed xmlns='urn:xmpp:chat-markers:0' "
                           "id='x'/>"), True),
]


@pytest.mark.parametrize(("xml", "expected"), [c[1:] for c in ARCHIVABLE],
                         ids=[c[0] for c in ARCHIVABLE])
def test_what_is_archived(xml: str, expected: bool) -> None:
    assert mam.archivable(stanzas.parse_xml(xml), ROOM) is expected


def test_the_record_drops_what_the_wire_added() -> None:
    """A slave's copy (with XEP-0282's element and a held message's delay and id prefix)
    gives the record the master keeps of the same broadcast."""
    plain = mam.record_of(stanzas.parse_xml(broadcast()), ROOM, T0, "wiz", "")
    copy = stanzas.parse_xml(broadcast(extra=(
        f"<delay xmlns='urn:xmpp:delay' from='{ROOM}' stamp='2023-11-14T22:13:20Z'/>"
        "<x xmlns='urn:xmpp:tmp:dmuc:0'><delay xmlns='urn:xmpp:delay' stamp='x'/></x>")))
    copy["to"] = "dmuc.vesa.yeggmaex.irc"
    assert mam.record_of(copy, ROOM, T0, "wiz", "") == plain
    assert plain is not None and plain.sid == "s1"


def test_an_answer_is_results_then_fin() -> None:
    stanza = stanzas.parse_xml(f"<iq type='set' id='q' from='wiz@avalon.irc/x' to='{ROOM}'>"
                               "<query xmlns='urn:xmpp:mam:2' queryid='Q'><flip-page/>"
                               "</query></iq>")
    records = [ArchiveRecord(sid=f"s{i}", stamp=T0 + i, nick="wiz", sender="wiz@avalon.irc",
                             xml=broadcast(sid=f"s{i}")) for i in (1, 2)]
    out = Outbox(T0)
    mam.answer(stanza, stanza.firstChildElement(), ROOM, "anyone",
               ArchivePage(records, 5, False), out)
    first, second, result = out.stanzas_for("wiz@avalon.irc/x")
    assert [m.firstChildElement()["id"] for m in (first, second)] == ["s2", "s1"]
    assert "wiz@avalon.irc" in first.toXml()  # whois anyone: the real JID
    fin = result.firstChildElement()
    assert fin.getAttribute("complete") is None and "<count>5</count>" in fin.toXml()
    out = Outbox(T0)
    mam.answer(stanza, stanza.firstChildElement(), ROOM, "moderators",
               ArchiveIdNotFound("x"), out)
    assert stanzas.error_condition(out.stanzas_for("wiz@avalon.irc/x")[0]) == "item-not-found"
