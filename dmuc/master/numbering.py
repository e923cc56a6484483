"""What a slave forwarded the master, by number (docs/protocol.md §4.11.2): the master's
side of the slave -> master sequence numbers, per registration. Sans-I/O data.

A slave numbers every stanza it forwards for a room while LIVE, and says in its
registration and keepalives how far it has got. A number that never arrives is a stanza
lost on the way (a link that swallowed bytes for less than the detection bound): the
master asks for it again (`<resend from='' to=''/>`). A slave's own stanzas and its users'
travel on different s2s streams (the slave's domain and each users' domain), so numbers
may arrive out of order by a little: a hole counts as a loss only once it has lasted
GAP_GRACE seconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from dmuc.protocol import xep0282

GAP_GRACE = 1.0  # seconds a hole in the numbers may last before it is a loss
# A slave remembers its last 1,000 forwards (slave/link.py MAX_INFLIGHT): older numbers
# are not asked for (a larger hole is a split, which its registration repairs).
MAX_RESEND = 1000


@dataclass
class ForwardedNumbers:
    contiguous: int = 0  # every number up to this one arrived (or was asked for again)
    ahead: set[int] = field(default_factory=set)  # arrived beyond a hole
    claimed: int = 0  # the highest number the slave said it had sent
    hole_since: float | None = None  # when the numbers last stopped being contiguous

    def restart(self, sent: int) -> None:
        """The slave registered, having numbered `sent` stanzas so far: what it sent
        before is not asked for (it resyncs through its registration)."""
        self.contiguous = self.claimed = sent
        self.ahead.clear()
        self.hole_since = None

    def heard(self, seq: int, now: float) -> None:
        """The stanza numbered `seq` arrived."""
        if xep0282.missing_before(self.contiguous + 1, seq) is None:
            return  # one we had, or from before the registration
        self.ahead.add(seq)
        while self.contiguous + 1 in self.ahead:
            self.contiguous += 1
            self.ahead.discard(self.contiguous)
        self._note_hole(now)

    def said_sent(self, sent: int, now: float) -> None:
        """The slave's keepalive: it has numbered `sent` stanzas so far."""
        self.claimed = max(self.claimed, sent)
        self._note_hole(now)

    def _top(self) -> int:
        return max(self.claimed, max(self.ahead, default=0))

    def _note_hole(self, now: float) -> None:
        if self._top() <= self.contiguous:
            self.hole_since = None
        elif self.hole_since is None:
            self.hole_since = now

    def lost(self, now: float) -> list[tuple[int, int]]:
        """The ranges (first, last) of numbers missing for GAP_GRACE seconds: asked for
        again now, and from then on counted as heard."""
        if self.hole_since is None or now - self.hole_since < GAP_GRACE:
            return []
        ranges: list[tuple[int, int]] = []
        top = self._top()
        for seq in range(max(self.contiguous + 1, top - MAX_RESEND + 1), top + 1):
            if seq in self.ahead:
                continue
            if ranges and ranges[-1][1] == seq - 1:
                ranges[-1] = (ranges[-1][0], seq)
            else:
                ranges.append((seq, seq))
        self.contiguous = top
        self.ahead.clear()
        self.hole_since = None
        return ranges
