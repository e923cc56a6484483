"""JID helpers around Twisted's stringprep-aware JID class.

`parse_strict` is the one way to read a JID from a stanza: it returns a prepared JID or
raises `dmuc.errors.BadJID`, never anything else, whatever the input (Twisted's preparation
alone lets IndexError out of an empty domain label, and accepts empty parts and labels longer
than DNS allows). `parse` is the same, with None for a bad JID.
"""

from __future__ import annotations

import functools
from encodings import idna

from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.protocols.jabber.xmpp_stringprep import resourceprep

from dmuc.errors import BadJID, Refusal

# RFC 7622 §3.2-3.4: each prepared part is at most 1023 octets (UTF-8).
MAX_PART_BYTES = 1023
# RFC 1035 / IDNA: a label is at most 63 octets in its ASCII form.
MAX_LABEL_BYTES = 63
# Longer input is refused before any preparation, which is linear but slow per character.
MAX_INPUT_CHARS = 4096
# Results for inputs up to this length are cached (a bounded cache: unlike Twisted's
# internJID, which keeps every JID string it ever saw, a memory lever for any sender).
# An entry costs ~360 bytes and a miss ~8 us (the ASCII path, against ~400 us to handle
# a stanza): 256 JIDs cover the active senders of a busy room, and a joining crowd
# misses whatever the size (8,192 entries were ~3 MiB in each daemon, issue 19).
_CACHED_INPUT_CHARS = 512
_CACHE_SIZE = 256

# Everything Twisted's and the standard library's stringprep, IDNA and punycode code is
# seen to raise on malformed input (IndexError: an empty label; ValueError and
# OverflowError: punycode arithmetic on garbage; TypeError: a non-string).
_PREP_ERRORS = (InvalidFormat, UnicodeError, ValueError, IndexError, OverflowError, TypeError)

# What Lua's %s matches (mod_muc's "invisible nickname" test is `not nick:find("%S")`).
_LUA_SPACE = " \t\n\v\f\r"


def _split(text: str) -> tuple[str | None, str, str | None]:
    """RFC 7622 §3.1: the resourcepart follows the first '/', the localpart precedes the
    first '@' before it. An empty part after its separator is malformed."""
    head, slash, resource = text.partition("/")
    if slash and not resource:
        raise BadJID(text, "empty resourcepart")
    local, at, domain = head.partition("@")
    if not at:
        local, domain = "", head
    elif not local:
        raise BadJID(text, "empty localpart")
    if not domain:
        raise BadJID(text, "empty domainpart")
    return local or None, domain, resource or None


def _check_domain(text: str, domain: str) -> str:
    """The domainpart before preparation: one trailing root dot is dropped (RFC 7622 §3.2),
    and no label may be empty."""
    if idna.dots.fullmatch(domain[-1]) and len(domain) > 1:
        domain = domain[:-1]
    if any(not label for label in idna.dots.split(domain)):
        raise BadJID(text, "empty label in domainpart")
    return domain


def _check_prepared(text: str, jid: JID) -> None:
    for name, part in (("localpart", jid.user), ("domainpart", jid.host),
                       ("resourcepart", jid.resource)):
        if part is not None and len(part.encode("utf-8")) > MAX_PART_BYTES:
            raise BadJID(text, f"{name} longer than {MAX_PART_BYTES} bytes")
    for label in jid.host.split("."):
        if label[:4].lower() == "xn--":
            idna.ToUnicode(label)  # an A-label must decode and round-trip
        elif len(idna.ToASCII(label)) > MAX_LABEL_BYTES:  # ToASCII raises first, anyway
            raise BadJID(text, "label too long")


# ASCII input, prepared without Twisted's per-character table lookups (which cost ~0.1 ms
# a JID): for ASCII, nodeprep is lower() with C.1.1, C.2.1 and XMPP's own characters
# prohibited; nameprep is lower(), and Twisted allows letters, digits, '-' and the dots;
# resourceprep is the identity with C.2.1 prohibited. test_jids checks both paths agree.
_ASCII_CONTROLS = frozenset(map(chr, range(0x20))) | {"\x7f"}
_ASCII_NODE_PROHIBITED = _ASCII_CONTROLS | frozenset(" \"&'/:<>@")
_ASCII_HOST_ALLOWED = frozenset("abcdefghijklmnopqrstuvwxyz0123456789-.")


