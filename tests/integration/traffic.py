"""Steady, tagged groupchat traffic in one room from clients on every users' server, and the
accounting of what each client received: the load of the fault-injection tests (issue 7).

Each participant is a real client (xmpp_client.Client) on its own server of the testbed
network. Once everyone is in the room and has seen everyone, each sends a groupchat message
every ``interval`` seconds (phases spread over the interval); the body and the id are a tag
unique to the run, the sender and a sequence number. Every client records each copy of a
tagged message it receives (when, stanza-id, XEP-0203 delay stamp), every error the room
sent it, and its own view of the occupant list (from the presences it received).

A client that is disconnected (its server restarted) connects again and rejoins; one that
is told it is no longer in the room (its own unavailable presence, or a message refused
with not-acceptable/item-not-found) rejoins. Rejoins ask for no history.

Accounting (:meth:`TrafficDriver.account`), strict (issue 16), per client, by membership
windows: a window opens when the client's own presence (status 110) arrives and closes only
when the client is disconnected (its server restarted). A client that stays connected is
expected to stay in the room: its own unavailable presence (a kick, an eviction behind a
slave) is counted as an eviction and closes nothing. Then:

* a message sent at t by S is expected at R (S itself included: the room's echo) when t is in
  a window of S and in a window of R, at least GRACE seconds before either window closed (a
  window still open at the end never closed);
* lost: expected (message, receiver) pairs with no copy at the receiver whose sender got no
  error for the message (silently lost); a pair whose sender got an error is counted apart
  (``undelivered_bounced``: not delivered, the sender told), never dropped from judgment;
* duplicated: the copies beyond the first of every (message, receiver) pair;
* out of order: a copy without a delay stamp (delivered live) that came after a later
  message of the same sender; a copy with a delay stamp (held, caught up) must carry the
  time its sender said it (docs/protocol.md §4.11.2), within STAMP_EARLY/STAMP_LATE;
* bounced: any error the room sent a sender for its message (a rate limit's
  policy-violation is counted apart); fails the run, except (``Bounds.direct_bounces``,
  the master's Prosody restarting) the errors a direct sender's own server gave for a
  message that reached no one (``server_bounced``: it could not reach the master's server);
* everyone in the room at the end (connected, own presence, no own unavailable since);
  roster mismatches: every client whose occupant list is not everyone, plus one if the
  master's list (disco#items of the room, asked by an observer on the master's own server,
  reconnected if that server restarted) is not everyone; an unanswered query is one too.

The lenient count of the first fault tests (issue 7: an own unavailable presence or, for a
direct client, a refused message also closed the window, hiding what it missed) is kept
beside it (``lenient_lost``/``lenient_expected``), to show what those rules looked away
from.
"""

from __future__ import annotations

import asyncio
import itertools
import re
import secrets
import time
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from testbed.faults import Fault, FaultKind, LogEvent, LogWatcher
from testbed.network import DIRECT_DOMAIN, MASTER_DOMAIN, MUC_SERVICE, SLAVE_DOMAINS, DmucNetwork
from tests.integration.xmpp_client import (
    NS_DELAY,
    NS_DISCO_ITEMS,
    NS_MUC,
    Client,
    body,
    error_condition,
    local,
    muc_item,
    status_codes,
    xml_str,
)

NS_SID = "urn:xmpp:sid:0"
ROOM = f"wallops@{MUC_SERVICE}"
GRACE = 2.0  # a message sent this close to a window's end may be in flight when it ends
NOT_IN_ROOM = ("not-acceptable", "item-not-found")
SHORT = {"killrc.oulubox.irc": "killrc", "eris.dclxvii.irc": "eris",
         "vesa.yeggmaex.irc": "vesa", DIRECT_DOMAIN: "efnet", MASTER_DOMAIN: "avalon"}
PREFIX = {"killrc.oulubox.irc": "k", "eris.dclxvii.irc": "e", "vesa.yeggmaex.irc": "v",
          DIRECT_DOMAIN: "f", MASTER_DOMAIN: "a"}


def default_people(per_server: int = 2,
                   domains: Sequence[str] = (*SLAVE_DOMAINS, DIRECT_DOMAIN)) -> dict[str, str]:
    """``{nick: full JID}``: ``per_server`` users on each of ``domains`` (k1, k2 on killrc,
    e1.. on eris, v1.. on vesa, f1.. on efnet)."""
    return {f"{PREFIX[d]}{i}": f"{PREFIX[d]}{i}@{d}/load"
            for d in domains for i in range(1, per_server + 1)}


@dataclass
class Copy:
    """One copy of a tagged message, as one client received it."""

    at: float
    stanza_id: str | None
    delay: str | None  # XEP-0203 stamp, when it came as history / held


@dataclass
class Window:
    start: float
    end: float | None = None
    why: str = ""  # why it closed: disconnected, left, refused


def _delay_stamp(elem: ET.Element) -> str | None:
    d = elem.find(f"{{{NS_DELAY}}}delay")
    return None if d is None else d.get("stamp")


def _stanza_id(elem: ET.Element, room: str) -> str | None:
    for sid in elem.findall(f"{{{NS_SID}}}stanza-id"):
        if sid.get("by") == room:
            return sid.get("id")
    return None


