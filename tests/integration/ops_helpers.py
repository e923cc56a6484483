"""Helpers of the operations tests (metrics, sd_notify, reload): a Prometheus scrape over
plain HTTP, and a datagram socket standing in for systemd's $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import signal
import socket
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from testbed import TwistdDaemon
from tests.integration.xmpp_client import NS_MUC, Client, body, is_message, is_presence, run

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str, timeout: float = 5.0) -> Samples:
    """GET the endpoint; every sample as {(name, labels): value}."""
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        assert reply.status == 200
        assert reply.headers["Content-Type"].startswith("text/plain")
        text = reply.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    """One sample's value (KeyError, listing what there is, when it is missing)."""
    key = (name, frozenset(labels.items()))
    if key not in samples:
        have = sorted(f"{n}{dict(sorted(ls))}" for n, ls in samples if n == name)
        raise KeyError(f"no sample {name}{labels}; have {have}")
    return samples[key]


def value_or_0(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value, 0 when the daemon has no such series (e.g. a removed slave)."""
    return samples.get((name, frozenset(labels.items())), 0.0)


def refused(url: str) -> bool:
    """True when nothing listens there any more."""
    try:
        urllib.request.urlopen(url, timeout=2).close()
    except urllib.error.URLError as exc:
        return isinstance(exc.reason, ConnectionRefusedError)
    return False


def wait_for_metric(url: str, check: Callable[[Samples], bool], timeout: float = 20.0,
                    what: str = "") -> Samples:
    """Scrape until `check` holds (a value the daemon reaches on its own, e.g. after a
    keepalive timeout: no event to await from outside), with a short backoff."""
    deadline = time.monotonic() + timeout
    delay = 0.05
    while True:
        samples = scrape(url)
        if check(samples):
            return samples
        if time.monotonic() > deadline:
            raise AssertionError(f"{url}: {what or 'condition'} not reached within {timeout} s")
        time.sleep(delay)
        delay = min(delay * 2, 0.5)


def join(client: Client, room: str, nick: str) -> None:
    """Enter a room: own presence, then the subject; the inbox is left empty."""
    client.send_raw(f"<presence to='{room}/{nick}'><x xmlns='{NS_MUC}'/></presence>")
    run(client.expect(is_presence(from_=f"{room}/{nick}", type_="available")))
    run(client.expect(lambda e: e.tag.endswith("}message") and e.find("{*}subject") is not None))
    client.drain()


def say(client: Client, room: str, text: str) -> None:
    client.send_raw(f"<message to='{room}' type='groupchat'><body>{text}</body></message>")


def hear(client: Client, text: str, timeout: float = 15) -> None:
    run(client.expect(lambda e: is_message(type_="groupchat")(e) and body(e) == text, timeout))


def sighup(daemon: TwistdDaemon) -> None:
    assert daemon.pid is not None and daemon.running()
    os.kill(daemon.pid, signal.SIGHUP)


class NotifySocket:
    """What systemd listens on: an AF_UNIX datagram socket; `env` points a daemon at it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o666)
        self.received: list[dict[str, str]] = []

    @property
    def env(self) -> dict[str, str]:
        return {"NOTIFY_SOCKET": str(self.path)}

    def expect(self, key: str, value: str | None = None, timeout: float = 15.0
               ) -> dict[str, str]:
        """The next datagram with `key` (=`value`), waiting up to `timeout` s; the ones
        before it are kept in `received`."""
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {key}={value or '*'} within {timeout} s; "
                                     f"got {self.received[-10:]}")
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            message = dict(line.split("=", 1) for line in data.decode().splitlines() if line)
            self.received.append(message)
            if key in message and (value is None or message[key] == value):
                return message

    def close(self) -> None:
        self.sock.close()
        self.path.unlink(missing_ok=True)
