"""Errors of dmuc-admin. A leaf module: it imports nothing from dmuc."""

from __future__ import annotations


class AdminError(Exception):
    """A dmuc-admin command cannot go on: one line for the operator, exit status 1."""


class LuaDataError(AdminError):
    """A Prosody data file is not the Lua literal Prosody writes (never executed)."""


class ProsodyDataError(AdminError):
    """A Prosody store cannot be read or holds a room dmuc-admin cannot make sense of."""
