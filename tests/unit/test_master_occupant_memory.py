"""What the master keeps per occupant's session: its last presence as the room repeats it,
serialised (no tree), parsed only when a variant of it is built. The bytes the master holds
per occupant stay under a bound (tracemalloc, benchmarks/memory.py's master cases)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from benchmarks import memory
from dmuc.protocol import stanzas

# What the master holds per occupant with show, status and caps (benchmarks/memory.py,
# N=1,000): 3,370 bytes through a slave and 3,767 direct with each session's presence kept
# as a tree, about 1,800 and 2,200 with it serialised (a third of that is the bounded cache
# of parsed JIDs).
MAX_BYTES_PER_OCCUPANT = 2_600


def test_a_session_keeps_its_presence_serialised_and_parses_it_on_demand() -> None:
    service, join = memory.master(2, True)
    join(0)
    occupant = service.rooms[memory.ROOM].occupants["nick0"]
    kept = occupant.sessions[occupant.primary]
    assert isinstance(kept, str)
    presence = occupant.presence
    assert presence is not None and stanzas.render(presence) == kept
    assert stanzas.text_of(stanzas.child(presence, "show")) == "away"
    assert "http://jabber.org/protocol/muc'" not in kept  # the join's MUC x is not kept
    assert occupant.presence is not presence  # a new tree each time: nobody shares it


@pytest.mark.parametrize("make", [lambda n: memory.master(n, True), memory.direct],
                         ids=["through a slave", "direct"])
def test_the_master_holds_a_bounded_number_of_bytes_per_occupant(
        make: Callable[[int], tuple[object, Callable[[int], None]]]) -> None:
    held = memory.per_occupant(1000, make)
    assert held < MAX_BYTES_PER_OCCUPANT, f"{held:.0f} bytes per occupant"
