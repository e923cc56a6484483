"""Throwaway Prosody (and dnsmasq) instances on loopback, for tests, demos and benchmarks.

Prosody refuses to run as root, so when we are root it is started as user ``prosody`` through
``setpriv`` (which execs Prosody: the Popen PID is the server's PID). Everything is plain TCP:
no TLS, insecure open authentication (any password works), nothing leaves loopback.
"""

from __future__ import annotations

import abc
import atexit
import os
import pwd
import random
import re
import shutil
import signal
import socket
import stat
import struct
import subprocess
import time
import weakref
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from testbed import logtails

PROSODY_USER = "prosody"
READY_TIMEOUT = 10.0


class TestbedError(RuntimeError):
    """A throwaway server could not be started (the message carries its log tail)."""

    __test__ = False  # not a pytest test class


# ----------------------------------------------------------------------------------------------
# small helpers


# Ports handed out by free_port in this process: never handed out twice.
_HANDED_OUT: set[int] = set()
LOWEST_PORT = 10_000


def ephemeral_low() -> int:
    """The lowest port the kernel picks for a connection's source port."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            return int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(ip: str = "127.0.0.1") -> int:
    """A TCP port free on ``ip`` now, for a server started next. It is taken below the
    kernel's ephemeral range: a port the kernel gave us (bind to port 0) could become
    the source port of any connection opened before the server binds it (a CI run lost
    13 tests to "this port is in use" that way). Never the same port twice."""
    high = ephemeral_low()
    for _ in range(500 if high > LOWEST_PORT else 0):
        port = random.randrange(LOWEST_PORT, high)
        if port in _HANDED_OUT:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind((ip, port))
            except OSError:
                continue
        _HANDED_OUT.add(port)
        return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:  # none found: the kernel's
        s.bind((ip, 0))
        return s.getsockname()[1]


def tail(path: Path, lines: int = 40) -> str:
    """The last ``lines`` lines of a text file ('' if it does not exist)."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def stop_process(proc: subprocess.Popen[Any], timeout: float = 5.0) -> int | None:
    """SIGTERM ``proc`` by PID, wait up to ``timeout`` s, then SIGKILL. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.send_signal(signal.SIGTERM)
            return proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
        except ProcessLookupError:
            pass
    return proc.wait()


def kill_process(proc: subprocess.Popen[Any]) -> int | None:
    """SIGKILL ``proc`` by PID (kill -9) and reap it. Returns the exit code."""
    if proc.poll() is None:
        try:
            proc.kill()
        except ProcessLookupError:
            pass
    return proc.wait()


def stop_all(*servers: Any, timeout: float = 5.0) -> None:
    """SIGTERM every server first, then wait for each (Prosody with s2s links takes ~1 s to
    stop, so stopping several in parallel saves time). Accepts anything with .proc/.stop()."""
    for server in servers:
        proc = getattr(server, "proc", None)
        if proc is not None and proc.poll() is None:
            try:
                proc.send_signal(signal.SIGTERM)
            except ProcessLookupError:
                pass
    for server in servers:
        server.stop(timeout)


def _port_open(ip: str, port: int) -> bool:
    try:
        with socket.create_connection((ip, port), timeout=0.5):
            return True
    except OSError:
        return False


def _lua_str(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


_LUA_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def lua(value: Any) -> str:
    """Render a Python value as a Lua literal for a Prosody config file."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return _lua_str(str(value))
    if isinstance(value, Mapping):
        items = [
            f"{k} = {lua(v)}" if _LUA_IDENT.match(str(k)) else f"[{lua(k)}] = {lua(v)}"
            for k, v in value.items()
        ]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    if isinstance(value, Iterable):
        items = [lua(v) for v in value]
        return "{ " + ", ".join(items) + " }" if items else "{}"
    raise TypeError(f"cannot render {value!r} as Lua")


def _lua_options(options: Mapping[str, Any] | str, indent: str = "") -> str:
    if isinstance(options, str):
        return "\n".join(indent + line.strip() for line in options.splitlines() if line.strip())
    return "\n".join(f"{indent}{k} = {lua(v)}" for k, v in options.items())


def _check_traversable(path: Path, uid: int, gid: int) -> None:
    """Fail early if user ``uid`` could not reach ``path`` (e.g. under a 0700 pytest tmp dir)."""
    for parent in path.resolve().parents:
        st = parent.stat()
        if st.st_uid == uid or st.st_mode & stat.S_IXOTH:
            continue
        if st.st_gid == gid and st.st_mode & stat.S_IXGRP:
            continue
        raise TestbedError(
            f"{parent} is not traversable by user {PROSODY_USER!r}, so Prosody cannot reach "
            f"{path}; use e.g. tempfile.mkdtemp() itself as the workdir (it gets chowned)"
        )


