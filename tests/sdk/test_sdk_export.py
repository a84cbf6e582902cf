"""configure() exporting over real OTLP (gRPC and HTTP/protobuf) into a real OtlpSink."""

from __future__ import annotations

import subprocess
import sys
import uuid

import pytest

from amtp_obs import contract, env
from amtp_obs.contract.validate import validate_metric_points, validate_spans
from amtp_obs.sdk import configure, force_flush, llm_call, shutdown
from amtp_obs.sdk._internal.config import PROTOCOL_GRPC, PROTOCOL_HTTP_PROTOBUF
from amtp_obs.sdk.testing import current_telemetry
from amtp_obs.testing.otlp_sink import OtlpSink, ReceivedPoint, ReceivedSpan
from amtp_obs.testing.poll import eventually

OTLP_SPAN_KIND_CLIENT = 3  # opentelemetry/proto/trace/v1/trace.proto
OTLP_TEMPORALITY_CUMULATIVE = 2  # opentelemetry/proto/metrics/v1/metrics.proto


def _endpoint(sink: OtlpSink, protocol: str) -> str:
    return sink.grpc_endpoint if protocol == PROTOCOL_GRPC else sink.http_endpoint


def _root(sink: OtlpSink) -> list[ReceivedSpan]:
    return [s for s in sink.spans() if s.name == contract.SPAN_LLM_COMPLETION]


def _latest(sink: OtlpSink, counter: contract.CounterSpec) -> list[ReceivedPoint]:
    return sink.latest(counter.instrument)


