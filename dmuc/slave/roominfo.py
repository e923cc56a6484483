"""The room's disco#info and vCard at the edge (docs/protocol.md §4.18): the slave keeps
what the master hands it (in each snapshot's and each change's room settings) and answers
its users' gets from it with the master's rule (dmuc.protocol.roominfo), the occupant
count from its roster, during a netsplit too."""

from __future__ import annotations

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.outbox import Outbox
from dmuc.protocol import roominfo, stanzas
from dmuc.protocol.roominfo import RoomInfoIq
from dmuc.slave.room import SlaveRoom


def forget(room: SlaveRoom) -> None:
    """A snapshot follows: only what it carries counts."""
    room.info_xml = None
    room.vcard_xml, room.vcard_known = None, False


def apply(room: SlaveRoom, settings: Element) -> None:
    """The room settings the master sent: its disco#info query (none: the master answers,
    e.g. some roles' presence is not broadcast, so our roster cannot count them) and, when
    present, its vCard (an empty <vcard/>: the room has none)."""
    info = stanzas.child(settings, "info")
    query = stanzas.child(info, "query", xmlns.DISCO_INFO) if info is not None else None
    room.info_xml = query.toXml() if query is not None else None
    held = stanzas.child(settings, "vcard")
    if held is not None:
        vcard = stanzas.child(held, "vCard", xmlns.VCARD)
        room.vcard_xml = vcard.toXml() if vcard is not None else None
        room.vcard_known = True


def answer(room: SlaveRoom, stanza: Element, out: Outbox) -> bool:
    """A local user's IQ to the room JID answered from the mirror; False: the master's."""
    asked = roominfo.kind(stanza)
    if asked is RoomInfoIq.DISCO_INFO and room.info_xml is not None:
        out.send(roominfo.info_answer(stanza, stanzas.parse_xml(room.info_xml),
                                      len(room.roster)))
        return True
    if asked is RoomInfoIq.VCARD and room.vcard_known:
        vcard = stanzas.parse_xml(room.vcard_xml) if room.vcard_xml else None
        out.send(roominfo.vcard_answer(stanza, vcard))
        return True
    return False
