"""The server side of one XEP-0114 component stream, for benchmarks: it accepts a dmuc
daemon's handshake, lets the benchmark write stanzas to it, and counts (and searches) what
the daemon writes back, so that only the daemon's own work is measured."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import re
import statistics
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from testbed.daemon import TwistdDaemon

STREAM_ID = "benchstream"
SECRET = "bench"


class FakeServer:
    def __init__(self, domain: str) -> None:
        self.domain = domain
        self.connected = asyncio.Event()
        self.writer: asyncio.StreamWriter | None = None
        self.counts = {"message": 0, "presence": 0, "iq": 0}
        self._count_waiters: list[tuple[str, int, asyncio.Future[None]]] = []
        self._match_waiters: list[tuple[re.Pattern[bytes], asyncio.Future[re.Match[bytes]]]] = []
        self._tail = b""

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        header = await reader.readuntil(b">")
        assert b"stream" in header, header
        writer.write(
            b"<?xml version='1.0'?><stream:stream xmlns:stream='http://etherx.jabber.org/streams'"
            b" xmlns='jabber:component:accept' from='" + self.domain.encode() + b"' id='"
            + STREAM_ID.encode() + b"'>"
        )
        handshake = await reader.readuntil(b"</handshake>")
        expected = hashlib.sha1((STREAM_ID + SECRET).encode()).hexdigest().encode()
        assert expected in handshake, handshake
        writer.write(b"<handshake/>")
        self.connected.set()
        while True:
            try:
                data = await reader.read(1 << 20)
            except (asyncio.CancelledError, ConnectionError):
                return
            if not data:
                return
            chunk = self._tail + data
            # Count stanza starts; the tail (kept from the last read) makes a tag split
            # across two reads count once.
            for kind in self.counts:
                tag = b"<" + kind.encode()
                self.counts[kind] += chunk.count(tag) - self._tail.count(tag)
            for pattern, fut in list(self._match_waiters):
                found = pattern.search(chunk)
                if found and not fut.done():
                    fut.set_result(found)
                    self._match_waiters.remove((pattern, fut))
            self._tail = chunk[-256:]
            self._wake()

    def _wake(self) -> None:
        for kind, target, fut in list(self._count_waiters):
            if self.counts[kind] >= target and not fut.done():
                fut.set_result(None)
                self._count_waiters.remove((kind, target, fut))

    async def until(self, kind: str, target: int, timeout: float = 300) -> None:
        """Until `target` stanzas of `kind` (message, presence, iq) have come in all."""
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._count_waiters.append((kind, target, fut))
        self._wake()
        await asyncio.wait_for(fut, timeout)

    def expect(self, pattern: bytes) -> asyncio.Future[re.Match[bytes]]:
        """A future for the first later output matching `pattern` (register before sending)."""
        fut: asyncio.Future[re.Match[bytes]] = asyncio.get_running_loop().create_future()
        self._match_waiters.append((re.compile(pattern), fut))
        return fut

    def send(self, xml: str) -> None:
        assert self.writer is not None
        self.writer.write(xml.encode())


REPEATS = 5  # batches per configuration; the median batch is reported


@contextlib.asynccontextmanager
async def daemon_on_fake_server(
    plugin: str, domain: str, workdir: Path, config: Callable[[int], str]
) -> AsyncIterator[FakeServer]:
    """Start `twistd -n <plugin>` (config(port) gives its TOML) against a FakeServer, wait
    for its handshake, and stop it by PID afterwards."""
    server = FakeServer(domain)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    path = workdir / f"{plugin}.toml"
    path.write_text(config(listener.sockets[0].getsockname()[1]))
    daemon = TwistdDaemon(plugin, path, workdir)
    server.daemon = daemon  # its log, for what the daemon reports about itself
    await asyncio.get_running_loop().run_in_executor(
        None, lambda: daemon.start(wait_for="starting up", timeout=30))
    try:
        await asyncio.wait_for(server.connected.wait(), 30)
        yield server
    finally:
        daemon.stop()
        listener.close()
        await listener.wait_closed()


async def median_batch(server: FakeServer, copies_per_batch: int,
                       send_batch: Callable[[int], None]) -> float:
    """Seconds of the median of REPEATS batches, each until `copies_per_batch` more
    messages have come back."""
    times = []
    for batch in range(REPEATS):
        base = server.counts["message"]
        started = time.perf_counter()
        send_batch(batch)
        await server.until("message", base + copies_per_batch)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def result(occupants: int, messages: int, seconds: float, **extra: float) -> dict[str, float]:
    return {"occupants": occupants, "messages": messages, "seconds": seconds,
            "messages_per_s": messages / seconds,
            "stanzas_per_s": occupants * messages / seconds, **extra}


def print_header(extra: str = "") -> None:
    print(f"{'what':<24}{'occupants':>10}{'messages':>10}{'seconds':>10}"
          f"{'msg/s':>10}{'stanzas/s':>12}{extra}")


def print_row(label: str, r: dict[str, float], extra: str = "") -> None:
    print(f"{label:<24}{r['occupants']:>10}{r['messages']:>10}{r['seconds']:>10.3f}"
          f"{r['messages_per_s']:>10.1f}{r['stanzas_per_s']:>12.0f}{extra}", flush=True)
