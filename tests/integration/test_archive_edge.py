"""The room archive at the edge (docs/protocol.md §4.17), on the real five-server network
with the real daemons, driven by slixmpp's xep_0313 plugin (and raw queries for what it
cannot say: ids, before-id/after-id, flip-page): each slave keeps a copy of the room's
archive and answers its local occupants' queries itself. The same sequence of queries,
asked of the master directly (Ludwig, efnet.irc, no slave) and through the vesa and
killrc slaves, gives the same pages stanza by stanza (only the addressee differs), and
none of the slaves' answers crossed s2s.

The module runs its own network (127.0.24.x) with the daemons at a 5 s keepalive.
"""

from __future__ import annotations

import asyncio
import difflib
import pprint
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import pytest
from slixmpp import JID

from testbed.faults import FaultInjector, wait_for_text
from testbed.network import MASTER_DOMAIN, MUC_SERVICE
from tests.integration.cast import CAST, DIRECT_USER
from tests.integration.module_net import Net, module_net
from tests.integration.test_dmuc_slaves import is_groupchat, join
from tests.integration.xmpp_client import Client, fresh_id, local, run, xml_str

pytestmark = pytest.mark.integration

IPS = ("127.0.24.2", "127.0.24.3", "127.0.24.4", "127.0.24.5", "127.0.24.6")
VESA, KILLRC = "vesa.yeggmaex.irc", "killrc.oulubox.irc"
LUDWIG = DIRECT_USER[1]
NS_MAM, NS_RSM, NS_SID = "urn:xmpp:mam:2", "http://jabber.org/protocol/rsm", "urn:xmpp:sid:0"
FORM = ("<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        f"<value>{NS_MAM}</value></field>{{}}</x>")


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    yield from module_net("dmuc-edge", IPS, ("xep_0313", "xep_0359", "xep_0425"))


def canonical(elem: ET.Element, drop: tuple[str, ...] = ("to", "queryid")
              ) -> tuple[object, ...]:
    """An element as data, without what names its addressee or its query: Prosody may
    write the attributes in another order."""
    attrs = sorted((k, v) for k, v in elem.attrib.items() if k not in drop)
    return (elem.tag, attrs, (elem.text or "").strip(), (elem.tail or "").strip(),
            [canonical(c, drop) for c in elem])


def results_of(client: Client, queryid: str) -> list[ET.Element]:
    """The result messages of one query, removed from the inbox in arrival order."""
    mine = [e for e in client.inbox if local(e.tag) == "message"
            and any(local(c.tag) == "result" and c.get("queryid") == queryid for c in e)]
    client.inbox = [e for e in client.inbox if not any(e is m for m in mine)]
    return mine


Page = tuple[list[tuple[object, ...]], tuple[object, ...]]


def raw_query(client: Client, room: str, inner: str = "", kind: str = "set") -> Page:
    """One query as raw XML: its result messages and its answer, as data."""
    queryid = fresh_id("q")
    answer = run(client.iq(f"<iq type='{kind}' to='{room}'><query xmlns='{NS_MAM}' "
                           f"queryid='{queryid}'>{inner}</query></iq>"))
    return [canonical(m) for m in results_of(client, queryid)], canonical(answer, ("to", "id"))


def plugin_query(client: Client, room: str, **kwargs: object) -> Page:
    """One query through slixmpp's xep_0313 (rsm=..., start=, end=, with_jid=)."""
    iq = run(client.xmpp.plugin["xep_0313"].retrieve(jid=JID(room), timeout=10, **kwargs))
    queryid = iq["mam"]["results"][0]["mam_result"]["queryid"] if iq["mam"]["results"] \
        else None
    found = results_of(client, queryid) if queryid else []
    assert len(found) == len(iq["mam"]["results"])
    answer = next((e for e in reversed(client.drain()) if e.get("id") == iq["id"]), iq.xml)
    return [canonical(m) for m in found], canonical(answer, ("to", "id"))


def sids(page: Page) -> list[str]:
    return [dict(result[1])["id"] for result in (m[4][0] for m in page[0])]


def fin_rsm(page: Page, name: str) -> str | None:
    fin = page[1][4][0]
    rsm = next(c for c in fin[4] if c[0] == f"{{{NS_RSM}}}set")
    return next((c[2] for c in rsm[4] if c[0] == f"{{{NS_RSM}}}{name}"), None)


def say(sender: Client, room: str, nick: str, text: str, witness: Client,
        extra: str = "") -> str:
    sender.send_raw(f"<message to='{room}' type='groupchat'><body>{text}</body>{extra}"
                    "</message>")
    got = run(witness.expect(is_groupchat(room, nick, text)))
    sid = got.find(f"{{{NS_SID}}}stanza-id")
    assert sid is not None
    return sid.get("id", "")


def queries(room: str, ids: list[str]) -> list[tuple[str, Callable[[Client], Page]]]:
    """The sequence every side is asked: (what, how)."""
    form = FORM.format
    start = datetime.fromtimestamp(0, tz=UTC)
    return [
        ("the form", lambda c: raw_query(c, room, kind="get")),
        ("default page", lambda c: plugin_query(c, room)),
        ("first 3", lambda c: plugin_query(c, room, rsm={"max": 3})),
        ("3 after the 3rd", lambda c: plugin_query(c, room, rsm={"max": 3, "after": ids[2]})),
        ("the last page", lambda c: raw_query(
            c, room, f"<set xmlns='{NS_RSM}'><max>4</max><before/></set>")),
        ("4 before the 6th", lambda c: raw_query(
            c, room, f"<set xmlns='{NS_RSM}'><max>4</max><before>{ids[5]}</before></set>")),
        ("flipped", lambda c: raw_query(
            c, room, f"<set xmlns='{NS_RSM}'><max>3</max></set><flip-page/>")),
        ("between ids", lambda c: raw_query(c, room, form(
            f"<field var='after-id'><value>{ids[1]}</value></field>"
            f"<field var='before-id'><value>{ids[-2]}</value></field>"))),
        ("by ids", lambda c: raw_query(c, room, form(
            "<field var='ids'>" + "".join(f"<value>{i}</value>" for i in
                                          (ids[4], "no-such-id", ids[0])) + "</field>"))),
        ("since 1970", lambda c: plugin_query(c, room, start=start, rsm={"max": 5})),
        ("with Wumpus", lambda c: plugin_query(c, room, with_jid=JID(f"{room}/Wumpus"))),
        ("with the room", lambda c: plugin_query(c, room, with_jid=JID(room))),
        ("count only", lambda c: raw_query(c, room, f"<set xmlns='{NS_RSM}'><max>0</max></set>")),
        ("an unknown id", lambda c: raw_query(
            c, room, f"<set xmlns='{NS_RSM}'><after>no-such-id</after></set>")),
        ("a bad stamp", lambda c: raw_query(
            c, room, form("<field var='start'><value>yesterday</value></field>"))),
    ]


def differ(got: Page, want: Page) -> str:
    """The lines where two pages differ."""
    lines = [pprint.pformat(page, width=100).splitlines() for page in (got, want)]
    return "\n".join(difflib.unified_diff(*lines, lineterm="", n=1))


def crossed(net: Net, domain: str, jid: str) -> list[object]:
    """IQs and messages to or from `jid` on the link between `domain` and avalon."""
    log = net.network.s2s_log(MASTER_DOMAIN, domain) + net.network.s2s_log(domain,
                                                                            MASTER_DOMAIN)
    return [s for s in log if s.kind in ("iq", "message") and jid in (s.to, s.from_)]


def test_the_same_queries_give_the_same_pages_directly_and_through_each_slave(
        net: Net) -> None:
    room = f"edge-pages@{MUC_SERVICE}"
    ludwig = net.client(LUDWIG)
    join(ludwig, room, "Ludwig")  # Ludwig (direct) creates and owns it
    answer = run(ludwig.iq(
        f"<iq type='set' to='{room}'><query xmlns='http://jabber.org/protocol/muc#owner'>"
        "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'><value>"
        "http://jabber.org/protocol/muc#roomconfig</value></field>"
        "<field var='muc#roomconfig_whois'><value>anyone</value></field></x></query></iq>"))
    assert answer.get("type") == "result", xml_str(answer)
    # said before any slave mirrors the room: the slaves copy them at registration
    ids = [say(ludwig, room, "Ludwig", f"early {n}", witness=ludwig) for n in range(3)]
    cheese, wumpus = net.client(CAST["BigCheese"]), net.client(CAST["Wumpus"])
    join(cheese, room, "BigCheese")
    join(wumpus, room, "Wumpus")
    for slave in (VESA, KILLRC):
        wait_for_text(net.daemons.slaves[slave].log_text,
                      f"{room}: archive copy complete", timeout=20)
    for n in range(3):
        ids.append(say(cheese, room, "BigCheese", f"vesa {n}", witness=ludwig))
        ids.append(say(wumpus, room, "Wumpus", f"killrc {n}", witness=ludwig))
    ids.append(say(ludwig, room, "Ludwig", "marked", witness=cheese,
                   extra="<store xmlns='urn:xmpp:hints'/>"))
    ludwig.send_raw(f"<message to='{room}' type='groupchat'><active "
                    "xmlns='http://jabber.org/protocol/chatstates'/></message>")  # not kept
    run(ludwig.xmpp.plugin["xep_0425"].moderate(JID(room), ids[3], "spam", timeout=10))
    notice = run(wumpus.expect(lambda e: local(e.tag) == "message"
                               and e.find("{urn:xmpp:message-retract:1}retract") is not None))
    ids.append(notice.find(f"{{{NS_SID}}}stanza-id").get("id", ""))
    ids.append(say(ludwig, room, "Ludwig", "last", witness=cheese))
    run(wumpus.expect(is_groupchat(room, "Ludwig", "last")))
    for client in (ludwig, cheese, wumpus):
        client.drain()
    net.network.reset_counts()
    for what, ask in queries(room, ids):
        direct, vesa, killrc = (ask(c) for c in (ludwig, cheese, wumpus))
        assert vesa == direct, f"{what}: through vesa / directly:\n{differ(vesa, direct)}"
        assert killrc == direct, f"{what}: through killrc / directly:\n{differ(killrc, direct)}"
    everything = plugin_query(cheese, room, rsm={"max": 50})
    assert sids(everything) == ids and fin_rsm(everything, "count") == str(len(ids))
    assert "spam" in str(everything[0][3])  # the tombstone of BigCheese's first message
    assert "rubenro@vesa.yeggmaex.irc" in str(everything[0])  # whois anyone: real JIDs
    # the slaves answered their users themselves: nothing of it crossed s2s
    assert crossed(net, VESA, cheese.jid) == []
    assert crossed(net, KILLRC, wumpus.jid) == []


def walk_forward(client: Client, room: str, size: int = 10) -> list[Page]:
    """Every page from the oldest message on, `size` at a time, until one says complete
    or a page is empty: the pages as data."""
    pages, after = [], ""
    for _ in range(200):
        rsm = f"<set xmlns='{NS_RSM}'><max>{size}</max>" + \
            (f"<after>{after}</after>" if after else "") + "</set>"
        page = raw_query(client, room, rsm)
        pages.append(page)
        fin = page[1][4][0]
        if dict(fin[1]).get("complete") == "true" or not page[0]:
            return pages
        after = sids(page)[-1]
    raise AssertionError("the archive never ended")


def bodies_in(elem: tuple[object, ...]) -> list[str]:
    """The texts of the <body/> elements inside an element (as data)."""
    tag, _, text, _, children = elem
    found = [str(text)] if str(tag).endswith("}body") else []
    for child in children:  # type: ignore[attr-defined]
        found += bodies_in(child)
    return found


def complete_of(page: Page) -> bool:
    return dict(page[1][4][0][1]).get("complete") == "true"


def test_a_split_under_traffic_leaves_the_slaves_archive_the_masters(net: Net) -> None:
    """The vesa link blackholed (only silence tells) past the detection bound while
    people on every server talk: during the split a page walked forward through vesa never
    says complete and holds only what the master gave ids to; after the netjoin every
    page through vesa and killrc is the master's, stanza by stanza (ids, stamps, bodies,
    order), and every line said is in it once."""
    room = f"edge-split@{MUC_SERVICE}"
    people = {"Ludwig": net.client(LUDWIG), "BigCheese": net.client(CAST["BigCheese"]),
              "Wumpus": net.client(CAST["Wumpus"]), "WiZ": net.client(CAST["WiZ"])}
    for nick, client in people.items():
        join(client, room, nick)
    wait_for_text(net.daemons.slaves[VESA].log_text, f"{room}: archive copy complete",
                  timeout=20)
    ludwig, cheese = people["Ludwig"], people["BigCheese"]
    said: list[str] = []

    def talk_round(n: int, split: bool) -> None:
        """Everyone says a line; Ludwig (direct) sees those that reach the master now."""
        for nick, client in people.items():
            text = f"{nick} {n}"
            client.send_raw(f"<message to='{room}' type='groupchat'><body>{text}</body>"
                            "</message>")
            said.append(text)
        for nick in people:
            if not (split and nick == "BigCheese"):  # held at vesa meanwhile
                run(ludwig.expect(is_groupchat(room, nick, f"{nick} {n}"), timeout=30))
        run(asyncio.sleep(0.25))  # the talk's pace: under the room's rate limit (10/s)

    for n in range(3):
        talk_round(n, split=False)
    slave = net.daemons.slaves[VESA]
    registered = slave.log_text().count(f"registered with {room}")
    copies = slave.log_text().count(f"{room}: archive copy complete")
    fault = FaultInjector(net.network, net.daemons).link("blackhole", VESA)
    fault.inject()
    try:
        n = 3
        while f"netsplit from {room}" not in slave.log_text():
            talk_round(n, split=True)
            n += 1
            if n > 200:
                raise AssertionError("the slave never found the split")
        for _ in range(3):
            talk_round(n, split=True)
            n += 1
        during = walk_forward(cheese, room)
        assert not any(complete_of(p) for p in during), "a page claimed complete in a split"
        master_ids = [i for p in walk_forward(ludwig, room) for i in sids(p)]
        slave_ids = [i for p in during for i in sids(p)]
        assert slave_ids == master_ids[:len(slave_ids)], "the copy is not the master's prefix"
    finally:
        fault.heal()
    wait_for_text(slave.log_text, f"registered with {room}", registered + 1, timeout=30)
    wait_for_text(slave.log_text, f"{room}: archive copy complete", copies + 1, timeout=30)
    for m in range(3, n):  # BigCheese's held lines reached the room
        run(ludwig.expect(is_groupchat(room, "BigCheese", f"BigCheese {m}"), timeout=30))
    talk_round(n, split=False)
    for client in people.values():
        client.drain()
    direct = walk_forward(ludwig, room)
    for who in ("BigCheese", "Wumpus"):
        through = walk_forward(people[who], room)
        assert len(through) == len(direct), who
        for got, want in zip(through, direct):
            assert got == want, f"through {who}'s slave / directly:\n{differ(got, want)}"
    bodies = [b for p in direct for m in p[0] for b in bodies_in(m)]
    assert sorted(bodies) == sorted(said), "a line lost or doubled in the archive"
