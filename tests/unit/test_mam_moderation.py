"""The room archive (XEP-0313) and message moderation (XEP-0425) in the core, with the real
SQLite adapter answering the core's storage records; and through slaves (dmuc_net)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator

import pytest
import pytest_twisted
from twisted.internet import defer
from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.config import ConfigError, load_master_config
from dmuc.errors import ArchiveIdNotFound
from dmuc.master.features import mam
from dmuc.outbox import (
    AppendArchive,
    AppendHistory,
    ClearHistory,
    DeleteArchive,
    ExpireArchive,
    Outbox,
    QueryArchive,
    RetractArchived,
)
from dmuc.protocol import stanzas
from dmuc.protocol.history import stanza_id
from dmuc.records import ArchiveQuery, ArchiveRecord
from dmuc.shell.daemon import CoreHandler
from dmuc.storage import Storage, open_storage
from tests.unit.dmuc_net import Net, slave_jid
from tests.unit.muc_helpers import (
    BIGCHEESE,
    EFCHEN,
    ROOM,
    SERVICE,
    TROY,
    WIZ,
    Harness,
    codes,
    error_condition,
    parse,
)
from tests.unit.muc_steps import groupchat


@pytest.fixture
def store_at(storage_url: str) -> Iterator[Callable[[], defer.Deferred]]:
    """``opened()`` -> an open adapter on a new database, SQLite or PostgreSQL (each test
    taking it runs on both); closed after the test."""
    stores: list[Storage] = []

    @defer.inlineCallbacks
    def opened() -> defer.Deferred:
        store = open_storage(storage_url)
        yield store.open()
        stores.append(store)
        return store

    yield opened
    for store in stores:
        pytest_twisted.blockon(store.close())


@defer.inlineCallbacks
def settle(store: Storage, out: Outbox) -> defer.Deferred:
    """Apply the core's archive records to the real adapter, in order, as the shell does;
    a QueryArchive's answer goes back to the core. Every stanza sent, in order."""
    sent: list[Element] = [d.stanza for d in out.deliveries if d.recipients is None]
    for op in out.storage:
        if isinstance(op, AppendArchive):
            yield store.append_archive([(op.room_jid, op.record)])
        elif isinstance(op, RetractArchived):
            yield store.retract_archive(op.room_jid, op.sid, op.tombstone_xml)
        elif isinstance(op, ExpireArchive):
            yield store.expire_archive(op.older_than)
        elif isinstance(op, DeleteArchive):
            yield store.delete_archive(op.room_jid)
        elif isinstance(op, QueryArchive):
            try:
                page = yield store.query_archive(op.room_jid, op.query)
            except Exception as exc:  # noqa: BLE001 - handed to the core, as the shell does
                page = exc
            later = Outbox(out.now)
            op.answer(page, later)
            sent.extend((yield settle(store, later)))
    return sent


class Room:
    """A room with a moderator (WiZ) and a participant (Troy), and its archive."""

    def __init__(self, store: Storage, **config: str) -> None:
        self.store = store
        self.h = Harness(room_locking=False)
        self.h.create_instant(WIZ, "wiz", **config)
        self.h.join(TROY, "troy")

    @defer.inlineCallbacks
    def say(self, who: str, text: str) -> defer.Deferred:
        out = groupchat(self.h, who, text, mid=f"m-{text}")
        yield settle(self.store, out)
        sids = [stanza_id(s, ROOM) for s in out.stanzas_for(who)]
        return sids[0]

    @defer.inlineCallbacks
    def query(self, who: str, inner: str = "", queryid: str = "q1") -> defer.Deferred:
        out = self.h.send(f"<iq type='set' id='mam1' from='{who}' to='{ROOM}'>"
                          f"<query xmlns='urn:xmpp:mam:2' queryid='{queryid}'>{inner}</query></iq>")
        sent = yield settle(self.store, out)
        return sent


def results(sent: list[Element]) -> list[tuple[str, str]]:
    """(archive id, body) of each result message."""
    found = []
    for message in sent:
        result = stanzas.child(message, "result", xmlns.MAM)
        if result is None:
            continue
        forwarded = stanzas.child(result, "forwarded", xmlns.FORWARD)
        inner = stanzas.child(forwarded, "message")
        found.append((result["id"], stanzas.text_of(stanzas.child(inner, "body")) or ""))
    return found


