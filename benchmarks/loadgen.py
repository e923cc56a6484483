"""The load of the real-network benchmark: many raw XMPP clients in one process.

``python -m benchmarks.loadgen`` reads one JSON command a line on stdin and answers each
with one JSON line on stdout (``{"ok": true, ...}`` or ``{"ok": false, "error": ...}``):

``connect``   {"accounts": [[jid, ip, port], ...]}: log in (plain TCP, SASL PLAIN, bind,
              initial presence), as real users over c2s
``join``      {"room": ..., "clients": [i, ...]}: enter the room (nick = the account's
              local part), no history; returns when each has its own presence (110)
``leave``     {"room": ..., "clients": [...]}: unavailable presence, wait for the 110 echo
``newcomer``  {"room": ..., "client": i}: join and time until the whole roster is in
              (the newcomer's own presence, which XEP-0045 sends after every other)
``configure`` {"room": ..., "client": i, "broadcast": [role, ...]}: the room's owner sets
              the roles whose presence the room broadcasts (muc#roomconfig_presencebroadcast)
``burst``     {"room", "clients", "pingers", "marks"}: every client sends its join at once
              while each pinger pings the room every 50 ms; when the marks-th own
              presences came back, and each pinger's round trips
``traffic``   {"room", "senders", "count", "rate" | "window", "timeout"}: each sender
              sends ``count`` groupchat messages, paced at ``rate`` messages/s in all or as
              fast as a window of ``window`` messages not yet echoed back to the sender
              allows; returns the copies each client got (delivered, duplicates, lost),
              the elapsed time and the send-to-delivery latencies
``quit``

A client is a few lines of asyncio, not a full XMPP library: it reads its stream with a
regex for the benchmark's bodies and own-presence codes, so that a thousand of them in one
process cost the servers' side, not the load's.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from typing import Any
from xml.sax.saxutils import quoteattr

BODY = re.compile(rb"<body>b (\d+) (\d+)</body>")
# the end of a presence carrying status 110 (the room's presence of the recipient itself)
SELF_PRESENCE = re.compile(rb"<status code=['\"]110['\"]\s*/>")
# an IQ answer (result or error) and its id
IQ_ID = re.compile(rb"\sid=['\"]([^'\"]+)['\"]")
IQ_TYPE = re.compile(rb"\stype=['\"]([^'\"]+)['\"]")
PING_INTERVAL = 0.05
PING_TIMEOUT = 120.0  # a ping unanswered this long is counted as this long
LOGIN_TIMEOUT = 60.0


def _local(jid: str) -> str:
    return jid.split("@", 1)[0]


@dataclass
class RawClient:
    """One user's c2s session."""

    index: int
    jid: str
    ip: str
    port: int
    reader: asyncio.StreamReader | None = None
    writer: asyncio.StreamWriter | None = None
    buffer: bytes = b""
    # message keys (sender * 10**7 + seq) received in the current traffic phase
    seen: set[int] = field(default_factory=set)
    duplicates: int = 0
    self_presences: int = 0
    presences: int = 0
    first_presence: float | None = None  # when the first one since it was reset came
    presence_event: asyncio.Event = field(default_factory=asyncio.Event)
    # IQs sent and not yet answered: id -> future of the answer's type
    answers: dict[str, asyncio.Future[str]] = field(default_factory=dict)

    @property
    def domain(self) -> str:
        return self.jid.split("@", 1)[1]

    def send(self, data: str) -> None:
        assert self.writer is not None
        self.writer.write(data.encode())

    async def _read_until(self, marker: bytes) -> bytes:
        assert self.reader is not None
        while marker not in self.buffer:
            chunk = await self.reader.read(65536)
            if not chunk:
                raise ConnectionError(f"{self.jid}: stream closed during login")
            self.buffer += chunk
        head, _, self.buffer = self.buffer.partition(marker)
        return head

    def _header(self) -> str:
        return (f"<?xml version='1.0'?><stream:stream to='{self.domain}' version='1.0' "
                "xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>")

    async def login(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.ip, self.port)
        self.send(self._header())
        await self._read_until(b"</stream:features>")
        token = base64.b64encode(f"\0{_local(self.jid)}\0pw".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                  f"{token}</auth>")
        answer = await self._read_until(b"/>")
        if b"<success" not in answer:
            raise ConnectionError(f"{self.jid}: SASL refused: {answer!r}")
        self.buffer = b""
        self.send(self._header())
        await self._read_until(b"</stream:features>")
        self.send("<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                  "<resource>bench</resource></bind></iq>")
        await self._read_until(b"</iq>")
        self.send("<presence/>")

    def on_data(self, data: bytes, phase: Traffic | None) -> None:
        buf = self.buffer + data
        # scan up to the last "<" (or an unterminated body), or all of it when it ends
        # with a complete tag (a lone IQ answer): no pattern crosses the cut
        cut = len(buf) if buf.endswith(b">") else buf.rfind(b"<")
        body = buf.rfind(b"<body>")
        if body != -1 and buf.find(b"</body>", body) == -1:
            cut = body
        scan, self.buffer = buf[:cut], buf[cut:]
        if phase is not None:
            for sender, seq in BODY.findall(scan):
                phase.delivered(self, int(sender), int(seq))
        arrived = scan.count(b"<presence")
        if arrived and self.first_presence is None:
            self.first_presence = time.monotonic()
        self.presences += arrived
        found = len(SELF_PRESENCE.findall(scan))
        if found:
            self.self_presences += found
            self.presence_event.set()
        if self.answers and b"<iq" in scan:
            self._iq_answers(scan)

    def _iq_answers(self, scan: bytes) -> None:
        for tag in re.finditer(rb"<iq\s[^>]*>", scan):
            ident, kind = IQ_ID.search(tag.group()), IQ_TYPE.search(tag.group())
            if ident is None or kind is None:
                continue
            waiter = self.answers.pop(ident.group(1).decode(), None)
            if waiter is not None and not waiter.done():
                waiter.set_result(kind.group(1).decode())

    async def iq(self, xml: str, ident: str, timeout: float) -> str:
        """Send an IQ (``xml``, whose id is ``ident``); the answer's type."""
        waiter = asyncio.get_running_loop().create_future()
        self.answers[ident] = waiter
        self.send(xml)
        return await asyncio.wait_for(waiter, timeout)

    async def run(self, gen: LoadGen) -> None:
        assert self.reader is not None
        rest, self.buffer = self.buffer, b""
        if rest:
            self.on_data(rest, gen.phase)
        while chunk := await self.reader.read(262144):
            self.on_data(chunk, gen.phase)

    async def wait_self_presence(self, count: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.self_presences < count:
            self.presence_event.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"{self.jid}: no own presence from the room in {timeout} s")
            try:
                await asyncio.wait_for(self.presence_event.wait(), left)
            except TimeoutError:
                pass


class Traffic:
    """One traffic phase: who sent what when, and what arrived."""

    def __init__(self, senders: list[RawClient], receivers: int) -> None:
        self.senders = {c.index: c for c in senders}
        self.receivers = receivers
        self.sent_at: dict[int, float] = {}
        # copies still to arrive, per message: a message is outstanding until all are in
        self.remaining: dict[int, int] = {}
        self.outstanding = {i: 0 for i in self.senders}
        self.wakeup = {i: asyncio.Event() for i in self.senders}
        self.copies = 0
        self.latencies: list[float] = []
        self.first_send: float | None = None
        self.last_delivery = 0.0
        self.changed = asyncio.Event()

    def sending(self, sender: int, seq: int) -> None:
        now = time.monotonic()
        if self.first_send is None:
            self.first_send = now
        key = sender * 10**7 + seq
        self.sent_at[key] = now
        self.remaining[key] = self.receivers
        self.outstanding[sender] += 1

    def delivered(self, client: RawClient, sender: int, seq: int) -> None:
        key = sender * 10**7 + seq
        sent = self.sent_at.get(key)
        if sent is None:
            return  # from an earlier phase
        if key in client.seen:
            client.duplicates += 1
            return
        client.seen.add(key)
        now = time.monotonic()
        self.copies += 1
        self.last_delivery = now
        self.latencies.append(now - sent)
        self.remaining[key] -= 1
        if self.remaining[key] == 0 and sender in self.outstanding:
            self.outstanding[sender] -= 1
            self.wakeup[sender].set()
        self.changed.set()


def percentile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


class LoadGen:
    def __init__(self) -> None:
        self.clients: list[RawClient] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.phase: Traffic | None = None

    async def connect(self, accounts: list[list[Any]]) -> dict[str, Any]:
        began = time.monotonic()
        new = [RawClient(len(self.clients) + i, jid, ip, int(port))
               for i, (jid, ip, port) in enumerate(accounts)]
        sem = asyncio.Semaphore(50)

        async def login(c: RawClient) -> None:
            async with sem:
                await asyncio.wait_for(c.login(), LOGIN_TIMEOUT)

        await asyncio.gather(*(login(c) for c in new))
        self.clients += new
        self.tasks += [asyncio.ensure_future(c.run(self)) for c in new]
        return {"clients": len(self.clients), "seconds": time.monotonic() - began}

    def _presence(self, c: RawClient, room: str, kind: str = "") -> None:
        to = quoteattr(f"{room}/{_local(c.jid)}")
        if kind == "unavailable":
            c.send(f"<presence to={to} type='unavailable'/>")
        else:
            c.send(f"<presence to={to}><x xmlns='http://jabber.org/protocol/muc'>"
                   "<history maxstanzas='0'/></x></presence>")

    async def join(self, room: str, clients: list[int], concurrency: int = 20,
                   timeout: float = 120.0) -> dict[str, Any]:
        began = time.monotonic()
        sem = asyncio.Semaphore(concurrency)

        async def one(c: RawClient) -> None:
            async with sem:
                want = c.self_presences + 1
                self._presence(c, room)
                await c.wait_self_presence(want, timeout)

        await asyncio.gather(*(one(self.clients[i]) for i in clients))
        return {"seconds": time.monotonic() - began}

    async def leave(self, room: str, clients: list[int], timeout: float = 120.0
                    ) -> dict[str, Any]:
        began = time.monotonic()
        wanted = {i: self.clients[i].self_presences + 1 for i in clients}
        for i in clients:
            self._presence(self.clients[i], room, "unavailable")
        await asyncio.gather(*(self.clients[i].wait_self_presence(n, timeout)
                               for i, n in wanted.items()))
        return {"seconds": time.monotonic() - began}

    async def configure(self, room: str, client: int, broadcast: list[str],
                        timeout: float = 60.0) -> dict[str, Any]:
        """The owner ``client`` sets the roles whose presence ``room`` broadcasts."""
        values = "".join(f"<value>{role}</value>" for role in broadcast)
        kind = await self.clients[client].iq(
            f"<iq type='set' to={quoteattr(room)} id='cfg'>"
            "<query xmlns='http://jabber.org/protocol/muc#owner'>"
            "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE'>"
            "<value>http://jabber.org/protocol/muc#roomconfig</value></field>"
            f"<field var='muc#roomconfig_presencebroadcast'>{values}</field>"
            "</x></query></iq>", "cfg", timeout)
        if kind != "result":
            raise RuntimeError(f"{room}: the configuration was refused ({kind})")
        return {}

    async def destroy(self, room: str, client: int, timeout: float = 60.0
                      ) -> dict[str, Any]:
        """The owner ``client`` destroys ``room`` (XEP-0045 §10.9); its answer comes once
        the room has sent every occupant its last presence."""
        kind = await self.clients[client].iq(
            f"<iq type='set' to={quoteattr(room)} id='destroy'>"
            "<query xmlns='http://jabber.org/protocol/muc#owner'><destroy/></query></iq>",
            "destroy", timeout)
        if kind != "result":
            raise RuntimeError(f"{room}: the destruction was refused ({kind})")
        return {}

    async def _pings(self, c: RawClient, room: str, done: asyncio.Event,
                     rtts: list[float], timeout: float) -> None:
        """Ping ``room`` from ``c`` (PING_INTERVAL after each answer) until ``done``."""
        n = 0
        while not done.is_set():
            n += 1
            ident = f"ping{c.index}-{n}"
            sent = time.monotonic()
            try:
                await c.iq(f"<iq type='get' to={quoteattr(room)} id='{ident}'>"
                           "<ping xmlns='urn:xmpp:ping'/></iq>", ident, timeout)
            except TimeoutError:
                c.answers.pop(ident, None)  # counted at the timeout: a lower bound
            rtts.append(time.monotonic() - sent)
            await asyncio.sleep(PING_INTERVAL)

    async def burst(self, room: str, clients: list[int], pingers: list[int],
                    marks: list[int], timeout: float = 600.0) -> dict[str, Any]:
        """Every client of ``clients`` sends its join at once (no history), while each of
        ``pingers`` (already in the room) pings the room; until every own presence is back.
        Returns the seconds until the n-th own presence for n in ``marks`` and each
        pinger's round trips (s)."""
        done = asyncio.Event()
        rtts: dict[int, list[float]] = {i: [] for i in pingers}
        ping_tasks = [asyncio.ensure_future(self._pings(self.clients[i], room, done,
                                                        rtts[i], PING_TIMEOUT))
                      for i in pingers]
        began = time.monotonic()
        arrived: list[float] = []

        async def one(c: RawClient, want: int) -> None:
            await c.wait_self_presence(want, timeout)
            arrived.append(time.monotonic() - began)

        waits = []
        for i in clients:
            c = self.clients[i]
            waits.append(one(c, c.self_presences + 1))
            self._presence(c, room)
        try:
            await asyncio.gather(*waits)
        finally:
            done.set()
            await asyncio.gather(*ping_tasks)
        arrived.sort()
        return {"marks": {str(n): arrived[n - 1] for n in marks if 0 < n <= len(arrived)},
                "pings": {str(i): rtts[i] for i in pingers}}

    async def newcomer(self, room: str, client: int, timeout: float = 120.0
                       ) -> dict[str, Any]:
        c = self.clients[client]
        presences = c.presences
        want = c.self_presences + 1
        began = time.monotonic()
        c.first_presence = None
        self._presence(c, room)
        await c.wait_self_presence(want, timeout)
        seconds = time.monotonic() - began
        first = (c.first_presence or began) - began
        return {"seconds": seconds, "first": first, "presences": c.presences - presences}

    async def traffic(self, room: str, senders: list[int], count: int,
                      rate: float | None = None, window: int | None = None,
                      duration: float = 60.0, drain: float = 60.0,
                      receivers: list[int] | None = None) -> dict[str, Any]:
        """Messages from ``senders`` (``count`` each, sent within ``duration`` s), expected
        at every receiver (default: every client), awaited ``drain`` s more at most.
        ``window``: a sender has at most that many messages not yet at every receiver."""
        recv = [self.clients[i] for i in (receivers if receivers is not None
                                          else range(len(self.clients)))]
        for c in recv:
            c.seen.clear()
            c.duplicates = 0
        phase = Traffic([self.clients[i] for i in senders], len(recv))
        self.phase = phase
        deadline = time.monotonic() + duration
        to = quoteattr(room)

        def message(c: RawClient, seq: int) -> None:
            phase.sending(c.index, seq)
            c.send(f"<message to={to} type='groupchat' id='b{c.index}-{seq}'>"
                   f"<body>b {c.index} {seq}</body></message>")

        async def paced() -> None:
            assert rate is not None
            interval = len(senders) / rate
            start = time.monotonic()
            offsets = {i: n * interval / len(senders) for n, i in enumerate(senders)}
            schedule = sorted((seq * interval + offsets[i], i, seq)
                              for i in senders for seq in range(count))
            for at, i, seq in schedule:
                delay = start + at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                if time.monotonic() > deadline:
                    return
                message(self.clients[i], seq)

        async def flood(i: int) -> None:
            assert window is not None
            c = self.clients[i]
            for seq in range(count):
                while phase.outstanding[i] >= window:
                    phase.wakeup[i].clear()
                    left = deadline - time.monotonic()
                    if left <= 0:
                        return
                    try:
                        await asyncio.wait_for(phase.wakeup[i].wait(), left)
                    except TimeoutError:
                        return
                message(c, seq)

        if rate is not None:
            await paced()
        else:
            await asyncio.gather(*(flood(i) for i in senders))
        # then until every copy is in, or the deadline
        deadline = time.monotonic() + drain
        while phase.copies < len(phase.sent_at) * len(recv):
            phase.changed.clear()
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                await asyncio.wait_for(phase.changed.wait(), min(left, 1.0))
            except TimeoutError:
                pass
        self.phase = None
        sent = len(phase.sent_at)
        elapsed = max(phase.last_delivery - (phase.first_send or 0.0), 1e-9)
        lat = phase.latencies
        got = [len(c.seen) for c in recv]
        return {
            "sent": sent,
            "expected": sent * len(recv),
            "delivered": phase.copies,
            "duplicates": sum(c.duplicates for c in recv),
            "missing": sent * len(recv) - phase.copies,
            "min_per_client": min(got) if got else 0,
            "max_per_client": max(got) if got else 0,
            "elapsed": elapsed,
            "rate": phase.copies / elapsed,
            "p50": percentile(lat, 50),
            "p99": percentile(lat, 99),
            "mean": statistics.fmean(lat) if lat else None,
        }

    async def serve(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=2**26)  # a command lists 10,000s of accounts
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            request = json.loads(line)
            cmd = request.pop("cmd")
            if cmd == "quit":
                break
            try:
                answer = {"ok": True, **await getattr(self, cmd)(**request)}
            except Exception as exc:  # reported to the orchestrator, which stops the run
                answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
            sys.stdout.write(json.dumps(answer) + "\n")
            sys.stdout.flush()
        for c in self.clients:
            if c.writer is not None:
                c.writer.close()
        for t in self.tasks:
            t.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


def main() -> None:
    asyncio.run(LoadGen().serve())


if __name__ == "__main__":
    main()
