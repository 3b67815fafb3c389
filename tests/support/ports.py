"""Free TCP ports on the loopback interface, for servers that tests and the bench start.

A port the kernel hands out for ``bind(0)`` comes from the ephemeral range, the same range it
takes the local port of every outgoing connection from. Between the moment a port is chosen and
the moment the server binds it, a client connection (to Postgres, to Redis) can get it as its
own local port, and the server then fails with "address already in use" (seen once in a bench
run: the plain ARQ app could not bind). So the ports come from below the ephemeral range
(``/proc/sys/net/ipv4/ip_local_port_range``), where no outgoing connection is ever given one;
each is checked free by binding it, and none is handed out twice by one process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_SPAN = 10_000
"""How many ports below the ephemeral range to choose from."""
_handed_out: set[int] = set()


def free_port() -> int:
    """A port nothing listens on right now, outside the range of outgoing connections' ports."""
    low, high = _candidates()
    for _ in range(200 if low <= high else 0):
        port = random.randint(low, high)
        if port not in _handed_out and _bound(port):
            _handed_out.add(port)
            return port
    chosen = _bound(0)  # the span is crowded: take the kernel's choice rather than fail
    if chosen is None:
        raise RuntimeError("no free TCP port on the loopback interface")
    _handed_out.add(chosen)
    return chosen


def _candidates() -> tuple[int, int]:
    try:
        first_ephemeral = int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        first_ephemeral = 32768  # Linux's default when the file is not there
    high = first_ephemeral - 1
    return max(1024, high - _SPAN), high


def _bound(port: int) -> int | None:
    """Bind ``port`` on the loopback (0: the kernel chooses) and let it go; the port, None if it is taken."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return None
        return int(sock.getsockname()[1])
