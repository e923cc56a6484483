"""What a slave keeps per roster entry: the presence serialised once (as the room lists
it, without 'to') with its role, real JID and occupant-id beside it, no tree; a second
serialisation only for an entry with a real JID, made for the first viewer who may not see
it; the stored row is that same string. The bytes a slave holds per occupant stay under a
bound (tracemalloc, benchmarks/memory.py's slave case). And stanzas.copy shares interned
names."""

from __future__ import annotations

import pytest

from benchmarks import memory
from dmuc import xmlns
from dmuc.protocol import stanzas
from dmuc.records import MIRROR_ROSTER, OccupantRecord
from dmuc.slave import fanout
from dmuc.slave.room import RosterEntry, SlaveRoom

ROOM = "wallops@channel.avalon.irc"
# What a slave holds per mirrored occupant with show, status, caps and an occupant-id
# (benchmarks/memory.py): 4,136-4,463 bytes with the presence trees kept, about 1,000
# with the serialised entries.
MAX_BYTES_PER_OCCUPANT = 1_500


def _listed(jid: str | None) -> stanzas.Element:
    real = f" jid='{jid}'" if jid else ""
    return stanzas.parse_xml(
        f"<presence from='{ROOM}/nick'><show>away</show><x xmlns='{xmlns.MUC_USER}'>"
        f"<item affiliation='none' role='participant'{real}/></x>"
        "<occupant-id xmlns='urn:xmpp:occupant-id:0' id='oid'/></presence>")


def test_an_entry_keeps_the_serialisation_and_what_is_read_often() -> None:
    presence = _listed("user@vesa.irc/r")
    entry = RosterEntry.of(presence)
    assert entry.xml == stanzas.render_without_to(presence)
    assert (entry.role, entry.jid, entry.occupant_id) == ("participant", "user@vesa.irc/r",
                                                          "oid")
    assert entry.presence().toXml() == entry.xml
    assert not hasattr(entry, "__dict__")  # slots: no per-entry dict


@pytest.mark.parametrize(("jid", "viewer", "same", "shows_jid"), [
    (None, "participant", True, False),
    (None, "moderator", True, False),
    ("user@vesa.irc/r", "participant", False, False),
    ("user@vesa.irc/r", "moderator", True, True),
])
def test_a_viewer_gets_the_entry_itself_unless_a_real_jid_is_hidden_from_it(
        jid: str | None, viewer: str, same: bool, shows_jid: bool) -> None:
    room = SlaveRoom(ROOM, whois="moderators")
    room.roster["nick"] = entry = RosterEntry.of(_listed(jid))
    xml = fanout._for_viewer(room, "nick", entry, viewer)
    assert (xml is entry.xml) is same
    assert ("jid=" in xml) is shows_jid
    assert ("nick" in room.rendered) is (not same)  # a second string only when needed
    if not same:
        assert fanout._for_viewer(room, "nick", entry, viewer) is xml  # made once


def test_the_stored_row_is_the_entrys_own_serialisation() -> None:
    room = SlaveRoom(ROOM)
    room.roster["nick"] = RosterEntry.of(_listed(None))
    room.roster["other"] = RosterEntry.of(_listed("other@vesa.irc/r"))
    rows = {r.nick: r.state for r in room.changed_entries() if isinstance(r, OccupantRecord)}
    assert rows[MIRROR_ROSTER + "nick"]["presence"] is room.roster["nick"].xml
    restored = SlaveRoom.from_state(ROOM, room.to_state(), rows)
    assert restored.roster == room.roster


def test_a_slave_holds_a_bounded_number_of_bytes_per_mirrored_occupant() -> None:
    held = memory.per_occupant(1000, memory.slave)
    assert held < MAX_BYTES_PER_OCCUPANT, f"{held:.0f} bytes per occupant"


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


# What a slave holds per local session (benchmarks/memory.py's local sessions case,
# N=1,000): 5,145 bytes while the last forwards it keeps for a resend (up to 1,000 per
# room) were trees, about 1,600 with them serialised.
MAX_BYTES_PER_LOCAL_SESSION = 2_500


def test_a_slave_holds_a_bounded_number_of_bytes_per_local_session() -> None:
    held = memory.per_occupant(1000, memory.slave_sessions)
    assert held < MAX_BYTES_PER_LOCAL_SESSION, f"{held:.0f} bytes per local session"


def test_a_forward_kept_for_a_resend_is_its_serialisation() -> None:
    slave, join = memory.slave_sessions(2)
    join(0)
    join(1)
    kept = list(slave.links[memory.ROOM].sent.values())
    assert kept and all(isinstance(xml, str) for xml, _said_at in kept)
    assert all(stanzas.parse_stanza(xml).name == "presence" for xml, _said_at in kept)