def fin(sent: list[Element]) -> Element:
    iq = sent[-1]
    assert iq.name == "iq" and iq["type"] == "result", iq.toXml()
    return stanzas.child(iq, "fin", xmlns.MAM)


def rsm(sent: list[Element], name: str) -> str | None:
    return stanzas.text_of(stanzas.child(stanzas.child(fin(sent), "set", xmlns.RSM), name))


def form(**fields: str) -> str:
    inner = "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items())
    return ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
            f"<value>urn:xmpp:mam:2</value></field>{inner}</x>")


def page(max_: int, after: str | None = None, before: str | None = None) -> str:
    inner = f"<max>{max_}</max>"
    if after is not None:
        inner += f"<after>{after}</after>"
    if before is not None:
        inner += f"<before>{before}</before>" if before else "<before/>"
    return f"<set xmlns='http://jabber.org/protocol/rsm'>{inner}</set>"


# --- the archive ---------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_a_query_returns_the_messages_with_their_stanza_ids_as_mod_muc_mam(store_at):
    store = yield store_at()
    room = Room(store)
    sids = []
    for text in ("one", "two", "three"):
        sids.append((yield room.say(TROY, text)))
    sent = yield room.query(EFCHEN)
    assert results(sent) == list(zip(sids, ("one", "two", "three"), strict=True))
    first = sent[0]
    assert first["from"] == ROOM and first["to"] == EFCHEN
    result = stanzas.child(first, "result", xmlns.MAM)
    assert result["queryid"] == "q1"
    forwarded = stanzas.child(result, "forwarded", xmlns.FORWARD)
    assert stanzas.child(forwarded, "delay", xmlns.DELAY).getAttribute("stamp")
    inner = stanzas.child(forwarded, "message")
    assert inner["from"] == f"{ROOM}/troy" and inner["type"] == "groupchat"
    assert inner.uri == xmlns.CLIENT
    assert stanza_id(inner, ROOM) == sids[0]
    assert stanzas.child(inner, "x", xmlns.MUC_USER) is None  # semi-anonymous: no real JID
    assert fin(sent)["complete"] == "true"
    assert (rsm(sent, "first"), rsm(sent, "last"), rsm(sent, "count")) == (sids[0], sids[2], "3")
    yield store.close()


@pytest_twisted.inlineCallbacks
def test_rsm_paging_forward_backward_and_the_complete_flag(store_at):
    store = yield store_at()
    room = Room(store)
    sids = []
    for n in range(5):
        sids.append((yield room.say(TROY, f"m{n}")))
    sent = yield room.query(EFCHEN, page(2))
    assert [s for s, _ in results(sent)] == sids[:2] and fin(sent).getAttribute("complete") is None
    sent = yield room.query(EFCHEN, page(2, after=rsm(sent, "last")))
    assert [s for s, _ in results(sent)] == sids[2:4]
    sent = yield room.query(EFCHEN, page(2, after=rsm(sent, "last")))
    assert [s for s, _ in results(sent)] == sids[4:] and fin(sent)["complete"] == "true"
    sent = yield room.query(EFCHEN, page(2, before=""))  # the last page
    assert [s for s, _ in results(sent)] == sids[3:]
    sent = yield room.query(EFCHEN, page(2, before=rsm(sent, "first")))
    assert [s for s, _ in results(sent)] == sids[1:3] and not fin(sent).getAttribute("complete")
    sent = yield room.query(EFCHEN, page(2, before=rsm(sent, "first")))
    assert [s for s, _ in results(sent)] == sids[:1] and fin(sent)["complete"] == "true"
    assert rsm(sent, "count") == "5"
    sent = yield room.query(EFCHEN, form(**{"after-id": sids[1], "before-id": sids[4]}))
    assert [s for s, _ in results(sent)] == sids[2:4]
    sent = yield room.query(EFCHEN, page(2, after="no-such-id"))
    assert error_condition(sent[-1]) == "item-not-found"
    yield store.close()


