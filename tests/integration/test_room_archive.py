"""The room's archive (XEP-0313) and message moderation (XEP-0425) on the real five-server
network with the real daemons, driven by slixmpp's own xep_0313 and xep_0425 plugins: a user
of efnet.irc (no slave) and users behind the vesa and killrc slaves see one archive with the
same stanza-ids; a moderator behind a slave retracts a message and no joiner, on any side,
gets it again; paging goes on across a netsplit and its netjoin (during the split the
slave answers from its copy of the archive, at the netjoin it copies what it missed).

The module runs its own network (127.0.9.x) with the daemons at a 5 s keepalive, so that a
split is found and healed quickly.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from slixmpp import JID
from slixmpp.exceptions import IqError

from testbed.faults import wait_for_text
from testbed.network import MASTER_DOMAIN, MUC_SERVICE
from tests.integration.cast import CAST, DIRECT_USER
from tests.integration.conftest import FAULT_KEEPALIVE
from tests.integration.module_net import Net, module_net
from tests.integration.test_dmuc_slaves import is_groupchat, join
from tests.integration.xmpp_client import Client, all_of, body, is_message, run

pytestmark = pytest.mark.integration

IPS = ("127.0.9.2", "127.0.9.3", "127.0.9.4", "127.0.9.5", "127.0.9.6")
VESA = "vesa.yeggmaex.irc"
NS_SID = "urn:xmpp:sid:0"
NS_RETRACT = "urn:xmpp:message-retract:1"
LUDWIG = DIRECT_USER[1]
PLUGINS = ("xep_0313", "xep_0359", "xep_0425")


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    yield from module_net("dmuc-mam", IPS, PLUGINS)


def child(elem, name: str, ns: str):  # type: ignore[no-untyped-def]
    return elem.find(f"{{{ns}}}{name}")


def stanza_id(elem) -> str:  # type: ignore[no-untyped-def]
    sid = child(elem, "stanza-id", NS_SID)
    assert sid is not None, elem
    return sid.get("id")


def say(sender: Client, room: str, nick: str, text: str, witness: Client) -> str:
    """A groupchat message; its stanza-id as the witness received it."""
    sender.send_raw(f"<message to='{room}' type='groupchat'><body>{text}</body></message>")
    return stanza_id(run(witness.expect(is_groupchat(room, nick, text))))


async def archive(client: Client, room: str, page: int = 50,
                  after: str | None = None) -> tuple[list[tuple[str, str]], bool, str]:
    """One MAM page through slixmpp's plugin: [(archive id, body)], complete, last id."""
    rsm: dict[str, object] = {"max": page}
    if after is not None:
        rsm["after"] = after
    iq = await client.xmpp.plugin["xep_0313"].retrieve(jid=JID(room), rsm=rsm, timeout=10)
    found = []
    for message in iq["mam"]["results"]:
        result = message["mam_result"]
        forwarded = result["forwarded"]["stanza"]
        found.append((result["id"], forwarded["body"]))
    fin = iq["mam_fin"]
    return found, fin["complete"] in (True, "true"), fin["rsm"]["last"]


def all_pages(client: Client, room: str, page: int, after: str | None = None
              ) -> list[tuple[str, str]]:
    """Every message after `after`, `page` at a time; the last page says complete."""
    collected: list[tuple[str, str]] = []
    for _ in range(50):
        found, complete, last = run(archive(client, room, page, after))
        collected += found
        if complete:
            return collected
        assert len(found) == page and last
        after = last
    raise AssertionError("the archive never said complete")


def history_on_join(client: Client, room: str, nick: str) -> list[str]:
    return [b for e in join(client, room, nick) if (b := body(e)) is not None]


def moderate(client: Client, room: str, sid: str, reason: str = "spam") -> None:
    run(client.xmpp.plugin["xep_0425"].moderate(JID(room), sid, reason, timeout=10))


def is_retraction(room: str, sid: str):  # type: ignore[no-untyped-def]
    return all_of(is_message(from_=room, type_="groupchat"),
                  lambda e: (r := child(e, "retract", NS_RETRACT)) is not None
                  and r.get("id") == sid)


def test_one_archive_with_the_same_ids_directly_and_through_a_slave(net: Net) -> None:
    room = f"mam-one@{MUC_SERVICE}"
    wumpus, ludwig, cheese = (net.client(j) for j in (CAST["Wumpus"], LUDWIG,
                                                      CAST["BigCheese"]))
    for client, nick in ((wumpus, "Wumpus"), (ludwig, "Ludwig"), (cheese, "BigCheese")):
        join(client, room, nick)
    live = []
    for n in range(5):
        sender, nick = (ludwig, "Ludwig") if n % 2 else (cheese, "BigCheese")
        live.append((say(sender, room, nick, f"m{n}", witness=wumpus), f"m{n}"))
    direct = run(archive(ludwig, room))
    behind_slave = run(archive(cheese, room))
    assert direct == behind_slave == (live, True, live[-1][0])
    assert all_pages(cheese, room, 2) == all_pages(ludwig, room, 2) == live
    info = run(cheese.xmpp.plugin["xep_0030"].get_info(jid=JID(room), timeout=10))
    features = set(info["disco_info"]["features"])
    assert {"urn:xmpp:mam:2", "urn:xmpp:message-moderate:1",
            "urn:xmpp:message-moderate:0"} <= features


