"""Prometheus metrics of a daemon, and the optional HTTP endpoint that serves them
(``[metrics] listen = "127.0.0.1:9250"``; off by default).

Cost: the per-stanza work is O(1) (a counter per stanza in and per delivery out, a
histogram observation per broadcast and per storage write). Everything else is read from
the core's own state when the endpoint is scraped (a custom collector), never kept up to
date per stanza.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.twisted import MetricsResource
from twisted.internet import defer, reactor
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.web.resource import Resource
from twisted.web.server import Site

from dmuc.protocol.statemachine import SplitCounter

KINDS = ("message", "presence", "iq")
# Seconds: a broadcast to a few occupants takes well under a millisecond, one to 10,000
# some tens of milliseconds; a storage write is a thread hop and an SQLite commit.
FANOUT_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                  0.25, 0.5, 1.0)
STORAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
                   2.5, 5.0)


class _Collector:
    """Hands prometheus_client what `collect` reads from the core at scrape time."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[Metric]:
        return self._collect()


class Metrics:
    """The metrics of one daemon: counters the shell bumps, and the core's state read by
    `collect` (a callable returning metric families) when scraped."""

    def __init__(self, collect: Callable[[], Iterable[Metric]]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        stanzas_in = Counter("dmuc_stanzas_in", "Stanzas received from Prosody, by kind",
                             ["kind"], registry=self.registry)
        stanzas_out = Counter("dmuc_stanzas_out",
                              "Stanzas sent to Prosody (each copy of a broadcast), by kind",
                              ["kind"], registry=self.registry)
        self.stanzas_in = {kind: stanzas_in.labels(kind) for kind in KINDS}
        self.stanzas_out = {kind: stanzas_out.labels(kind) for kind in KINDS}
        self.fanout = Histogram(
            "dmuc_broadcast_fanout_seconds",
            "From receiving a stanza to having written every copy of the broadcast it caused",
            buckets=FANOUT_BUCKETS, registry=self.registry)
        self.storage_write = Histogram(
            "dmuc_storage_write_seconds", "From issuing a storage write to its completion",
            buckets=STORAGE_BUCKETS, registry=self.registry)
        self.registry.register(_Collector(collect))  # type: ignore[arg-type]
        ProcessCollector(registry=self.registry)  # process_cpu_seconds_total, memory, fds
        self.port: IListeningPort | None = None
        self.address: tuple[str, int] | None = None

    def received(self, kind: str) -> None:
        counter = self.stanzas_in.get(kind)
        if counter is not None:
            counter.inc()

    def sent(self, kind: str, copies: int) -> None:
        counter = self.stanzas_out.get(kind)
        if counter is not None:
            counter.inc(copies)

    # --- the endpoint --------------------------------------------------------------------

    def site(self) -> Site:
        root = Resource()
        root.putChild(b"metrics", MetricsResource(self.registry))
        site = Site(root)
        site.noisy = False
        site.log = lambda request: None  # no access log line per scrape
        return site

    def listen(self, address: tuple[str, int]) -> None:
        """Serve /metrics on `address`; raises twisted's CannotListenError."""
        host, port = address
        self.port = reactor.listenTCP(port, self.site(), interface=host)
        self.address = address

    def close(self) -> Deferred:
        port, self.port, self.address = self.port, None, None
        if port is None:
            return defer.succeed(None)
        return defer.maybeDeferred(port.stopListening)

    @property
    def url(self) -> str | None:
        if self.address is None:
            return None
        host, port = self.address
        return f"http://{f'[{host}]' if ':' in host else host}:{port}/metrics"


# --- metric families the daemons build from their core's state ---------------------------

def gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def labelled_gauge(name: str, documentation: str, labels: Sequence[str],
                   samples: Iterable[tuple[Sequence[str], float]]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, documentation, labels=list(labels))
    for values, value in samples:
        family.add_metric(list(values), value)
    return family


def split_counts(splits: SplitCounter) -> list[Metric]:
    return [CounterMetricFamily("dmuc_netsplits", "Links that went split (netsplits)",
                                value=splits.netsplits),
            CounterMetricFamily("dmuc_netjoins", "Split links that came back (netjoins)",
                                value=splits.netjoins)]


def shell_state(connected: bool, storage_queue: int, stalls: int,
                slowest: float) -> list[Metric]:
    held = CounterMetricFamily(
        "dmuc_reactor_stalls", "Stanzas or full garbage collections that held the reactor "
        "over 100 ms (each one is logged)", value=stalls)
    return [held,
            gauge("dmuc_reactor_slowest_stall_seconds",
                  "The longest time one stanza or collection held the reactor, over 100 ms",
                  slowest),
            gauge("dmuc_component_connected",
                  "1 while the XEP-0114 connection to Prosody is up", int(connected)),
            gauge("dmuc_storage_queue_length",
                  "Storage writes issued and not yet done, and saves being coalesced",
                  storage_queue)]