class Participant:
    """One user in the room: its client (replaced when it reconnects) and its records."""

    def __init__(self, driver: TrafficDriver, nick: str, jid: str) -> None:
        self.driver = driver
        self.nick = nick
        self.jid = jid
        self.domain = jid.split("@", 1)[1].split("/", 1)[0]
        self.behind_slave = driver.network.server(self.domain).role == "slave"
        self.client: Client | None = None
        self.dead_clients: list[Client] = []  # replaced after a disconnection
        # strict membership windows: opened by the own presence, closed only when the client
        # is disconnected (a client that stays connected is expected to stay in the room)
        self.windows: list[Window] = []
        # the lenient windows of the first fault tests (issue 7), kept to show what they
        # hid: also closed by an own unavailable presence and (direct clients) a refusal
        self.lenient_windows: list[Window] = []
        self.present = False  # the client's own view: in the room (own presence, not left)
        self.evictions: list[tuple[float, str]] = []  # own unavailable presences, codes
        self.sent: dict[str, float] = {}  # tag -> when it was sent
        self.sent_wall: dict[str, float] = {}  # tag -> time.time() when it was sent
        self.copies: dict[str, list[Copy]] = {}  # tag -> copies received
        self.bounced: dict[str, str] = {}  # tag -> error condition
        self.refused: set[str] = set()  # tags refused because we were not in the room
        self.roster: set[str] = set()
        self.notes: list[tuple[float, str]] = []  # joins, leaves, reconnects, errors
        self.seq = itertools.count(1)
        self.joining = False
        self.join_attempts = 0
        self.reconnects = 0
        self.kicked = 0
        self.stopping = False
        self.changed = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()

    # -- state

    @property
    def in_room(self) -> bool:
        """As the client sees it: its own presence came, and no own unavailable since."""
        return self.present

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.xmpp.transport is not None

    def note(self, what: str) -> None:
        self.notes.append((time.monotonic(), what))

    def _close_window(self, at: float, why: str) -> None:
        """The client is out of the room (``why``: disconnected, left, refused). Only a
        disconnection closes the strict window; every reason closes the lenient one."""
        windows = [self.lenient_windows] + ([self.windows] if why == "disconnected" else [])
        for ws in windows:
            if ws and ws[-1].end is None:
                ws[-1].end = at
                ws[-1].why = why
        self.present = False
        self.roster.clear()
        self.changed.set()

    def _spawn(self, coro: Any) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- connection

    async def connect(self, timeout: float = 10) -> None:
        server = self.driver.network.server(self.domain)
        client = Client(self.jid, "pw", host=server.ip, port=server.c2s_port)
        try:
            await client.connect(timeout=timeout)
        except BaseException:
            self.dead_clients.append(client)
            raise
        client.xmpp.add_filter("in", self._on_stanza)
        client.xmpp.add_event_handler("disconnected", self._on_disconnected)
        self.client = client

    async def _reconnect(self, deadline: float = 40.0) -> None:
        """Connect again (the server may still be down: retry with a short backoff, bounded)
        and rejoin."""
        self.reconnects += 1
        end = time.monotonic() + deadline
        pause = 0.2
        while not self.stopping and time.monotonic() < end:
            try:
                await self.connect(timeout=min(5.0, max(end - time.monotonic(), 0.1)))
            except (AssertionError, OSError, TimeoutError) as exc:
                self.note(f"reconnect failed: {exc}")
                await asyncio.sleep(pause)  # a retry backoff: the server offers no event
                pause = min(pause * 2, 1.0)
                continue
            self.note("reconnected")
            self.join()
            return
        self.note("gave up reconnecting")

    def _on_disconnected(self, reason: Any) -> None:
        if self.stopping:
            return
        self.note(f"disconnected: {reason}")
        self._close_window(time.monotonic(), "disconnected")
        self.joining = False
        if self.client is not None:
            self.dead_clients.append(self.client)
        self.client = None
        if self.driver.reconnect:
            self._spawn(self._reconnect())

    # -- room

    def join(self) -> None:
        if self.client is None or self.stopping:
            return
        self.joining = True
        self.join_attempts += 1
        self.roster.clear()
        self.client.send_raw(f"<presence to='{self.driver.room}/{self.nick}'>"
                             f"<x xmlns='{NS_MUC}'><history maxstanzas='0'/></x></presence>")

    def _rejoin_later(self, why: str) -> None:
        if self.stopping or not self.driver.rejoin or self.joining:
            return
        if self.join_attempts >= 20:
            self.note(f"not rejoining any more ({why})")
            return

        async def again() -> None:
            await asyncio.sleep(0.2 if self.join_attempts > 1 else 0)  # bounded retries
            if not self.stopping and not self.in_room and self.connected:
                self.join()

        self._spawn(again())

    def send_next(self) -> str | None:
        if self.client is None or not self.in_room or not self.connected:
            return None
        tag = f"{self.driver.run_id}.{self.nick}.{next(self.seq):05d}"
        self.client.send_raw(f"<message to='{self.driver.room}' type='groupchat' id='{tag}'>"
                             f"<body>{tag}</body></message>")
        self.sent[tag] = time.monotonic()
        self.sent_wall[tag] = time.time()
        return tag

    def _on_stanza(self, stanza: Any) -> Any:
        try:
            self._record(stanza.xml)
        except Exception as exc:  # noqa: BLE001 - never break the client's stream
            self.note(f"recording failed: {exc!r} on {xml_str(stanza.xml)[:300]}")
        return stanza

    def _record(self, elem: ET.Element) -> None:
        room = self.driver.room
        bare, _, nick = (elem.get("from") or "").partition("/")
        if bare != room:
            return
        now = time.monotonic()
        self.driver.activity.set()
        name, stype = local(elem.tag), elem.get("type")
        if name == "message":
            text = body(elem) or ""
            if stype == "groupchat" and text.startswith(self.driver.run_id + "."):
                self.copies.setdefault(text, []).append(
                    Copy(now, _stanza_id(elem, room), _delay_stamp(elem)))
            elif stype == "error":
                tag = elem.get("id") or text
                condition = error_condition(elem) or "?"
                if tag in self.sent:
                    self.bounced[tag] = condition
                self.note(f"error {condition} for {tag}")
                if condition in NOT_IN_ROOM and tag in self.sent:
                    self.refused.add(tag)
                    if not self.behind_slave:  # out of the room since it sent that
                        self._close_window(self.sent[tag], "refused")
                    self._rejoin_later(f"refused: {condition}")
        elif name == "presence":
            codes = status_codes(elem)
            if stype == "error":
                self.joining = False
                self.note(f"join error {error_condition(elem)}")
                self._rejoin_later(f"join error {error_condition(elem)}")
            elif stype == "unavailable":
                self.roster.discard(nick)
                new_nick = (muc_item(elem) or {}).get("nick")
                if "303" in codes and new_nick:
                    self.roster.add(new_nick)
                elif "110" in codes:
                    self.kicked += 1
                    self.evictions.append((now, ",".join(sorted(codes))))
                    self.note(f"own unavailable presence {sorted(codes)}")
                    self._close_window(now, "left")
                    self._rejoin_later("left")
            else:
                self.roster.add(nick)
                if "110" in codes:
                    self.joining = False
                    if not self.present:
                        self.note("joined")
                    self.present = True
                    for ws in (self.windows, self.lenient_windows):
                        if not ws or ws[-1].end is not None:
                            ws.append(Window(now))
            self.changed.set()

    async def wait_until(self, cond: Any, timeout: float) -> None:
        end = time.monotonic() + timeout
        while not cond():
            remaining = end - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.nick}: condition not reached within {timeout} s; "
                                     f"roster {sorted(self.roster)}; notes {self.notes[-5:]}")
            self.changed.clear()
            try:
                await asyncio.wait_for(self.changed.wait(), remaining)
            except TimeoutError:
                pass

    async def close(self) -> None:
        self.stopping = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self.client is not None:
            await self.client.disconnect()
        await close_clients([*self.dead_clients, *([self.client] if self.client else [])])

    def __repr__(self) -> str:
        return f"<Participant {self.nick} {self.jid}>"