def test_a_moderator_behind_a_slave_retracts_a_message_everywhere(net: Net) -> None:
    room = f"mam-mod@{MUC_SERVICE}"
    wumpus, ludwig, cheese = (net.client(j) for j in (CAST["Wumpus"], LUDWIG,
                                                      CAST["BigCheese"]))
    for client, nick in ((wumpus, "Wumpus"), (ludwig, "Ludwig"), (cheese, "BigCheese")):
        join(client, room, nick)
    spam = say(ludwig, room, "Ludwig", "buy now", witness=cheese)
    say(cheese, room, "BigCheese", "hello", witness=ludwig)
    for participant in (cheese, ludwig):  # behind a slave, and direct: not moderators
        with pytest.raises(IqError) as refused:
            moderate(participant, room, spam)
        assert refused.value.condition == "forbidden"
    moderate(wumpus, room, spam)  # Wumpus owns the room, behind the killrc slave
    for client in (wumpus, ludwig, cheese):
        run(client.expect(is_retraction(room, spam)))
    efchen, valdis = net.client(CAST["Efchen"]), net.client(CAST["Valdis"])
    assert history_on_join(efchen, room, "Efchen") == ["hello"]  # behind vesa's slave
    assert history_on_join(valdis, room, "Valdis") == ["hello"]  # behind killrc's
    found, complete, _ = run(archive(efchen, room))
    assert complete and found[0] == (spam, "") and found[1][1] == "hello"
    # the XEP-0425 v0.2 form (Conversations, Gajim of 2023) is understood as well
    older = say(cheese, room, "BigCheese", "more spam", witness=ludwig)
    answer = run(wumpus.iq(
        f"<iq type='set' to='{room}'><apply-to xmlns='urn:xmpp:fasten:0' id='{older}'>"
        "<moderate xmlns='urn:xmpp:message-moderate:0'>"
        "<retract xmlns='urn:xmpp:message-retract:0'/></moderate></apply-to></iq>"))
    assert answer.get("type") == "result"
    notice = run(ludwig.expect(is_retraction(room, older)))
    assert child(notice, "apply-to", "urn:xmpp:fasten:0").get("id") == older
    assert "more spam" not in history_on_join(net.client(CAST["Troy"]), room, "Troy")


def test_paging_across_a_netsplit_and_its_netjoin(net: Net) -> None:
    room = f"mam-split@{MUC_SERVICE}"
    ludwig, wumpus, cheese = (net.client(j) for j in (LUDWIG, CAST["Wumpus"],
                                                      CAST["BigCheese"]))
    # Ludwig (direct) owns this room: here the moderator is not behind a slave
    for client, nick in ((ludwig, "Ludwig"), (wumpus, "Wumpus"), (cheese, "BigCheese")):
        join(client, room, nick)
    before = [say(ludwig, room, "Ludwig", f"b{n}", witness=cheese) for n in range(3)]
    first_page, complete, last = run(archive(cheese, room, 2))
    assert [sid for sid, _ in first_page] == before[:2] and not complete
    slave = net.daemons.slaves[VESA]
    registered = slave.log_text().count(f"registered with {room}")
    net.network.cut(VESA, MASTER_DOMAIN)
    # BigCheese talks on (shown on vesa, held): its bounce shows the slave the split
    cheese.send_raw(f"<message to='{room}' type='groupchat' id='held-1'><body>held</body>"
                    "</message>")
    wait_for_text(slave.log_text, f"netsplit from {room}", timeout=3 * FAULT_KEEPALIVE)
    # the slave answers from its copy of the archive (§4.17): what it has, without the
    # message it holds (the master has not given it an id yet), and never "complete"
    # over the range it lacks
    during_split, complete, _ = run(archive(cheese, room, 2, after=last))
    assert during_split == [(before[2], "b2")] and not complete
    copies = slave.log_text().count(f"{room}: archive copy complete")
    during = [say(ludwig, room, "Ludwig", f"d{n}", witness=wumpus) for n in range(2)]
    moderate(ludwig, room, before[2])  # retracted while vesa is split off
    net.network.heal(VESA, MASTER_DOMAIN)
    wait_for_text(slave.log_text, f"registered with {room}", registered + 1,
                  timeout=3 * FAULT_KEEPALIVE)
    # at the netjoin the slave copies what it missed: its archive is the master's again
    wait_for_text(slave.log_text, f"{room}: archive copy complete", copies + 1,
                  timeout=3 * FAULT_KEEPALIVE)
    run(cheese.expect(is_retraction(room, before[2])))  # it missed it: shown at the netjoin
    held = stanza_id(run(ludwig.expect(is_groupchat(room, "BigCheese", "held"))))
    rest = all_pages(cheese, room, 2, after=last)
    everything = first_page + rest
    assert everything == all_pages(ludwig, room, 2)  # the same archive, the same ids
    ids = [sid for sid, _ in everything]
    assert ids[:3] == before and set(during) | {held} <= set(ids)
    assert dict(everything)[before[2]] == ""  # a tombstone now
    efchen = net.client(CAST["Efchen"])
    assert "b2" not in history_on_join(efchen, room, "Efchen")
