"""The room's disco#info and vCard at the edge (docs/protocol.md §4.18), on the real
five-server network with the real daemons and slixmpp clients: each slave answers its
users' disco#info and vcard-temp gets from its mirror of the room, which the master keeps
current (the registration's snapshot, each configuration change, each vCard change). The
same queries asked directly (efnet.irc, no slave) and through the vesa and killrc slaves,
by occupants and by strangers, give the same answer element by element (only the
addressee and the id differ) for a public, a hidden, a members-only and a password room,
after a vCard change, and during a netsplit; none of the slaves' answers crossed s2s.

The module runs its own network (127.0.25.x) with the daemons at a 5 s keepalive.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from testbed.faults import wait_for_text
from testbed.network import MASTER_DOMAIN, MUC_SERVICE
from tests.integration.cast import CAST, DIRECT_USER
from tests.integration.conftest import FAULT_KEEPALIVE
from tests.integration.module_net import Net, module_net
from tests.integration.test_archive_edge import canonical, crossed
from tests.integration.test_dmuc_slaves import join
from tests.integration.xmpp_client import Client, local, run, xml_str

pytestmark = pytest.mark.integration

IPS = ("127.0.25.2", "127.0.25.3", "127.0.25.4", "127.0.25.5", "127.0.25.6")
VESA, KILLRC = "vesa.yeggmaex.irc", "killrc.oulubox.irc"
LUDWIG = DIRECT_USER[1]
STRANGERS = {"direct": "stranger@efnet.irc/tty", "vesa": CAST["Efchen"],
             "killrc": CAST["Valdis"]}  # in no room
DISCO = "<query xmlns='http://jabber.org/protocol/disco#info'/>"
VCARD_GET = "<vCard xmlns='vcard-temp'/>"

def photo(seed: bytes) -> str:
    return base64.b64encode(b"\x89PNG not really a png " + seed * 8).decode()


@pytest.fixture(scope="module")
def net() -> Iterator[Net]:
    yield from module_net("dmuc-info", IPS, ("xep_0030", "xep_0054"))


def ask(client: Client, room: str, payload: str) -> tuple[object, ...]:
    """One get to the room, its answer as data without the addressee and the id."""
    answer = run(client.iq(f"<iq type='get' to='{room}'>{payload}</iq>"))
    assert answer.get("from") == room, xml_str(answer)
    return canonical(answer, ("to", "id"))


def is_status(room: str, code: str):
    return lambda e: local(e.tag) == "message" and e.get("from") == room and any(
        local(s.tag) == "status" and s.get("code") == code for x in e for s in x)


def owner_sets(ludwig: Client, room: str, iq: str, witnesses: list[Client]) -> None:
    """Ludwig changes the room; each slave's mirror has the change once its occupant has
    the status 104 message (the master sends the new settings before it, §4.18)."""
    answer = run(ludwig.iq(iq))
    assert answer.get("type") == "result", xml_str(answer)
    for witness in witnesses:
        run(witness.expect(is_status(room, "104")))


def configure(ludwig: Client, room: str, fields: dict[str, str],
              witnesses: list[Client]) -> None:
    inner = "".join(f"<field var='{var}'><value>{value}</value></field>"
                    for var, value in fields.items())
    owner_sets(ludwig, room, f"<iq type='set' to='{room}'><query xmlns='http://jabber.org/"
               "protocol/muc#owner'><x xmlns='jabber:x:data' type='submit'><field "
               "var='FORM_TYPE'><value>http://jabber.org/protocol/muc#roomconfig</value>"
               f"</field>{inner}</x></query></iq>", witnesses)


def set_vcard(ludwig: Client, room: str, name: str, witnesses: list[Client]) -> None:
    owner_sets(ludwig, room, f"<iq type='set' to='{room}'><vCard xmlns='vcard-temp'><FN>"
               f"{name}</FN><PHOTO><TYPE>image/png</TYPE><BINVAL>{photo(name.encode())}</BINVAL>"
               "</PHOTO>"
               "</vCard></iq>", witnesses)


KINDS = [
    ("public", {"muc#roomconfig_roomname": "Edge", "muc#roomconfig_roomdesc": "at the edge",
                "muc#roomconfig_publicroom": "1"}),
    ("hidden", {"muc#roomconfig_publicroom": "0", "muc#roomconfig_roomname": "Hidden"}),
    ("members-only", {"muc#roomconfig_membersonly": "1"}),
    ("password", {"muc#roomconfig_membersonly": "0",
                  "muc#roomconfig_passwordprotectedroom": "1",
                  "muc#roomconfig_roomsecret": "sekrit"}),
]


def compare_all(askers: dict[str, Client], room: str, what: str) -> tuple[object, ...]:
    """disco#info and the vCard asked by each client: every answer the direct
    occupant's; returns the disco#info answer."""
    answers = {}
    for payload in (DISCO, VCARD_GET):
        want = ask(askers["direct occupant"], room, payload)
        assert want[1] and dict(want[1])["type"] == "result", f"{what}: {want}"
        for who, client in askers.items():
            got = ask(client, room, payload)
            assert got == want, f"{what}, {payload}: {who}'s answer differs:\n{got}\n{want}"
        answers[payload] = want
    assert "sekrit" not in str(answers[DISCO])
    return answers[DISCO]


