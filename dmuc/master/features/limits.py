"""Rate limits, as Prosody's mod_muc_limits: no single sender can monopolise the service.

Every stanza a sender addresses to the service or one of its rooms takes a token from that
sender's bucket (a token bucket: `rate` tokens a second, at most `burst` saved up). A user
session (a full JID) has one bucket per room (and one for the service), as mod_muc_limits
has one per occupant; an allowed XEP-0282 slave
speaking for itself (registrations, keepalives, refusals: a server-level JID listed in
[[slaves]]) has a separate, larger one. Stanzas the room must accept are never limited:
a slave's replay of what it held or had in flight across a netsplit, and what reaches us
from behind a slave found split (charged to the slave instead: the user's burst was spent
when it typed them), errors (a bounce is how the room learns a session is gone), IQ
results (answers to what the room asked or relayed) and a user's unavailable presence
(leaving). After the service itself was stopped (ticks missing), every sender gets the
tokens it would have had meanwhile: what it said then waited in the socket.

A stanza over the limit is answered as mod_muc_limits answers it: `wait` /
`policy-violation`, "The room is currently overactive, please try again later", with `by`
the room (or the service), the body and the <x xmlns=muc/> of the stanza copied back. The
log gets one info line when a sender's refusals start and then at most one every
LOG_EVERY seconds with the count, never one a stanza.

Optionally (off by default, as mod_muc_limits' muc_max_nick_length / muc_max_char_count
when set): a nickname or a message body longer than a bound is refused with `modify` /
`policy-violation`.

Hooked on the service's "stanza" event, fired for every stanza before it is routed.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.words.xish.domish import Element

from dmuc import jids, xmlns
from dmuc.hooks import Hooks
from dmuc.outbox import Outbox
from dmuc.protocol import stanzas, xep0282

if TYPE_CHECKING:
    from dmuc.master.service import MUCService

OVERACTIVE_ROOM = "The room is currently overactive, please try again later"
OVERACTIVE_SERVICE = "The service is currently overactive, please try again later"
NICK_TOO_LONG = "Your nick name is too long, please use a shorter one"
MESSAGE_TOO_LONG = "Your message is too long, please write a shorter one"
LOG_EVERY = 10.0  # seconds between two log lines about one sender's refusals
# Senders tracked at once. A bucket left alone until it is full again is forgotten (a new
# one is the same); this bounds the rest, e.g. a flood from ever new JIDs.
MAX_TRACKED = 100_000
# Ticks come every second: a longer silence means the service was stopped (SIGSTOP, a
# stuck host), and what its senders said meanwhile waited in the socket. They get the
# tokens they would have had (for at most MAX_STOP_CREDIT seconds) for RESUME_WINDOW
# seconds after it: their backlog arrives at once, through no fault of theirs.
STOPPED_AFTER = 5.0
MAX_STOP_CREDIT = 300.0
RESUME_WINDOW = 5.0


@dataclass(frozen=True)
class Limits:
    """The [muc.limits] table. A rate of 0 turns that limit off; so does a length of 0."""

    rate: float = 10.0  # stanzas a second, per user session and room
    burst: int = 50  # stanzas a user session may send at once
    slave_rate: float = 100.0  # stanzas a second, per allowed slave (for itself)
    slave_burst: int = 1000  # e.g. re-registering every mirrored room at once
    max_nick_length: int = 0  # characters; mod_muc_limits' muc_max_nick_length
    max_char_count: int = 0  # characters of a message body; muc_max_char_count


class Bucket:
    __slots__ = ("tokens", "last", "refused", "logged")

    def __init__(self, burst: int, now: float) -> None:
        self.tokens = float(burst)
        self.last = now
        self.refused = 0  # refusals since the last log line
        self.logged = -math.inf  # when the last log line about this sender was written


class Limiter:
    """Token buckets keyed by sender, forgotten once full again (least recently used
    first, so each stanza costs O(1) amortised)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = burst
        self.idle = burst / rate  # after this long alone, any bucket is full again
        self.buckets: OrderedDict[str, Bucket] = OrderedDict()
        self.stopped = (-math.inf, -math.inf)  # the service's last stop (start, end)

    def take(self, sender: str, now: float) -> Bucket | None:
        """None if `sender` may go on; its bucket if it is over the limit."""
        buckets = self.buckets
        start, end = self.stopped
        resuming = now - end < RESUME_WINDOW
        while buckets:
            oldest = next(iter(buckets.values()))
            if resuming or (now - oldest.last < self.idle and len(buckets) < MAX_TRACKED):
                break
            buckets.popitem(last=False)
        credit = min(end - start, MAX_STOP_CREDIT) * self.rate
        bucket = buckets.get(sender)
        if bucket is None:
            bucket = buckets[sender] = Bucket(self.burst, now)
            if resuming:
                bucket.tokens += credit
        else:
            buckets.move_to_end(sender)
            elapsed = max(0.0, now - bucket.last)
            cap = float(self.burst)  # what was left of a stop's credit ends with it
            if resuming:
                cap = max(cap, bucket.tokens)
                if bucket.last <= start:
                    cap += credit  # it spoke before the stop: what it said then waited
            bucket.tokens = min(cap, bucket.tokens + elapsed * self.rate)
            bucket.last = now
        if bucket.tokens >= 1.0:
            bucket.tokens -= 1.0
            return None
        return bucket


