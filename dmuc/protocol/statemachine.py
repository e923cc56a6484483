"""Link states as data (in the manner of h11's _state.py): each link keeps one state, and
a table says which event leads from which state to which. Anything not in the table is
an IllegalTransition, so that a state can never be reached by accident."""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum
from typing import Generic, TypeVar

from dmuc.errors import IllegalTransition

S = TypeVar("S", bound=Enum)


class StateMachine(Generic[S]):
    def __init__(self, name: str, table: Mapping[tuple[S, str], S], initial: S) -> None:
        self.name = name
        self.table = table
        self.state = initial

    def can(self, event: str) -> bool:
        return (self.state, event) in self.table

    def fire(self, event: str) -> S:
        """Move along the table; raise IllegalTransition if `event` is not allowed now."""
        try:
            self.state = self.table[(self.state, event)]
        except KeyError:
            raise IllegalTransition(self.name, self.state, event) from None
        return self.state

    def __repr__(self) -> str:
        return f"<{self.name} {self.state.name}>"
