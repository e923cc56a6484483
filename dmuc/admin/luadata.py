"""A parser for the Lua data files Prosody's datamanager writes (`return {...};`).

It reads Lua *literals* only -- tables, strings, numbers, booleans, nil -- and never runs
Lua: anything else (a function call, a variable, an operator other than the few number
forms Prosody's util.serialization emits) is a LuaDataError naming the line. Strings are
returned as `str` decoded from UTF-8 (Prosody escapes every byte >= 127 as \\ddd), with
undecodable bytes kept as surrogate escapes so that nothing is silently altered.

Tables become a dict, or a list when their keys are exactly 1..n (Lua has one table
type; Prosody writes positional items for arrays).
"""

from __future__ import annotations

import re
from typing import Any

from dmuc.admin.errors import LuaDataError

# Bounds for untrusted input: nesting (Prosody's serializer stops at 127) and size.
MAX_DEPTH = 128
MAX_CHARS = 64 * 1024 * 1024  # bytes

_SIMPLE_ESCAPES = {
    "a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11,
    "\\": 92, '"': 34, "'": 39, "\n": 10,
}
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(
    r"0[xX](?:[0-9a-fA-F]+\.?[0-9a-fA-F]*|\.[0-9a-fA-F]+)(?:[pP][+-]?[0-9]+)?"
    r"|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?"
)
# The non-finite numbers util.serialization writes.
_SPECIAL_NUMBERS = {"(1/0)": float("inf"), "(-1/0)": float("-inf"), "(0/0)": float("nan")}
_KEYWORDS = {"true": True, "false": False, "nil": None}
_LONG_BRACKET = re.compile(r"\[(=*)\[")


def loads(data: bytes | str) -> Any:
    """The value of a Prosody data file: `return <literal>;` (or a bare literal). A str is
    taken as the file's text in UTF-8."""
    raw = data.encode("utf-8", errors="surrogateescape") if isinstance(data, str) else data
    text = raw.decode("latin-1")  # one char per byte: strings are rebuilt byte by byte
    if len(text) > MAX_CHARS:
        raise LuaDataError(f"data file larger than {MAX_CHARS} characters")
    parser = _Parser(text)
    parser.skip_space()
    if parser.text.startswith("return", parser.pos) and not _is_name_char(
            parser.peek(len("return"))):
        parser.pos += len("return")
    value = parser.value(0)
    parser.skip_space()
    if parser.peek() == ";":
        parser.pos += 1
    parser.skip_space()
    if parser.pos != len(parser.text):
        parser.fail("unexpected text after the value")
    return value


def load_file(path: str) -> Any:
    with open(path, "rb") as f:
        data = f.read()
    try:
        return loads(data)
    except LuaDataError as exc:
        raise LuaDataError(f"{path}: {exc}") from None


