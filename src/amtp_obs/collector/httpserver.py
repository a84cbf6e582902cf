"""Run an ASGI app with uvicorn inside the collector's event loop, on a socket we bind ourselves.

Binding first gives a clear error for a busy port and the real port when the config says ``:0``;
uvicorn's own signal handling is disabled because the collector owns SIGTERM/SIGINT.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from amtp_obs.collector.component import StartError
from amtp_obs.collector.config import split_endpoint
from amtp_obs.net import listen_socket


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind_tcp(endpoint: str, where: str, default_port: int = 0) -> socket.socket:
    """A listening-ready socket for ``endpoint``; a clear :class:`StartError` when it cannot bind."""
    try:
        host, port = split_endpoint(endpoint, default_port)
    except ValueError as exc:
        raise StartError(f"{where}: {exc}") from None
    try:
        return listen_socket(host, port)
    except OSError as exc:
        raise StartError(f"{where}: cannot listen on {endpoint}: {exc.strerror or exc}") from None


class HttpServer:
    """One HTTP listener; ``address`` is the bound (host, port)."""

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
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                exc = self._task.exception()
                raise StartError(f"{self.where}: HTTP server failed to start: {exc}")
            await asyncio.sleep(0.005)
        return self.address

    async def stop(self) -> None:
        if self._server is None or self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(self._task, 5)
        self._server = None
