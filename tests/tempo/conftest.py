from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from tempo_helpers import Exporter, tempo_doc

from amtp_obs.tempo import TempoApp, TempoThread


@pytest.fixture
def start_tempo(tmp_path: Path) -> Iterator[Callable[..., TempoApp]]:
    """Start an embedded Tempo (own loop, own thread) from a doc; stopped at teardown."""
    threads: list[TempoThread] = []

    def start(doc: dict[str, Any] | None = None, **kwargs: Any) -> TempoApp:
        th = TempoThread(TempoApp.from_config(doc or tempo_doc(tmp_path), **kwargs))
        threads.append(th)
        return th.start()

    yield start
    for th in reversed(threads):
        th.stop()


@pytest.fixture
def tempo(start_tempo: Callable[..., TempoApp]) -> TempoApp:
    return start_tempo()


@pytest.fixture
def http(tempo: TempoApp) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=tempo.http_url, timeout=10) as client:
        yield client


@pytest.fixture
def exporter(tempo: TempoApp) -> Iterator[Exporter]:
    with Exporter(tempo.otlp_grpc_endpoint) as e:
        yield e
