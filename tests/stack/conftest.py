"""Projects for the stack tests: the real checkout, with OBS_* ports chosen by the test."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from amtp_obs.project import Project

REPO = Path(__file__).resolve().parents[2]

PORT_VARIABLES = tuple(Project(REPO, {}).port_variables())  # every OBS_* port compose publishes


def free_ports(n: int) -> list[int]:
    """``n`` distinct ports free right now (held open together so the kernel gives distinct ones)."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def ports() -> dict[str, int]:
    return dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True))


@pytest.fixture
def project(ports: dict[str, int]) -> Project:
    return Project(REPO, {k: str(v) for k, v in ports.items()})
