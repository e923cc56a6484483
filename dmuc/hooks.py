"""Event hooks: how room features and operators' plugins join in (cf. Prosody's module:hook).

A handler returning something other than None stops the event and that value is the
result of ``fire`` (e.g. a refusal from an ``occupant-pre-join`` handler).
"""

from __future__ import annotations

import importlib
from collections import defaultdict
from collections.abc import Callable
from typing import Any

Handler = Callable[..., Any]


class Hooks:
    def __init__(self) -> None:
        self._handlers: dict[str, list[tuple[int, int, Handler]]] = defaultdict(list)
        self._order = 0

    def add(self, event: str, handler: Handler, priority: int = 0) -> None:
        """Higher priority runs first; equal priorities run in the order added."""
        self._order += 1
        self._handlers[event].append((-priority, self._order, handler))
        self._handlers[event].sort(key=lambda entry: entry[:2])

    def remove(self, event: str, handler: Handler) -> None:
        self._handlers[event] = [h for h in self._handlers[event] if h[2] is not handler]

    def fire(self, event: str, **data: Any) -> Any:
        for _, _, handler in list(self._handlers.get(event, ())):
            result = handler(**data)
            if result is not None:
                return result
        return None


def load_plugins(names: list[str], hooks: Hooks, service: Any) -> None:
    """Import each plugin module and call its ``setup(hooks, service)``."""
    for name in names:
        module = importlib.import_module(name)
        setup = getattr(module, "setup", None)
        if not callable(setup):
            raise ImportError(f"plugin {name!r} has no setup(hooks, service) function")
        setup(hooks, service)