@pytest_twisted.inlineCallbacks
def test_start_end_and_with_filters(store_at):
    store = yield store_at()
    room = Room(store, whois="anyone")
    yield room.say(TROY, "early")
    room.h.now += 100
    middle = yield room.say(WIZ, "middle")
    room.h.now += 100
    yield room.say(TROY, "late")
    stamp = stanzas.format_stamp
    sent = yield room.query(EFCHEN, form(start=stamp(room.h.now - 150), end=stamp(room.h.now - 50)))
    assert results(sent) == [(middle, "middle")]
    sent = yield room.query(EFCHEN, form(**{"with": f"{ROOM}/troy"}))
    assert [b for _, b in results(sent)] == ["early", "late"]
    # a non-anonymous room: anyone may filter by real JID, and sees it in the results
    sent = yield room.query(EFCHEN, form(**{"with": "squit@eris.dclxvii.irc"}))
    assert [b for _, b in results(sent)] == ["middle"]
    inner = stanzas.child(stanzas.child(stanzas.child(sent[0], "result"), "forwarded"),
                          "message")
    assert stanzas.child(stanzas.child(inner, "x", xmlns.MUC_USER), "item")["jid"] == \
        "squit@eris.dclxvii.irc"
    sent = yield room.query(EFCHEN, form(start="yesterday"))
    assert error_condition(sent[-1]) == "bad-request"
    yield store.close()


@pytest_twisted.inlineCallbacks
def test_only_moderators_search_a_semi_anonymous_archive_by_real_jid(store_at):
    store = yield store_at()
    room = Room(store)
    yield room.say(WIZ, "hi")
    sent = yield room.query(TROY, form(**{"with": "squit@eris.dclxvii.irc"}))
    assert error_condition(sent[-1]) == "forbidden"
    sent = yield room.query(WIZ, form(**{"with": "squit@eris.dclxvii.irc"}))
    assert [b for _, b in results(sent)] == ["hi"]
    yield store.close()


@pytest_twisted.inlineCallbacks
def test_outcasts_and_non_members_of_a_members_only_room_are_refused(store_at):
    store = yield store_at()
    room = Room(store, membersonly="1")
    sent = yield room.query(EFCHEN)
    assert error_condition(sent[-1]) == "forbidden"
    yield store.close()


def test_the_setting_the_form_and_disco():
    h = Harness(room_locking=False)
    h.create_instant(WIZ, "wiz")
    info = h.send(f"<iq type='get' id='d' from='{TROY}' to='{ROOM}'>"
                  "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    features = {f["var"] for f in stanzas.children(
        stanzas.child(info.stanzas_for(TROY)[0], "query"), "feature")}
    assert {xmlns.MAM, xmlns.MAM_EXTENDED, xmlns.MODERATE_0, xmlns.MODERATE_1} <= features
    got = h.send(f"<iq type='get' id='f' from='{TROY}' to='{ROOM}'>"
                 "<query xmlns='urn:xmpp:mam:2'/></iq>").stanzas_for(TROY)[0]
    x = stanzas.child(stanzas.child(got, "query", xmlns.MAM), "x", xmlns.DATA_FORMS)
    assert {"FORM_TYPE", "with", "start", "end", "before-id", "after-id"} <= set(
        stanzas.parse_form(x))
    h.join(TROY, "troy")
    out = h.create_instant(WIZ, "wiz", enablearchiving="0")
    assert {"170", "171"} & {c for m in out.stanzas_for(TROY) for c in codes(m)} == {"171"}
    out = groupchat(h, TROY, "not archived")
    assert [op for op in out.storage if isinstance(op, AppendArchive)] == []
    info = h.send(f"<iq type='get' id='d' from='{TROY}' to='{ROOM}'>"
                  "<query xmlns='http://jabber.org/protocol/disco#info'/></iq>")
    assert xmlns.MAM not in {f["var"] for f in stanzas.children(
        stanzas.child(info.stanzas_for(TROY)[0], "query"), "feature")}


def test_retention_runs_from_the_timer_every_interval_not_per_stanza():
    h = Harness(archive_expires_after=3600.0, archive_cleanup_interval=600.0)
    now = 2_000_000.0
    first = [op for op in h.service.tick(now).storage if isinstance(op, ExpireArchive)]
    assert first == [ExpireArchive(now - 3600)]
    assert [op for op in h.service.tick(now + 599).storage
            if isinstance(op, ExpireArchive)] == []
    assert [op for op in h.service.tick(now + 600).storage
            if isinstance(op, ExpireArchive)] == [ExpireArchive(now + 600 - 3600)]
    never = Harness(archive_expires_after=None)
    assert [op for op in never.service.tick(now).storage if isinstance(op, ExpireArchive)] == []
    # a reload's new retention applies from the next cleanup
    h.service.reconfigure(dataclasses.replace(h.service.settings, archive_expires_after=60.0),
                          now + 700)
    assert [op for op in h.service.tick(now + 1200).storage
            if isinstance(op, ExpireArchive)] == [ExpireArchive(now + 1200 - 60)]


