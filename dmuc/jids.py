"""JID helpers around Twisted's stringprep-aware JID class."""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID, InvalidFormat, internJID
from twisted.words.protocols.jabber.xmpp_stringprep import resourceprep


def parse(text: str | None) -> JID | None:
    """A JID, or None when `text` is missing or malformed."""
    if not text:
        return None
    try:
        return internJID(text)
    except (InvalidFormat, UnicodeError, ValueError):
        return None


def bare(text: str) -> str:
    return text.split("/", 1)[0]


def prep_nick(nick: str) -> str | None:
    """The nickname after resourceprep, or None when it is not a valid nickname."""
    try:
        prepped = resourceprep.prepare(nick)
    except (UnicodeError, ValueError):
        return None
    if not prepped or len(prepped.encode()) > 1023:
        return None
    return prepped


__all__ = ["JID", "parse", "bare", "prep_nick"]
