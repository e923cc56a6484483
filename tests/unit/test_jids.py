"""dmuc.jids: one JID-parsing entry point that never raises anything but BadJID (issue 8).

A corpus of malformed and edge-case JIDs, then a bounded random fuzz loop with a fixed seed.
"""

from __future__ import annotations

import random

import pytest

from dmuc import jids
from dmuc.errors import BadJID, Refusal

MALFORMED = {
    "empty": "",
    "at only": "@",
    "slash only": "/",
    "at and slash": "@/",
    "empty localpart": "@example.com",
    "empty domainpart": "user@",
    "empty domain before resource": "user@/res",
    "empty resourcepart": "user@example.com/",
    "empty label (IndexError in Twisted's nameprep)": "x@bad..example",
    "empty label, bare domain": "bad..example",
    "leading dot": ".example.com",
    "leading dot with localpart": "x@.example.com",
    "dot only": ".",
    "two trailing dots": "x@example.com..",
    "ideographic full stop as an empty label": "x@bad\u3002\u3002example",
    "two @": "a@b@c/d",
    "@ in domain through NFKC (fullwidth)": "a@b\uff20c",
    "leading hyphen label": "x@-example.com",
    "trailing hyphen label": "x@example-.com",
    "space in domain": "x@exa mple.com",
    "bracketed IP literal": "x@[::1]",
    "label longer than 63": "x@" + "a" * 64 + ".com",
    "overlong localpart": "a" * 1024 + "@example.com",
    "overlong localpart in bytes": "\u00e9" * 600 + "@example.com",
    "overlong domain": ".".join(["a" * 60] * 18),
    "overlong resource": "x@example.com/" + "r" * 1024,
    "overlong resource in bytes": "x@example.com/" + "\u20ac" * 400,
    "very long input": "x" * 100_000,
    "unassigned code point in a resource (U+1F916 under strict resourceprep)":
        "x@example.com/\U0001f916",
    "unassigned code point in a localpart": "\U0001f916@example.com",
    "bidi: RTL and LTR mixed in a resource": "x@example.com/\u05d0a",
    "bidi: RTL not at both ends": "x@example.com/\u05d01",
    "bidi: in localpart": "\u0627b@example.com",
    "control character in resource": "x@example.com/a\x07b",
    "newline in resource": "x@example.com/a\nb",
    "NUL in localpart": "a\x00b@example.com",
    "DEL in localpart": "a\x7fb@example.com",
    "control character in domain": "x@exa\x01mple.com",
    "lone high surrogate in localpart": "a\ud800@example.com",
    "lone low surrogate in resource": "x@example.com/\udc00",
    "lone surrogate in domain": "x@exa\ud800mple.com",
    "prohibited in localpart (quote)": 'a"b@example.com',
    "prohibited in localpart (colon)": "a:b@example.com",
    "prohibited in localpart (<)": "a<b@example.com",
    "non-ASCII space in localpart": "a\u00a0b@example.com",
    "private use in resource": "x@example.com/\ue000",
    "xn-- garbage label": "x@xn--zz.example",
    "xn-- with no payload": "x@xn--.example",
    "xn-- that does not round-trip ('a\u00df' prepares to 'ass')": "x@xn--a-qfa.example",
    "xn-- decoding to a prohibited character (U+2028)": "x@xn--ab-x3t.example",
    "xn-- overlong punycode": "x@xn--" + "a" * 70 + ".example",
    "only a resource": "/resource",
    "not a string": b"x@example.com",
    "None": None,
}

