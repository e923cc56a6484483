"""A dict and a set that note which keys changed, so that a room is stored one changed
entry at a time (a join writes one row, whatever the size of the room). A leaf module:
plain containers, no dmuc import."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, MutableSet
from typing import Any, TypeVar

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")


class TrackedDict(dict[K, V]):
    """A dict that adds every key it sets or removes to `changed` (a set shared with its
    owner, which empties it when it has stored those keys). Every mutating method of dict
    is here: dict's own (C) methods do not call __setitem__."""

    __slots__ = ("changed",)

    def __init__(self, changed: set[Any]) -> None:
        super().__init__()
        self.changed = changed

    def __setitem__(self, key: K, value: V) -> None:
        self.changed.add(key)
        super().__setitem__(key, value)

    def __delitem__(self, key: K) -> None:
        super().__delitem__(key)
        self.changed.add(key)

    def pop(self, key: K, *default: Any) -> Any:
        if key in self:
            self.changed.add(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[K, V]:
        key, value = super().popitem()
        self.changed.add(key)
        return key, value

    def setdefault(self, key: K, default: Any = None) -> Any:
        if key not in self:
            self.changed.add(key)
        return super().setdefault(key, default)

    def clear(self) -> None:
        self.changed.update(self)
        super().clear()

    def update(self, *args: Any, **kwargs: Any) -> None:
        for key, value in dict(*args, **kwargs).items():
            self[key] = value

    def __ior__(self, other: Any) -> TrackedDict[K, V]:  # type: ignore[override]
        self.update(other)
        return self

    def __reduce__(self) -> Any:
        return dict, (dict(self),)  # a copy is a plain dict


class TrackedSet(MutableSet[K]):
    """A set that adds every element it adds or removes to `changed` (shared as above);
    MutableSet builds every other mutation (|=, -=, clear...) from add and discard."""

    __slots__ = ("_items", "changed")

    def __init__(self, changed: set[Any], items: Iterable[K] = ()) -> None:
        self._items: set[K] = set(items)
        self.changed = changed

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[K]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"TrackedSet({self._items!r})"

    @classmethod
    def _from_iterable(cls, it: Iterable[Any]) -> set[Any]:
        return set(it)  # a & b, a | b: plain sets, tracked by no one

    def add(self, item: K) -> None:
        if item not in self._items:
            self._items.add(item)
            self.changed.add(item)

    def discard(self, item: K) -> None:
        if item in self._items:
            self._items.discard(item)
            self.changed.add(item)

    def clear(self) -> None:
        self.changed.update(self._items)
        self._items.clear()


class IndexedTrackedDict(TrackedDict[K, V]):
    """A TrackedDict that also keeps, for each value, the keys that have it (in the order
    they got it): a slave's local sessions by nick, so that finding a nick's sessions
    costs what it finds, not a walk over every local session."""

    __slots__ = ("keys_of",)

    def __init__(self, changed: set[Any]) -> None:
        super().__init__(changed)
        self.keys_of: dict[V, dict[K, None]] = {}

    def _unindex(self, key: K) -> None:
        value = dict.get(self, key, _MISSING)
        if value is _MISSING:
            return
        keys = self.keys_of[value]  # type: ignore[index]
        del keys[key]
        if not keys:
            del self.keys_of[value]  # type: ignore[arg-type]

    def __setitem__(self, key: K, value: V) -> None:
        if dict.get(self, key, _MISSING) != value:  # (the same again keeps its place)
            self._unindex(key)
            self.keys_of.setdefault(value, {})[key] = None
        super().__setitem__(key, value)

    def __delitem__(self, key: K) -> None:
        self._unindex(key)
        super().__delitem__(key)

    def pop(self, key: K, *default: Any) -> Any:
        self._unindex(key)
        return super().pop(key, *default)

    def popitem(self) -> tuple[K, V]:
        key, value = super().popitem()
        keys = self.keys_of[value]
        del keys[key]
        if not keys:
            del self.keys_of[value]
        return key, value

    def setdefault(self, key: K, default: Any = None) -> Any:
        if key not in self:
            self[key] = default
        return dict.__getitem__(self, key)

    def clear(self) -> None:
        super().clear()
        self.keys_of.clear()


_MISSING = object()
