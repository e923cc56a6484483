"""A multi-server XMPP network on loopback, for dmuc master/slave tests, demos and benchmarks.

Five Prosody servers, each on its own loopback address, linked by real s2s (dialback, no TLS);
a dnsmasq answers A and SRV records for every domain instantly:

==================  =========================================================================
avalon.irc          users, and the Component ``channel.avalon.irc`` for the dmuc master
killrc.oulubox.irc  users (mod_dmuc_slave) and the slave Component ``dmuc.killrc.oulubox.irc``
eris.dclxvii.irc    users (mod_dmuc_slave) and the slave Component ``dmuc.eris.dclxvii.irc``
vesa.yeggmaex.irc   users (mod_dmuc_slave) and the slave Component ``dmuc.vesa.yeggmaex.irc``
efnet.irc           users only: they join the master directly over s2s
==================  =========================================================================

No dmuc daemon is started here: :meth:`DmucNetwork.master_config` and
:meth:`DmucNetwork.slave_config` give the TOML for ``TwistdDaemon("dmuc-master", ...)`` and
``TwistdDaemon("dmuc-slave", ...)``.

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
# one loopback address per server (all of 127/8 is local on Linux)
DEFAULT_IPS = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")
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
# the counting s2s proxy


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


class S2SCounter:
    """TCP proxies in front of s2s ports that count the stanzas crossing them.

    Runs its own asyncio loop in a daemon thread. ``resolve(domain)`` maps a domain named in a
    stream header to the server it belongs to (the key of the counts).
    """

    def __init__(self, resolve: Callable[[str], str]) -> None:
        self.resolve = resolve
        self._routes: list[tuple[str, int, str, int, str]] = []
        self._cond = threading.Condition()
        self._counts: dict[tuple[str, str], Counter[str]] = defaultdict(Counter)
        self._log: list[S2SStanza] = []
        self._async_waiters: list[tuple[Callable[[], bool], asyncio.AbstractEventLoop,
                                        asyncio.Future[None]]] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._servers: list[asyncio.Server] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0

    def add_route(self, listen_ip: str, listen_port: int, target_ip: str, target_port: int,
                  server: str) -> None:
        """Proxy ``listen_ip:listen_port`` to ``server``'s real s2s port (before start())."""
        self._routes.append((listen_ip, listen_port, target_ip, target_port, server))

    # -- counts

    def _record(self, item: S2SStanza) -> None:
        with self._cond:
            self._counts[(item.source, item.target)][item.kind] += 1
            self._log.append(item)
            self._cond.notify_all()
            waiters = list(self._async_waiters)
        for pred, loop, fut in waiters:
            loop.call_soon_threadsafe(self._check_async, pred, fut)

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

    def log(self, source: str | None = None, target: str | None = None) -> list[S2SStanza]:
        with self._cond:
            return [s for s in self._log if (source is None or s.source == source)
                    and (target is None or s.target == target)]

    def reset(self) -> None:
        with self._cond:
            self._counts.clear()
            self._log.clear()

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

    # -- proxying

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                    scanner: _StreamScanner) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
                scanner.feed(data)  # counted once forwarded
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    async def _handle(self, target_ip: str, target_port: int, server: str,
                      reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(target_ip, target_port)
        except OSError:
            writer.close()
            return

        def scanner(default_source: str, default_target: str) -> _StreamScanner:
            link = {"source": default_source, "target": default_target}

            def on_header(attrs: dict[str, str]) -> None:
                if attrs.get("from"):
                    link["source"] = self.resolve(attrs["from"])
                if attrs.get("to"):
                    link["target"] = self.resolve(attrs["to"])

            def on_element(name: str, attrs: dict[str, str]) -> None:
                if name in KINDS:
                    self._record(S2SStanza(link["source"], link["target"], name,
                                           attrs.get("from"), attrs.get("to"),
                                           attrs.get("type")))

            return _StreamScanner(on_header, on_element)

        # the connecting server -> ``server``, and ``server``'s answering stream
        await asyncio.gather(
            self._pump(reader, up_writer, scanner("?", server)),
            self._pump(up_reader, writer, scanner(server, "?")),
        )

    async def _start_servers(self) -> None:
        for listen_ip, listen_port, target_ip, target_port, server in self._routes:
            def handler(r: asyncio.StreamReader, w: asyncio.StreamWriter, *,
                        args: tuple[str, int, str] = (target_ip, target_port, server)) -> None:
                task = asyncio.ensure_future(self._handle(*args, r, w))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)

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
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._servers.clear()

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
    """Five Prosody servers linked by s2s, a dnsmasq and the counting s2s proxy.

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
        ips: Sequence[str] = DEFAULT_IPS,
        c2s_port: int | None = None,
        log_level: str = "debug",
    ) -> None:
        if len(ips) < len(DOMAINS):
            raise ValueError(f"need {len(DOMAINS)} addresses")
        self.workdir = Path(workdir).resolve()
        self.slaves = slaves
        self.servers: dict[str, NetServer] = {}
        self._domain_owner: dict[str, str] = {}
        extra = dict(extra_components or {})
        for domain, ip in zip(DOMAINS, ips):
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
            components.append(ComponentSpec(MUC_SERVICE, secrets.token_hex(16)))
        elif domain in SLAVE_DOMAINS:
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
        return [self.servers[d] for d in SLAVE_DOMAINS]

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
        """Start dnsmasq, the proxy and the five Prosody servers (in parallel)."""
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

    def reset_counts(self) -> None:
        self.counter.reset()

    def _reached(self, target: str, source: str, at_least: Mapping[str, int]
                 ) -> Callable[[], bool]:
        unknown = set(at_least) - set(KINDS)
        if unknown:
            raise ValueError(f"unknown stanza kinds {sorted(unknown)}; use {KINDS}")
        src, dst = self.server(source).domain, self.server(target).domain
        counts = self.counter._counts  # read under the counter's lock by wait()/wait_async()
        return lambda: all(counts.get((src, dst), Counter())[k] >= n
                           for k, n in at_least.items())

    def _timeout_error(self, target: str, source: str, at_least: Mapping[str, int],
                       timeout: float) -> TimeoutError:
        seen = "\n".join(f"  {s}" for s in self.s2s_log(target, source)) or "  (nothing)"
        return TimeoutError(
            f"s2s {source} -> {target}: wanted at least {dict(at_least)} within {timeout} s, "
            f"have {self.s2s_counts(target, source)}; stanzas:\n{seen}")

    def wait_counts(self, target: str, *, source: str = MASTER_DOMAIN, timeout: float = 10.0,
                    **at_least: int) -> dict[str, int]:
        """Block until ``source``'s server has sent ``target``'s at least these many stanzas
        (``message=1, iq=2``); returns the counts. Raises TimeoutError."""
        if not self.counter.wait(self._reached(target, source, at_least), timeout):
            raise self._timeout_error(target, source, at_least, timeout)
        return self.s2s_counts(target, source)

    async def await_counts(self, target: str, *, source: str = MASTER_DOMAIN,
                           timeout: float = 10.0, **at_least: int) -> dict[str, int]:
        """:meth:`wait_counts` for coroutines (the test clients' event loop keeps running)."""
        if not await self.counter.wait_async(self._reached(target, source, at_least), timeout):
            raise self._timeout_error(target, source, at_least, timeout)
        return self.s2s_counts(target, source)

    # -- dmuc daemon configs

    def master_config(self, db_path: Path | str, extra_toml: str = "") -> str:
        """TOML for ``dmuc-master`` as ``channel.avalon.irc``, with the network's slaves."""
        m = self.master
        return daemon_toml(
            jid=MUC_SERVICE, host=m.ip, port=m.component_port, secret=m.secrets[MUC_SERVICE],
            db_path=db_path, tables={"muc": {"room_locking": False}},
            slaves={slave_jid(d): [d] for d in SLAVE_DOMAINS} if self.slaves else None,
            extra_toml=extra_toml,
        )

    def slave_config(self, domain: str, db_path: Path | str, extra_toml: str = "") -> str:
        """TOML for ``dmuc-slave`` serving the users of ``domain`` (a slave server)."""
        s = self.server(domain)
        if s.role != "slave" or s.component is None:
            raise ValueError(f"{domain} has no slave component (slaves={self.slaves})")
        return daemon_toml(
            jid=s.component, host=s.ip, port=s.component_port, secret=s.secrets[s.component],
            db_path=db_path, extra_toml=extra_toml,
            tables={"slave": {"domains": [s.domain], "masters": [MUC_SERVICE],
                              "keepalive": 60, "history": 20}},
        )

    def __repr__(self) -> str:
        state = "started" if self.started else "stopped"
        return f"<DmucNetwork {state} {self.workdir} {list(self.servers.values())}>"
