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

Accounting (:meth:`TrafficDriver.account`), per client, by membership windows: a window
opens when the client's own presence (status 110) arrives and closes when it is
disconnected or told it left. For a direct client (no slave on its server) a refused
message also closes the window, as of when that message was sent: it was not in the room,
and it was told so. A client behind a slave is kept in the room by its slave: a refusal does
not close its window, so the refused message counts as lost. Then:

* a message sent at t by S is expected at R (S itself included: the room's echo) when t is in
  a window of S and in a window of R, at least GRACE seconds before either window closed (a
  window still open at the end never closed);
* lost: expected (message, receiver) pairs with no copy at the receiver;
* duplicated: the copies beyond the first of every (message, receiver) pair;
* roster mismatches: every client in the room whose occupant list differs from the master's
  (disco#items of the room, asked by an observer on the master's own server), plus one if
  the master's list differs from the clients that are in the room.
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
from typing import Any

from xmpp_client import (
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

from testbed.faults import Fault, LogWatcher
from testbed.network import DIRECT_DOMAIN, MASTER_DOMAIN, MUC_SERVICE, SLAVE_DOMAINS, DmucNetwork

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
        self.windows: list[Window] = []
        self.sent: dict[str, float] = {}  # tag -> when it was sent
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
        return bool(self.windows) and self.windows[-1].end is None

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.xmpp.transport is not None

    def note(self, what: str) -> None:
        self.notes.append((time.monotonic(), what))

    def _close_window(self, at: float, why: str) -> None:
        if self.in_room:
            self.windows[-1].end = at
            self.windows[-1].why = why
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
                    self.note(f"own unavailable presence {sorted(codes)}")
                    self._close_window(now, "left")
                    self._rejoin_later("left")
            else:
                self.roster.add(nick)
                if "110" in codes:
                    self.joining = False
                    if not self.in_room:
                        self.windows.append(Window(now))
                        self.note("joined")
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
    messages: int = 0  # tagged messages sent
    expected: int = 0  # expected (message, receiver) deliveries
    delivered: int = 0  # expected ones that arrived
    lost: int = 0
    duplicated: int = 0
    bounced: int = 0  # messages their sender got an error for
    refused: int = 0  # ... because the room did not count the sender in
    bounced_delivered: int = 0  # ... that reached the room all the same
    delayed: int = 0  # copies that came with a delay stamp (held, or history)
    out_of_order: int = 0  # copies of one sender that came before an earlier one
    kicked: int = 0  # own unavailable presences nobody asked for
    reconnects: int = 0
    roster_mismatches: int = 0
    roster_details: list[str] = field(default_factory=list)
    lost_by_path: Counter[str] = field(default_factory=Counter)  # "killrc->eris": n
    duplicated_by_path: Counter[str] = field(default_factory=Counter)
    duplicated_delayed: int = 0  # extra copies that came with a delay stamp
    bounce_conditions: Counter[str] = field(default_factory=Counter)


def _open_at(windows: Iterable[Window], t: float) -> bool:
    return any(w.start <= t and (w.end is None or t <= w.end - GRACE) for w in windows)


def account(people: Sequence[Participant], master_roster: set[str] | None) -> Accounting:
    acc = Accounting()
    for s in people:
        acc.messages += len(s.sent)
        acc.bounced += len(s.bounced)
        acc.refused += len(s.refused)
        acc.bounce_conditions.update(s.bounced.values())
        acc.bounced_delivered += sum(1 for tag in s.bounced
                                     if any(r.copies.get(tag) for r in people if r is not s))
        acc.kicked += s.kicked
        acc.reconnects += s.reconnects
    by_nick = {p.nick: p for p in people}
    for r in people:
        for tag, copies in r.copies.items():
            acc.delayed += sum(1 for c in copies if c.delay is not None)
            if len(copies) > 1:
                acc.duplicated += len(copies) - 1
                acc.duplicated_delayed += sum(1 for c in copies[1:] if c.delay is not None)
                sender = by_nick.get(tag.split(".")[1])
                path = f"{SHORT[sender.domain] if sender else '?'}->{SHORT[r.domain]}"
                acc.duplicated_by_path[path] += len(copies) - 1
        for s in people:
            last_seq = -1
            firsts = sorted((copies[0].at, tag) for tag, copies in r.copies.items()
                            if f".{s.nick}." in tag)
            for _, tag in firsts:
                seq = int(tag.rsplit(".", 1)[1])
                if seq < last_seq:
                    acc.out_of_order += 1
                last_seq = max(last_seq, seq)
            for tag, t in s.sent.items():
                if not (_open_at(s.windows, t) and _open_at(r.windows, t)):
                    continue
                acc.expected += 1
                if r.copies.get(tag):
                    acc.delivered += 1
                else:
                    acc.lost += 1
                    acc.lost_by_path[f"{SHORT[s.domain]}->{SHORT[r.domain]}"] += 1
    if master_roster is not None:
        inside = {p.nick for p in people if p.in_room}
        for p in people:
            if p.in_room and p.roster != master_roster:
                acc.roster_mismatches += 1
                acc.roster_details.append(
                    f"{p.nick} sees {_diff(p.roster, master_roster)}")
        if master_roster != inside:
            acc.roster_mismatches += 1
            acc.roster_details.append(f"master lists {_diff(master_roster, inside)} "
                                      "against the clients in the room")
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

    async def master_roster(self) -> set[str] | None:
        """The master's occupant list (disco#items of the room, from the observer, whose path
        to the master crosses no s2s link); None if it would not say."""
        assert self.observer is not None
        reply = await self.observer.iq(
            f"<iq type='get' to='{self.room}'><query xmlns='{NS_DISCO_ITEMS}'/></iq>")
        if reply.get("type") != "result":
            return None
        return {item.get("name") or (item.get("jid") or "").partition("/")[2]
                for item in reply.iter(f"{{{NS_DISCO_ITEMS}}}item")}

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

    @property
    def ok(self) -> bool:
        return self.acc.lost == 0 and self.acc.duplicated == 0 \
            and self.acc.roster_mismatches == 0

    def summary(self) -> str:
        a = self.acc
        return (f"{self.fault}: lost {a.lost} of {a.expected}, duplicated {a.duplicated}, "
                f"roster mismatches {a.roster_mismatches}")

    def row(self) -> str:
        a = self.acc

        def secs(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        return (f"| {self.fault:<38} | {a.messages:>4} | {a.expected:>5} | {a.lost:>4} | "
                f"{a.duplicated:>4} | {a.roster_mismatches:>3} | {a.bounced:>4} | "
                f"{a.delayed:>4} | {a.kicked:>3} | {secs(self.detect):>6} | "
                f"{secs(self.netjoin):>7} | {len(self.tracebacks):>2} |")

    def details(self) -> str:
        a = self.acc
        lines = [f"  {self.summary()}; {self.people} clients, fault {self.fault_seconds:.1f} s, "
                 f"settled in {self.settle:.1f} s"]
        if a.lost_by_path:
            lines.append("  lost by path (sender->receiver): " + ", ".join(
                f"{k} {v}" for k, v in a.lost_by_path.most_common()))
        if a.duplicated_by_path:
            lines.append("  duplicated by path: " + ", ".join(
                f"{k} {v}" for k, v in a.duplicated_by_path.most_common())
                + f" ({a.duplicated_delayed} of the extra copies with a delay stamp)")
        if a.bounce_conditions:
            lines.append("  bounced to their senders: " + ", ".join(
                f"{k} {v}" for k, v in a.bounce_conditions.most_common())
                + f" (refused as not in the room: {a.refused}; delivered to others all the "
                f"same: {a.bounced_delivered})")
        if a.kicked or a.reconnects:
            lines.append(f"  own unavailable presences: {a.kicked}; reconnections: "
                         f"{a.reconnects}")
        if a.out_of_order:
            lines.append(f"  copies out of their sender's order: {a.out_of_order}")
        lines += [f"  roster: {d}" for d in a.roster_details]
        if self.split_by or self.joined_by:
            lines.append(f"  netsplit logged by: {', '.join(self.split_by) or '-'}; "
                         f"netjoin/registration by: {', '.join(self.joined_by) or '-'}")
        lines += [f"  traceback in {t}" for t in self.tracebacks]
        return "\n".join(lines)


TABLE_HEADER = (
    "| fault                                  | sent | expect | lost |  dup | ros | "
    "bnce | dlyd | kck | detect | netjoin | tb |\n"
    "|----------------------------------------|-----:|------:|-----:|-----:|----:|"
    "-----:|-----:|----:|-------:|--------:|---:|")
TABLE_LEGEND = (
    "sent: tagged messages; expect: (message, receiver) deliveries due; lost/dup: of those; "
    "ros: roster mismatches;\nbnce: messages bounced to their sender; dlyd: copies with a "
    "delay stamp; kck: own unavailable presences;\ndetect: s from the fault to the first "
    "netsplit line; netjoin: s from the heal to the last netjoin/registration line; "
    "tb: tracebacks")


def table(reports: Iterable[FaultReport]) -> str:
    return "\n".join([TABLE_HEADER, *(r.row() for r in reports), TABLE_LEGEND])


async def run_fault(driver: TrafficDriver, fault: Fault | None, logs: LogWatcher, *,
                    name: str | None = None, before: float = 2.0, during: float = 6.0,
                    after: float = 6.0, quiet: float = 2.5) -> FaultReport:
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
    splits = logs.matching(re.compile("|".join(SPLIT_LINES)), after=began)
    joins = [e for e in logs.matching(re.compile("|".join(JOIN_LINES)), after=healing)]
    tracebacks = sorted({e.source for e in logs.matching(re.compile("Traceback|Unhandled"))})
    return FaultReport(
        fault=name or (fault.name if fault is not None else "none"), acc=acc,
        fault_seconds=fault_seconds if fault is not None else 0.0,
        detect=(splits[0].at - began) if fault is not None and splits else None,
        netjoin=(joins[-1].at - healing) if fault is not None and joins else None,
        split_by=sorted({_source(e.source) for e in splits}),
        joined_by=sorted({_source(e.source) for e in joins}),
        tracebacks=tracebacks, settle=settle, people=len(driver.people))


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


@dataclass
class SoakReport:
    seed: int
    faults: list[SoakFault]
    acc: Accounting
    tracebacks: list[str]
    settle: float

    @property
    def ok(self) -> bool:
        return self.acc.lost == 0 and self.acc.duplicated == 0 \
            and self.acc.roster_mismatches == 0 and not self.tracebacks

    def summary(self) -> str:
        a = self.acc
        detects = [f.detect for f in self.faults if f.detect is not None]
        joins = [f.netjoin for f in self.faults if f.netjoin is not None]

        def worst(values: list[float]) -> str:
            return f"{max(values):.1f} s" if values else "-"

        return (f"soak (seed {self.seed}): {len(self.faults)} faults, {a.messages} messages "
                f"sent, {a.expected} deliveries due, lost {a.lost}, duplicated "
                f"{a.duplicated}, roster mismatches {a.roster_mismatches}, tracebacks "
                f"{len(self.tracebacks)}; worst detection {worst(detects)}, worst netjoin "
                f"{worst(joins)}")

    def details(self) -> str:
        def secs(v: float | None) -> str:
            return "-" if v is None else f"{v:.1f}"

        lines = [f"  {f.name:<44} {f.seconds:5.1f} s  detected {secs(f.detect):>5}  "
                 f"netjoin {secs(f.netjoin):>5}" for f in self.faults]
        if self.acc.lost_by_path:
            lines.append("  lost by path (sender->receiver): " + ", ".join(
                f"{k} {v}" for k, v in self.acc.lost_by_path.most_common()))
        return "\n".join(lines)


async def run_soak(driver: TrafficDriver, faults: Sequence[tuple[Fault, float]],
                   logs: LogWatcher, *, seed: int, gap: float = 2.0, after: float = 6.0,
                   quiet: float = 2.5) -> SoakReport:
    """One stretch of traffic with the faults one after the other: each injected for its
    seconds then healed, `gap` s of calm between them; then drain and count."""
    driver.begin()
    record: list[SoakFault] = []
    split_re = re.compile("|".join(SPLIT_LINES))
    join_re = re.compile("|".join(JOIN_LINES))
    for fault, seconds in faults:
        await asyncio.sleep(gap)
        began = time.monotonic()
        await asyncio.to_thread(fault.inject)
        await asyncio.sleep(seconds)
        healing = time.monotonic()
        await asyncio.to_thread(fault.heal)
        await asyncio.sleep(gap)
        splits = logs.matching(split_re, after=began)
        joins = logs.matching(join_re, after=healing)
        record.append(SoakFault(
            fault.name, healing - began,
            (splits[0].at - began) if splits else None,
            (joins[-1].at - healing) if joins else None))
    await asyncio.sleep(after)
    await driver.end()
    settle = await driver.settle(quiet=quiet)
    acc = await driver.account()
    tracebacks = sorted({e.source for e in logs.matching(re.compile("Traceback|Unhandled"))})
    return SoakReport(seed, record, acc, tracebacks, settle)
