"""Two cases end to end over real OTLP/gRPC into the OtlpSink: what a collector would receive."""

from __future__ import annotations

from collections.abc import Iterator

import anthropic
import openai
import pytest
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from amtp_obs import contract, sdk
from amtp_obs.instrument import instrument, uninstrument
from amtp_obs.sdk.testing import configure_with
from amtp_obs.testing.fake_llm import HEADER_CHUNKS, HEADER_FAIL_AFTER, FakeLLMServer
from amtp_obs.testing.otlp_sink import OtlpSink

STATUS_ERROR = 2  # OTLP Status.STATUS_CODE_ERROR


def _received_traces_and_metrics(sink: OtlpSink) -> bool:
    # Reads the raw request lists: wait_for() holds the sink's (non-reentrant) lock, so the
    # predicate must not call spans()/points(), which take it again.
    return bool(sink.trace_requests) and bool(sink.metric_requests)


def _received_traces(sink: OtlpSink) -> bool:
    return bool(sink.trace_requests)


@pytest.fixture
def otlp() -> Iterator[tuple[OtlpSink, MeterProvider]]:
    with OtlpSink() as sink:
        resource = Resource.create({"service.name": "instrument-test"})
        tp = TracerProvider(resource=resource)
        tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=sink.grpc_endpoint, insecure=True)))
        reader = PeriodicExportingMetricReader(
            OTLPMetricExporter(endpoint=sink.grpc_endpoint, insecure=True), export_interval_millis=600_000
        )
        mp = MeterProvider(resource=resource, metric_readers=[reader])
        configure_with(tp, mp)
        instrument()
        try:
            yield sink, mp
        finally:
            uninstrument()
            sdk.shutdown()
            tp.shutdown()
            mp.shutdown()


async def test_openai_async_stream_over_otlp(otlp: tuple[OtlpSink, MeterProvider], server: FakeLLMServer) -> None:
    sink, mp = otlp
    async with openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0) as client:
        stream = await client.chat.completions.create(
            model="gpt-fake-otlp",
            messages=[{"role": "user", "content": "a b c d e"}],
            stream=True,
            extra_headers={HEADER_CHUNKS: "6"},
        )
        async for _ in stream:
            pass
    mp.force_flush()
    assert sink.wait_for(_received_traces_and_metrics)
    (span,) = [s for s in sink.spans() if s.name == contract.SPAN_LLM_COMPLETION]
    assert span.attributes[contract.LLM_TOKENS_PROMPT] == 5
    assert span.attributes[contract.LLM_TOKENS_COMPLETION] == 6
    assert span.attributes[contract.GEN_AI_REQUEST_STREAM] is True
    labels = {
        contract.LLM_MODEL: "gpt-fake-otlp",
        contract.LLM_PROVIDER: "openai",
        contract.GEN_AI_SYSTEM: "openai",
    }
    for spec, value in (
        (contract.PROMPT_TOKENS, 5),
        (contract.COMPLETION_TOKENS, 6),
        (contract.TOTAL_TOKENS, 11),
    ):
        (point,) = sink.latest(spec.instrument)
        assert (point.attributes, point.value, point.unit, point.monotonic) == (
            labels,
            value,
            spec.unit,
            True,
        )


def test_anthropic_failed_stream_over_otlp(otlp: tuple[OtlpSink, MeterProvider], server: FakeLLMServer) -> None:
    sink, mp = otlp
    with anthropic.Anthropic(base_url=server.anthropic_base_url, api_key="k", max_retries=0) as client:
        stream = client.messages.create(
            model="claude-fake-otlp",
            max_tokens=32,
            messages=[{"role": "user", "content": "hello"}],
            stream=True,
            extra_headers={HEADER_FAIL_AFTER: "4"},
        )
        with pytest.raises(Exception) as info:
            for _ in stream:
                pass
    mp.force_flush()
    assert sink.wait_for(_received_traces)
    (span,) = [s for s in sink.spans() if s.name == contract.SPAN_LLM_COMPLETION]
    assert span.status_code == STATUS_ERROR
    assert str(span.attributes[contract.ERROR_TYPE]).endswith(type(info.value).__name__)
    assert span.attributes[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE
    assert [name for name, _ in span.events] == ["exception"]
    assert not sink.latest(contract.PROMPT_TOKENS.instrument)
