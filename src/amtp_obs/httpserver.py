"""Serve an ASGI app with uvicorn inside the caller's event loop, on a socket we bind ourselves.

One implementation for every embedded HTTP listener (collector receivers, extensions and exporters,
the trace store's API and OTLP/HTTP). Binding first gives a clear error for a busy port and the real
port when the endpoint says ``:0``; uvicorn's own signal handling is off because the process owns
SIGTERM/SIGINT (:mod:`amtp_obs.shutdown`). Endpoints follow :func:`amtp_obs.net.split_endpoint`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from amtp_obs.net import listen_socket, split_endpoint


class StartError(Exception):
    """A server or component could not start (port in use, bad endpoint); the message names which."""


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_tcp(endpoint: str, where: str, default_port: int = 0) -> socket.socket:
    """A listening socket for ``endpoint``; a :class:`StartError` naming ``where`` when it cannot bind."""
    try:
        host, port = split_endpoint(endpoint, default_port)
    except ValueError as exc:
        raise StartError(f"{where}: {exc}") from None
    try:
        return listen_socket(host, port)
    except OSError as exc:
        raise StartError(f"{where}: cannot listen on {endpoint}: {exc.strerror or exc}") from None


class HttpServer:
    """One HTTP listener; ``address`` is the bound (host, port) once :meth:`start` returned."""

    def __init__(self, app: Any, endpoint: str, where: str, default_port: int = 0) -> None:
        self.app = app
        self.endpoint = endpoint
        self.where = where
        self.default_port = default_port
        self.address: tuple[str, int] = ("", 0)
        self._server: _Server | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> tuple[str, int]:
        sock = bind_tcp(self.endpoint, self.where, self.default_port)
        self.address = sock.getsockname()[:2]
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=3,
            server_header=False,
            interface="asgi3",
            proxy_headers=False,
        )
        self._server = _Server(config)
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]), name=f"http {self.where}")
        while not self._server.started:
            if self._task.done():
                exc = self._task.exception()
                raise StartError(f"{self.where}: HTTP server failed to start: {exc}")
            await asyncio.sleep(0.005)
        return self.address

    async def stop(self, timeout: float = 5.0) -> None:
        """Stop accepting, let requests in flight finish (up to ``timeout``)."""
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, timeout)
        self._server = None
