"""Listening sockets for the embedded servers, made one way everywhere."""

from __future__ import annotations

import socket


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
