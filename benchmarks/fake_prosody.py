"""The server side of one XEP-0114 component stream, for benchmarks: it accepts a dmuc
daemon's handshake, lets the benchmark write stanzas to it, and counts (and searches) what
the daemon writes back, so that only the daemon's own work is measured."""

from __future__ import annotations

import asyncio
import hashlib
import re

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