def test_a_destroyed_room_takes_its_archive_with_it():
    h = Harness(room_locking=False)
    h.create_instant(WIZ, "wiz")
    out = h.send(f"<iq type='set' id='x' from='{WIZ}' to='{ROOM}'>"
                 "<query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>")
    assert DeleteArchive(ROOM) in out.storage


# --- the storage adapter -----------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_the_adapter_pages_counts_retracts_and_expires(store_at):
    store = yield store_at()
    for n in range(6):
        yield store.append_archive([(ROOM, ArchiveRecord(
            f"s{n}", 100.0 + n, "troy" if n % 2 else "wiz", "t@x", f"<m>{n}</m>"))])
    yield store.append_archive([(ROOM, ArchiveRecord("s0", 1.0, "x", "x", "<dup/>")),  # kept
                                ("other@" + SERVICE, ArchiveRecord("o1", 100.0, "a", "a", "<o/>"))])
    got = yield store.query_archive(ROOM, ArchiveQuery(max=10))
    assert [r.sid for r in got.records] == [f"s{n}" for n in range(6)] and got.complete
    assert got.records[0].xml == "<m>0</m>" and got.count == 6
    got = yield store.query_archive(ROOM, ArchiveQuery(max=2, nick="troy", last=True))
    assert [r.sid for r in got.records] == ["s3", "s5"] and not got.complete and got.count == 3
    got = yield store.query_archive(ROOM, ArchiveQuery(max=10, start=102, end=103.5))
    assert [r.sid for r in got.records] == ["s2", "s3"]
    got = yield store.query_archive(ROOM, ArchiveQuery(max=10, ids=["s4", "o1"]))
    assert [r.sid for r in got.records] == ["s4"]
    with pytest.raises(ArchiveIdNotFound):
        yield store.query_archive(ROOM, ArchiveQuery(max=10, after="o1"))
    assert (yield store.retract_archive(ROOM, "s1", "<tombstone/>")) is True
    assert (yield store.retract_archive(ROOM, "nope", "<tombstone/>")) is False
    got = yield store.query_archive(ROOM, ArchiveQuery(max=1, ids=["s1"]))
    assert got.records[0].retracted and got.records[0].xml == "<tombstone/>"
    # one archive trimmed (a slave's copy, by its room's retention): the other room's o1,
    # said as early, stays
    assert (yield store.expire_archive(101.0, ROOM)) == 1  # s0
    assert (yield store.expire_archive(102.0)) == 2  # s1 and the other room's o1
    got = yield store.query_archive(ROOM, ArchiveQuery(max=10))
    assert [r.sid for r in got.records] == ["s2", "s3", "s4", "s5"]
    yield store.delete_archive(ROOM)
    assert (yield store.query_archive(ROOM, ArchiveQuery(max=10))).count == 0
    yield store.close()


# --- moderation ----------------------------------------------------------------------------


def moderate_v1(who: str, sid: str, reason: str = "spam") -> str:
    return (f"<iq type='set' id='mod1' from='{who}' to='{ROOM}'>"
            f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{sid}'>"
            "<retract xmlns='urn:xmpp:message-retract:1'/>"
            f"<reason>{reason}</reason></moderate></iq>")


def moderate_v0(who: str, sid: str) -> str:
    return (f"<iq type='set' id='mod0' from='{who}' to='{ROOM}'>"
            f"<apply-to xmlns='urn:xmpp:fasten:0' id='{sid}'>"
            "<moderate xmlns='urn:xmpp:message-moderate:0'>"
            "<retract xmlns='urn:xmpp:message-retract:0'/><reason>spam</reason>"
            "</moderate></apply-to></iq>")


def retracted_id(message: Element) -> str | None:
    retract = stanzas.child(message, "retract", xmlns.RETRACT_1)
    return retract.getAttribute("id") if retract is not None else None


