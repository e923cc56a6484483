"""How the room core reaches its sessions, as it sees it: some directly, some through a
relay that gets one copy of each broadcast and fans it out (a XEP-0282 slave; the master's
Distribution is the one Router). The room core knows relays only through this interface,
so that it speaks XEP-0045 alone."""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable
from typing import TYPE_CHECKING, Any, Protocol

from twisted.words.xish.domish import Element

from dmuc.outbox import Outbox

if TYPE_CHECKING:
    from dmuc.master.room import Room


class Router(Protocol):
    def route(self, room: Room, exclude: Collection[str] = ()) -> tuple[list[str], list[Any]]:
        """The sessions reached directly (less `exclude`), and the relays to copy to."""

    def relay_of(self, room: Room, session: str) -> str | None:
        """The relay a session is reached through (None: directly)."""

    def for_direct(self, message: Element) -> Element:
        """A groupchat message as the sessions reached directly get it (a relay may carry
        a handle of its own on it, which they must not see)."""

    def fan_out_presence(self, room: Room, build: Callable[[bool], Element],
                         relays: Iterable[Any], out: Outbox) -> None:
        """One copy of a presence per relay; `build(with_jid)` makes it."""

    def fan_out_room_stanza(self, room: Room, stanza: Element, relays: Iterable[Any],
                            out: Outbox) -> None:
        """One copy per relay of a stanza from the room itself (e.g. its avatar)."""

    def fan_out_groupchat(self, room: Room, message: Element, relays: Iterable[Any],
                          out: Outbox, stamp: float) -> None:
        """One copy of a groupchat message per relay, said at `stamp`."""
