"""mod_dmuc_slave.lua and the Python slave name the same message id prefixes (the wire
format of docs/protocol.md §4.11.2): the module's constants are the ones in
dmuc/protocol/xep0282.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dmuc.protocol import xep0282

MODULE = (Path(__file__).resolve().parents[2]
          / "etc" / "prosody" / "modules" / "mod_dmuc_slave.lua")


def _lua_string_constant(name: str) -> str | None:
    match = re.search(rf'^local {name} = "([^"]*)";', MODULE.read_text(), re.MULTILINE)
    return match.group(1) if match else None


@pytest.mark.parametrize(("lua_name", "python_value"), [
    ("resent_id_prefix", xep0282.RESUBMIT_ID_PREFIX),
    ("given_id_prefix", xep0282.SLAVE_ID_PREFIX),
])
def test_the_module_names_the_protocols_id_prefixes(lua_name: str, python_value: str) -> None:
    assert _lua_string_constant(lua_name) == python_value


def test_the_module_writes_each_prefix_once() -> None:
    """Used through its name only: the literal stands in the module once."""
    text = MODULE.read_text()
    for prefix in (xep0282.RESUBMIT_ID_PREFIX, xep0282.SLAVE_ID_PREFIX):
        assert text.count(f'"{prefix}"') == 1, prefix