@pytest_twisted.inlineCallbacks
def test_a_moderator_retracts_a_message_in_both_forms_and_it_leaves_history_and_archive(store_at):
    store = yield store_at()
    room = Room(store)
    spam = yield room.say(TROY, "spam")
    service = room.h.service
    spam_seen = service.distribution.replay_of(service.rooms[ROOM]).window.get(spam).stanza
    kept = yield room.say(TROY, "fine")
    out = room.h.send(moderate_v1(WIZ, spam))
    sent = yield settle(store, out)
    assert sent[-1]["type"] == "result" and sent[-1]["to"] == WIZ
    (notice,) = [m for m in out.stanzas_for(TROY) if m.name == "message"]
    assert notice["from"] == ROOM and notice["type"] == "groupchat"
    assert retracted_id(notice) == spam
    moderated = stanzas.child(stanzas.child(notice, "retract", xmlns.RETRACT_1), "moderated",
                              xmlns.MODERATE_1)
    assert moderated["by"] == f"{ROOM}/wiz"
    wiz_id = stanzas.child(moderated, "occupant-id", xmlns.OCCUPANT_ID)["id"]
    assert wiz_id and wiz_id != stanzas.child(spam_seen, "occupant-id", xmlns.OCCUPANT_ID)["id"]
    apply_to = stanzas.child(notice, "apply-to", xmlns.FASTEN)
    assert apply_to["id"] == spam and stanzas.child(
        stanzas.child(apply_to, "moderated", xmlns.MODERATE_0), "retract", xmlns.RETRACT_0)
    # joiners get the history without it
    joined = room.h.join(EFCHEN, "efchen")
    bodies = [stanzas.text_of(stanzas.child(m, "body")) for m in joined.stanzas_for(EFCHEN)
              if m.name == "message" and stanzas.child(m, "body") is not None]
    assert bodies == ["fine"]
    # the archive keeps a tombstone in its place, then the announcement
    sent = yield room.query(EFCHEN)
    assert [s for s, _ in results(sent)][:2] == [spam, kept]
    assert results(sent)[0][1] == ""  # no body left
    stone = stanzas.child(stanzas.child(stanzas.child(sent[0], "result"), "forwarded"),
                          "message")
    assert stanzas.child(stone, "retracted", xmlns.RETRACT_1) is not None
    assert stanzas.child(stone, "moderated", xmlns.MODERATE_0) is not None
    assert stanzas.child(stone, "occupant-id", xmlns.OCCUPANT_ID)["id"] == stanzas.child(
        spam_seen, "occupant-id", xmlns.OCCUPANT_ID)["id"]  # still says whose it was
    assert retracted_id(stanzas.child(stanzas.child(stanzas.child(sent[2], "result"),
                                                    "forwarded"), "message")) == spam
    # the older form is answered too
    other = yield room.say(TROY, "more spam")
    out = room.h.send(moderate_v0(WIZ, other))
    assert out.stanzas_for(WIZ)[-1]["type"] == "result"
    yield store.close()


@pytest_twisted.inlineCallbacks
def test_a_message_no_longer_in_memory_is_found_in_the_archive(store_at):
    store = yield store_at()
    room = Room(store)
    spam = yield room.say(TROY, "spam")
    service = room.h.service
    service.distribution.replay_of(service.rooms[ROOM]).window.retract(spam)  # left it
    sent = yield settle(store, room.h.send(moderate_v1(WIZ, spam)))
    assert sent[-1]["type"] == "result"
    sent = yield settle(store, room.h.send(moderate_v1(WIZ, "unknown")))
    assert error_condition(sent[-1]) == "item-not-found"
    yield store.close()


def test_only_moderators_may_moderate():
    h = Harness(room_locking=False)
    h.create_instant(WIZ, "wiz")
    h.join(TROY, "troy")
    out = groupchat(h, WIZ, "hello")
    sid = stanza_id(out.stanzas_for(TROY)[0], ROOM)
    refused = h.send(moderate_v1(TROY, sid)).stanzas_for(TROY)
    assert error_condition(refused[-1]) == "forbidden"
    refused = h.send(moderate_v1(EFCHEN, sid)).stanzas_for(EFCHEN)  # not even in the room
    assert error_condition(refused[-1]) == "forbidden"
    bad = h.send(f"<iq type='get' id='g' from='{WIZ}' to='{ROOM}'>"
                 f"<moderate xmlns='urn:xmpp:message-moderate:1' id='{sid}'/></iq>")
    assert error_condition(bad.stanzas_for(WIZ)[-1]) == "bad-request"