def _prepare_ascii(text: str, local: str | None, domain: str, resource: str | None) -> JID:
    if local is not None:
        if not _ASCII_NODE_PROHIBITED.isdisjoint(local):
            raise BadJID(text, "InvalidFormat: Invalid character in username")
        local = local.lower()
    host = domain.lower()
    if not _ASCII_HOST_ALLOWED.issuperset(host) or any(
            label[0] == "-" or label[-1] == "-" for label in host.split(".")):
        raise BadJID(text, "InvalidFormat: Invalid character in hostname")
    if resource is not None and not _ASCII_CONTROLS.isdisjoint(resource):
        raise BadJID(text, "InvalidFormat: Invalid character in resource")
    jid = JID.__new__(JID)
    jid.user, jid.host, jid.resource = local, host, resource
    return jid


def _prepare(text: str, *, fast: bool = True) -> JID | str:
    """A prepared JID, or the reason it is malformed."""
    try:
        local, domain, resource = _split(text)
        domain = _check_domain(text, domain)
        if fast and text.isascii():
            jid = _prepare_ascii(text, local, domain, resource)
        else:
            jid = JID(tuple=(local, domain, resource))
        _check_prepared(text, jid)
    except BadJID as exc:
        return exc.reason
    except _PREP_ERRORS as exc:
        return f"{type(exc).__name__}: {exc}"
    return jid


_prepare_cached = functools.lru_cache(maxsize=_CACHE_SIZE)(_prepare)


def parse_strict(text: object) -> JID:
    """The prepared JID `text` names; raises BadJID (and nothing else) when it is missing,
    too long or malformed in any way."""
    if not isinstance(text, str) or not text:
        raise BadJID(text, "missing")
    if len(text) > MAX_INPUT_CHARS:
        raise BadJID(text, f"longer than {MAX_INPUT_CHARS} characters")
    result = _prepare_cached(text) if len(text) <= _CACHED_INPUT_CHARS else _prepare(text)
    if isinstance(result, str):
        raise BadJID(text, result)
    return result


def parse(text: object) -> JID | None:
    """A JID, or None when `text` is missing or malformed (never an exception)."""
    try:
        return parse_strict(text)
    except BadJID:
        return None


def bare(text: str) -> str:
    return text.split("/", 1)[0]


def domain(text: str) -> str:
    """The domainpart of a (prepared) JID, full or bare, or of a bare domain."""
    return bare(text).rpartition("@")[2]


def check_nick(nick: object) -> str:
    """The nickname after resourceprep; raises the Refusal mod_muc answers a join or a nick
    change with: jid-malformed for a nick resourceprep refuses (Prosody's routing does it
    there), not-allowed "Invisible Nicknames are forbidden" for one made only of spaces."""
    if not isinstance(nick, str) or not nick or len(nick) > MAX_INPUT_CHARS:
        raise Refusal("modify", "jid-malformed", "Invalid nickname")
    try:
        prepped = resourceprep.prepare(nick)
        size = len(prepped.encode("utf-8"))
    except _PREP_ERRORS as exc:
        raise Refusal("modify", "jid-malformed", "Invalid nickname") from exc
    if not prepped or size > MAX_PART_BYTES:
        raise Refusal("modify", "jid-malformed", "Invalid nickname")
    if not prepped.strip(_LUA_SPACE):
        raise Refusal("modify", "not-allowed", "Invisible Nicknames are forbidden")
    return prepped


def prep_nick(nick: object) -> str | None:
    """The nickname after resourceprep, or None when it is not a valid nickname (including
    one made only of whitespace, which mod_muc refuses)."""
    try:
        return check_nick(nick)
    except Refusal:
        return None


__all__ = ["JID", "BadJID", "parse", "parse_strict", "bare", "check_nick", "prep_nick"]
