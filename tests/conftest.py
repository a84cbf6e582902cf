"""Fixtures shared across test packages."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from amtp_obs import env
from amtp_obs.sdk.testing import reset_sdk
from amtp_obs.testing import tools
from amtp_obs.testing.otlp_sink import OtlpSink

# Variables configure() reads: each test starts from none of them, and sets what it needs.
SDK_ENV = (
    env.OTEL_SERVICE_NAME,
    env.OTEL_RESOURCE_ATTRIBUTES,
    env.OTEL_EXPORTER_OTLP_ENDPOINT,
    env.OTEL_EXPORTER_OTLP_PROTOCOL,
    env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT,
    env.OTEL_METRIC_EXPORT_INTERVAL,
    env.OTEL_BSP_SCHEDULE_DELAY,
    env.OTEL_SDK_DISABLED,
    env.OBS_OTEL_GRPC_PORT,
    env.OBS_OTEL_HTTP_PORT,
    env.AMTP_OBS_CAPTURE_CONTENT,
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "needs(*tools): external programs the test runs (skipped when missing; a failure under CI=true)"
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    """Under CI=true every required tool must be installed: the run fails naming the missing ones."""
    problem = tools.missing_in_ci()
    if problem:
        pytest.exit(problem, returncode=pytest.ExitCode.TESTS_FAILED)


def pytest_runtest_setup(item: pytest.Item) -> None:
    for mark in item.iter_markers("needs"):
        tools.gate(mark.args)


@pytest.fixture
def clean_sdk(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in SDK_ENV:
        monkeypatch.delenv(name, raising=False)
    reset_sdk()
    yield
    reset_sdk()


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s
        reset_sdk()  # flush while the sink still listens, or shutdown waits out the export timeout