async def close_clients(clients: Iterable[Client]) -> None:
    """End what slixmpp leaves pending on a client that is gone (see
    conftest.net_client_factory): its send-queue task."""
    senders = [t for c in clients if (t := getattr(c.xmpp, "_run_out_filters", None))]
    for task in senders:
        task.cancel()
    await asyncio.gather(*senders, return_exceptions=True)
    for c in clients:
        c.inbox.clear()


# ----------------------------------------------------------------------------------------------
# the accounting


@dataclass
class Accounting:
    """What the clients received, judged strictly (see the module docstring); ``lenient_*``
    are the same run judged as the first fault tests did, to show what they hid."""

    messages: int = 0  # tagged messages sent
    expected: int = 0  # expected (message, receiver) deliveries
    delivered: int = 0  # expected ones that arrived
    lost: int = 0  # silently: no copy, and its sender got no error for it
    undelivered_bounced: int = 0  # no copy, and its sender got an error for it
    duplicated: int = 0
    bounced: int = 0  # messages their sender got an error for
    refused: int = 0  # ... because the room did not count the sender in
    rate_limited: int = 0  # ... refused by a rate limit (policy-violation)
    bounced_delivered: int = 0  # ... that reached the room all the same
    # ... by a direct sender's own server (it could not reach the master's), reaching no
    # one: allowed (not failed, still counted) only where the fault is documented to cause
    # it (Bounds.direct_bounces: the master's Prosody restarting, docs/protocol.md §4.11.5)
    server_bounced: int = 0
    direct_bounces_allowed: bool = False
    delayed: int = 0  # copies that came with a delay stamp (held, or history)
    bad_stamps: int = 0  # delayed copies whose stamp is not when the sender said it
    out_of_order: int = 0  # live copies of one sender that came after a later one
    kicked: int = 0  # own unavailable presences nobody asked for (evictions)
    evicted: list[str] = field(default_factory=list)  # "nick: codes at t"
    absent_at_end: list[str] = field(default_factory=list)  # not in the room at the end
    reconnects: int = 0
    roster_mismatches: int = 0
    roster_details: list[str] = field(default_factory=list)
    lost_by_path: Counter[str] = field(default_factory=Counter)  # "killrc->eris": n
    lost_details: list[str] = field(default_factory=list)  # the first few, for the logs
    undelivered_bounced_by_path: Counter[str] = field(default_factory=Counter)
    duplicated_by_path: Counter[str] = field(default_factory=Counter)
    duplicated_delayed: int = 0  # extra copies that came with a delay stamp
    bounce_conditions: Counter[str] = field(default_factory=Counter)
    order_details: list[str] = field(default_factory=list)
    stamp_details: list[str] = field(default_factory=list)
    lenient_expected: int = 0
    lenient_lost: int = 0

    @property
    def failures(self) -> list[str]:
        """Every strict check that failed, in words (empty: the run is clean)."""
        checks = [
            (self.lost, "lost"), (self.duplicated, "duplicated"),
            (self.out_of_order, "out of their sender's order"),
            (self.bad_stamps, "held copies without their original time"),
            (self.kicked, "own unavailable presences (evicted)"),
            (len(self.absent_at_end), "clients not in the room at the end"),
            (self.roster_mismatches, "roster mismatches"),
            (self.bounced - (self.server_bounced if self.direct_bounces_allowed else 0),
             "messages bounced to their sender"),
            (self.rate_limited, "refused by a rate limit"),
        ]
        return [f"{n} {what}" for n, what in checks if n]