VALID = {
    "bare domain": ("example.com", "example.com"),
    "bare JID": ("user@example.com", "user@example.com"),
    "full JID": ("user@example.com/res", "user@example.com/res"),
    "case folding of local and domain, not resource": ("User@Example.COM/Res",
                                                       "user@example.com/Res"),
    "one trailing root dot is dropped (RFC 7622 §3.2)": ("x@example.com./r", "x@example.com/r"),
    "IPv4 domain": ("x@127.0.0.1", "x@127.0.0.1"),
    "'@' and '/' in the resource": ("x@example.com/a@b/c", "x@example.com/a@b/c"),
    "IDN domain": ("x@b\u00fccher.example", "x@b\u00fccher.example"),
    "valid A-label": ("x@xn--bcher-kva.example", "x@xn--bcher-kva.example"),
    "resource of spaces (a JID; the nick check refuses it)": ("r@s.example/  ",
                                                              "r@s.example/  "),
    "1023-byte resource": ("x@e.example/" + "r" * 1023, "x@e.example/" + "r" * 1023),
    "63-character label": ("x@" + "a" * 63 + ".com", "x@" + "a" * 63 + ".com"),
    "RTL resource": ("x@example.com/\u05d0\u05d1", "x@example.com/\u05d0\u05d1"),
}


@pytest.mark.parametrize("text", list(MALFORMED.values()), ids=list(MALFORMED))
def test_malformed_jid_is_none_and_bad_jid(text: object) -> None:
    assert jids.parse(text) is None
    with pytest.raises(BadJID) as caught:
        jids.parse_strict(text)
    # one short line, whatever the input: fit for a log
    assert "\n" not in str(caught.value) and len(str(caught.value)) < 300


@pytest.mark.parametrize(("text", "expected"), list(VALID.values()), ids=list(VALID))
def test_valid_jid(text: str, expected: str) -> None:
    parsed = jids.parse_strict(text)
    assert parsed.full() == expected
    assert jids.parse(text) == parsed


def test_bad_jid_is_a_value_error_and_carries_the_reason() -> None:
    with pytest.raises(ValueError, match="empty label"):
        jids.parse_strict("x@bad..example")


def test_cache_is_bounded_and_consistent() -> None:
    # a flood of distinct addresses does not grow memory without bound (Twisted's internJID
    # keeps every string it ever saw)
    for i in range(jids._CACHE_SIZE + 100):
        jids.parse(f"user{i}@example.com/r")
    assert jids._prepare_cached.cache_info().currsize <= jids._CACHE_SIZE
    assert jids.parse("user1@example.com/r") == jids.parse_strict("user1@example.com/r")


# --- fuzz ---------------------------------------------------------------------------------

ALPHABET = (
    "ab.@/-\u3002\uff0e\uff61 \t\n\x00\x7f'\"<>&:\u00e9\u00df\u0130\u05d0\u0627\u200b\u00ad"
    "\ufb01\u2024\uff20\U0001f916\ue000\ud800\udc00\u0301\u2028xn--"
)


def _random_text(rng: random.Random) -> str:
    kind = rng.random()
    if kind < 0.5:
        size = rng.randint(0, 40)
        return "".join(rng.choice(ALPHABET) for _ in range(size))
    if kind < 0.8:
        size = rng.randint(0, 30)
        return "".join(chr(rng.randint(0, 0x10FFFF)) for _ in range(size))
    # shaped like a JID, with random parts
    parts = ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 12)))
             for _ in range(3)]
    if rng.random() < 0.05:
        parts[rng.randrange(3)] *= rng.randint(50, 400)
    return f"{parts[0]}@{parts[1]}/{parts[2]}"


def test_random_fuzz_never_raises() -> None:
    rng = random.Random(20_240_608)
    accepted = 0
    for _ in range(5_000):
        text = _random_text(rng)
        parsed = jids.parse(text)  # never raises
        if parsed is not None:
            accepted += 1
            # a JID that parses is prepared: parsing its own form gives it back
            assert jids.parse(parsed.full()) == parsed, text
            for part in (parsed.user, parsed.host, parsed.resource):
                assert part is None or len(part.encode("utf-8")) <= jids.MAX_PART_BYTES
        try:
            jids.parse_strict(text)
        except BadJID:
            assert parsed is None
        try:
            jids.prep_nick(text)
            jids.check_nick(text)
        except Refusal:
            pass
    assert accepted > 0


# --- nicknames ----------------------------------------------------------------------------


