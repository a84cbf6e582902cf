"""Listening sockets and free ports for the embedded servers, made one way everywhere; what a process bound."""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import os
import random
import socket
from collections.abc import Collection, Iterable
from dataclasses import dataclass
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


WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::"})
"""Hosts that mean "every interface" to a server; a client reaches such a listener on loopback."""


def split_endpoint(endpoint: str, default_port: int = 0) -> tuple[str, int]:
    """``host:port``, ``[v6]:port``, ``:port`` or ``host`` -> (host, port), for every embedded listener.

    The one rule: a host-less endpoint (``:4317``) binds **loopback**, not every interface as Go's
    ``net.Listen`` would; ``localhost`` is 127.0.0.1. Listening on every interface takes an explicit
    ``0.0.0.0`` (or ``[::]``). Raises :class:`ValueError` naming the endpoint when the port is bad.
    """
    text = endpoint.strip()
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        port_s = rest.removeprefix(":")
    else:
        host, sep, port_s = text.rpartition(":")
        if not sep:
            host, port_s = text, ""
    if host in ("", "localhost"):
        host = LOOPBACK
    if not port_s:
        return host, default_port
    try:
        port = int(port_s)
    except ValueError:
        raise ValueError(f"invalid endpoint {endpoint!r}: port {port_s!r} is not a number") from None
    if not 0 <= port <= 65535:
        raise ValueError(f"invalid endpoint {endpoint!r}: port out of range")
    return host, port


def join_host_port(host: str, port: int) -> str:
    """``host:port``, with brackets around an IPv6 host (as gRPC and URLs want it)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def client_host(host: str) -> str:
    """The address a client on this machine uses for a listener bound to ``host``."""
    return LOOPBACK if host in WILDCARD_HOSTS else host


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


_TCP_LISTEN = "0A"
"""The state column of /proc/net/tcp for a listening socket."""


@dataclass(frozen=True)
class BoundSocket:
    """A socket a process listens on (TCP) or receives on (unconnected UDP), read from /proc."""

    pid: int
    protocol: str  # tcp, tcp6, udp, udp6
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        """127.0.0.0/8, ::1, or 127.x written as IPv4-mapped IPv6 (gRPC binds dual-stack sockets)."""
        address = ipaddress.ip_address(self.host)
        mapped = address.ipv4_mapped if isinstance(address, ipaddress.IPv6Address) else None
        return (mapped or address).is_loopback


def _proc_address(hex_addr: str) -> tuple[str, int]:
    """``0100007F:1F90`` (IPv4) or 32 hex digits (IPv6), each 32-bit word in host byte order."""
    host_hex, port_hex = hex_addr.split(":")
    raw = bytes.fromhex(host_hex)
    host_bytes = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    return str(ipaddress.ip_address(host_bytes)), int(port_hex, 16)


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    try:
        fds = list(Path(f"/proc/{pid}/fd").iterdir())
    except OSError:
        return inodes
    for fd in fds:
        with contextlib.suppress(OSError):
            target = os.readlink(fd)
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    return inodes


def bound_sockets(pids: Iterable[int]) -> list[BoundSocket]:
    """Every listening TCP socket and unconnected bound UDP socket the processes hold (Linux /proc).

    Used to prove that the embedded stack listens on loopback only: what a process actually bound,
    not what its configuration says.
    """
    owner: dict[str, int] = {}
    for pid in pids:
        for inode in _socket_inodes(pid):
            owner.setdefault(inode, pid)
    found = []
    for protocol in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/net/{protocol}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote, state, inode = fields[1], fields[2], fields[3], fields[9]
            if inode not in owner:
                continue
            if protocol.startswith("tcp") and state != _TCP_LISTEN:
                continue
            if protocol.startswith("udp") and _proc_address(remote)[1] != 0:
                continue  # a connected UDP socket (a resolver's query): nothing can reach it from outside
            host, port = _proc_address(local)
            found.append(BoundSocket(owner[inode], protocol, host, port))
    return found
