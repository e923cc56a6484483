"""What a slave keeps per roster entry: one tree and one serialisation when the master sent
no real JID (every viewer gets the same), two when there is a JID to strip; the stored
state reuses the newcomers' serialisation. And stanzas.copy shares interned names."""

from __future__ import annotations

import pytest

from dmuc import xmlns
from dmuc.protocol import stanzas
from dmuc.records import MIRROR_ROSTER, OccupantRecord
from dmuc.slave import fanout
from dmuc.slave.room import SlaveRoom

ROOM = "wallops@channel.avalon.irc"


def _listed(jid: str | None) -> stanzas.Element:
    real = f" jid='{jid}'" if jid else ""
    return stanzas.parse_xml(
        f"<presence from='{ROOM}/nick'><show>away</show><x xmlns='{xmlns.MUC_USER}'>"
        f"<item affiliation='none' role='participant'{real}/></x></presence>")


@pytest.mark.parametrize(("jid", "viewer", "shared", "shows_jid"), [
    (None, "participant", True, False),
    (None, "moderator", True, False),
    ("user@vesa.irc/r", "participant", False, False),
    ("user@vesa.irc/r", "moderator", False, True),
])
def test_for_viewer_keeps_one_tree_when_there_is_nothing_to_strip(
        jid: str | None, viewer: str, shared: bool, shows_jid: bool) -> None:
    room = SlaveRoom(ROOM, whois="moderators")
    presence = _listed(jid)
    room.roster["nick"] = presence
    element, xml = fanout._for_viewer(room, "nick", presence, viewer)
    cached = room.rendered["nick"]
    assert (cached[2] is cached[0] and cached[3] is cached[1]) is shared
    assert ("jid=" in xml) is shows_jid
    assert xml == element.toXml()


def test_the_stored_roster_reuses_the_newcomers_serialisation() -> None:
    room = SlaveRoom(ROOM)
    room.roster["nick"] = presence = _listed(None)
    room.roster["other"] = _listed("other@vesa.irc/r")
    fanout._for_viewer(room, "nick", presence, "participant")
    rows = {r.nick: r.state for r in room.changed_entries() if isinstance(r, OccupantRecord)}
    assert rows[MIRROR_ROSTER + "nick"]["presence"] is room.rendered["nick"][1]
    assert rows[MIRROR_ROSTER + "other"]["presence"] == room.roster["other"].toXml()
    restored = SlaveRoom.from_state(ROOM, room.to_state(), rows)
    assert {MIRROR_ROSTER + n: p.toXml() for n, p in restored.roster.items()} == {
        key: row["presence"] for key, row in rows.items()}


def test_copies_share_interned_names() -> None:
    first, second = _listed(None), _listed(None)
    a, b = stanzas.copy(first), stanzas.copy(second)
    x_a, x_b = stanzas.child(a, "x", xmlns.MUC_USER), stanzas.child(b, "x", xmlns.MUC_USER)
    assert x_a is not None and x_b is not None
    assert x_a.uri is x_b.uri and x_a.name is x_b.name
    key_a = next(k for k in stanzas.child(x_a, "item").attributes if k == "role")
    key_b = next(k for k in stanzas.child(x_b, "item").attributes if k == "role")
    assert key_a is key_b
    assert a.toXml() == first.toXml()
