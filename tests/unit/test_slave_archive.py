"""A slave's copy of the room archive (dmuc/slave/archive.py, docs/protocol.md §4.17), sans
I/O: what it keeps of a broadcast, how a fill is stored and what waited meanwhile appended
after it, which queries it answers itself and what a page during a split says."""

from __future__ import annotations

from dmuc.outbox import AppendArchive, DeleteArchive, Outbox, QueryArchive, RetractArchived
from dmuc.protocol import stanzas, xep0282
from dmuc.records import ArchivePage, ArchiveRecord
from dmuc.slave import archive
from dmuc.slave.room import RosterEntry, SlaveRoom

ROOM = "wallops@channel.avalon.irc"
SLAVE = "dmuc.vesa.yeggmaex.irc"
KEY = f"{SLAVE}|{ROOM}"
USER = "rubenro@vesa.yeggmaex.irc/shaver"
SETTINGS = xep0282.ArchiveSettings(True, 50, 7 * 86400)


def broadcast(sid: str, body: str = "hi", nick: str = "Trillian") -> stanzas.Element:
    return stanzas.parse_xml(
        f"<message from='{ROOM}/{nick}' type='groupchat' id='m-{sid}' xml:lang='en'>"
        f"<body>{body}</body><stanza-id xmlns='urn:xmpp:sid:0' id='{sid}' by='{ROOM}'/>"
        "</message>")


def _listed(role: str) -> RosterEntry:
    return RosterEntry.of(stanzas.parse_xml(
        f"<presence from='{ROOM}/BigCheese'><x xmlns='http://jabber.org/protocol/muc#user'>"
        f"<item affiliation='none' role='{role}'/></x></presence>"))


def filled_room() -> SlaveRoom:
    room = SlaveRoom(ROOM)
    room.local[USER] = "BigCheese"
    room.roster["BigCheese"] = _listed("participant")
    archive.registered(room, SETTINGS)
    fill = xep0282.archive_fill_result(stanzas.parse_xml("<iq type='get' id='f'/>"), [], True,
                                       False)
    archive.fill_answered(room, fill, KEY, Outbox(0.0))
    return room


def appended(out: Outbox) -> list[str]:
    return [op.record.sid for op in out.storage if isinstance(op, AppendArchive)]


def test_a_broadcast_is_kept_as_the_master_keeps_it_only_if_the_room_archives() -> None:
    room = filled_room()
    out = Outbox(0.0)
    archive.keep(room, broadcast("s1"), 100.25, KEY, out)
    [op] = out.storage
    assert isinstance(op, AppendArchive) and op.room_jid == KEY
    assert (op.record.sid, op.record.stamp, op.record.nick, op.record.sender) == \
        ("s1", 100.25, "Trillian", "")  # the master did not show us Trillian's JID
    assert "xml:lang" not in op.record.xml and "lang" not in op.record.xml
    room.archive.settings = xep0282.ArchiveSettings(False, 50, None)
    out = Outbox(0.0)
    archive.keep(room, broadcast("s2"), 101.0, KEY, out)
    assert out.storage == []


def test_what_comes_during_a_fill_is_appended_after_it_in_the_masters_order() -> None:
    room = SlaveRoom(ROOM)
    archive.registered(room, SETTINGS)
    out = Outbox(0.0)
    archive.keep(room, broadcast("s3"), 103.0, KEY, out)  # live, while the copy fills
    assert out.storage == [] and not room.archive.filled
    request = stanzas.parse_xml(f"<iq type='get' id='f1' from='{SLAVE}' to='{ROOM}'/>")
    records = [ArchiveRecord(f"s{n}", 100.0 + n + 0.123456789, "x", "", f"<m>{n}</m>")
               for n in (1, 2)]
    page = xep0282.archive_fill_result(request, records, False, False)
    parsed = xep0282.parse_archive_fill(stanzas.parse_xml(page.toXml()))
    assert parsed == (records, False)  # exact: stamps and XML byte for byte
    out = Outbox(0.0)
    assert archive.fill_answered(room, page, KEY, out) is True  # ask for more
    assert appended(out) == ["s1", "s2"] and room.archive.last == "s2"
    last = xep0282.archive_fill_result(request, [ArchiveRecord("s3", 103.0, "x", "", "<m/>")],
                                       True, False)
    out = Outbox(0.0)
    assert archive.fill_answered(room, last, KEY, out) is False
    assert appended(out) == ["s3", "s3"]  # the copy's, then the one kept aside (kept once)
    assert room.archive.filled and not room.archive.filling and room.archive.last == "s3"


