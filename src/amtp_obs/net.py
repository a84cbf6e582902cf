"""Listening sockets and free ports for the embedded servers, made one way everywhere."""

from __future__ import annotations

import errno
import random
import socket
from collections.abc import Collection
from pathlib import Path

LOOPBACK = "127.0.0.1"


def listen_socket(host: str, port: int, *, backlog: int = 1024) -> socket.socket:
    """A bound, listening, non-blocking TCP socket for uvicorn; raises :class:`OSError` when it cannot bind.

    TCP_NODELAY on the listener is inherited by accepted connections on Linux; asyncio sets it only
    on sockets it creates itself, and without it every keep-alive response stalls ~40 ms (Nagle
    plus delayed ACK).
    """
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


_FALLBACK_EPHEMERAL = (32768, 60999)
_handed_out: set[int] = set()
_rng = random.Random()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range for outgoing connections' local ports (Linux default when unreadable)."""
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return _FALLBACK_EPHEMERAL


def _candidate_range() -> range:
    low, high = ephemeral_range()
    if low - 1 - 10000 >= 2000:
        return range(10000, low)
    return range(min(high + 1, 65000), 65536)


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """True when a server could listen on ``host:port`` now (SO_REUSEADDR, as servers bind)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def free_port(exclude: Collection[int] = frozenset()) -> int:
    """A loopback port free now, for a server that will bind it a moment later.

    Chosen outside the kernel's ephemeral range: a port from ``bind(0)`` is an ephemeral one, which
    any outgoing connection on the machine may take between this call and the server's bind (seen
    in CI as "address already in use"). A port is not handed out twice by one process.
    """
    candidates = _candidate_range()
    if len(_handed_out) > len(candidates) // 2:
        _handed_out.clear()
    for _ in range(200):
        port = _rng.choice(candidates)
        if port in exclude or port in _handed_out:
            continue
        if port_is_free(port):
            _handed_out.add(port)
            return port
    raise OSError(f"no free loopback port in {candidates.start}-{candidates.stop - 1}")


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports (see :func:`free_port`)."""
    ports: list[int] = []
    for _ in range(n):
        ports.append(free_port(ports))
    return ports
