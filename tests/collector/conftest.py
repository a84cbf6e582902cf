"""Fixtures: a collector from the project's YAML on free loopback ports, feeding an OTLP sink."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from collector_support import project_config, render

from amtp_obs.collector import Collector
from amtp_obs.testing.otlp_sink import OtlpSink


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s


@pytest.fixture
def config(sink: OtlpSink) -> dict[str, Any]:
    return render(project_config(), sink.grpc_endpoint)


@pytest.fixture
async def collector(config: dict[str, Any]) -> AsyncIterator[Collector]:
    c = Collector.from_config(config)
    await c.start()
    try:
        yield c
    finally:
        await c.shutdown()


@pytest.fixture
async def make_collector() -> AsyncIterator[Callable[[dict[str, Any]], Awaitable[Collector]]]:
    """Start collectors from custom docs; all are shut down at the end of the test."""
    started: list[Collector] = []

    async def make(doc: dict[str, Any]) -> Collector:
        c = Collector.from_config(doc)
        await c.start()
        started.append(c)
        return c

    yield make
    for c in started:
        await c.shutdown()