# what a users' server answers its user's message with when it cannot reach the room's
# server (s2s: no connection; mod_smacks: the s2s session closed with it unacknowledged)
SERVER_BOUNCES = frozenset({"remote-server-not-found", "remote-server-timeout",
                            "recipient-unavailable"})


# a held copy's XEP-0203 stamp is when its sender said it (docs/protocol.md §4.11.2, "Held
# messages keep their time"): stamps have whole seconds (down up to 1 s), and a catch-up
# copy carries the master's time of the broadcast (the link's latency later)
STAMP_EARLY, STAMP_LATE = 1.5, 3.0


def _open_at(windows: Iterable[Window], t: float) -> bool:
    return any(w.start <= t and (w.end is None or t <= w.end - GRACE) for w in windows)


def _stamp_seconds(stamp: str) -> float | None:
    try:
        return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def _judge_copies(acc: Accounting, r: Participant, by_nick: dict[str, Participant]) -> None:
    """Duplicates, delay stamps and per-sender order of what ``r`` received."""
    last_live: dict[str, int] = {}
    for tag, copies in sorted(r.copies.items(), key=lambda kv: kv[1][0].at):
        sender = by_nick.get(tag.split(".")[1])
        path = f"{SHORT[sender.domain] if sender else '?'}->{SHORT[r.domain]}"
        if len(copies) > 1:
            acc.duplicated += len(copies) - 1
            acc.duplicated_delayed += sum(1 for c in copies[1:] if c.delay is not None)
            acc.duplicated_by_path[path] += len(copies) - 1
        first = copies[0]
        if first.delay is not None:
            acc.delayed += 1
            said = sender.sent_wall.get(tag) if sender else None
            stamp = _stamp_seconds(first.delay)
            if said is None or stamp is None or not (
                    said - STAMP_EARLY <= stamp <= said + STAMP_LATE):
                acc.bad_stamps += 1
                when = "?" if said is None else datetime.fromtimestamp(
                    said, UTC).isoformat(timespec="milliseconds")
                acc.stamp_details.append(f"{tag} at {r.nick}: stamp {first.delay}, said "
                                         f"at {when}")
            continue
        if sender is None:
            continue
        seq = int(tag.rsplit(".", 1)[1])
        if seq < last_live.get(sender.nick, -1):
            acc.out_of_order += 1
            acc.order_details.append(f"{tag} at {r.nick} after "
                                     f"{sender.nick}.{last_live[sender.nick]:05d}")
        last_live[sender.nick] = max(seq, last_live.get(sender.nick, -1))


def _expected(acc: Accounting, s: Participant, r: Participant) -> None:
    """Every message ``s`` said while both were in the room (strict windows) is due at
    ``r`` exactly once; the lenient count beside it."""
    for tag, t in s.sent.items():
        got = bool(r.copies.get(tag))
        if _open_at(s.lenient_windows, t) and _open_at(r.lenient_windows, t):
            acc.lenient_expected += 1
            acc.lenient_lost += not got
        if not (_open_at(s.windows, t) and _open_at(r.windows, t)):
            continue
        acc.expected += 1
        path = f"{SHORT[s.domain]}->{SHORT[r.domain]}"
        if got:
            acc.delivered += 1
        elif tag in s.bounced:  # not delivered, and its sender was told so
            acc.undelivered_bounced += 1
            acc.undelivered_bounced_by_path[path] += 1
        else:  # not delivered, and nobody knows: silently lost
            acc.lost += 1
            acc.lost_by_path[path] += 1
            if len(acc.lost_details) < 20:
                acc.lost_details.append(f"{tag} (said {t:.3f}) not at {r.nick}")


def _judge_roster(acc: Accounting, people: Sequence[Participant],
                  master_roster: set[str] | None) -> None:
    """Everyone in the room at the end, every client's list and the master's the same."""
    everyone = {p.nick for p in people}
    acc.absent_at_end = sorted(
        f"{p.nick} ({'; '.join(what for _, what in p.notes[-3:]) or 'no notes'})"
        for p in people if not (p.in_room and p.connected))
    if master_roster is None:
        acc.roster_mismatches += 1
        acc.roster_details.append("the master's occupant list could not be read")
        master_roster = set()
    for p in people:
        if p.in_room and p.roster != everyone:
            acc.roster_mismatches += 1
            acc.roster_details.append(f"{p.nick} sees {_diff(p.roster, everyone)}")
    if master_roster != everyone:
        acc.roster_mismatches += 1
        acc.roster_details.append(f"master lists {_diff(master_roster, everyone)} "
                                  "against everyone")


def account(people: Sequence[Participant], master_roster: set[str] | None) -> Accounting:
    acc = Accounting()
    by_nick = {p.nick: p for p in people}
    for s in people:
        acc.messages += len(s.sent)
        acc.bounced += len(s.bounced)
        acc.refused += len(s.refused)
        acc.rate_limited += sum(1 for c in s.bounced.values() if c == "policy-violation")
        acc.bounce_conditions.update(s.bounced.values())
        delivered = {tag for tag in s.bounced
                     if any(r.copies.get(tag) for r in people if r is not s)}
        acc.bounced_delivered += len(delivered)
        acc.lost_details += [f"{tag} bounced ({s.bounced[tag]}) yet delivered"
                             for tag in sorted(delivered)][:5]
        if not s.behind_slave:
            acc.server_bounced += sum(1 for tag, c in s.bounced.items()
                                      if c in SERVER_BOUNCES and tag not in delivered)
        acc.kicked += s.kicked
        acc.evicted += [f"{s.nick}: {codes}" for _, codes in s.evictions]
        acc.reconnects += s.reconnects
    for r in people:
        _judge_copies(acc, r, by_nick)
        for s in people:
            _expected(acc, s, r)
    _judge_roster(acc, people, master_roster)
    return acc



