"""The room's disco#info and vCard answers (XEP-0045 §6.4, vcard-temp on the room JID),
as the master gives them and as a slave gives them from its mirror (docs/protocol.md
§4.18). Neither depends on who asks (mod_muc 0.12.3's get_disco_info and vcard.lib answer
anyone the same), so the master hands its slaves the answer itself: the disco#info query
as it would send it, and the vCard; the slave fills in the one value that moves with
every join, the occupant count, from its roster.
"""

from __future__ import annotations

from enum import Enum

from twisted.words.xish.domish import Element

from dmuc import xmlns
from dmuc.protocol import stanzas

OCCUPANTS_FIELD = "muc#roominfo_occupants"
NO_VCARD = ("cancel", "item-not-found")  # the room has none (as mod_vcard)


class RoomInfoIq(Enum):
    DISCO_INFO = "disco-info"  # a disco#info get without a node
    VCARD = "vcard"  # a vcard-temp get
    OTHER = "other"  # anything else: the room's own handlers


def kind(stanza: Element) -> RoomInfoIq:
    """Which of the answers a slave may give from its mirror an IQ to the room JID asks
    for (a node, a set, a second payload: the master's to judge)."""
    payloads = list(stanza.elements())
    if stanza.name != "iq" or stanza.getAttribute("type") != "get" or len(payloads) != 1:
        return RoomInfoIq.OTHER
    payload = payloads[0]
    if payload.uri == xmlns.DISCO_INFO and payload.name == "query" \
            and payload.getAttribute("node") is None:
        return RoomInfoIq.DISCO_INFO
    if payload.uri == xmlns.VCARD and payload.name == "vCard":
        return RoomInfoIq.VCARD
    return RoomInfoIq.OTHER


def info_answer(stanza: Element, query: Element, occupants: int) -> Element:
    """The disco#info result: the room's query with the occupant count given."""
    reply = stanzas.copy(query)
    for form in stanzas.children(reply, "x", xmlns.DATA_FORMS):
        for field in stanzas.children(form, "field"):
            if field.getAttribute("var") == OCCUPANTS_FIELD:
                field.children = [c for c in field.children
                                  if not (isinstance(c, Element) and c.name == "value")]
                field.addElement("value", content=str(occupants))
    return stanzas.iq_result(stanza, reply)


def vcard_answer(stanza: Element, vcard: Element | None) -> Element:
    """The vcard-temp get's answer: the room's vCard, or item-not-found without one."""
    if vcard is None:
        return stanzas.error_reply(stanza, *NO_VCARD)
    return stanzas.iq_result(stanza, stanzas.copy(vcard))
