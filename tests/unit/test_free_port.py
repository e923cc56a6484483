"""testbed.prosody.free_port: ports for the testbed's servers, out of the kernel's way."""

from __future__ import annotations

import socket

from testbed.prosody import LOWEST_PORT, ephemeral_low, free_port


def test_ports_are_below_the_ephemeral_range_distinct_and_bindable() -> None:
    ports = [free_port("127.0.0.1") for _ in range(200)]
    assert len(set(ports)) == len(ports)  # never handed out twice
    assert all(LOWEST_PORT <= port < ephemeral_low() for port in ports)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[-1]))  # free when handed out


def test_the_ephemeral_range_is_read_from_the_kernel() -> None:
    with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
        assert ephemeral_low() == int(f.read().split()[0])