def test_a_persistent_room_rewrites_its_stored_history_without_the_message():
    h = Harness(room_locking=False)
    h.create_instant(WIZ, "wiz", persistentroom="1")
    sids = [stanza_id(groupchat(h, WIZ, text, mid=text).stanzas_for(WIZ)[0], ROOM)
            for text in ("a", "b", "c")]
    out = h.send(moderate_v1(WIZ, sids[1]))
    ops = [op for op in out.storage if isinstance(op, (ClearHistory, AppendHistory))]
    assert isinstance(ops[0], ClearHistory)
    assert ["<body>a</body>" in ops[1].record.xml, "<body>c</body>" in ops[2].record.xml] == \
        [True, True] and len(ops) == 3


# --- through slaves -------------------------------------------------------------------------

VESA = "vesa.yeggmaex.irc"
DIRECT = "ludwig@efnet.irc/vt100"


def net_room() -> Net:
    """WiZ (behind eris's slave, the owner: a moderator), BigCheese (behind vesa's slave),
    Ludwig (efnet, direct)."""
    net = Net()
    net.join(WIZ, "wiz", ROOM)
    net.join(BIGCHEESE, "BigCheese", ROOM)
    net.join(DIRECT, "ludwig", ROOM)
    for who in (WIZ, BIGCHEESE, DIRECT):
        net.take(who)
    return net


def slave_history(net: Net, domain: str) -> list[str | None]:
    room = net.slaves[domain].rooms[ROOM]
    return [stanzas.text_of(stanzas.child(e.stanza, "body")) for e in room.history]


def history_on_join(net: Net, who: str, nick: str) -> list[str | None]:
    net.join(who, nick, ROOM)
    return [stanzas.text_of(stanzas.child(m, "body")) for m in net.take(who)
            if m.name == "message" and stanzas.child(m, "body") is not None]


def say(net: Net, who: str, text: str) -> str | None:
    net.user_sends(f"<message from='{who}' to='{ROOM}' type='groupchat' id='{text}'>"
                   f"<body>{text}</body></message>")
    got = [m for m in net.take(who) if stanzas.child(m, "body") is not None]
    return stanza_id(got[-1], ROOM)


def test_a_moderator_behind_a_slave_retracts_and_every_slave_forgets_it():
    net = net_room()
    spam = say(net, BIGCHEESE, "spam")
    say(net, BIGCHEESE, "fine")
    assert slave_history(net, VESA) == ["spam", "fine"]
    net.take(DIRECT)
    net.take(BIGCHEESE)
    net.user_sends(moderate_v1(WIZ, spam))
    answer = [s for s in net.take(WIZ) if s.name == "iq"]
    assert answer[-1]["type"] == "result"
    for who in (DIRECT, BIGCHEESE):
        notices = [m for m in net.take(who) if retracted_id(m) == spam]
        assert len(notices) == 1 and notices[0]["from"] == ROOM
    for domain in (VESA, "eris.dclxvii.irc"):
        assert slave_history(net, domain) == ["fine"]
    assert history_on_join(net, EFCHEN, "efchen") == ["fine"]
    net.user_sends(moderate_v1(BIGCHEESE, spam))  # a participant behind a slave
    assert error_condition([s for s in net.take(BIGCHEESE) if s.name == "iq"][-1]) == \
        "forbidden"


def test_a_retraction_during_a_netsplit_reaches_the_slave_at_the_netjoin():
    net = net_room()
    spam = say(net, DIRECT, "spam")
    say(net, DIRECT, "fine")
    link = net.master.distribution.link(ROOM, slave_jid(VESA))
    net.down.add(VESA)
    net.tick(link.keepalive)
    net.tick(link.keepalive)
    assert link.split
    net.user_sends(moderate_v1(WIZ, spam))
    assert [s for s in net.take(WIZ) if s.name == "iq"][-1]["type"] == "result"
    assert slave_history(net, VESA) == ["spam", "fine"]  # not heard yet
    net.take(BIGCHEESE)
    net.down.clear()
    for _ in range(4):
        net.tick(15)
    assert not link.split
    assert slave_history(net, VESA) == ["fine"]
    assert [m for m in net.take(BIGCHEESE) if retracted_id(m) == spam]  # it was shown here
    assert history_on_join(net, EFCHEN, "efchen") == ["fine"]


