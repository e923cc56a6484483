"""The XEP-0421 occupant-id element, for master and slave alike: the master computes the
ids (dmuc.master.features.occupant_id); a slave only relays them, and copies an
occupant's id from the roster presence the master sent it where it builds a stanza
about that occupant itself (a local echo during a netsplit, the destroy notice)."""

from __future__ import annotations

from twisted.words.xish.domish import Element

from dmuc import xmlns


def of(stanza: Element | None) -> str | None:
    """The occupant-id a stanza carries (None: none)."""
    if stanza is None:
        return None
    for el in stanza.elements():
        if el.uri == xmlns.OCCUPANT_ID and el.name == "occupant-id":
            return el.getAttribute("id")
    return None


def strip(stanza: Element) -> None:
    """Remove every occupant-id element (what a client sent is never relayed: forgery)."""
    stanza.children = [c for c in stanza.children
                       if not (isinstance(c, Element) and c.uri == xmlns.OCCUPANT_ID)]


def place(stanza: Element, value: str | None, before: Element | None = None) -> None:
    """Replace any occupant-id of `stanza` with `value` (none if None), just before the
    child `before` (else last)."""
    strip(stanza)
    if not value:
        return
    el = Element((xmlns.OCCUPANT_ID, "occupant-id"))
    el["id"] = value
    el.parent = stanza
    index = next((i for i, c in enumerate(stanza.children) if c is before), None)
    if index is None:
        stanza.children.append(el)
    else:
        stanza.children.insert(index, el)
