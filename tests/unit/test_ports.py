"""The test servers' ports: free, never handed out twice, and outside the kernel's range for outgoing connections."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from tests.support.ports import free_port

RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")


@pytest.mark.skipif(not RANGE.exists(), reason="needs Linux's ip_local_port_range")
def test_ports_come_from_below_the_range_of_outgoing_connections() -> None:
    first_ephemeral = int(RANGE.read_text().split()[0])

    ports = [free_port() for _ in range(50)]

    assert all(1024 <= port < first_ephemeral for port in ports)
    assert len(set(ports)) == len(ports)


def test_a_port_handed_out_can_be_bound_and_is_not_handed_out_again_while_in_use() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        ports = [free_port() for _ in range(50)]
        assert taken not in ports
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", ports[-1]))
