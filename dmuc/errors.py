"""Errors the cores raise and catch. A leaf module: it imports nothing from dmuc."""

from __future__ import annotations


class Refusal(Exception):
    """A request the room refuses with an XMPP error (type, condition, text)."""

    def __init__(self, err_type: str, condition: str, text: str | None = None) -> None:
        super().__init__(condition)
        self.err_type = err_type
        self.condition = condition
        self.text = text


class IllegalTransition(Exception):
    """A link state machine was asked for a transition its table does not allow."""

    def __init__(self, machine: str, state: object, event: str) -> None:
        super().__init__(f"{machine}: no transition from {state} on {event!r}")
        self.state = state
        self.event = event


class BadJID(ValueError):
    """A JID that cannot be parsed or prepared (RFC 7622): the one error that
    `dmuc.jids.parse_strict` raises, whatever the stringprep step that refused it."""

    def __init__(self, text: object, reason: str) -> None:
        shown = repr(text)
        if len(shown) > 80:
            shown = shown[:77] + "..."
        super().__init__(f"bad JID {shown}: {reason}")
        self.text = text
        self.reason = reason


class StorageError(Exception):
    """The storage URL or the database cannot be used, or an operation on it failed."""


class StoreAbsent(StorageError):
    """A read-only open found no dmuc store there (and created none)."""


class ArchiveIdNotFound(StorageError):
    """An RSM after/before id that is not (or no longer) in the room's archive."""
