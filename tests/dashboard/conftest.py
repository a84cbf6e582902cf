"""Session fixtures for the dashboard tests: the real Prometheus, a Tempo-API server, the app."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from dash_helpers import (
    FakeTempo,
    Prom,
    ServerThread,
    alert_rules,
    make_settings,
    remote_write,
    run_prometheus,
    synthetic_series,
)

from amtp_obs.dashboard import create_app


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    """Fed with the synthetic series; runs the provisioned alert rule too (it fires: no collector here)."""
    work = tmp_path_factory.mktemp("prom")
    with run_prometheus(work, [alert_rules(work)]) as prom:
        remote_write(prom.url, synthetic_series(int(time.time() * 1000)))
        yield prom


@pytest.fixture(scope="session")
def fake_tempo() -> Iterator[tuple[FakeTempo, str]]:
    tempo = FakeTempo()
    with ServerThread(tempo.app) as srv:
        yield tempo, srv.url


@pytest.fixture(scope="session")
def dashboard_url(prometheus: Prom, fake_tempo: tuple[FakeTempo, str]) -> Iterator[str]:
    with ServerThread(create_app(make_settings(prometheus.url, fake_tempo[1]))) as srv:
        yield srv.url