def _diff(seen: set[str], truth: set[str]) -> str:
    parts = []
    if seen - truth:
        parts.append("+" + ",".join(sorted(seen - truth)))
    if truth - seen:
        parts.append("-" + ",".join(sorted(truth - seen)))
    return " ".join(parts) or "the same"


# ----------------------------------------------------------------------------------------------
# the driver


class TrafficDriver:
    """Clients of ``people`` ({nick: full JID}) in ``room`` on ``network``; see the module
    docstring. Every coroutine runs on the clients' event loop (xmpp_client.run)."""

    def __init__(self, network: DmucNetwork, people: dict[str, str], *, room: str = ROOM,
                 interval: float = 0.5, observer: str = f"observer@{MASTER_DOMAIN}/eye",
                 reconnect: bool = True, rejoin: bool = True) -> None:
        self.network = network
        self.room = room
        self.interval = interval
        self.reconnect = reconnect
        self.rejoin = rejoin
        self.run_id = "r" + secrets.token_hex(3)
        self.people = [Participant(self, nick, jid) for nick, jid in people.items()]
        self.observer_jid = observer
        self.observer: Client | None = None
        self.activity = asyncio.Event()
        self._stop = asyncio.Event()
        self._senders: list[asyncio.Task[None]] = []
        self.traffic_started: float | None = None
        self.traffic_stopped: float | None = None

    def person(self, nick: str) -> Participant:
        return next(p for p in self.people if p.nick == nick)

    async def start(self, timeout: float = 20, together: bool = False) -> None:
        """Connect everyone (and the observer); the first creates the room, then the others
        join one after the other (each once the previous one is in), or all at once if
        ``together``; returns once every client has seen every other one in the room."""
        server = self.network.server(self.observer_jid)
        self.observer = Client(self.observer_jid, "pw", host=server.ip, port=server.c2s_port)
        await asyncio.gather(self.observer.connect(),
                             *(p.connect() for p in self.people))
        first, *rest = self.people
        for p in [first] if together else self.people:
            p.join()
            await p.wait_until(lambda p=p: p.in_room, timeout)
        for p in rest if together else []:
            p.join()
        everyone = {p.nick for p in self.people}
        await asyncio.gather(*(p.wait_until(lambda p=p: p.in_room and p.roster == everyone,
                                            timeout) for p in self.people))

    async def _send_loop(self, p: Participant, t0: float, phase: float) -> None:
        for k in itertools.count():
            due = t0 + phase + k * self.interval
            pause = due - time.monotonic()
            if pause > 0:
                try:  # the traffic's own pace; wakes at once when told to stop
                    await asyncio.wait_for(self._stop.wait(), pause)
                except TimeoutError:
                    pass
            if self._stop.is_set():
                return
            p.send_next()

    def begin(self) -> None:
        """Everyone starts sending, one message per ``interval`` s each."""
        t0 = time.monotonic()
        self.traffic_started = t0
        n = len(self.people)
        self._senders = [asyncio.ensure_future(self._send_loop(p, t0, self.interval * i / n))
                         for i, p in enumerate(self.people)]

    async def end(self) -> None:
        """Everyone stops sending."""
        self._stop.set()
        await asyncio.gather(*self._senders, return_exceptions=True)
        self.traffic_stopped = time.monotonic()

    async def settle(self, quiet: float = 2.5, deadline: float = 25.0) -> float:
        """Wait until nothing from the room reached any client for ``quiet`` s (and every
        reconnection has finished), at most ``deadline`` s; returns the time waited."""
        began = time.monotonic()
        end = began + deadline
        while time.monotonic() < end:
            busy = [t for p in self.people for t in p._tasks]
            if busy:
                await asyncio.wait(busy, timeout=end - time.monotonic())
            self.activity.clear()
            try:
                await asyncio.wait_for(self.activity.wait(),
                                       min(quiet, max(end - time.monotonic(), 0.01)))
            except TimeoutError:
                if not any(p._tasks for p in self.people):
                    break
        return time.monotonic() - began

    async def _observer_ready(self) -> Client:
        """The observer, connected again if its server (the master's) was restarted."""
        assert self.observer is not None
        if self.observer.xmpp.transport is None:
            await close_clients([self.observer])
            server = self.network.server(self.observer_jid)
            self.observer = Client(self.observer_jid, "pw", host=server.ip,
                                   port=server.c2s_port)
            await self.observer.connect()
        return self.observer

    async def master_roster(self, tries: int = 3) -> set[str] | None:
        """The master's occupant list (disco#items of the room, from the observer, whose path
        to the master crosses no s2s link); None if it would not say (``tries`` times, a
        second apart: the master may still be reconnecting to its Prosody)."""
        for attempt in range(tries):
            try:
                reply = await (await self._observer_ready()).iq(
                    f"<iq type='get' to='{self.room}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>")
            except (AssertionError, OSError, TimeoutError):
                reply = None
            if reply is not None and reply.get("type") == "result":
                return {item.get("name") or (item.get("jid") or "").partition("/")[2]
                        for item in reply.iter(f"{{{NS_DISCO_ITEMS}}}item")}
            if attempt + 1 < tries:
                await asyncio.sleep(1.0)  # a bounded retry: no event says the master is back
        return None

    async def account(self) -> Accounting:
        return account(self.people, await self.master_roster())

    async def close(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._senders, return_exceptions=True)
        await asyncio.gather(*(p.close() for p in self.people), return_exceptions=True)
        if self.observer is not None:
            await self.observer.disconnect()
            await close_clients([self.observer])


