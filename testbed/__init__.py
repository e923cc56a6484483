"""Throwaway servers for tests, demos and benchmarks: Prosody, dnsmasq and twistd daemons."""

from testbed.daemon import TwistdDaemon
from testbed.prosody import (
    ComponentSpec,
    Dnsmasq,
    ProsodyInstance,
    TestbedError,
    free_port,
    stop_all,
)

__all__ = [
    "ComponentSpec",
    "Dnsmasq",
    "ProsodyInstance",
    "TestbedError",
    "TwistdDaemon",
    "free_port",
    "stop_all",
]
