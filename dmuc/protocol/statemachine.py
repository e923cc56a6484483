"""Link states as data (in the manner of h11's _state.py): each link keeps one state, and
a table says which event leads from which state to which. Anything not in the table is
an IllegalTransition, so that a state can never be reached by accident."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import Enum
from typing import Generic, TypeVar

from dmuc.errors import IllegalTransition

S = TypeVar("S", bound=Enum)


# Told of every transition that changes the state: (old state, event, new state).
TransitionObserver = Callable[[Enum, str, Enum], None]


class StateMachine(Generic[S]):
    def __init__(self, name: str, table: Mapping[tuple[S, str], S], initial: S,
                 observer: TransitionObserver | None = None) -> None:
        self.name = name
        self.table = table
        self.state = initial
        self.observer = observer

    def can(self, event: str) -> bool:
        return (self.state, event) in self.table

    def fire(self, event: str) -> S:
        """Move along the table; raise IllegalTransition if `event` is not allowed now."""
        old = self.state
        try:
            self.state = self.table[(old, event)]
        except KeyError:
            raise IllegalTransition(self.name, old, event) from None
        if self.observer is not None and self.state is not old:
            self.observer(old, event, self.state)
        return self.state

    def __repr__(self) -> str:
        return f"<{self.name} {self.state.name}>"


class SplitCounter:
    """Netsplits and netjoins of one side's links, counted at the one place every link
    changes state (a StateMachine observer): entering `split` is a netsplit, leaving it
    a netjoin. Plain counts the shell reads when it is asked for metrics."""

    def __init__(self, split: Enum) -> None:
        self.split = split
        self.netsplits = 0
        self.netjoins = 0

    def __call__(self, old: Enum, event: str, new: Enum) -> None:
        if new is self.split:
            self.netsplits += 1
        elif old is self.split:
            self.netjoins += 1