@pytest.mark.parametrize("nick", [" ", "   ", "\u200b \u200b", " \u00ad "],
                         ids=["one space", "spaces", "spaces and zero-width", "soft hyphens"])
def test_invisible_nick_is_refused_as_mod_muc(nick: str) -> None:
    """mod_muc (muc.lib.lua, muc-occupant-pre-join/pre-change): `not nick:find("%S")` ->
    modify/not-allowed "Invisible Nicknames are forbidden"."""
    assert jids.prep_nick(nick) is None
    with pytest.raises(Refusal) as caught:
        jids.check_nick(nick)
    refusal = caught.value
    assert (refusal.err_type, refusal.condition, refusal.text) == (
        "modify", "not-allowed", "Invisible Nicknames are forbidden")


@pytest.mark.parametrize("nick", ["", "\u200b", "a\x07", "\U0001f916", "\u05d0a", "x" * 1024,
                                  "a\ud800", "x" * 100_000, None],
                         ids=["empty", "maps to nothing", "control", "unassigned", "bidi",
                              "overlong", "surrogate", "huge", "None"])
def test_malformed_nick_is_jid_malformed(nick: object) -> None:
    assert jids.prep_nick(nick) is None
    with pytest.raises(Refusal) as caught:
        jids.check_nick(nick)
    assert (caught.value.err_type, caught.value.condition) == ("modify", "jid-malformed")


@pytest.mark.parametrize(("nick", "expected"), [
    ("WiZ", "WiZ"), (" a ", " a "), ("\ufb01sh", "fish"), ("\u05d0\u05d1", "\u05d0\u05d1")])
def test_valid_nick_is_prepared(nick: str, expected: str) -> None:
    assert jids.prep_nick(nick) == expected == jids.check_nick(nick)


# --- the ASCII fast path agrees with Twisted's stringprep ---------------------------------

ASCII = "".join(map(chr, range(128)))
JIDDY = "aZ09-._@/ \t'\"&:<>\x00\x7fxn--"


def _agree(text: str) -> None:
    fast, slow = jids._prepare(text, fast=True), jids._prepare(text, fast=False)
    if isinstance(slow, str):
        assert isinstance(fast, str), (text, fast)
    else:
        assert fast == slow, (text, fast, slow)
        assert (fast.user, fast.host, fast.resource) == (slow.user, slow.host, slow.resource)


@pytest.mark.parametrize("text", [t for t in MALFORMED.values()
                                  if isinstance(t, str) and t.isascii()]
                         + [t for t, _ in VALID.values() if t.isascii()])
def test_ascii_fast_path_agrees_on_the_corpus(text: str) -> None:
    _agree(text)


def test_ascii_fast_path_agrees_with_twisted_on_random_input() -> None:
    rng = random.Random(7_010_101)
    for i in range(5_000):
        alphabet = ASCII if i % 2 else JIDDY
        size = rng.randint(0, 30)
        text = "".join(rng.choice(alphabet) for _ in range(size))
        if i % 3 == 0:  # shaped like a JID
            text = (f"{text[:size // 3]}@{text[size // 3:2 * size // 3].replace('@', '')}"
                    f"/{text[2 * size // 3:]}")
        _agree(text)
    for c in ASCII:  # every character in every part
        for text in (f"a{c}b@example.com", f"a@ex{c}ample.com", f"a@example.com/r{c}s",
                     f"{c}@example.com", f"a@{c}", f"a@example.com/{c}", f"{c}"):
            _agree(text)


@pytest.mark.parametrize(("text", "domain"), [
    ("user@efnet.irc/phone", "efnet.irc"),
    ("user@efnet.irc", "efnet.irc"),
    ("efnet.irc", "efnet.irc"),
    ("efnet.irc/admin", "efnet.irc"),
    ("room@channel.avalon.irc/nick@home", "channel.avalon.irc"),  # '@' in the resource
])
def test_domain_of_a_jid(text: str, domain: str) -> None:
    assert jids.domain(text) == domain
