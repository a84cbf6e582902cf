"""Projects for the stack tests: the real checkout, with OBS_* ports chosen by the test."""

from __future__ import annotations

from pathlib import Path

import pytest

from amtp_obs.net import free_ports
from amtp_obs.project import Project

REPO = Path(__file__).resolve().parents[2]

PORT_VARIABLES = tuple(Project(REPO, {}).port_variables())  # every OBS_* port compose publishes


@pytest.fixture
def ports() -> dict[str, int]:
    return dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True))


@pytest.fixture
def project(ports: dict[str, int]) -> Project:
    return Project(REPO, {k: str(v) for k, v in ports.items()})
