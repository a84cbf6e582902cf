"""How a process is stopped: SIGTERM (what `amtp-obs down` sends) or SIGINT, then SIGKILL if it lingers."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from typing import Any


def stop_event() -> asyncio.Event:
    """An event that SIGTERM or SIGINT sets, so the service can drain and exit 0; call inside the running loop."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop


def terminate(proc: subprocess.Popen[Any], timeout: float = 10.0) -> None:
    """SIGTERM a child process, SIGKILL it if it has not exited within ``timeout``, and reap it."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout)
