"""A multi-server XMPP network on loopback, for dmuc master/slave tests, demos and benchmarks.

Five Prosody servers (by default), each on its own loopback address, linked by real s2s
(dialback, no TLS); a dnsmasq answers A and SRV records for every domain instantly:

==================  =========================================================================
avalon.irc          users, and the Component ``channel.avalon.irc`` for the dmuc master
killrc.oulubox.irc  users (mod_dmuc_slave) and the slave Component ``dmuc.killrc.oulubox.irc``
eris.dclxvii.irc    users (mod_dmuc_slave) and the slave Component ``dmuc.eris.dclxvii.irc``
vesa.yeggmaex.irc   users (mod_dmuc_slave) and the slave Component ``dmuc.vesa.yeggmaex.irc``
efnet.irc           users only: they join the master directly over s2s
==================  =========================================================================

``DmucNetwork(workdir, slaves_count=10)`` adds users' servers with a slave each,
``users4.irc`` ... ``users10.irc`` on 127.0.0.7 onwards, configured as the seed's three
(the scale benchmark's K=10 network). No dmuc daemon is started here:
:meth:`DmucNetwork.master_config` and :meth:`DmucNetwork.slave_config` give the TOML for
``TwistdDaemon("dmuc-master", ...)`` and ``TwistdDaemon("dmuc-slave", ...)``.

Every s2s connection goes through a counting TCP proxy in front of the receiving server (the
SRV records point at the proxy): it forwards the bytes unchanged and counts the top-level
``<message/>``, ``<presence/>`` and ``<iq/>`` in each direction, keyed by the servers the
stream header names. ``network.s2s_counts("killrc.oulubox.irc")`` is what avalon.irc's Prosody
(any of its hosts, the master's component included) sent to killrc.oulubox.irc's Prosody.

    with DmucNetwork(tempfile.mkdtemp()) as net:
        net.server("vesa.yeggmaex.irc").c2s_port
        net.reset_counts()
        ...
        net.wait_counts("killrc.oulubox.irc", message=1)

The same proxy breaks links on purpose, per pair of servers and in both directions:
``net.cut("killrc.oulubox.irc")`` (avalon.irc <-> killrc), ``net.blackhole(a, b)``,
``net.stall(a, b)``, ``net.delay(a, b, seconds)``, then ``net.heal(a, b)``. Process faults
(kill -9, restart, SIGSTOP) and the dmuc daemons of a whole network: testbed.faults.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from xml.parsers import expat

from testbed.configs import daemon_toml
from testbed.daemon import REPO_ROOT
from testbed.prosody import (
    ComponentSpec,
    Dnsmasq,
    ProsodyInstance,
    TestbedError,
    free_port,
    stop_all,
)

MASTER_DOMAIN = "avalon.irc"
MUC_SERVICE = "channel.avalon.irc"
SLAVE_DOMAINS = ("killrc.oulubox.irc", "eris.dclxvii.irc", "vesa.yeggmaex.irc")
DIRECT_DOMAIN = "efnet.irc"
DOMAINS = (MASTER_DOMAIN, *SLAVE_DOMAINS, DIRECT_DOMAIN)
MAX_SLAVES = 100


def slave_domains(count: int = len(SLAVE_DOMAINS)) -> tuple[str, ...]:
    """The users' servers with a slave in a network of ``count`` of them: the seed's three,
    then ``users4.irc``, ``users5.irc``, ... (the K=10 testbed of the scale benchmark)."""
    if not 1 <= count <= MAX_SLAVES:
        raise ValueError(f"a network has 1..{MAX_SLAVES} slave servers, not {count}")
    extra = tuple(f"users{i}.irc" for i in range(len(SLAVE_DOMAINS) + 1, count + 1))
    return (*SLAVE_DOMAINS, *extra)[:count]


def network_domains(slaves_count: int = len(SLAVE_DOMAINS)) -> tuple[str, ...]:
    """Every server of a network with ``slaves_count`` slave servers, in address order:
    the master's, the seed's slave servers, the direct one, then the extra slave servers."""
    slaves = slave_domains(slaves_count)
    return (MASTER_DOMAIN, *slaves[:len(SLAVE_DOMAINS)], DIRECT_DOMAIN,
            *slaves[len(SLAVE_DOMAINS):])


def network_ips(count: int) -> tuple[str, ...]:
    """``count`` loopback addresses from 127.0.0.2, one per server (all of 127/8 is local on
    Linux): the seed's five servers keep 127.0.0.2-6 whatever the network's size."""
    return tuple(f"127.0.0.{2 + i}" for i in range(count))
MODULES_DIR = REPO_ROOT / "etc" / "prosody" / "modules"
DMUC_NS = "urn:xmpp:tmp:dmuc:0"
KINDS = ("message", "presence", "iq")


def slave_jid(domain: str) -> str:
    """The slave component serving ``domain``: ``dmuc.<domain>``."""
    return f"dmuc.{domain}"




def _port_free(ip: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((ip, port))
        except OSError:
            return False
    return True


# ----------------------------------------------------------------------------------------------
# one server of the network


@dataclass
class NetServer:
    """One Prosody of the network. ``role`` is "master", "slave" or "direct".

    ``s2s_port`` is Prosody's own s2s port; the SRV records point at ``s2s_public_port``,
    the counting proxy in front of it. ``component`` is the dmuc component this server hosts
    (``channel.avalon.irc``, ``dmuc.<domain>``) or None; ``secrets`` has every component's.
    """

    domain: str
    ip: str
    role: str
    prosody: ProsodyInstance
    s2s_public_port: int
    component: str | None = None
    secrets: dict[str, str] = field(default_factory=dict)

    @property
    def c2s_port(self) -> int:
        return self.prosody.c2s_port

    @property
    def component_port(self) -> int:
        return self.prosody.component_port

    @property
    def s2s_port(self) -> int:
        assert self.prosody.s2s_port is not None
        return self.prosody.s2s_port

    @property
    def secret(self) -> str | None:
        """The secret of :attr:`component`."""
        return self.secrets.get(self.component) if self.component else None

    @property
    def domains(self) -> list[str]:
        """Every domain this server hosts (users' domain and components)."""
        return [*self.prosody.virtualhosts, *(c.domain for c in self.prosody.components)]

    def __repr__(self) -> str:
        return (f"<NetServer {self.domain} {self.role} {self.ip} c2s={self.c2s_port} "
                f"component={self.component_port} s2s={self.s2s_port}"
                f"(public {self.s2s_public_port})>")


# ----------------------------------------------------------------------------------------------
# the counting s2s proxy, and the faults it can inject per link


@dataclass(frozen=True)
class S2SStanza:
    """One stanza that crossed an s2s link: the servers (main domains) and its attributes."""

    source: str
    target: str
    kind: str
    from_: str | None
    to: str | None
    type: str | None


class _StreamScanner:
    """Incremental parse of one direction of an XMPP stream: reports the stream header's
    attributes, then each complete top-level element (depth 2) by name and attributes."""

    def __init__(self, on_header: Callable[[dict[str, str]], None],
                 on_element: Callable[[str, dict[str, str]], None]) -> None:
        self.on_header = on_header
        self.on_element = on_element
        self.depth = 0
        self.top: tuple[str, dict[str, str]] | None = None
        self.broken = False
        self.parser = expat.ParserCreate()
        self.parser.StartElementHandler = self._start
        self.parser.EndElementHandler = self._end

    def _start(self, name: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        if self.depth == 1:
            self.on_header(attrs)
        elif self.depth == 2:
            self.top = (name, attrs)

    def _end(self, name: str) -> None:
        if self.depth == 2 and self.top is not None:
            self.on_element(*self.top)
            self.top = None
        self.depth -= 1

    def feed(self, data: bytes) -> None:
        if self.broken:
            return
        try:
            self.parser.Parse(data, False)
        except expat.ExpatError:
            self.broken = True  # e.g. a stream restart; stop counting this direction


# What a link does with the bytes that reach the proxy (see S2SCounter.set_fault).
LINK_MODES = ("ok", "cut", "blackhole", "oneway", "stall", "delay")


@dataclass
class LinkState:
    """The fault on one link (an unordered pair of servers). Lives in the proxy's loop; a
    change replaces it and sets the old one's ``changed``, to wake the writers it holds."""

    mode: str = "ok"
    delay: float = 0.0
    drop_from: str = ""  # oneway: the server whose bytes are thrown away
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class _Closed(Exception):
    """The connection was cut by a fault."""


class _Conn:
    """One proxied TCP connection: the connecting server's side (``client``) and the
    receiving server's side (``upstream``, opened when the first bytes are let through)."""

    def __init__(self, server: str, target: tuple[str, int],
                 client: asyncio.StreamWriter) -> None:
        self.server = server  # the receiving server (the route's)
        self.target = target  # its real s2s address
        self.source = "?"  # the connecting server, once its stream header names it
        self.client = client
        self.upstream: asyncio.StreamWriter | None = None
        self.upstream_ready: asyncio.Future[asyncio.StreamReader] | None = None
        self.dropped = False  # bytes were discarded (blackhole): its streams are broken
        self.closed = False

    @property
    def link(self) -> frozenset[str] | None:
        return None if self.source == "?" else frozenset((self.source, self.server))

    def abort(self) -> None:
        """Close both sides at once (buffered bytes are thrown away, as a reset would)."""
        self.closed = True
        for w in (self.client, self.upstream):
            if w is not None:
                w.transport.abort()


class S2SCounter:
    """TCP proxies in front of s2s ports that count the stanzas crossing them, and can
    break each link on purpose (:meth:`set_fault`).

    Runs its own asyncio loop in a daemon thread. ``resolve(domain)`` maps a domain named in a
    stream header to the server it belongs to (the key of the counts and of the links).

    Each direction of a connection is read into a queue at once and written out by a writer
    that applies the link's fault, so a delay is latency, not a throughput limit, and the
    order of the bytes never changes. A connection belongs to a link once the connecting
    server's stream header names it (its first bytes): nothing goes upstream before that
    is known, so a new connection on a cut or blackholed link never reaches the server.
    """

    def __init__(self, resolve: Callable[[str], str]) -> None:
        self.resolve = resolve
        self._routes: list[tuple[str, int, str, int, str]] = []
        self._cond = threading.Condition()
        self._counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        # stanzas a fault threw away, and stanzas read from their sender (forwarded or not)
        self._dropped: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self._seen: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self._log: list[S2SStanza] = []
        self.keep_log = True  # False: count only (a benchmark's millions of stanzas)
        # bytes forwarded, per (source, target) server
        self._bytes: Counter[tuple[str, str]] = Counter()
        self._async_waiters: list[tuple[Callable[[], bool], asyncio.AbstractEventLoop,
                                        asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conns: set[_Conn] = set()
        self._links: dict[frozenset[str], LinkState] = {}
        self.connections = 0  # accepted so far
        self.refused = 0  # new connections closed at once because their link was cut

    def add_route(self, listen_ip: str, listen_port: int, target_ip: str, target_port: int,
                  server: str) -> None:
        """Proxy ``listen_ip:listen_port`` to ``server``'s real s2s port (before start())."""
        self._routes.append((listen_ip, listen_port, target_ip, target_port, server))

    # -- counts

    def _record(self, item: S2SStanza, table: str = "forwarded") -> None:
        with self._cond:
            self.table(table)[(item.source, item.target)][item.kind] += 1
            if table == "forwarded" and self.keep_log:
                self._log.append(item)
            self._cond.notify_all()
            waiters = list(self._async_waiters)
        for pred, loop, fut in waiters:
            loop.call_soon_threadsafe(self._check_async, pred, fut)

    def table(self, name: str) -> dict[tuple[str, str], Counter[str]]:
        """The counts ``"forwarded"`` (what crossed), ``"dropped"`` (what a fault threw
        away) or ``"seen"`` (what the proxy read from the sender, held or not); read them
        under the counter's lock (as the predicates of wait() and wait_async() are)."""
        return {"forwarded": self._counts, "dropped": self._dropped, "seen": self._seen}[name]

    def _check_async(self, pred: Callable[[], bool], fut: asyncio.Future[None]) -> None:
        with self._cond:
            reached = pred()
        if reached and not fut.done():
            fut.set_result(None)

    def counts(self, source: str, target: str) -> dict[str, int]:
        """``{"message": n, "presence": n, "iq": n}`` sent by server ``source`` to ``target``."""
        with self._cond:
            c = self._counts.get((source, target), Counter())
            return {k: c[k] for k in KINDS}

    def bytes(self, source: str, target: str) -> int:
        """Bytes of s2s stream the proxy forwarded from server ``source`` to ``target``."""
        with self._cond:
            return self._bytes[(source, target)]

    def dropped(self, source: str, target: str) -> dict[str, int]:
        """Like :meth:`counts`, for the stanzas a fault threw away (blackhole, or queued in
        the proxy when the link was cut)."""
        with self._cond:
            c = self._dropped.get((source, target), Counter())
            return {k: c[k] for k in KINDS}

    def seen(self, source: str, target: str) -> dict[str, int]:
        """Like :meth:`counts`, for the stanzas the proxy read from ``source`` (forwarded,
        held by a stall or a delay, or dropped)."""
        with self._cond:
            c = self._seen.get((source, target), Counter())
            return {k: c[k] for k in KINDS}

    def log(self, source: str | None = None, target: str | None = None) -> list[S2SStanza]:
        with self._cond:
            return [s for s in self._log if (source is None or s.source == source)
                    and (target is None or s.target == target)]

    def reset(self) -> None:
        with self._cond:
            self._counts.clear()
            self._dropped.clear()
            self._seen.clear()
            self._log.clear()
            self._bytes.clear()

    def wait(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Block until ``pred()`` (evaluated under the counter's lock) holds; False on timeout."""
        with self._cond:
            return self._cond.wait_for(pred, timeout)

    async def wait_async(self, pred: Callable[[], bool], timeout: float) -> bool:
        """Like :meth:`wait`, for a coroutine on any event loop (no polling)."""
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[None] = loop.create_future()
        entry = (pred, loop, fut)
        with self._cond:
            if pred():
                return True
            self._async_waiters.append(entry)
        try:
            await asyncio.wait_for(fut, timeout)
            return True
        except TimeoutError:
            return False
        finally:
            with self._cond:
                self._async_waiters.remove(entry)

    # -- faults (called from any thread; applied in the proxy's loop)

    def _call(self, fn: Callable[..., Any], *args: Any) -> Any:
        loop = self._loop
        if loop is None:
            raise TestbedError("the s2s proxy is not running")

        async def call() -> Any:
            return fn(*args)

        return asyncio.run_coroutine_threadsafe(call(), loop).result(10)

    def set_fault(self, a: str, b: str, mode: str, delay: float = 0.0) -> int:
        """Break the link between servers ``a`` and ``b`` (both directions, every connection
        between them, whoever opened it):

        ``cut``        close its connections now (both sides at once, what was still queued in
                       the proxy is lost) and close every new one as soon as its stream header
                       names the link (before any byte reaches the other server);
        ``blackhole``  keep every connection open, accept new ones, forward nothing: the bytes
                       are read and thrown away, so both servers' writes succeed and nothing
                       arrives; nothing tells either side (it can only time out);
        ``oneway``     a blackhole for what ``a`` writes (on every connection of the link, so
                       ``a``'s stanzas and its answers on ``b``'s connections); what ``b``
                       writes passes;
        ``stall``      forward nothing but keep every byte, in order, until the link is healed
                       or changed (TCP's view of a stall: nothing is lost);
        ``delay``      forward every byte ``delay`` seconds after it reached the proxy;
        ``ok``         heal: see :meth:`heal`.

        Returns how many connections the link had when the fault was set."""
        if mode not in LINK_MODES:
            raise ValueError(f"unknown link mode {mode!r}; use one of {LINK_MODES}")
        if mode == "delay" and delay <= 0:
            raise ValueError("a delay needs delay > 0")
        return int(self._call(self._set_fault, frozenset((a, b)), mode, float(delay),
                              a if mode == "oneway" else ""))

    def heal(self, a: str, b: str) -> int:
        """Back to normal: stalled and delayed bytes go on (in order); connections that lost
        bytes in a blackhole are closed (their XML streams are broken; a real network would
        have reset them), so both servers open new ones. Returns how many were closed."""
        return int(self._call(self._set_fault, frozenset((a, b)), "ok", 0.0))

    def heal_all(self) -> None:
        """Heal every link that has a fault."""
        for link in self._call(lambda: [k for k, v in self._links.items() if v.mode != "ok"]):
            a, b = sorted(link)
            self.heal(a, b)

    def fault(self, a: str, b: str) -> tuple[str, float]:
        """``(mode, delay)`` of the link between ``a`` and ``b``."""
        state = self._call(self._links.get, frozenset((a, b)))
        return ("ok", 0.0) if state is None else (state.mode, state.delay)

    def link_connections(self, a: str, b: str) -> int:
        """Open connections on the link between ``a`` and ``b`` (either direction)."""
        link = frozenset((a, b))
        return self._call(lambda: sum(1 for c in self._conns if c.link == link and not c.closed))

    def _state(self, link: frozenset[str] | None) -> LinkState | None:
        return None if link is None else self._links.get(link)

    def _set_fault(self, link: frozenset[str], mode: str, delay: float,
                   drop_from: str = "") -> int:
        old = self._links.get(link)
        affected = [c for c in self._conns if c.link == link and not c.closed]
        self._links[link] = LinkState(mode, delay if mode == "delay" else 0.0, drop_from)
        if old is not None:
            old.changed.set()  # wake writers held by the old state; they look again
        if mode == "cut":
            for conn in affected:
                conn.abort()
            return len(affected)
        if mode == "ok":
            broken = [c for c in affected if c.dropped]
            for conn in broken:
                conn.abort()
            return len(broken)
        return len(affected)

    # -- proxying

    def _spawn(self, coro: Any) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _scanner(self, conn: _Conn, towards_server: bool,
                 found: list[S2SStanza]) -> _StreamScanner:
        """Counts one direction; the connecting server's header also names the link."""
        link = {"source": "?", "target": conn.server} if towards_server \
            else {"source": conn.server, "target": "?"}

        def on_header(attrs: dict[str, str]) -> None:
            if attrs.get("from"):
                link["source"] = self.resolve(attrs["from"])
                if towards_server:
                    conn.source = link["source"]
            if attrs.get("to"):
                link["target"] = self.resolve(attrs["to"])

        def on_element(name: str, attrs: dict[str, str]) -> None:
            if name in KINDS:
                found.append(S2SStanza(link["source"], link["target"], name,
                                       attrs.get("from"), attrs.get("to"), attrs.get("type")))

        return _StreamScanner(on_header, on_element)

    async def _read(self, conn: _Conn, reader: asyncio.StreamReader,
                    queue: asyncio.Queue[Any], towards_server: bool) -> None:
        """Read one direction into ``queue``: (when read, data, stanzas completed by it)."""
        found: list[S2SStanza] = []
        scanner = self._scanner(conn, towards_server, found)
        try:
            while data := await reader.read(65536):
                scanner.feed(data)
                items = found[:]
                found.clear()
                for item in items:
                    self._record(item, "seen")
                state = self._state(conn.link)
                due = time.monotonic() + (state.delay if state is not None else 0.0)
                queue.put_nowait((due, data, items))
        except (ConnectionError, OSError):
            pass
        finally:
            queue.put_nowait(None)

    async def _gate(self, conn: _Conn, due: float, sender: str) -> bool:
        """Wait until the link lets these bytes (written by server ``sender``) through:
        True to write them, False to drop them; raises _Closed if the link is cut."""
        while True:
            state = self._state(conn.link)
            if conn.closed:
                raise _Closed
            if state is not None and state.mode == "cut":
                if conn.upstream is None:
                    self.refused += 1
                conn.abort()
                raise _Closed
            if state is not None and (state.mode == "blackhole" or (
                    state.mode == "oneway" and state.drop_from == sender)):
                conn.dropped = True
                return False
            if conn.dropped:  # healed after losing bytes: this stream is broken
                conn.abort()
                raise _Closed
            wait = None if state is not None and state.mode == "stall" \
                else due - time.monotonic()
            if wait is not None and wait <= 0:
                return True
            assert state is not None  # only a (once) faulted link holds bytes back
            try:
                await asyncio.wait_for(state.changed.wait(), wait)
            except TimeoutError:
                return True

    async def _write(self, conn: _Conn, queue: asyncio.Queue[Any], towards_server: bool) -> None:
        """Write one direction out of ``queue`` through the link's fault."""
        try:
            while (item := await queue.get()) is not None:
                _, data, items = item
                sender = conn.source if towards_server else conn.server
                if not await self._gate(conn, item[0], sender):
                    for s in items:
                        self._record(s, "dropped")
                    continue
                if towards_server and conn.upstream is None:
                    await self._open_upstream(conn)
                writer = conn.upstream if towards_server else conn.client
                assert writer is not None
                writer.write(data)
                with self._cond:
                    self._bytes[(conn.source, conn.server) if towards_server
                                else (conn.server, conn.source)] += len(data)
                await writer.drain()
                for s in items:  # counted once forwarded
                    self._record(s)
        except (ConnectionError, OSError, _Closed):
            pass
        finally:
            if towards_server:
                if conn.upstream_ready is not None and not conn.upstream_ready.done():
                    conn.upstream_ready.cancel()  # never opened: the other side ends too
                if conn.upstream is not None:
                    conn.upstream.close()
                else:
                    conn.client.close()
            else:
                conn.client.close()
            # what is still queued was lost with the connection
            while not queue.empty():
                rest = queue.get_nowait()
                for s in (rest[2] if rest is not None else ()):
                    self._record(s, "dropped")

    async def _open_upstream(self, conn: _Conn) -> None:
        assert conn.upstream_ready is not None
        reader, writer = await asyncio.open_connection(*conn.target)
        conn.upstream = writer
        if conn.closed:
            writer.transport.abort()
            raise _Closed
        conn.upstream_ready.set_result(reader)

    async def _answers(self, conn: _Conn) -> None:
        """The receiving server's answering stream, once the connection reaches it."""
        assert conn.upstream_ready is not None
        try:
            reader = await conn.upstream_ready
        except asyncio.CancelledError:
            return
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await asyncio.gather(self._read(conn, reader, queue, False),
                             self._write(conn, queue, False))

    async def _handle(self, target_ip: str, target_port: int, server: str,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = _Conn(server, (target_ip, target_port), writer)
        conn.upstream_ready = asyncio.get_running_loop().create_future()
        self._conns.add(conn)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        try:
            # the connecting server -> ``server``, and ``server``'s answering stream
            await asyncio.gather(self._read(conn, reader, queue, True),
                                 self._write(conn, queue, True), self._answers(conn))
        finally:
            conn.closed = True
            self._conns.discard(conn)

    async def _start_servers(self) -> None:
        for listen_ip, listen_port, target_ip, target_port, server in self._routes:
            def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, *,
                        args: tuple[str, int, str] = (target_ip, target_port, server)) -> None:
                self._spawn(self._handle(*args, r, w))

            self._servers.append(await asyncio.start_server(
                handler, listen_ip, listen_port, reuse_address=True))

    def start(self) -> S2SCounter:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="s2s-counter",
                                        daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start_servers(), loop).result(10)
        return self

    async def _shutdown(self) -> None:
        for srv in self._servers:
            srv.close()
        for conn in list(self._conns):
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._servers.clear()
        self._links.clear()

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is None:
            return
        try:
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(5)
        finally:
            loop.call_soon_threadsafe(loop.stop)
            if self._thread is not None:
                self._thread.join(5)
            loop.close()


# ----------------------------------------------------------------------------------------------
# the network


class DmucNetwork:
    """The Prosody servers linked by s2s, a dnsmasq and the counting s2s proxy: the seed's
    five, or with ``slaves_count`` K another number of users' servers with a slave (K=10
    for the scale benchmark: :func:`network_domains`, each Prosody configured as the others).

    ``slaves=False`` leaves out the slave components and mod_dmuc_slave (every user then
    reaches the master over s2s: the baseline for counting). ``extra_components`` adds
    Component blocks to servers (``{domain: [ComponentSpec, ...]}``); ``c2s_port`` asks for
    that c2s port on every server's address (e.g. 5222 for a demo; a taken one falls back to
    a free port). ``workdir`` is made traversable by user prosody when we are root.
    """

    def __init__(
        self,
        workdir: Path | str,
        *,
        slaves: bool = True,
        extra_components: Mapping[str, Sequence[ComponentSpec]] | None = None,
        ips: Sequence[str] | None = None,
        c2s_port: int | None = None,
        log_level: str = "debug",
        slaves_count: int = len(SLAVE_DOMAINS),
        extra_modules: Sequence[str] = (),
        extra_config: str = "",
    ) -> None:
        domains = network_domains(slaves_count)
        ips = network_ips(len(domains)) if ips is None else ips
        if len(ips) < len(domains):
            raise ValueError(f"need {len(domains)} addresses")
        self.workdir = Path(workdir).resolve()
        self.slaves = slaves
        self.slave_domains = slave_domains(slaves_count)
        self.servers: dict[str, NetServer] = {}
        self._domain_owner: dict[str, str] = {}
        extra = dict(extra_components or {})
        self.extra_modules, self.extra_config = list(extra_modules), extra_config
        for domain, ip in zip(domains, ips):
            self.servers[domain] = self._make_server(
                domain, ip, list(extra.get(domain, ())), c2s_port, log_level)
        for server in self.servers.values():
            for d in server.domains:
                self._domain_owner[d] = server.domain
        self.dns = Dnsmasq(self.workdir / "dnsmasq", records=self.dns_records())
        for server in self.servers.values():
            server.prosody.dns_port = self.dns.port
        self.counter = S2SCounter(self._resolve)
        for server in self.servers.values():
            self.counter.add_route(server.ip, server.s2s_public_port, server.ip,
                                   server.s2s_port, server.domain)
        self.started = False
        self.start_time: float | None = None  # seconds start() took

    def _make_server(self, domain: str, ip: str, extra: list[ComponentSpec],
                     c2s_port: int | None, log_level: str) -> NetServer:
        components: list[ComponentSpec] = []
        host_options: dict[str, dict[str, Any]] = {}
        plugin_paths: list[Path] = []
        role, component = "direct", None
        if domain == MASTER_DOMAIN:
            role, component = "master", MUC_SERVICE
            # mod_dmuc_hold: what is sent to the master while it is down waits for it
            components.append(ComponentSpec(MUC_SERVICE, secrets.token_hex(16),
                                            modules=["dmuc_hold"]))
            plugin_paths.append(MODULES_DIR)
        elif domain in self.slave_domains:
            role = "slave"
            if self.slaves:
                component = slave_jid(domain)
                components.append(ComponentSpec(component, secrets.token_hex(16),
                                                options={"validate_from_addresses": False}))
                host_options[domain] = {"modules_enabled": ["dmuc_slave"],
                                        "dmuc_slave_component": component}
                plugin_paths.append(MODULES_DIR)
        components += extra
        if c2s_port is not None and not _port_free(ip, c2s_port):
            c2s_port = None
        prosody = ProsodyInstance(
            self.workdir / domain, ip=ip, c2s_port=c2s_port, s2s_port=free_port(ip),
            virtualhosts=[domain], components=components, plugin_paths=plugin_paths,
            host_options=host_options, log_level=log_level,
            extra_modules=self.extra_modules, extra_config=self.extra_config,
        )
        return NetServer(domain=domain, ip=ip, role=role, prosody=prosody,
                         s2s_public_port=free_port(ip), component=component,
                         secrets={c.domain: c.secret for c in components})

    # -- lookups

    def _resolve(self, domain: str) -> str:
        return self._domain_owner.get(domain.lower(), domain)

    def server(self, jid_or_domain: str) -> NetServer:
        """The server hosting a domain, component or JID (``argl@killrc.oulubox.irc/x``)."""
        domain = jid_or_domain.split("@", 1)[-1].split("/", 1)[0].lower()
        try:
            return self.servers[self._domain_owner[domain]]
        except KeyError:
            raise KeyError(f"no server of this network hosts {domain!r}") from None

    @property
    def master(self) -> NetServer:
        return self.servers[MASTER_DOMAIN]

    @property
    def slave_servers(self) -> list[NetServer]:
        return [self.servers[d] for d in self.slave_domains]

    def dns_records(self) -> dict[str, tuple[str, int]]:
        """Every domain -> (its server's address, the counting proxy's port)."""
        return {d: (s.ip, s.s2s_public_port) for s in self.servers.values() for d in s.domains}

    def processes(self) -> list[Any]:
        return [self.dns, *(s.prosody for s in self.servers.values())]

    # -- lifecycle

    def _prepare_workdir(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:  # Prosody runs as user prosody and must reach its subdir
            self.workdir.chmod(self.workdir.stat().st_mode | 0o711)

    def start(self) -> DmucNetwork:
        """Start dnsmasq, the proxy and every Prosody server (in parallel)."""
        if self.started:
            raise TestbedError("network already started")
        began = time.monotonic()
        self._prepare_workdir()
        self.started = True
        try:
            self.dns.start()
            self.counter.start()
            with ThreadPoolExecutor(len(self.servers)) as pool:
                futures = [pool.submit(s.prosody.start) for s in self.servers.values()]
                errors = [f.exception() for f in futures]
            failed = [e for e in errors if e is not None]
            if failed:
                raise failed[0]
        except BaseException:
            self.stop()
            raise
        self.start_time = time.monotonic() - began
        return self

    def stop(self) -> None:
        """Stop every Prosody and dnsmasq (SIGTERM by PID, in parallel) and the proxy."""
        try:
            stop_all(*self.processes())
        finally:
            self.counter.stop()
            self.started = False

    def __enter__(self) -> DmucNetwork:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- s2s counting

    def s2s_counts(self, target: str, source: str = MASTER_DOMAIN) -> dict[str, int]:
        """``{"message": n, "presence": n, "iq": n}``: stanzas the server of ``source`` sent
        over s2s to the server of ``target`` since the last :meth:`reset_counts`."""
        return self.counter.counts(self.server(source).domain, self.server(target).domain)

    def s2s_log(self, target: str | None = None,
                source: str | None = MASTER_DOMAIN) -> list[S2SStanza]:
        """The stanzas counted so far (optionally only ``source`` -> ``target``)."""
        return self.counter.log(self.server(source).domain if source else None,
                                self.server(target).domain if target else None)

    def s2s_bytes(self, target: str, source: str = MASTER_DOMAIN) -> int:
        """Bytes the server of ``source`` sent over s2s to the server of ``target``."""
        return self.counter.bytes(self.server(source).domain, self.server(target).domain)

    def reset_counts(self) -> None:
        self.counter.reset()

    def _reached(self, target: str, source: str, at_least: Mapping[str, int],
                 table: str = "forwarded") -> Callable[[], bool]:
        unknown = set(at_least) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown stanza kinds {sorted(unknown)}; use {KINDS}")
        src, dst = self.server(source).domain, self.server(target).domain
        counts = self.counter.table(table)  # read under the lock by wait()/wait_async()
        return lambda: all(counts.get((src, dst), Counter())[k] >= n
                           for k, n in at_least.items())

    def _timeout_error(self, target: str, source: str, at_least: Mapping[str, int],
                       timeout: float, table: str = "forwarded") -> TimeoutError:
        seen = "\n".join(f"  {s}" for s in self.s2s_log(target, source)) or "  (nothing)"
        src, dst = self.server(source).domain, self.server(target).domain
        have = {"forwarded": self.counter.counts, "dropped": self.counter.dropped,
                "seen": self.counter.seen}[table](src, dst)
        return TimeoutError(
            f"s2s {source} -> {target}: wanted at least {dict(at_least)} {table} within "
            f"{timeout} s, have {have}; forwarded stanzas:\n{seen}")

    def wait_counts(self, target: str, *, source: str = MASTER_DOMAIN, timeout: float = 10.0,
                    **at_least: int) -> dict[str, int]:
        """Block until ``source``'s server has sent ``target``'s at least these many stanzas
        (``message=1, iq=2``); returns the counts. Raises TimeoutError."""
        if not self.counter.wait(self._reached(target, source, at_least), timeout):
            raise self._timeout_error(target, source, at_least, timeout)
        return self.s2s_counts(target, source)

    async def await_counts(self, target: str, *, source: str = MASTER_DOMAIN,
                           timeout: float = 10.0, table: str = "forwarded",
                           **at_least: int) -> dict[str, int]:
        """:meth:`wait_counts` for coroutines (the test clients' event loop keeps running).
        ``table="seen"`` waits for stanzas the proxy has read (e.g. held by a stall),
        ``table="dropped"`` for stanzas a fault threw away."""
        pred = self._reached(target, source, at_least, table)
        if not await self.counter.wait_async(pred, timeout):
            raise self._timeout_error(target, source, at_least, timeout, table)
        return self.s2s_counts(target, source)

    # -- faults on the s2s links (see S2SCounter.set_fault); a link is a pair of servers,
    # named by any of their domains or JIDs, both directions

    def _pair(self, a: str, b: str) -> tuple[str, str]:
        pa, pb = self.server(a).domain, self.server(b).domain
        if pa == pb:
            raise ValueError(f"{a} and {b} are on the same server: there is no s2s link")
        return pa, pb

    def cut(self, a: str, b: str = MASTER_DOMAIN) -> int:
        """Close the link's connections and refuse new ones (until :meth:`heal`)."""
        return self.counter.set_fault(*self._pair(a, b), "cut")

    def blackhole(self, a: str, b: str = MASTER_DOMAIN) -> int:
        """Keep the link's connections open and forward nothing (until :meth:`heal`)."""
        return self.counter.set_fault(*self._pair(a, b), "blackhole")

    def oneway(self, a: str, b: str = MASTER_DOMAIN) -> int:
        """Throw away what ``a`` writes to ``b`` (keeping the connections open); what ``b``
        writes to ``a`` passes (until :meth:`heal`)."""
        return self.counter.set_fault(*self._pair(a, b), "oneway")

    def stall(self, a: str, b: str = MASTER_DOMAIN) -> int:
        """Hold every byte on the link, losing none, until :meth:`heal`."""
        return self.counter.set_fault(*self._pair(a, b), "stall")

    def delay(self, a: str, b: str = MASTER_DOMAIN, seconds: float = 1.0) -> int:
        """Forward every byte on the link ``seconds`` late (until :meth:`heal`)."""
        return self.counter.set_fault(*self._pair(a, b), "delay", seconds)

    def heal(self, a: str, b: str = MASTER_DOMAIN) -> int:
        """Back to normal; held bytes go on; blackholed connections are closed."""
        return self.counter.heal(*self._pair(a, b))

    def heal_all(self) -> None:
        self.counter.heal_all()

    def link_fault(self, a: str, b: str = MASTER_DOMAIN) -> tuple[str, float]:
        """``(mode, delay)`` of a link: ``("ok", 0.0)`` when healthy."""
        return self.counter.fault(*self._pair(a, b))

    def link_connections(self, a: str, b: str = MASTER_DOMAIN) -> int:
        """Open s2s connections between the two servers (either direction)."""
        return self.counter.link_connections(*self._pair(a, b))

    def s2s_dropped(self, target: str, source: str = MASTER_DOMAIN) -> dict[str, int]:
        """Stanzas from ``source``'s server to ``target``'s that a fault threw away."""
        return self.counter.dropped(self.server(source).domain, self.server(target).domain)

    def s2s_seen(self, target: str, source: str = MASTER_DOMAIN) -> dict[str, int]:
        """Stanzas from ``source``'s server to ``target``'s that reached the proxy
        (forwarded, held, or dropped)."""
        return self.counter.seen(self.server(source).domain, self.server(target).domain)

    # -- dmuc daemon configs

    def master_config(self, db_path: Path | str, extra_toml: str = "", *,
                      level: str = "debug", admins: Sequence[str] = (),
                      storage_url: str | None = None) -> str:
        """TOML for ``dmuc-master`` as ``channel.avalon.irc``, with the network's slaves
        (and ``admins``: the service's admins, ``[muc] admins``; storage: the SQLite file
        ``db_path``, or ``storage_url``)."""
        m = self.master
        muc: dict[str, Any] = {"room_locking": False}
        if admins:
            muc["admins"] = list(admins)
        return daemon_toml(
            jid=MUC_SERVICE, host=m.ip, port=m.component_port, secret=m.secrets[MUC_SERVICE],
            db_path=db_path, tables={"muc": muc}, level=level,
            slaves={slave_jid(d): [d] for d in self.slave_domains} if self.slaves else None,
            extra_toml=extra_toml, storage_url=storage_url,
        )

    def slave_config(self, domain: str, db_path: Path | str, extra_toml: str = "", *,
                     keepalive: int = 60, history: int = 20, level: str = "debug",
                     storage_url: str | None = None) -> str:
        """TOML for ``dmuc-slave`` serving the users of ``domain`` (a slave server).
        ``keepalive`` (seconds, 2-3600) is also what the master uses towards this slave."""
        s = self.server(domain)
        if s.role != "slave" or s.component is None:
            raise ValueError(f"{domain} has no slave component (slaves={self.slaves})")
        return daemon_toml(
            jid=s.component, host=s.ip, port=s.component_port, secret=s.secrets[s.component],
            db_path=db_path, extra_toml=extra_toml, level=level, storage_url=storage_url,
            tables={"slave": {"domains": [s.domain], "masters": [MUC_SERVICE],
                              "keepalive": keepalive, "history": history}},
        )

    def __repr__(self) -> str:
        state = "started" if self.started else "stopped"
        return f"<DmucNetwork {state} {self.workdir} {list(self.servers.values())}>"
