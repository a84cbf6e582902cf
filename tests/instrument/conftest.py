"""Fixtures: the fake vendor server, in-memory OTel providers behind sdk.configure(), the clients."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import anthropic
import openai
import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from amtp_obs import contract
from amtp_obs.instrument import instrument, uninstrument
from amtp_obs.sdk import shutdown
from amtp_obs.sdk.testing import configure_with
from amtp_obs.testing.fake_llm import FakeLLMServer


@dataclass
class Recorded:
    """What the SDK recorded during one test."""

    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    tracer_provider: TracerProvider

    def llm_spans(self) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if s.name == contract.SPAN_LLM_COMPLETION]

    def one_span(self) -> ReadableSpan:
        spans = self.llm_spans()
        assert len(spans) == 1, [dict(s.attributes or {}) for s in spans]
        return spans[0]

    def counter_points(self) -> dict[str, list[tuple[dict[str, Any], int]]]:
        """Counter name -> [(attributes, cumulative value)] of every contract token counter."""
        out: dict[str, list[tuple[dict[str, Any], int]]] = {}
        data = self.reader.get_metrics_data()
        names = {spec.instrument for spec in contract.ALL_TOKEN_COUNTERS}
        for rm in data.resource_metrics if data else ():
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if metric.name in names:
                        out[metric.name] = [(dict(p.attributes), int(p.value)) for p in metric.data.data_points]
        return out

    def counter_totals(self) -> dict[str, int]:
        return {name: sum(v for _, v in points) for name, points in self.counter_points().items()}


@pytest.fixture(scope="session")
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def recorded() -> Iterator[Recorded]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    configure_with(tp, mp, capture_content=False)  # replaces any configuration left by another module
    try:
        yield Recorded(exporter, reader, tp)
    finally:
        shutdown()
        tp.shutdown()
        mp.shutdown()


@pytest.fixture
def instrumented(recorded: Recorded) -> Iterator[Recorded]:
    instrument()
    try:
        yield recorded
    finally:
        uninstrument()


@pytest.fixture
def openai_sync(server: FakeLLMServer) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=server.openai_base_url, api_key="test-key", max_retries=0)
    yield client
    client.close()


@pytest.fixture
async def openai_async(server: FakeLLMServer) -> Any:
    client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="test-key", max_retries=0)
    yield client
    await client.close()


@pytest.fixture
def anthropic_sync(server: FakeLLMServer) -> Iterator[anthropic.Anthropic]:
    client = anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="test-key", max_retries=0)
    yield client
    client.close()


@pytest.fixture
async def anthropic_async(server: FakeLLMServer) -> Any:
    client = anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="test-key", max_retries=0)
    yield client
    await client.close()
