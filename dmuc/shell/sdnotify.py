"""systemd's service notification protocol (sd_notify(3)), spoken directly: one datagram of
``KEY=VALUE`` lines to the AF_UNIX socket named by $NOTIFY_SOCKET (a name starting with '@'
is in the abstract namespace). Without $NOTIFY_SOCKET (not run by systemd with
Type=notify) every call does nothing.

The daemon says READY=1 once it has restored its state and completed its first component
handshake, STATUS=... as its connection comes and goes, RELOADING=1 / READY=1 around a
reload, STOPPING=1 on the way out, and WATCHDOG=1 at half of $WATCHDOG_USEC from the
reactor (so a blocked reactor is restarted by systemd when WatchdogSec= is set).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Mapping

from twisted.internet import task

from dmuc.log import get_logger

log = get_logger("dmuc.sdnotify")


def socket_address(name: str) -> str | bytes:
    """$NOTIFY_SOCKET as an address for socket.sendto ('@name': abstract namespace)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def watchdog_interval(environ: Mapping[str, str]) -> float | None:
    """Seconds between WATCHDOG=1 pings (half of $WATCHDOG_USEC), or None when systemd
    watches nothing (no WatchdogSec=, or $WATCHDOG_PID names another process)."""
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and (not pid.isdigit() or int(pid) != os.getpid()):
        return None
    return int(usec) / 2_000_000


class Notifier:
    """The daemon's side of sd_notify; a no-op when $NOTIFY_SOCKET is unset."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        name = env.get("NOTIFY_SOCKET", "")
        self.address = socket_address(name) if name else None
        self.watchdog_every = watchdog_interval(env)
        self.ready = False
        self._socket: socket.socket | None = None
        self._watchdog = task.LoopingCall(self.notify, "WATCHDOG=1")
        self._failed = False

    @property
    def enabled(self) -> bool:
        return self.address is not None

    def notify(self, *lines: str) -> bool:
        """Send one datagram; True if it went out. A failure is logged once (systemd may
        have gone away), never raised: notification must not take the daemon down."""
        if self.address is None:
            return False
        message = "\n".join(lines).encode()
        try:
            if self._socket is None:
                self._socket = socket.socket(socket.AF_UNIX,
                                             socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._socket.sendto(message, self.address)
        except OSError as exc:
            if not self._failed:
                log.warn("cannot notify systemd at {address!r}: {error}",
                         address=self.address, error=exc)
                self._failed = True
            return False
        self._failed = False
        return True

    def status(self, text: str) -> None:
        self.notify(f"STATUS={text}")

    def mark_ready(self, status: str) -> None:
        """READY=1 the first time (then just the status)."""
        if self.ready:
            self.status(status)
            return
        self.ready = True
        self.notify("READY=1", f"STATUS={status}")

    def reloading(self) -> None:
        # MONOTONIC_USEC: what systemd (>= 253) wants with RELOADING=1.
        self.notify("RELOADING=1", f"MONOTONIC_USEC={time.monotonic_ns() // 1000}",
                    "STATUS=reloading the configuration")

    def reloaded(self, status: str) -> None:
        self.notify("READY=1", f"STATUS={status}")

    def stopping(self) -> None:
        self.notify("STOPPING=1", "STATUS=stopping")

    def start_watchdog(self) -> None:
        if self.enabled and self.watchdog_every is not None and not self._watchdog.running:
            self._watchdog.start(self.watchdog_every, now=True)

    def stop(self) -> None:
        if self._watchdog.running:
            self._watchdog.stop()
        if self._socket is not None:
            self._socket.close()
            self._socket = None