def test_disco_info_and_the_vcard_through_each_slave_are_the_masters(net: Net) -> None:
    room = f"edge-info@{MUC_SERVICE}"
    ludwig = net.client(LUDWIG)
    join(ludwig, room, "Ludwig")  # Ludwig (direct) creates and owns it
    set_vcard(ludwig, room, "Edge room", [ludwig])
    cheese, wumpus = net.client(CAST["BigCheese"]), net.client(CAST["Wumpus"])
    for client in (cheese, wumpus):  # members: they stay in the members-only room
        answer = run(ludwig.iq(
            f"<iq type='set' to='{room}'><query xmlns='http://jabber.org/protocol/muc#admin'>"
            f"<item affiliation='member' jid='{client.jid.split('/')[0]}'/></query></iq>"))
        assert answer.get("type") == "result", xml_str(answer)
    join(cheese, room, "BigCheese")
    join(wumpus, room, "Wumpus")
    askers = {"direct occupant": ludwig, "vesa occupant": cheese, "killrc occupant": wumpus,
              **{f"{where} stranger": net.client(jid) for where, jid in STRANGERS.items()}}
    net.network.reset_counts()
    seen = [compare_all(askers, room, "as created")]
    for kind, fields in KINDS:
        configure(ludwig, room, fields, [cheese, wumpus])
        seen.append(compare_all(askers, room, kind))
    set_vcard(ludwig, room, "Edge room, new avatar", [cheese, wumpus])
    seen.append(compare_all(askers, room, "after a vCard change"))
    assert len({str(s) for s in seen}) == len(seen)  # each change showed
    for slave, client in ((VESA, cheese), (KILLRC, wumpus), (VESA, askers["vesa stranger"]),
                          (KILLRC, askers["killrc stranger"])):
        assert crossed(net, slave, client.jid) == [], f"{client.jid}'s query crossed s2s"
    # the slave answers from its mirror during a netsplit
    slave = net.daemons.slaves[VESA]
    copies = slave.log_text().count(f"{room}: archive copy complete")
    net.network.cut(VESA, MASTER_DOMAIN)
    try:
        cheese.send_raw(f"<message to='{room}' type='groupchat' id='held-1'>"
                        "<body>held</body></message>")  # its bounce shows the split
        wait_for_text(slave.log_text, f"netsplit from {room}", timeout=3 * FAULT_KEEPALIVE)
        for payload in (DISCO, VCARD_GET):
            want = ask(ludwig, room, payload)
            for client in (cheese, askers["vesa stranger"]):
                assert ask(client, room, payload) == want, f"during the split: {payload}"
    finally:
        net.network.heal(VESA, MASTER_DOMAIN)
    # LIVE again once the netjoin's snapshot is in and its archive copy filled after it
    wait_for_text(slave.log_text, f"{room}: archive copy complete", copies + 1,
                  timeout=6 * FAULT_KEEPALIVE)
    compare_all(askers, room, "after the netjoin")
    # of BigCheese's, only the held line crossed (after the netjoin), no query
    assert [s for s in crossed(net, VESA, cheese.jid) if s.kind == "iq"] == []


def test_slixmpp_reads_the_room_through_a_slave(net: Net) -> None:
    """slixmpp's own xep_0030 and xep_0054 read the mirror's answers as the master's."""
    room = f"edge-info-plugins@{MUC_SERVICE}"
    ludwig, cheese = net.client(LUDWIG), net.client(CAST["BigCheese"])
    join(ludwig, room, "Ludwig")
    set_vcard(ludwig, room, "Plugins", [ludwig])
    join(cheese, room, "BigCheese")
    net.network.reset_counts()
    info = run(cheese.xmpp.plugin["xep_0030"].get_info(jid=room, timeout=10))
    assert ("conference", "text") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}
    form = info["disco_info"]["form"].get_values()
    assert form["muc#roominfo_occupants"] == "2"
    vcard = run(cheese.xmpp.plugin["xep_0054"].get_vcard(jid=room, cached=False, timeout=10))
    assert vcard["vcard_temp"]["FN"] == "Plugins"
    assert crossed(net, VESA, cheese.jid) == []
