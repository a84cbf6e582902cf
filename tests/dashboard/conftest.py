"""Session fixtures for the dashboard tests: the real Prometheus, the real trace store, the app."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from dash_helpers import (
    RecordingApp,
    ServerThread,
    alert_rules,
    make_settings,
    remote_write,
    run_trace_store,
    seed_trace,
    synthetic_series,
)

from amtp_obs.dashboard import create_app
from amtp_obs.tempo import TempoApp
from amtp_obs.testing.prometheus import Prom, run_prometheus


@pytest.fixture(scope="session")
def prometheus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prom]:
    """Fed with the synthetic series; runs the provisioned alert rule too (it fires: no collector here)."""
    work = tmp_path_factory.mktemp("prom")
    with run_prometheus(work, [alert_rules(work)]) as prom:
        remote_write(prom.url, synthetic_series(int(time.time() * 1000)))
        yield prom


@pytest.fixture(scope="session")
def trace_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TempoApp]:
    """amtp_obs.tempo holding TRACE_ID (a minute old), received over OTLP gRPC."""
    with run_trace_store(tmp_path_factory.mktemp("tempo")) as app:
        assert not app.generator.enabled  # the synthetic span metrics stay the only ones
        seed_trace(app.otlp_grpc_endpoint, time.time_ns() - 60_000_000_000)
        yield app


@pytest.fixture(scope="session")
def dashboard_app(prometheus: Prom, trace_store: TempoApp) -> RecordingApp:
    """The dashboard app, noting every path it serves (the browser test counts the page's refreshes)."""
    return RecordingApp(create_app(make_settings(prometheus.url, trace_store.http_url)))


@pytest.fixture(scope="session")
def dashboard_url(dashboard_app: RecordingApp) -> Iterator[str]:
    with ServerThread(dashboard_app) as srv:
        yield srv.url