@pytest.mark.parametrize("protocol", [PROTOCOL_GRPC, PROTOCOL_HTTP_PROTOBUF])
def test_span_and_counters_arrive_attribute_by_attribute(sink: OtlpSink, protocol: str) -> None:
    configure(
        "agent-under-test",
        endpoint=_endpoint(sink, protocol),
        protocol=protocol,
        resource_attributes={"deployment.environment.name": "test"},
        metric_export_interval_ms=60_000,
    )
    with llm_call("openai", "gpt-4o") as call:
        with call.inference():
            pass
        with call.response_parse():
            pass
        call.set_usage(128, 64)
        call.set_response(model="gpt-4o-2024-08-06", response_id="chatcmpl-1", finish_reasons=["stop"])
    assert force_flush(10_000)
    assert eventually(lambda: _root(sink) and sink.latest(contract.TOTAL_TOKENS.instrument))
    if protocol == PROTOCOL_HTTP_PROTOBUF:
        assert {path for path, _ in sink.http_requests} == {"/v1/traces", "/v1/metrics"}
        assert {ctype for _, ctype in sink.http_requests} == {"application/x-protobuf"}
    else:
        assert sink.http_requests == []

    [root] = _root(sink)
    a = root.attributes
    assert root.kind == OTLP_SPAN_KIND_CLIENT
    assert root.parent_span_id == ""
    assert a[contract.LLM_PROVIDER] == "openai"
    assert a[contract.LLM_MODEL] == "gpt-4o"
    assert a[contract.LLM_REQUEST_TYPE] == contract.REQUEST_TYPE_CHAT
    assert a[contract.LLM_TOKENS_PROMPT] == 128
    assert a[contract.LLM_TOKENS_COMPLETION] == 64
    assert a[contract.LLM_TOKENS_TOTAL] == 192
    assert a[contract.GEN_AI_SYSTEM] == "openai"
    assert a[contract.GEN_AI_REQUEST_MODEL] == "gpt-4o"
    assert a[contract.GEN_AI_OPERATION_NAME] == contract.REQUEST_TYPE_CHAT
    assert a[contract.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[contract.GEN_AI_USAGE_INPUT_TOKENS] == 128
    assert a[contract.GEN_AI_USAGE_OUTPUT_TOKENS] == 64
    assert a[contract.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024-08-06"
    assert a[contract.GEN_AI_RESPONSE_ID] == "chatcmpl-1"
    assert a[contract.GEN_AI_RESPONSE_FINISH_REASONS] == ["stop"]
    assert a[contract.GEN_AI_REQUEST_STREAM] is False
    assert a[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_REPORTED
    assert contract.GEN_AI_INPUT_MESSAGES not in a and contract.GEN_AI_OUTPUT_MESSAGES not in a
    assert root.scope == contract.SCOPE_NAME
    assert root.resource["service.name"] == "agent-under-test"
    assert root.resource["deployment.environment.name"] == "test"
    assert root.resource["service.instance.id"]

    children = {s.name: s for s in sink.spans() if s.name != contract.SPAN_LLM_COMPLETION}
    assert set(children) == {contract.SPAN_LLM_INFERENCE, contract.SPAN_LLM_RESPONSE_PARSE}
    for child in children.values():
        assert child.parent_span_id == root.span_id
        assert child.trace_id == root.trace_id
    assert validate_spans(sink.spans()) == []

    expected = {contract.PROMPT_TOKENS: 128, contract.COMPLETION_TOKENS: 64, contract.TOTAL_TOKENS: 192}
    for spec, value in expected.items():
        [point] = _latest(sink, spec)
        assert point.value == value
        assert point.unit == contract.TOKEN_UNIT == "{token}"
        assert point.kind == "sum" and point.monotonic is True
        assert point.temporality == OTLP_TEMPORALITY_CUMULATIVE
        assert point.attributes == {
            contract.LLM_MODEL: "gpt-4o",
            contract.LLM_PROVIDER: "openai",
            contract.GEN_AI_SYSTEM: "openai",
        }
        assert point.resource["service.instance.id"] == root.resource["service.instance.id"]
    assert validate_metric_points(sink.points()) == []


def test_counters_are_cumulative_per_model(sink: OtlpSink) -> None:
    configure("agent", endpoint=sink.grpc_endpoint, protocol=PROTOCOL_GRPC)
    for prompt, completion in ((10, 5), (20, 7)):
        with llm_call("openai", "gpt-4o") as call:
            call.set_usage(prompt, completion)
    with llm_call("anthropic", "claude-sonnet-4") as call:
        call.set_usage(100, 1, provenance=contract.PROVENANCE_ESTIMATED)
    assert force_flush(10_000)
    first_export = len(sink.metric_requests)
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(1, 1)
    assert force_flush(10_000)
    assert sink.wait_for(lambda s: len(s.metric_requests) > first_export)

    def by_model(spec: contract.CounterSpec) -> dict[str, float | None]:
        return {p.attributes[contract.LLM_MODEL]: p.value for p in sink.latest(spec.instrument)}

    assert by_model(contract.PROMPT_TOKENS) == {"gpt-4o": 31, "claude-sonnet-4": 100}
    assert by_model(contract.COMPLETION_TOKENS) == {"gpt-4o": 13, "claude-sonnet-4": 1}
    assert by_model(contract.TOTAL_TOKENS) == {"gpt-4o": 44, "claude-sonnet-4": 101}
    anthropic = [
        p for p in sink.latest(contract.PROMPT_TOKENS.instrument) if p.attributes[contract.LLM_MODEL] != "gpt-4o"
    ]
    assert anthropic[0].attributes[contract.GEN_AI_SYSTEM] == "anthropic"
    # Two exports of the same series: the later value is never lower (monotonic cumulative).
    assert validate_metric_points(sink.points()) == []
    gpt_prompt = [
        p.value
        for p in sink.points()
        if p.metric == contract.PROMPT_TOKENS.instrument and p.attributes[contract.LLM_MODEL] == "gpt-4o"
    ]
    assert gpt_prompt == sorted(gpt_prompt) and gpt_prompt[0] == 30 and gpt_prompt[-1] == 31


def test_environment_variables_configure_the_exporters(sink: OtlpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.OTEL_EXPORTER_OTLP_ENDPOINT, sink.http_endpoint)
    monkeypatch.setenv(env.OTEL_EXPORTER_OTLP_PROTOCOL, PROTOCOL_HTTP_PROTOBUF)
    monkeypatch.setenv(env.OTEL_SERVICE_NAME, "from-env")
    monkeypatch.setenv(env.OTEL_RESOURCE_ATTRIBUTES, "team=llm,service.instance.id=pinned-instance")
    assert configure().protocol == PROTOCOL_HTTP_PROTOBUF
    with llm_call("openai", "gpt-4o-mini") as call:
        call.set_usage(1, 2)
    shutdown()  # flushes
    assert eventually(lambda: _root(sink) and sink.metric_requests)
    [root] = _root(sink)
    assert root.resource["service.name"] == "from-env"
    assert root.resource["team"] == "llm"
    assert root.resource["service.instance.id"] == "pinned-instance"  # given: not replaced
    assert {path for path, _ in sink.http_requests} == {"/v1/traces", "/v1/metrics"}


def test_explicit_arguments_win_over_environment(sink: OtlpSink, monkeypatch: pytest.MonkeyPatch) -> None:
    other = OtlpSink().start()
    try:
        monkeypatch.setenv(env.OTEL_EXPORTER_OTLP_ENDPOINT, other.http_endpoint)
        monkeypatch.setenv(env.OTEL_EXPORTER_OTLP_PROTOCOL, PROTOCOL_HTTP_PROTOBUF)
        monkeypatch.setenv(env.OTEL_SERVICE_NAME, "from-env")
        configure("from-arg", endpoint=sink.grpc_endpoint, protocol=PROTOCOL_GRPC)
        with llm_call("openai", "gpt-4o") as call:
            call.set_usage(1, 2)
        shutdown()
        assert eventually(lambda: _root(sink))
        assert _root(sink)[0].resource["service.name"] == "from-arg"
        assert other.trace_requests == [] and other.http_requests == []
    finally:
        other.stop()


INSTANCE_ID_SCRIPT = """
from amtp_obs.sdk import configure
c = configure("probe", endpoint="http://127.0.0.1:9", span_processor="simple")
print(c.resource["service.instance.id"])
"""


def test_each_process_gets_its_own_instance_id() -> None:
    ids = [
        subprocess.run(
            [sys.executable, "-c", INSTANCE_ID_SCRIPT], capture_output=True, text=True, timeout=60, check=True
        ).stdout.strip()
        for _ in range(2)
    ]
    assert ids[0] != ids[1]
    for value in ids:
        assert str(uuid.UUID(value)) == value


def test_given_instance_id_is_kept(sink: OtlpSink) -> None:
    c = configure("a", endpoint=sink.grpc_endpoint, resource_attributes={"service.instance.id": "replica-7"})
    assert c.resource["service.instance.id"] == "replica-7"
    t = current_telemetry()
    assert t.tracer_provider.resource.attributes["service.instance.id"] == "replica-7"  # type: ignore[attr-defined]
    assert t.meter_provider._sdk_config.resource.attributes["service.instance.id"] == "replica-7"  # type: ignore[attr-defined]