def test_an_expired_place_starts_the_copy_afresh() -> None:
    room = filled_room()
    room.archive.last = "gone"
    archive.registered(room, SETTINGS)
    error = stanzas.parse_xml("<iq type='error' id='f'><error type='cancel'><item-not-found "
                              "xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>")
    out = Outbox(0.0)
    assert archive.fill_answered(room, error, KEY, out) is True
    assert out.storage == [DeleteArchive(KEY)] and room.archive.last is None
    fill = archive.fill_iq(room, SLAVE, "f2")
    assert stanzas.child(fill, "archive", xmlns_dmuc()).getAttribute("after") is None


def xmlns_dmuc() -> str:
    return "urn:xmpp:tmp:dmuc:0"


def query(kind: str = "set", inner: str = "", sender: str = USER) -> stanzas.Element:
    return stanzas.parse_xml(f"<iq type='{kind}' id='q' from='{sender}' to='{ROOM}'>"
                             f"<query xmlns='urn:xmpp:mam:2'>{inner}</query></iq>")


def ask(room: SlaveRoom, stanza: stanzas.Element, split: bool = False) -> Outbox | None:
    out = Outbox(0.0)
    if not archive.answer_query(room, stanza, stanza.firstChildElement(), split, KEY, out):
        return None
    return out


RSM = "<set xmlns='http://jabber.org/protocol/rsm'>{}</set>"
WITH_REAL_JID = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
                 "urn:xmpp:mam:2</value></field><field var='with'><value>troy@eris.dclxvii.irc"
                 "</value></field></x>")


def test_which_queries_the_slave_answers_itself() -> None:
    room = filled_room()
    assert ask(room, query(sender="msa@vesa.yeggmaex.irc/bicycle")) is None  # not in the room
    assert ask(room, query(inner=WITH_REAL_JID)) is not None  # refused here: not a moderator
    room.roster["BigCheese"] = _listed("moderator")
    assert ask(room, query(inner=WITH_REAL_JID)) is None  # the copy may lack real JIDs
    form = ask(room, query("get"))
    assert form is not None and form.stanzas_for(USER)[0].getAttribute("type") == "result"
    archive.registered(room, SETTINGS)  # a netjoin: the copy is being filled again
    assert ask(room, query()) is None


def test_a_page_during_a_split_never_claims_complete_going_forwards() -> None:
    room = filled_room()
    records = [ArchiveRecord("s1", 100.0, "x", "", "<message type='groupchat'/>")]
    for inner, split, complete in ((RSM.format("<after>s0</after>"), True, False),
                                   ("", True, False),
                                   (RSM.format("<before/>"), True, True),
                                   ("", False, True)):
        out = ask(room, query(inner=inner), split)
        assert out is not None
        [op] = out.storage
        assert isinstance(op, QueryArchive) and op.room_jid == KEY
        later = Outbox(0.0)
        op.answer(ArchivePage(records, 1, True), later)
        fin = later.stanzas_for(USER)[-1].firstChildElement()
        assert (fin.getAttribute("complete") == "true") is complete, (inner, split)


def test_a_copied_retraction_applies_to_the_message_the_copy_had() -> None:
    """Missed during a split, the announcement comes with the copy: the message it
    retracts, which the copy had from before, becomes the master's tombstone."""
    room = filled_room()
    archive.registered(room, SETTINGS)
    notice = (f"<message from='{ROOM}' type='groupchat' id='n1'>"
              "<retract xmlns='urn:xmpp:message-retract:1' id='s1'>"
              "<moderated xmlns='urn:xmpp:message-moderate:1' by='wallops@channel.avalon.irc/W'/>"
              "<reason>spam</reason></retract>"
              f"<stanza-id xmlns='urn:xmpp:sid:0' id='n-sid' by='{ROOM}'/></message>")
    request = stanzas.parse_xml(f"<iq type='get' id='f1' from='{SLAVE}' to='{ROOM}'/>")
    page = xep0282.archive_fill_result(request, [ArchiveRecord("n-sid", 200.5, "", "", notice)],
                                       True, False)
    out = Outbox(0.0)
    archive.fill_answered(room, page, KEY, out)
    [query_op] = [op for op in out.storage if isinstance(op, QueryArchive)]
    assert query_op.query.ids == ["s1"]
    later = Outbox(0.0)
    original = broadcast("s1").toXml()
    query_op.answer(ArchivePage([ArchiveRecord("s1", 100.0, "Trillian", "", original)], 1,
                                True), later)
    [retracted] = later.storage
    assert isinstance(retracted, RetractArchived) and retracted.sid == "s1"
    assert "spam" in retracted.tombstone_xml and "<body>" not in retracted.tombstone_xml