class RateLimits:
    def __init__(self, service: MUCService, limits: Limits) -> None:
        self.service = service
        self.limits = limits
        self.sessions = Limiter(limits.rate, limits.burst) if limits.rate > 0 else None
        self.slaves = (Limiter(limits.slave_rate, limits.slave_burst)
                       if limits.slave_rate > 0 else None)
        self.last_tick: float | None = None

    def tick(self, now: float, out: Outbox) -> None:
        """The "tick" hook (every second)."""
        self._note_time(now, out)
        self.last_tick = now

    def _note_time(self, now: float, out: Outbox) -> None:
        """A silence since the last tick far longer than a tick: the service was stopped
        (it reads what waited before its timers run, or after)."""
        last = self.last_tick
        if last is None or now - last < STOPPED_AFTER:
            return
        self.last_tick = now
        out.info(f"the service was stopped for {now - last:.0f} s: its senders' stanzas "
                 "that waited meanwhile are not held against their rate limits")
        for limiter in (self.sessions, self.slaves):
            if limiter is not None:
                limiter.stopped = (last, now)

    def stanza(self, stanza: Element, out: Outbox) -> bool | None:
        """The "stanza" hook: True when the stanza was refused (and answered)."""
        kind, stype = stanza.name, stanza.getAttribute("type")
        if stype == "error" or (kind == "iq" and stype == "result"):
            return None  # answers and bounces: the room must see them
        self._note_time(out.now, out)
        sender = stanza.getAttribute("from")
        is_slave = sender in self.service.distribution.allowed
        if not is_slave and kind == "presence" and stype == "unavailable":
            return None  # leaving is never limited
        limiter = self.slaves if is_slave else self.sessions
        to = jids.parse(stanza.getAttribute("to"))
        if to is None:
            return None
        where = to.userhost() if to.user is not None else self.service.jid
        if not is_slave and self._replayed_by_slave(stanza, sender, where, out.now):
            return None
        if limiter is not None:
            # A user's bucket is per room, as mod_muc_limits' (a busy client in many rooms
            # is not one flooder); a slave's is one for all the rooms it mirrors.
            bucket = limiter.take(sender if is_slave else f"{sender} {where}", out.now)
            if bucket is not None:
                self._overactive(stanza, bucket, limiter, where, is_slave, out)
                return True
        if not is_slave and to.user is not None:
            return self._too_long(stanza, to.resource, where, out)
        return None

    def _replayed_by_slave(self, stanza: Element, sender: str, room_jid: str,
                           now: float) -> bool:
        """A message its slave held across a netsplit, or a copy the room will drop (a
        resubmission of one it had, §4.11.2), or
        anything from behind a slave we found split or that just came back (what waited
        while it was stopped or its link stalled, arriving at once), is not the user's
        burst: it is charged to the slave's bucket and never refused."""
        room = self.service.rooms.get(room_jid)
        distribution = self.service.distribution
        slave = distribution.slave_of(room, sender) if room is not None else None
        if slave is None:
            return False  # only a slave replays; a direct user's id is just an id
        link = distribution.link(room_jid, slave)
        replay = xep0282.is_held(stanza) or distribution.is_second_copy(room, stanza)
        if not replay and (link is None or not link.catching_up(now)):
            return False
        if self.slaves is not None:
            self.slaves.take(slave, now)
        return True

    def _overactive(self, stanza: Element, bucket: Bucket, limiter: Limiter, where: str,
                    is_slave: bool, out: Outbox) -> None:
        text = OVERACTIVE_ROOM if where != self.service.jid else OVERACTIVE_SERVICE
        reply = stanzas.error_reply(stanza, "wait", "policy-violation", text, by=where)
        # As mod_muc_limits: the body goes back (the client can show what was not sent),
        # and so does a join's <x xmlns=muc/> (an error to a join carries it).
        body = stanzas.child(stanza, "body")
        if body is not None:
            reply.children.insert(0, stanzas.copy(body))
        if stanzas.child(stanza, "x", xmlns.MUC) is not None:
            reply.children.insert(0, Element((xmlns.MUC, "x")))
        out.send(reply)
        bucket.refused += 1
        if out.now - bucket.logged < LOG_EVERY:
            return
        who = f"slave {stanza['from']}" if is_slave else stanza["from"]
        limit = f"{limiter.rate:g}/s, burst {limiter.burst}"
        if bucket.logged == -math.inf:
            out.info(f"rate limit: refusing stanzas from {who} to {where} "
                     f"(over {limit}); at most one line every {LOG_EVERY:g} s follows")
        else:
            out.info(f"rate limit: refused {bucket.refused} stanzas from {who} "
                     f"in the last {out.now - bucket.logged:.0f} s (over {limit})")
        bucket.logged = out.now
        bucket.refused = 0

    def _too_long(self, stanza: Element, nick: str | None, room_jid: str,
                  out: Outbox) -> bool | None:
        limits = self.limits
        kind = stanza.name
        if kind == "presence" and nick is not None and limits.max_nick_length \
                and len(nick) > limits.max_nick_length:
            room = self.service.rooms.get(room_jid)
            current = room.nick_of.get(stanza["from"]) if room is not None else None
            if current != nick:  # a join or a nick change, not an update
                reply = stanzas.join_error(stanza, "modify", "policy-violation", NICK_TOO_LONG)
                out.send(reply)
                out.info(stanzas.one_line(f"refused nick {nick!r} of {stanza['from']} in "
                                          f"{room_jid}: longer than {limits.max_nick_length}"))
                return True
        if kind == "message" and limits.max_char_count:
            body = stanzas.text_of(stanzas.child(stanza, "body"))
            if body is not None and len(body) > limits.max_char_count:
                stanzas.refuse(out, stanza, "modify", "policy-violation", MESSAGE_TOO_LONG,
                               what=f"a message of {len(body)} characters to {room_jid}",
                               by=room_jid)
                return True
        return None


def setup(hooks: Hooks, service: MUCService) -> RateLimits | None:
    """Hook the limits of `service.settings.limits` (None: no limits)."""
    limits = service.settings.limits
    if limits is None:
        return None
    feature = RateLimits(service, limits)
    # Before anything else that looks at a stanza: a refused one costs nothing more.
    hooks.add("stanza", feature.stanza, priority=1000)
    hooks.add("tick", feature.tick)
    return feature
