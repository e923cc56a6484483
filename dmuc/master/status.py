"""What the master tells the operator about its slaves (dmuc-admin list-slaves): each
slave's link state summed over its rooms, and since when it is in that state.

Sans-I/O: `SlaveStatus.changes(now)` returns the records that changed since the last call;
the shell hands them (as outbox.RecordStatus) to its one persistence path now and then
(off the stanza path), so that dmuc-admin reads them with any storage adapter. A slave's
state is the worst of its room links: split if any link is SPLIT, else live if any is
LIVE, else stale if any is STALE, else unregistered (allowed in [[slaves]] but registered
for no room).
"""

from __future__ import annotations

from typing import Any

from dmuc.master.distribution import Distribution
from dmuc.master.distribution import RegistrationState as R

UNREGISTERED = "unregistered"
# The record of the daemon itself, beside the slaves' (not a JID: no clash).
DAEMON_KEY = "@daemon"


def slave_states(distribution: Distribution) -> dict[str, dict[str, Any]]:
    """Slave JID -> {"state", "domains", "rooms": {state: count}} for every allowed or
    linked slave."""
    counts: dict[str, dict[str, int]] = {jid: {} for jid in distribution.allowed}
    for links in distribution.links.values():
        for link in links.values():
            per = counts.setdefault(link.jid, {})
            per[link.state.value] = per.get(link.state.value, 0) + 1
    summary = {}
    for jid, rooms in counts.items():
        state = next((s.value for s in (R.SPLIT, R.LIVE, R.STALE) if rooms.get(s.value)),
                     UNREGISTERED)
        summary[jid] = {"state": state,
                        "domains": sorted(distribution.allowed.get(jid, ())),
                        "rooms": dict(sorted(rooms.items()))}
    return summary


class SlaveStatus:
    """Remembers what was last recorded, and since when each slave is in its state."""

    def __init__(self, distribution: Distribution) -> None:
        self.distribution = distribution
        self.recorded: dict[str, dict[str, Any]] = {}

    def changes(self, now: float) -> dict[str, dict[str, Any]]:
        """The records to write: every slave whose state, domains or room counts changed
        (with `since`, the time its state changed: first seen here)."""
        changed = {}
        for jid, current in slave_states(self.distribution).items():
            previous = self.recorded.get(jid)
            since = previous["since"] if previous and previous["state"] == current["state"] \
                else now
            record = {**current, "since": since}
            if record != previous:
                changed[jid] = record
                self.recorded[jid] = record
        return changed