# every live instance is stopped at interpreter exit, even if a test forgot to
_live: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:
    for inst in list(_live):
        inst.stop()


# ----------------------------------------------------------------------------------------------
# Prosody


class Pausable(abc.ABC):
    """SIGSTOP/SIGCONT of a process the testbed started, by PID (a fault a test injects:
    the process keeps its sockets but runs no code until resume())."""

    proc: subprocess.Popen[bytes] | None
    paused: bool
    label = "the process"

    @abc.abstractmethod
    def running(self) -> bool: ...

    def pause(self) -> None:
        if not self.running():
            raise TestbedError(f"{self.label} is not running")
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)
        self.paused = True

    def resume(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
        self.paused = False


@dataclass
class ComponentSpec:
    """An XEP-0114 external component block of the Prosody config."""

    domain: str
    secret: str
    # extra lines for the Component block: a dict of option -> value, or raw Lua lines
    options: Mapping[str, Any] | str = field(default_factory=dict)
    modules: list[str] = field(default_factory=list)
    # an internal component instead (e.g. "muc": Prosody's own mod_muc); no secret then
    plugin: str | None = None


# global modules for a client to log in, bind, talk, and for vCard/disco/ping to answer
DEFAULT_MODULES = [
    "roster",
    "saslauth",
    "disco",
    "ping",
    "time",
    "version",
    "vcard_legacy",
    "pep",
]


class ProsodyInstance(Pausable):
    """A Prosody server in ``workdir`` (config, data, log, pidfile), plain TCP on ``ip``.

    ``c2s_port``/``component_port`` default to free ports. s2s is off unless ``s2s_port`` is given;
    then ``dns_port`` should point to a :class:`Dnsmasq` that knows every peer domain (else
    libunbound stalls ~30 s). ``extra_config`` is raw Lua placed in the global section.
    mod_offline is disabled so stanzas to absent users bounce instead of leaking into later tests.
    """

    label = "Prosody"

    def __init__(
        self,
        workdir: Path | str,
        *,
        ip: str = "127.0.0.1",
        c2s_port: int | None = None,
        component_port: int | None = None,
        s2s_port: int | None = None,
        virtualhosts: Sequence[str],
        components: Sequence[ComponentSpec] = (),
        extra_config: str = "",
        dns_port: int | None = None,
        extra_modules: Sequence[str] = (),
        plugin_paths: Sequence[Path | str] = (),
        log_level: str = "debug",
        host_options: Mapping[str, Mapping[str, Any] | str] | None = None,
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.ip = ip
        self.c2s_port = c2s_port or free_port(ip)
        self.component_port = component_port or free_port(ip)
        self.s2s_port = s2s_port
        self.virtualhosts = list(virtualhosts)
        self.components = list(components)
        self.extra_config = extra_config
        self.dns_port = dns_port
        self.extra_modules = list(extra_modules)
        self.plugin_paths = [str(p) for p in plugin_paths]
        self.log_level = log_level
        # per-VirtualHost options (e.g. modules_enabled, which adds to the global list)
        self.host_options = dict(host_options or {})
        self.config_path = self.workdir / "prosody.cfg.lua"
        self.log_path = self.workdir / "prosody.log"
        self.console_path = self.workdir / "prosody.console"
        self.proc: subprocess.Popen[bytes] | None = None
        self._console: IO[bytes] | None = None
        self.paused = False  # SIGSTOPped by pause()

    # -- config

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def component(self, domain: str) -> ComponentSpec:
        return next(c for c in self.components if c.domain == domain)

    def dns_records(self) -> dict[str, tuple[str, int]]:
        """``{domain: (ip, s2s_port)}`` for every host and component, for :class:`Dnsmasq`."""
        if self.s2s_port is None:
            return {}
        domains = self.virtualhosts + [c.domain for c in self.components]
        return {d: (self.ip, self.s2s_port) for d in domains}

    def config_text(self) -> str:
        wd = self.workdir
        modules = DEFAULT_MODULES + self.extra_modules
        disabled = ["tls", "offline"]
        lines = [
            "-- generated by testbed.prosody: throwaway test server, plain TCP on loopback",
            f"pidfile = {lua(wd / 'prosody.pid')}",
            f"data_path = {lua(wd / 'data')}",
            f"certificates = {lua(wd / 'certs')}",
            f"log = {{ {self.log_level} = {lua(self.log_path)} }}",
            'storage = "internal"',
            'authentication = "insecure"',
            "insecure_open_authentication = \"Yes please, I know what I'm doing!\"",
            "c2s_require_encryption = false",
            "allow_unencrypted_plain_auth = true",
            f"interfaces = {lua([self.ip])}",
            f"c2s_interfaces = {lua([self.ip])}",
            f"c2s_ports = {lua([self.c2s_port])}",
            f"component_interfaces = {lua([self.ip])}",
            f"component_ports = {lua([self.component_port])}",
            "http_ports = {}",
            "https_ports = {}",
            "http_interfaces = {}",
            "https_interfaces = {}",
            "c2s_direct_tls_ports = {}",
            "s2s_direct_tls_ports = {}",
            "legacy_ssl_ports = {}",
        ]
        if self.s2s_port is None:
            disabled += ["s2s", "s2s_auth_certs"]
            lines.append("s2s_ports = {}")
        else:
            modules.append("dialback")
            lines += [
                f"s2s_interfaces = {lua([self.ip])}",
                f"s2s_ports = {lua([self.s2s_port])}",
                "s2s_require_encryption = false",
                "s2s_secure_auth = false",
            ]
        if self.dns_port is not None:
            forward = [f"127.0.0.1@{self.dns_port}"]
            lines.append(
                f"unbound = {{ resolvconf = false, hoststxt = false, forward = {lua(forward)} }}"
            )
        if self.plugin_paths:
            # Copies in the instance's own dir (see write_config): Prosody runs as user
            # prosody, who may not read the checkout (e.g. a clone in a 0700 temp dir).
            lines.append(f"plugin_paths = {lua([str(self.workdir / 'plugins')])}")
        lines += [f"modules_enabled = {lua(modules)}", f"modules_disabled = {lua(disabled)}"]
        if self.extra_config:
            lines += ["", "-- extra_config", self.extra_config.strip()]
        for host in self.virtualhosts:
            lines += ["", f"VirtualHost {lua(host)}"]
            host_opts = _lua_options(self.host_options.get(host, {}), "    ")
            if host_opts:
                lines.append(host_opts)
        for comp in self.components:
            if comp.plugin is not None:
                lines += ["", f"Component {lua(comp.domain)} {lua(comp.plugin)}"]
            else:
                lines += ["", f"Component {lua(comp.domain)}",
                          f"    component_secret = {lua(comp.secret)}"]
            if comp.modules:
                lines.append(f"    modules_enabled = {lua(comp.modules)}")
            opts = _lua_options(comp.options, "    ")
            if opts:
                lines.append(opts)
        return "\n".join(lines) + "\n"

    def write_config(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "data").mkdir(exist_ok=True)
        (self.workdir / "certs").mkdir(exist_ok=True)
        for source in self.plugin_paths:
            shutil.copytree(source, self.workdir / "plugins", dirs_exist_ok=True)
        self.config_path.write_text(self.config_text())
        return self.config_path

    # -- process

    def _command(self) -> list[str]:
        prosody = shutil.which("prosody")
        if prosody is None:
            raise TestbedError("prosody is not installed (Debian: apt-get install prosody)")
        cmd = [prosody, "-F", "--config", str(self.config_path)]
        if os.geteuid() != 0:
            return cmd
        # as root: drop to the prosody user; setpriv execs, so Popen.pid is Prosody's PID
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise TestbedError("setpriv (util-linux) is needed to run Prosody as root")
        user = PROSODY_USER
        return [setpriv, f"--reuid={user}", f"--regid={user}", "--init-groups", *cmd]

    def _chown_workdir(self) -> None:
        if os.geteuid() != 0:
            return
        pw = pwd.getpwnam(PROSODY_USER)
        _check_traversable(self.workdir, pw.pw_uid, pw.pw_gid)
        for root, dirs, files in os.walk(self.workdir):
            os.chown(root, pw.pw_uid, pw.pw_gid)
            for name in dirs + files:
                os.lchown(os.path.join(root, name), pw.pw_uid, pw.pw_gid)

    def start(self, timeout: float = READY_TIMEOUT) -> ProsodyInstance:
        """Write the config, launch Prosody and wait until all its ports accept connections."""
        if self.proc is not None and self.proc.poll() is None:
            raise TestbedError("already running")
        cmd = self._command()
        self.write_config()
        self._chown_workdir()
        self._console = open(self.console_path, "ab")
        self.proc = subprocess.Popen(
            cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=self._console,
            stderr=subprocess.STDOUT, start_new_session=True,  # Ctrl-C reaches only us
        )
        _live.add(self)
        logtails.watch(f"prosody {' '.join(map(str, self.virtualhosts[:1]))}".strip(),
                       self.log_path)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _ports(self) -> list[int]:
        # the component port only opens when a Component block loads mod_component
        external = any(c.plugin is None for c in self.components)
        ports = [self.c2s_port] + ([self.component_port] if external else [])
        return ports + ([self.s2s_port] if self.s2s_port else [])

    def _wait_ready(self, timeout: float) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + timeout
        delay = 0.01
        pending = self._ports()
        while pending:
            if self.proc.poll() is not None:
                self._fail(f"Prosody exited with code {self.proc.returncode} during startup")
            pending = [p for p in pending if not _port_open(self.ip, p)]
            if not pending:
                break
            if time.monotonic() > deadline:
                self._fail(f"Prosody ports {pending} not open after {timeout} s")
            time.sleep(delay)
            delay = min(delay * 2, 0.2)
        # a port that was taken by someone else makes Prosody log an error and carry on
        log = self.log_text()
        if "Failed to open server port" in log or "Refusing to run as root" in log:
            self._fail("Prosody could not open its ports")

    def _fail(self, why: str) -> None:
        raise TestbedError(
            f"{why}\n--- {self.log_path} (tail) ---\n{tail(self.log_path)}"
            f"\n--- {self.console_path} (tail) ---\n{tail(self.console_path)}"
        )

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM the server by PID, SIGKILL after ``timeout`` s; idempotent. A paused
        server is resumed first (a stopped process does not act on SIGTERM)."""
        if self.proc is not None:
            if self.paused:
                self.resume()
            stop_process(self.proc, timeout)
        if self._console is not None:
            self._console.close()
            self._console = None
        _live.discard(self)

    def kill(self) -> None:
        """SIGKILL by PID (kill -9): no goodbye to clients, peers or components."""
        if self.proc is not None:
            kill_process(self.proc)
        self.paused = False
        self.stop()

    def restart(self, timeout: float = READY_TIMEOUT) -> ProsodyInstance:
        """Stop (SIGTERM by PID) if running, and start again on the same config, data and
        ports; the log goes on in the same file."""
        self.stop()
        return self.start(timeout)

    def __enter__(self) -> ProsodyInstance:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return (
            f"<ProsodyInstance {self.ip} c2s={self.c2s_port} component={self.component_port} "
            f"s2s={self.s2s_port} pid={self.pid} {self.workdir}>"
        )


# ----------------------------------------------------------------------------------------------
# dnsmasq: answers A and SRV for the test domains so Prosody instances find each other over s2s


def _dns_query(name: str, qtype: int = 1) -> bytes:
    header = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
    qname = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".") if p) + b"\0"
    return header + qname + struct.pack("!HH", qtype, 1)


class Dnsmasq:
    """A foreground dnsmasq on ``127.0.0.1:port`` serving ``--host-record`` and the
    ``_xmpp-server._tcp`` SRV record of each ``{domain: (ip, s2s_port)}``; nothing upstream."""

    def __init__(
        self,
        workdir: Path | str,
        port: int | None = None,
        records: Mapping[str, tuple[str, int]] | None = None,
        listen: str = "127.0.0.1",
    ) -> None:
        self.workdir = Path(workdir).resolve()
        self.port = port or free_port(listen)
        self.listen = listen
        self.records = dict(records or {})
        self.log_path = self.workdir / "dnsmasq.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def command(self) -> list[str]:
        dnsmasq = shutil.which("dnsmasq") or (
            "/usr/sbin/dnsmasq" if os.path.exists("/usr/sbin/dnsmasq") else None
        )
        if dnsmasq is None:
            raise TestbedError("dnsmasq is not installed (Debian: apt-get install dnsmasq-base)")
        cmd = [
            dnsmasq, "-k", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
            f"--port={self.port}", f"--listen-address={self.listen}", "--bind-interfaces",
            f"--pid-file={self.workdir / 'dnsmasq.pid'}", "--log-facility=-",
        ]
        for domain, (ip, s2s_port) in self.records.items():
            cmd.append(f"--host-record={domain},{ip}")
            cmd.append(f"--srv-host=_xmpp-server._tcp.{domain},{domain},{s2s_port}")
        return cmd

    def start(self, timeout: float = 5.0) -> Dnsmasq:
        cmd = self.command()
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        _live.add(self)
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        """Ask for the first record (or 'localhost') until dnsmasq answers."""
        assert self.proc is not None
        name = next(iter(self.records), "localhost")
        deadline = time.monotonic() + timeout
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.settimeout(0.05)
            while True:
                if self.proc.poll() is not None:
                    raise TestbedError(
                        f"dnsmasq exited with code {self.proc.returncode}\n{tail(self.log_path)}"
                    )
                s.sendto(_dns_query(name), (self.listen, self.port))
                try:
                    if s.recv(512)[:2] == b"\x12\x34":
                        return
                except OSError:  # timeout, or ICMP port unreachable while it starts
                    pass
                if time.monotonic() > deadline:
                    raise TestbedError(
                        f"dnsmasq did not answer in {timeout} s\n{tail(self.log_path)}")

    def stop(self, timeout: float = 5.0) -> None:
        if self.proc is not None:
            stop_process(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None
        _live.discard(self)

    def __enter__(self) -> Dnsmasq:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