def _is_name_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def _decode(raw: bytes) -> str:
    return raw.decode("utf-8", errors="surrogateescape")


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0

    def fail(self, why: str) -> None:
        line = self.text.count("\n", 0, self.pos) + 1
        raise LuaDataError(f"line {line}: {why}")

    def peek(self, offset: int = 0) -> str:
        i = self.pos + offset
        return self.text[i] if i < len(self.text) else ""

    def skip_space(self) -> None:
        text = self.text
        while self.pos < len(text):
            c = text[self.pos]
            if c in " \t\r\n\f\v":
                self.pos += 1
            elif text.startswith("--", self.pos):
                long = _LONG_BRACKET.match(text, self.pos + 2)
                if long:
                    self.pos = self._long_end(long)[1]
                else:
                    end = text.find("\n", self.pos)
                    self.pos = len(text) if end < 0 else end + 1
            else:
                return

    def value(self, depth: int) -> Any:
        if depth > MAX_DEPTH:
            self.fail(f"tables nested deeper than {MAX_DEPTH}")
        self.skip_space()
        c = self.peek()
        if c == "{":
            return self.table(depth)
        if c in "\"'":
            return self.quoted()
        if c == "[" and _LONG_BRACKET.match(self.text, self.pos):
            return self.long_string()
        for literal, number in _SPECIAL_NUMBERS.items():
            if self.text.startswith(literal, self.pos):
                self.pos += len(literal)
                return number
        if c == "-" or c.isdigit() or (c == "." and self.peek(1).isdigit()):
            return self.number()
        name = _NAME.match(self.text, self.pos)
        if name and name.group() in _KEYWORDS:
            self.pos = name.end()
            return _KEYWORDS[name.group()]
        self.fail(f"not a Lua literal: {self.text[self.pos:self.pos + 20]!r}")

    def number(self) -> int | float:
        negative = self.peek() == "-"
        if negative:
            self.pos += 1
            self.skip_space()
        m = _NUMBER.match(self.text, self.pos)
        if not m:
            self.fail("malformed number")
        self.pos = m.end()
        if _is_name_char(self.peek()):
            self.fail("malformed number")
        token = m.group()
        if token[:2] in ("0x", "0X"):
            value: int | float = (float.fromhex(token) if any(c in token for c in ".pP")
                                  else int(token, 16))
        elif any(c in token for c in ".eE"):
            value = float(token)
        else:
            value = int(token)
        return -value if negative else value

    def quoted(self) -> str:
        quote = self.text[self.pos]
        self.pos += 1
        out = bytearray()
        text = self.text
        while True:
            if self.pos >= len(text):
                self.fail("unfinished string")
            c = text[self.pos]
            if c == quote:
                self.pos += 1
                return _decode(bytes(out))
            if c == "\n":
                self.fail("unfinished string")
            if c != "\\":
                out.append(ord(c))  # a byte (see loads)
                self.pos += 1
                continue
            self.pos += 1
            e = self.peek()
            if e in _SIMPLE_ESCAPES:
                out.append(_SIMPLE_ESCAPES[e])
                self.pos += 1
            elif e.isdigit():
                m = re.match(r"[0-9]{1,3}", text[self.pos:])
                assert m is not None
                code = int(m.group())
                if code > 255:
                    self.fail("decimal escape too large")
                out.append(code)
                self.pos += m.end()
            elif e == "x":
                m = re.match(r"x([0-9a-fA-F]{2})", text[self.pos:])
                if not m:
                    self.fail("malformed \\x escape")
                out.append(int(m.group(1), 16))
                self.pos += m.end()
            elif e == "z":
                self.pos += 1
                while self.peek() in (" ", "\t", "\r", "\n", "\f", "\v") and self.peek():
                    self.pos += 1
            elif e == "u":
                m = re.match(r"u\{([0-9a-fA-F]{1,8})\}", text[self.pos:])
                if not m or int(m.group(1), 16) > 0x7FFFFFFF:
                    self.fail("malformed \\u escape")
                out += chr(int(m.group(1), 16)).encode("utf-8", errors="surrogatepass")
                self.pos += m.end()
            else:
                self.fail(f"invalid escape \\{e}")

    def _long_end(self, opening: re.Match[str]) -> tuple[int, int]:
        """(start of the content's end, position after the closing bracket)."""
        close = "]" + opening.group(1) + "]"
        end = self.text.find(close, opening.end())
        if end < 0:
            self.fail("unfinished long string or comment")
        return end, end + len(close)

    def long_string(self) -> str:
        opening = _LONG_BRACKET.match(self.text, self.pos)
        assert opening is not None
        start = opening.end()
        if self.text.startswith("\r\n", start):
            start += 2
        elif self.peek(start - self.pos) == "\n":
            start += 1
        end, self.pos = self._long_end(opening)
        return _decode(self.text[start:end].encode("latin-1"))

    def table(self, depth: int) -> dict[Any, Any] | list[Any]:
        self.pos += 1  # {
        result: dict[Any, Any] = {}
        next_index = 1
        while True:
            self.skip_space()
            c = self.peek()
            if c == "}":
                self.pos += 1
                break
            if c == "[" and not _LONG_BRACKET.match(self.text, self.pos):
                self.pos += 1
                key = self.value(depth + 1)
                self.skip_space()
                if self.peek() != "]":
                    self.fail("expected ']'")
                self.pos += 1
                self.expect("=")
                if key is None or (isinstance(key, float) and key != key):
                    self.fail("a table key is nil or NaN")
                result[_normal_key(key)] = self.value(depth + 1)
            else:
                name = _NAME.match(self.text, self.pos)
                after = name.end() if name else self.pos
                if name and name.group() not in _KEYWORDS and self._equals_at(after):
                    self.pos = after
                    self.expect("=")
                    result[name.group()] = self.value(depth + 1)
                else:
                    result[next_index] = self.value(depth + 1)
                    next_index += 1
            self.skip_space()
            c = self.peek()
            if c in ",;":
                self.pos += 1
            elif c != "}":
                self.fail("expected ',', ';' or '}' in a table")
        if result and list(result) == list(range(1, len(result) + 1)) \
                and all(isinstance(k, int) for k in result):
            return list(result.values())
        return result

    def _equals_at(self, pos: int) -> bool:
        saved, self.pos = self.pos, pos
        self.skip_space()
        found = self.peek() == "=" and self.peek(1) != "="
        self.pos = saved
        return found

    def expect(self, token: str) -> None:
        self.skip_space()
        if not self.text.startswith(token, self.pos):
            self.fail(f"expected {token!r}")
        self.pos += len(token)


def _normal_key(key: Any) -> Any:
    """Lua keys 1 and 1.0 are the same key."""
    if isinstance(key, float) and key.is_integer():
        return int(key)
    return key