def test_a_slave_forwards_an_archive_query_and_refuses_it_during_a_split():
    net = net_room()
    vesa = net.slaves[VESA]
    query = parse(f"<iq type='set' id='mam' from='{BIGCHEESE}' to='{ROOM}'>"
                  "<query xmlns='urn:xmpp:mam:2' queryid='x'/></iq>")
    forwarded = vesa.receive(query, net.now).stanzas_for(ROOM)
    assert [(s["from"], s["id"], s.firstChildElement().uri) for s in forwarded] == [
        (BIGCHEESE, "mam", xmlns.MAM)]  # unchanged (§4.8): the master answers the user
    link = net.master.distribution.link(ROOM, slave_jid(VESA))
    net.down.add(VESA)
    net.tick(link.keepalive)
    net.tick(link.keepalive)
    (refused,) = vesa.receive(query, net.now).stanzas_for(BIGCHEESE)
    assert error_condition(refused) == "remote-server-timeout"
    assert stanzas.child(refused, "error")["type"] == "wait"


def test_query_parsing_caps_max_at_the_service_limit():
    h = Harness(room_locking=False, archive_max_results=5)
    h.create_instant(WIZ, "wiz")
    room = h.service.rooms[ROOM]
    query = mam.parse_query(room, parse(
        "<query xmlns='urn:xmpp:mam:2'>"
        "<set xmlns='http://jabber.org/protocol/rsm'><max>500</max></set></query>"), WIZ)
    assert query.max == 5
    assert mam.parse_query(room, parse("<query xmlns='urn:xmpp:mam:2'/>"), WIZ).max == 5


# --- configuration --------------------------------------------------------------------------

CONFIG = """
[component]
jid = "channel.avalon.irc"
secret = "s"
[storage]
url = "sqlite:///{db}"
[muc]
{muc}
"""


@pytest.mark.parametrize(("line", "seconds"), [
    ("", 7 * 86_400.0), ('archive_expires_after = "never"', None),
    ("archive_expires_after = 3600", 3600.0), ('archive_expires_after = "30d"', 30 * 86_400.0),
    ('archive_expires_after = "2w"', 14 * 86_400.0),
    ('archive_expires_after = "1m"', 31 * 86_400.0),
])
def test_retention_is_configured_as_mod_muc_mam(tmp_path, line, seconds):
    path = tmp_path / "m.toml"
    path.write_text(CONFIG.format(db=tmp_path / "x.db", muc=line))
    assert load_master_config(str(path)).muc.archive_expires_after == seconds


@pytest.mark.parametrize(("line", "key"), [
    ('archive_expires_after = "soon"', "muc.archive_expires_after"),
    ("archive_expires_after = 0", "muc.archive_expires_after"),
    ("archive_cleanup_interval = 0", "muc.archive_cleanup_interval"),
    ("archive_max_results = 0", "muc.archive_max_results"),
    ('archive_max_results = "50"', "muc.archive_max_results"),
])
def test_a_bad_archive_setting_names_its_key(tmp_path, line, key):
    path = tmp_path / "m.toml"
    path.write_text(CONFIG.format(db=tmp_path / "x.db", muc=line))
    with pytest.raises(ConfigError) as error:
        load_master_config(str(path))
    assert error.value.key == key


# --- the shell's persistence path ------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_the_shell_batches_archive_appends_and_a_query_sees_them(store_at):
    store = yield store_at()
    handler = CoreHandler(lambda stanza, now: Outbox(now), store, SERVICE)
    answered: defer.Deferred = defer.Deferred()
    for n in range(3):
        handler.persist(AppendArchive(ROOM, ArchiveRecord(f"s{n}", 1.0 + n, "troy", "t@x",
                                                          f"<m>{n}</m>")))
    assert len(handler._pending_archive) == 3  # one transaction for the three, later
    handler.persist(QueryArchive(ROOM, ArchiveQuery(max=10),
                                 lambda page, out: answered.callback(page)))
    assert handler._pending_archive == []  # written first, before the query
    page = yield answered
    assert [r.sid for r in page.records] == ["s0", "s1", "s2"]
    yield store.close()