# ----------------------------------------------------------------------------------------------
# one fault under traffic, and its report

SPLIT_LINES = ("netsplit",)
JOIN_LINES = ("netjoin", "after a netsplit", "registered with", "mirrors:")


@dataclass(frozen=True)
class Bounds:
    """What a fault test holds the timings to: a split found within ``detect`` s of the
    fault (required when ``must_detect``: the fault outlasted the detection bound), and,
    once one was found, the netjoin's last line within ``netjoin`` s of the heal."""

    detect: float
    netjoin: float
    must_detect: bool
    direct_bounces: bool = False  # Accounting.server_bounced allowed


# a component whose Prosody was down reconnects with a backoff that doubles up to 30 s
RECONNECTS = ("users-prosody-restart", "master-prosody-restart")


def detection_bound(keepalive: float) -> float:
    """A split is found within two keepalive intervals of silence (an unanswered
    keepalive), plus the daemons' tick (1 s) and the log watcher's resolution."""
    return 2 * keepalive + 1.5


def fault_bounds(kind: FaultKind, seconds: float, keepalive: float) -> Bounds:
    """The bounds a fault of ``kind`` lasting ``seconds`` is held to: detection as above
    (required when the fault outlasted it and is a split at all); a netjoin within a
    keepalive interval of the heal (a split side pings every keepalive/4; the registration
    and snapshot follow) plus the same slack, plus the reconnection backoff of a component
    whose Prosody was down that long."""
    backoff = min(seconds, 30.0) if kind.name in RECONNECTS else 0.0
    detect = detection_bound(keepalive)
    return Bounds(detect, keepalive + 1.5 + backoff,
                  must_detect=kind.splits and seconds > detect,
                  direct_bounces=kind.direct_bounces)


def timing_failures(detect: float | None, netjoin: float | None,
                    bounds: Bounds | None) -> list[str]:
    if bounds is None:
        return []
    failures = []
    if detect is None and bounds.must_detect:
        failures.append(f"the split was never detected (bound {bounds.detect:.1f} s)")
    if detect is not None and detect > bounds.detect:
        failures.append(f"split detected after {detect:.1f} s (bound {bounds.detect:.1f} s)")
    if detect is not None and netjoin is None:
        failures.append("a split was detected but no netjoin followed")
    if netjoin is not None and detect is not None and netjoin > bounds.netjoin:
        failures.append(f"netjoin took {netjoin:.1f} s (bound {bounds.netjoin:.1f} s)")
    return failures


