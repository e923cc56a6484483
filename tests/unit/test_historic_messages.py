"""What is historic (kept in the join history and the room's archive) and the id users
see, as mod_muc decides them: one rule (dmuc.protocol.history.is_historic, mod_muc's
muc-message-is-historic) for the master's history and archive and a slave's history; and
a message sent without an id reaches everyone, the history and the archive without one,
whichever way it came in (the slave's tracking id stays on the link)."""

from __future__ import annotations

import pytest

from dmuc.outbox import AppendArchive
from dmuc.protocol import stanzas, xep0282
from dmuc.protocol.history import is_historic
from tests.unit.dmuc_net import Net
from tests.unit.muc_helpers import BIGCHEESE, EFCHEN, ROOM, TROY, WIZ, WUMPUS, Harness

CHATSTATES = "http://jabber.org/protocol/chatstates"
HINTS = "urn:xmpp:hints"

# (kind, payload, historic as mod_muc 0.12.3's muc-message-is-historic decides)
KINDS = [
    ("body", "<body>said</body>", True),
    ("chat state", f"<composing xmlns='{CHATSTATES}'/>", False),
    ("chat state marked no-store", f"<active xmlns='{CHATSTATES}'/>"
                                   f"<no-store xmlns='{HINTS}'/>"
                                   f"<no-permanent-store xmlns='{HINTS}'/>", False),
    ("body marked no-store", f"<body>ephemeral</body><no-store xmlns='{HINTS}'/>", False),
    ("body marked no-permanent-store",
     f"<body>ephemeral</body><no-permanent-store xmlns='{HINTS}'/>", False),
    ("chat state marked store", f"<paused xmlns='{CHATSTATES}'/><store xmlns='{HINTS}'/>",
     True),
    ("receipt", "<received xmlns='urn:xmpp:receipts' id='r1'/>", False),
    ("chat marker", "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>", True),
    ("encrypted", "<encryption xmlns='urn:xmpp:eme:0' namespace='eu.siacs.conversations.axolotl'"
                  "/>", True),
    ("no-store wins over store", f"<body>x</body><store xmlns='{HINTS}'/>"
                                 f"<no-store xmlns='{HINTS}'/>", False),
]


@pytest.mark.parametrize(("kind", "payload", "historic"), KINDS, ids=[k[0] for k in KINDS])
def test_what_is_historic(kind: str, payload: str, historic: bool) -> None:
    message = stanzas.parse_stanza(f"<message type='groupchat'>{payload}</message>")
    assert is_historic(message) is historic


@pytest.mark.parametrize(("given", "shown"), [
    (None, None),
    ("", ""),
    ("abc", "abc"),
    (xep0282.SLAVE_ID_PREFIX + "1f", None),  # made up on the way: users get none
    (xep0282.RESUBMIT_ID_PREFIX + "abc", "abc"),
    (xep0282.RESUBMIT_ID_PREFIX + xep0282.SLAVE_ID_PREFIX + "1f", None),
    (xep0282.SPLIT_ID_PREFIX + "abc", "abc"),
])
def test_the_id_users_see(given: str | None, shown: str | None) -> None:
    assert xep0282.sender_id(given) == shown


@pytest.mark.parametrize(("kind", "payload", "historic"), KINDS, ids=[k[0] for k in KINDS])
def test_the_master_archives_and_keeps_only_what_is_historic(kind: str, payload: str,
                                                            historic: bool) -> None:
    h = Harness()
    h.create_instant(WIZ, "wiz")
    out = h.send(f"<message from='{WIZ}' to='{ROOM}' type='groupchat' id='k'>{payload}"
                 "</message>")
    assert out.deliveries, "a broadcast, historic or not"
    archived = [op for op in out.storage if isinstance(op, AppendArchive)]
    assert len(archived) == (1 if historic else 0)
    assert len(h.service.rooms[ROOM].history) == (1 if historic else 0)


def _kinds_sent(net: Net, sender: str) -> None:
    for n, (_, payload, _) in enumerate(KINDS):
        net.user_sends(f"<message from='{sender}' to='{ROOM}' type='groupchat' id='k{n}'>"
                       f"{payload}</message>")
    net.user_sends(f"<message from='{sender}' to='{ROOM}' type='groupchat'>"
                   "<body>no id</body></message>")


HISTORIC_IDS = [f"k{n}" for n, (_, _, historic) in enumerate(KINDS) if historic] + [None]


@pytest.mark.parametrize("sender", [EFCHEN, WIZ], ids=["through a slave", "directly"])
def test_history_and_ids_directly_and_through_a_slave(sender: str) -> None:
    net = Net(slaves=("vesa.yeggmaex.irc",))  # vesa's users behind a slave, the rest direct
    for who, nick in ((TROY, "Troy"), (WUMPUS, "Wumpus"), (EFCHEN, "Efchen"), (WIZ, "WiZ")):
        net.join(who, nick, ROOM)
    for who in (TROY, WUMPUS, EFCHEN, WIZ):
        net.take(who)
    _kinds_sent(net, sender)
    for reader in (WUMPUS, EFCHEN):  # every kind reaches everyone, with the sender's id
        got = [m.getAttribute("id") for m in net.take(reader) if m.name == "message"]
        assert got == [f"k{n}" for n in range(len(KINDS))] + [None], reader
    master_history = [e.stanza.getAttribute("id") for e in net.master.rooms[ROOM].history]
    slave_history = [e.stanza.getAttribute("id")
                     for e in net.slaves["vesa.yeggmaex.irc"].rooms[ROOM].history]
    assert master_history == slave_history == HISTORIC_IDS
    for joiner, nick in ((BIGCHEESE, "BigCheese"), ("ludwig@efnet.irc/vt100", "Ludwig")):
        net.join(joiner, nick, ROOM)
        replayed = [m.getAttribute("id") for m in net.take(joiner)
                    if m.name == "message" and stanzas.child(m, "subject") is None]
        assert replayed == HISTORIC_IDS, joiner