def _secs(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


@dataclass
class FaultReport:
    fault: str
    acc: Accounting
    fault_seconds: float  # from injecting to healing
    detect: float | None  # s from injection to the first netsplit line of any daemon
    netjoin: float | None  # s from the start of the heal to the last netjoin line
    split_by: list[str]
    joined_by: list[str]
    tracebacks: list[str]
    settle: float  # s waited for the traffic to drain
    people: int
    bounds: Bounds | None = None

    @property
    def failures(self) -> list[str]:
        return [*self.acc.failures, *timing_failures(self.detect, self.netjoin, self.bounds),
                *(f"traceback in {t}" for t in self.tracebacks)]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        a = self.acc
        return (f"{self.fault}: lost {a.lost} of {a.expected} (and not delivered with an "
                f"error to the sender {a.undelivered_bounced}), duplicated {a.duplicated}, "
                f"out of order {a.out_of_order}, evicted {a.kicked}, roster mismatches "
                f"{a.roster_mismatches}; the lenient count (issue 7's rules) would say lost "
                f"{a.lenient_lost} of {a.lenient_expected}"
                + (f"\n  FAILED: {'; '.join(self.failures)}" if self.failures else ""))

    def row(self) -> str:
        a = self.acc
        return (f"| {self.fault:<44} | {self.fault_seconds:>5.1f} | {a.messages:>4} | "
                f"{a.expected:>5} | {a.lost:>4} | {a.undelivered_bounced:>4} | "
                f"{a.duplicated:>4} | {a.out_of_order:>3} | "
                f"{a.bad_stamps:>3} | {a.kicked:>3} | {len(a.absent_at_end):>3} | "
                f"{a.roster_mismatches:>3} | {a.bounced:>4} | {a.delayed:>4} | "
                f"{_secs(self.detect):>6} | {_secs(self.netjoin):>7} | "
                f"{len(self.tracebacks):>2} | {a.lenient_lost:>4}/{a.lenient_expected:<5} |")

    def details(self) -> str:
        a = self.acc
        lines = [f"  {self.summary()}; {self.people} clients, fault {self.fault_seconds:.1f} s, "
                 f"settled in {self.settle:.1f} s"]
        if self.bounds is not None:
            lines.append(f"  bounds: detection {self.bounds.detect:.1f} s "
                         f"({'required' if self.bounds.must_detect else 'not required'}), "
                         f"netjoin {self.bounds.netjoin:.1f} s")
        if a.lost_by_path:
            lines.append("  lost by path (sender->receiver): " + ", ".join(
                f"{k} {v}" for k, v in a.lost_by_path.most_common()))
        lines += [f"  lost: {d}" for d in a.lost_details[:10]]
        if a.undelivered_bounced_by_path:
            lines.append("  not delivered, their sender told by an error, by path: " + ", ".join(
                f"{k} {v}" for k, v in a.undelivered_bounced_by_path.most_common()))
        if a.duplicated_by_path:
            lines.append("  duplicated by path: " + ", ".join(
                f"{k} {v}" for k, v in a.duplicated_by_path.most_common())
                + f" ({a.duplicated_delayed} of the extra copies with a delay stamp)")
        if a.bounce_conditions:
            lines.append("  bounced to their senders: " + ", ".join(
                f"{k} {v}" for k, v in a.bounce_conditions.most_common())
                + f" (refused as not in the room: {a.refused}; by a rate limit: "
                f"{a.rate_limited}; delivered to others all the same: {a.bounced_delivered}; "
                f"by a direct sender's own server, delivered to no one: {a.server_bounced}"
                f"{' (allowed for this fault)' if a.direct_bounces_allowed else ''})")
        if a.evicted or a.reconnects:
            lines.append(f"  own unavailable presences: {', '.join(a.evicted) or '-'}; "
                         f"reconnections: {a.reconnects}")
        if a.absent_at_end:
            lines.append(f"  not in the room at the end: {', '.join(a.absent_at_end)}")
        lines += [f"  out of order: {d}" for d in a.order_details[:5]]
        lines += [f"  held copy with a wrong time: {d}" for d in a.stamp_details[:5]]
        lines += [f"  roster: {d}" for d in a.roster_details]
        if self.split_by or self.joined_by:
            lines.append(f"  netsplit logged by: {', '.join(self.split_by) or '-'}; "
                         f"netjoin/registration by: {', '.join(self.joined_by) or '-'}")
        lines += [f"  traceback in {t}" for t in self.tracebacks]
        return "\n".join(lines)


TABLE_HEADER = (
    "| fault                                        | secs  | sent | expect | lost | told |  dup | "
    "ord | stm | evi | abs | ros | bnce | dlyd | detect | netjoin | tb | lenient |\n"
    "|----------------------------------------------|------:|-----:|------:|-----:|-----:|-----:|"
    "----:|----:|----:|----:|----:|-----:|-----:|-------:|--------:|---:|--------:|")
TABLE_LEGEND = (
    "secs: how long the fault lasted; sent: tagged messages; expect: (message, receiver) "
    "deliveries due; lost: of those, not delivered and the sender not told (silently lost);\n"
    "told: not delivered, the sender got an error for it; dup: extra copies;\n"
    "ord: live copies out of their sender's order; stm: "
    "held copies without their original time; evi: own unavailable presences (evictions);\n"
    "abs: clients not in the room at the end; ros: roster mismatches; bnce: messages bounced "
    "to their sender; dlyd: copies with a delay stamp;\ndetect: s from the fault to the "
    "first netsplit line; netjoin: s from the heal to the last netjoin/registration line; "
    "tb: tracebacks;\nlenient: lost/expected as the first fault tests counted (own "
    "unavailable presences and refusals closing windows)")


def table(reports: Iterable[FaultReport]) -> str:
    return "\n".join([TABLE_HEADER, *(r.row() for r in reports), TABLE_LEGEND])


def _timings(logs: LogWatcher, began: float, healing: float
             ) -> tuple[list[LogEvent], list[LogEvent], list[str]]:
    """The netsplit lines since the fault; the netjoin lines since the heal, or since the
    last netsplit line if that came later (a split found at the heal) or earlier (a
    flapping link split and joined again before it was healed for good): a split must
    be followed by a netjoin; and the logs with a traceback (ever)."""
    splits = logs.matching(re.compile("|".join(SPLIT_LINES)), after=began)
    joins = logs.matching(re.compile("|".join(JOIN_LINES)),
                          after=splits[-1].at if splits else healing)
    tracebacks = sorted({e.source for e in logs.matching(re.compile("Traceback|Unhandled"))})
    return splits, joins, tracebacks


def _netjoin(joins: list[LogEvent], healing: float) -> float | None:
    """s from the heal to the last netjoin line (0 if the link joined before the heal)."""
    return max(joins[-1].at - healing, 0.0) if joins else None


async def run_fault(driver: TrafficDriver, fault: Fault | None, logs: LogWatcher, *,
                    name: str | None = None, before: float = 2.0, during: float = 6.0,
                    after: float = 6.0, quiet: float = 2.5,
                    bounds: Bounds | None = None) -> FaultReport:
    """Traffic for ``before`` s, the fault for ``during`` s, healed, traffic for ``after``
    s more; then wait for the traffic to drain and count. The phases are the scenario's
    timeline (sleeps on purpose); injecting and healing run in a thread, so the clients keep
    sending and receiving meanwhile."""
    driver.begin()
    await asyncio.sleep(before)
    began = healing = time.monotonic()
    if fault is not None:
        await asyncio.to_thread(fault.inject)
    await asyncio.sleep(during)
    if fault is not None:
        healing = time.monotonic()
        await asyncio.to_thread(fault.heal)
    fault_seconds = healing - began
    await asyncio.sleep(after)
    await driver.end()
    settle = await driver.settle(quiet=quiet)
    acc = await driver.account()
    acc.direct_bounces_allowed = bounds is not None and bounds.direct_bounces
    splits, joins, tracebacks = _timings(logs, began, healing)
    return FaultReport(
        fault=name or (fault.name if fault is not None else "none"), acc=acc,
        fault_seconds=fault_seconds if fault is not None else 0.0,
        detect=(splits[0].at - began) if fault is not None and splits else None,
        netjoin=_netjoin(joins, healing) if fault is not None else None,
        split_by=sorted({_source(e.source) for e in splits}),
        joined_by=sorted({_source(e.source) for e in joins}),
        tracebacks=tracebacks, settle=settle, people=len(driver.people), bounds=bounds)


def _source(name: str) -> str:
    prefix, _, domain = name.rpartition(":")
    short = SHORT.get(domain, domain)
    return f"{prefix}:{short}" if prefix else short


# --- a soak: many random faults under one stretch of continuous traffic ------------------------


@dataclass
class SoakFault:
    name: str
    seconds: float  # injected to healed
    detect: float | None  # s from injection to the first netsplit line after it
    netjoin: float | None  # s from the heal to the last netjoin line before the next fault
    bounds: Bounds | None = None

    @property
    def failures(self) -> list[str]:
        return [f"{self.name}: {f}" for f in timing_failures(self.detect, self.netjoin,
                                                             self.bounds)]


@dataclass
class SoakReport:
    seed: int
    faults: list[SoakFault]
    acc: Accounting
    tracebacks: list[str]
    settle: float

    @property
    def failures(self) -> list[str]:
        return [*self.acc.failures, *(f for fault in self.faults for f in fault.failures),
                *(f"traceback in {t}" for t in self.tracebacks)]

    @property
    def ok(self) -> bool:
        return not self.failures

    def summary(self) -> str:
        a = self.acc
        detects = [f.detect for f in self.faults if f.detect is not None]
        joins = [f.netjoin for f in self.faults if f.netjoin is not None]

        def worst(values: list[float]) -> str:
            return f"{max(values):.1f} s" if values else "-"

        return (f"soak (seed {self.seed}): {len(self.faults)} faults, {a.messages} messages "
                f"sent, {a.expected} deliveries due, lost {a.lost} (and not delivered with an "
                f"error to the sender {a.undelivered_bounced}), duplicated "
                f"{a.duplicated}, out of order {a.out_of_order}, evicted {a.kicked}, roster "
                f"mismatches {a.roster_mismatches}, tracebacks {len(self.tracebacks)}; worst "
                f"detection {worst(detects)}, worst netjoin {worst(joins)}; the lenient count "
                f"would say lost {a.lenient_lost} of {a.lenient_expected}"
                + (f"\n  FAILED: {'; '.join(self.failures)}" if self.failures else ""))

    def details(self) -> str:
        lines = [f"  {f.name:<48} {f.seconds:5.1f} s  detected {_secs(f.detect):>5}  "
                 f"netjoin {_secs(f.netjoin):>5}" for f in self.faults]
        a = self.acc
        if a.lost_by_path:
            lines.append("  lost by path (sender->receiver): " + ", ".join(
                f"{k} {v}" for k, v in a.lost_by_path.most_common()))
        lines += [f"  lost: {d}" for d in a.lost_details[:10]]
        if a.undelivered_bounced_by_path:
            lines.append("  not delivered, their sender told by an error, by path: " + ", ".join(
                f"{k} {v}" for k, v in a.undelivered_bounced_by_path.most_common()))
        if a.duplicated_by_path:
            lines.append("  duplicated by path: " + ", ".join(
                f"{k} {v}" for k, v in a.duplicated_by_path.most_common()))
        if a.bounce_conditions:
            lines.append("  bounced to their senders: " + ", ".join(
                f"{k} {v}" for k, v in a.bounce_conditions.most_common())
                + f" (delivered to others all the same: {a.bounced_delivered})")
        if a.evicted:
            lines.append(f"  own unavailable presences: {', '.join(a.evicted)}")
        if a.absent_at_end:
            lines.append(f"  not in the room at the end: {', '.join(a.absent_at_end)}")
        lines += [f"  roster: {d}" for d in a.roster_details]
        return "\n".join(lines)


async def run_soak(driver: TrafficDriver,
                   faults: Sequence[tuple[Fault, float, Bounds | None]],
                   logs: LogWatcher, *, seed: int, gap: float = 2.0, after: float = 6.0,
                   quiet: float = 2.5) -> SoakReport:
    """One stretch of traffic with the faults one after the other: each injected for its
    seconds then healed, `gap` s of calm between them (a netjoin is waited for, up to its
    bound, before the next fault); then drain and count."""
    driver.begin()
    record: list[SoakFault] = []
    for fault, seconds, bounds in faults:
        await asyncio.sleep(gap)
        began = time.monotonic()
        await asyncio.to_thread(fault.inject)
        await asyncio.sleep(seconds)
        healing = time.monotonic()
        await asyncio.to_thread(fault.heal)
        await asyncio.sleep(max(gap, bounds.netjoin if bounds is not None else 0.0))
        splits, joins, _ = _timings(logs, began, healing)
        record.append(SoakFault(
            fault.name, healing - began,
            (splits[0].at - began) if splits else None,
            _netjoin(joins, healing), bounds))
    await asyncio.sleep(after)
    await driver.end()
    settle = await driver.settle(quiet=quiet)
    acc = await driver.account()
    acc.direct_bounces_allowed = any(b is not None and b.direct_bounces for _, _, b in faults)
    tracebacks = sorted({e.source for e in logs.matching(re.compile("Traceback|Unhandled"))})
    return SoakReport(seed, record, acc, tracebacks, settle)
