"""The contract validators: each violation kind, and every input shape they accept."""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.metrics.v1 import metrics_pb2
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.trace import SpanKind

from amtp_obs import contract
from amtp_obs.contract import validate as v
from amtp_obs.sdk import configure, force_flush, llm_call
from amtp_obs.sdk.testing import configure_in_memory
from amtp_obs.testing.otlp_sink import OtlpSink, to_key_values

GOOD: dict[str, Any] = {
    contract.LLM_PROVIDER: "openai",
    contract.LLM_MODEL: "gpt-4o",
    contract.LLM_REQUEST_TYPE: "chat",
    contract.LLM_TOKENS_PROMPT: 128,
    contract.LLM_TOKENS_COMPLETION: 64,
    contract.LLM_TOKENS_TOTAL: 192,
    contract.GEN_AI_SYSTEM: "openai",
    contract.GEN_AI_REQUEST_MODEL: "gpt-4o",
}
METRIC_ATTRS = {
    contract.LLM_MODEL: "gpt-4o",
    contract.LLM_PROVIDER: "openai",
    contract.GEN_AI_SYSTEM: "openai",
}


def span_violations(changes: dict[str, Any], *, drop: tuple[str, ...] = (), kind: Any = None) -> list[v.Violation]:
    attrs = {k: val for k, val in {**GOOD, **changes}.items() if k not in drop}
    return v.validate_span(contract.SPAN_LLM_COMPLETION, attrs, kind=kind)


def kinds(violations: list[v.Violation]) -> list[str]:
    return [x.kind for x in violations]


# -- spans ----------------------------------------------------------------------------------------


def test_the_design_example_is_valid() -> None:
    assert span_violations({}, kind=SpanKind.CLIENT) == []
    assert span_violations({contract.LLM_TOKENS_PROVENANCE: contract.PROVENANCE_REPORTED}) == []


def test_other_span_names_are_not_subject_to_the_contract() -> None:
    assert v.validate_span(contract.SPAN_LLM_INFERENCE, {}) == []
    assert v.validate_span("http.request", {}, kind=SpanKind.SERVER) == []


@pytest.mark.parametrize("attr", list(contract.REQUIRED_SPAN_ATTRIBUTES))
def test_each_missing_attribute_is_named(attr: str) -> None:
    [violation] = span_violations({}, drop=(attr,))
    assert violation.kind == v.MISSING_ATTRIBUTE
    assert violation.attribute == attr
    assert f"required attribute {attr!r} is missing" in violation.message
    assert contract.SPAN_LLM_COMPLETION in violation.message


@pytest.mark.parametrize(
    ("attr", "bad", "expected_type"),
    [
        (contract.LLM_TOKENS_PROMPT, True, "int"),  # bool is not an int here
        (contract.LLM_TOKENS_COMPLETION, "64", "int"),
        (contract.LLM_TOKENS_TOTAL, 192.0, "int"),
        (contract.LLM_MODEL, 4, "str"),
        (contract.GEN_AI_SYSTEM, ["openai"], "str"),
    ],
)
def test_wrong_types(attr: str, bad: Any, expected_type: str) -> None:
    found = [x for x in span_violations({attr: bad}) if x.kind == v.WRONG_TYPE]
    assert [x.attribute for x in found] == [attr]
    assert f"must be {expected_type}, got {type(bad).__name__}" in found[0].message


def test_semconv_attribute_types_are_checked_when_present() -> None:
    [violation] = span_violations(
        {contract.GEN_AI_USAGE_INPUT_TOKENS: False, contract.LLM_TOKENS_PROVENANCE: "reported"}
    )
    assert (violation.kind, violation.attribute) == (v.WRONG_TYPE, contract.GEN_AI_USAGE_INPUT_TOKENS)


def test_total_mismatch_shows_the_arithmetic() -> None:
    [violation] = span_violations({contract.LLM_TOKENS_TOTAL: 200})
    assert violation.kind == v.TOTAL_MISMATCH
    assert "is 200 but" in violation.message and "128 + 64 = 192" in violation.message


def test_negative_count() -> None:
    found = span_violations({contract.LLM_TOKENS_PROMPT: -128, contract.LLM_TOKENS_TOTAL: -64})
    assert v.NEGATIVE_COUNT in kinds(found)


def test_model_mismatch() -> None:
    [violation] = span_violations({contract.GEN_AI_REQUEST_MODEL: "gpt-4o-mini"})
    assert violation.kind == v.MODEL_MISMATCH
    assert "'gpt-4o-mini'" in violation.message and "'gpt-4o'" in violation.message


def test_semconv_usage_must_agree_with_the_contract() -> None:
    [violation] = span_violations({contract.GEN_AI_USAGE_OUTPUT_TOKENS: 65})
    assert (violation.kind, violation.attribute) == (v.SEMCONV_MISMATCH, contract.GEN_AI_USAGE_OUTPUT_TOKENS)


def test_bad_provenance() -> None:
    [violation] = span_violations({contract.LLM_TOKENS_PROVENANCE: "guessed"})
    assert violation.kind == v.BAD_PROVENANCE
    assert "'guessed'" in violation.message and "reported, estimated, unavailable" in violation.message


def test_tokens_may_be_absent_only_when_unavailable() -> None:
    tokens = (contract.LLM_TOKENS_PROMPT, contract.LLM_TOKENS_COMPLETION, contract.LLM_TOKENS_TOTAL)
    unavailable = {contract.LLM_TOKENS_PROVENANCE: contract.PROVENANCE_UNAVAILABLE}
    assert span_violations(unavailable, drop=tokens) == []
    estimated = {contract.LLM_TOKENS_PROVENANCE: contract.PROVENANCE_ESTIMATED}
    found = span_violations(estimated, drop=tokens)
    assert kinds(found) == [v.MISSING_ATTRIBUTE] * 3
    assert "allowed only when llm.tokens.provenance=unavailable" in found[0].message


@pytest.mark.parametrize("kind", [SpanKind.INTERNAL, "SERVER", 1, trace_pb2.Span.SPAN_KIND_SERVER])
def test_wrong_span_kind(kind: Any) -> None:
    [violation] = span_violations({}, kind=kind)
    assert violation.kind == v.WRONG_SPAN_KIND
    assert "requires CLIENT" in violation.message


@pytest.mark.parametrize("kind", [SpanKind.CLIENT, "CLIENT", "SPAN_KIND_CLIENT", trace_pb2.Span.SPAN_KIND_CLIENT])
def test_client_kind_in_every_spelling(kind: Any) -> None:
    assert span_violations({}, kind=kind) == []


def test_assert_valid_lists_everything() -> None:
    v.assert_valid([])
    with pytest.raises(v.ContractViolationError) as caught:
        v.assert_valid(span_violations({contract.LLM_TOKENS_TOTAL: 1}, drop=(contract.LLM_MODEL,)))
    assert len(caught.value.violations) == 2
    assert "llm.model" in str(caught.value) and "llm.tokens.total" in str(caught.value)


def test_reexported_from_contract() -> None:
    assert contract.validate_span is v.validate_span
    assert contract.Violation is v.Violation


# -- span input shapes --------------------------------------------------------------------------


def _trace_request(attrs: dict[str, Any], kind: int) -> ExportTraceServiceRequest:
    req = ExportTraceServiceRequest()
    span = req.resource_spans.add().scope_spans.add().spans.add()
    span.name = contract.SPAN_LLM_COMPLETION
    span.kind = kind  # type: ignore[assignment]
    span.attributes.extend(to_key_values(attrs))
    return req


def test_otlp_trace_request() -> None:
    assert v.validate_trace_request(_trace_request(GOOD, trace_pb2.Span.SPAN_KIND_CLIENT)) == []
    bad = _trace_request({**GOOD, contract.LLM_TOKENS_PROMPT: True}, trace_pb2.Span.SPAN_KIND_INTERNAL)
    assert sorted(kinds(v.validate_trace_request(bad))) == sorted([v.WRONG_TYPE, v.WRONG_SPAN_KIND])
    proto_spans = bad.resource_spans[0].scope_spans[0].spans
    assert sorted(kinds(v.validate_spans(proto_spans))) == sorted([v.WRONG_TYPE, v.WRONG_SPAN_KIND])


def test_readable_spans_from_the_sdk() -> None:
    mem = configure_in_memory()
    with llm_call("openai", "gpt-4o") as call, call.inference():
        call.set_usage(3, 4)
    tracer = mem.telemetry.tracer
    with tracer.start_as_current_span(contract.SPAN_LLM_COMPLETION) as hand_made:  # INTERNAL, no attributes
        hand_made.set_attribute(contract.LLM_MODEL, "gpt-4o")
    spans = mem.spans()
    good, bad = spans[1], spans[2]
    assert v.validate_readable_span(good) == []
    found = v.validate_readable_span(bad)
    assert v.WRONG_SPAN_KIND in kinds(found)
    assert kinds(found).count(v.MISSING_ATTRIBUTE) == len(contract.REQUIRED_SPAN_ATTRIBUTES) - 1
    assert v.validate_spans(spans) == found


def test_sink_records_over_real_otlp(sink: OtlpSink) -> None:
    configure("validator-test", endpoint=sink.grpc_endpoint, span_processor="simple")
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(5, 5)
    with llm_call("openai", "gpt-4o", attributes={contract.GEN_AI_REQUEST_MODEL: "other"}):
        pass  # a caller attribute cannot override the contract's: still valid
    assert force_flush(10_000)
    assert sink.wait_for(lambda s: len(s.trace_requests) >= 2 and s.metric_requests)
    assert len(sink.spans()) == 2
    assert v.validate_spans(sink.spans()) == []
    assert v.validate_metric_points(sink.points()) == []
    for req in sink.trace_requests:
        assert v.validate_trace_request(req) == []
    assert v.validate_metrics_request(sink.metric_requests[-1]) == []


# -- metrics ------------------------------------------------------------------------------------


def point(metric: str, value: float, **over: Any) -> v.MetricPoint:
    fields: dict[str, Any] = dict(
        metric=metric, unit=contract.TOKEN_UNIT, kind="sum", monotonic=True, temporality=2, value=value
    )
    fields["attributes"] = over.pop("attributes", METRIC_ATTRS)
    fields.update(over)
    return v.MetricPoint(**fields)


def good_points(p: float = 128, c: float = 64, t: float = 192, **over: Any) -> list[v.MetricPoint]:
    return [
        point(contract.PROMPT_TOKENS.instrument, p, **over),
        point(contract.COMPLETION_TOKENS.instrument, c, **over),
        point(contract.TOTAL_TOKENS.instrument, t, **over),
    ]


def test_good_counters() -> None:
    assert v.validate_metric_points(good_points()) == []
    assert v.validate_metric_points([*good_points(), point("unrelated", 1, unit="", kind="gauge")]) == []


def test_wrong_and_missing_unit() -> None:
    pts = good_points()
    pts[0] = point(contract.PROMPT_TOKENS.instrument, 128, unit="token")
    pts[1] = point(contract.COMPLETION_TOKENS.instrument, 64, unit="")
    found = v.validate_metric_points(pts)
    assert kinds(found) == [v.WRONG_UNIT, v.MISSING_UNIT]
    assert "'token'" in found[0].message and "'{token}'" in found[0].message
    assert found[0].subject == contract.PROMPT_TOKENS.instrument


@pytest.mark.parametrize(("kind", "monotonic"), [("sum", False), ("gauge", None), ("histogram", None)])
def test_not_a_monotonic_sum(kind: str, monotonic: bool | None) -> None:
    pts = good_points()
    pts[2] = point(contract.TOTAL_TOKENS.instrument, 192, kind=kind, monotonic=monotonic)
    [violation] = v.validate_metric_points(pts)
    assert violation.kind == v.NOT_MONOTONIC_SUM and violation.subject == contract.TOTAL_TOKENS.instrument


@pytest.mark.parametrize("attr", list(contract.REQUIRED_METRIC_ATTRIBUTES))
def test_missing_metric_attribute(attr: str) -> None:
    attrs = {k: val for k, val in METRIC_ATTRS.items() if k != attr}
    found = v.validate_metric_points(good_points(attributes=attrs))
    assert kinds(found) == [v.MISSING_ATTRIBUTE] * 3
    assert {x.attribute for x in found} == {attr}
    assert f"lacks required attribute {attr!r}" in found[0].message


def test_total_mismatch_per_attribute_set() -> None:
    other = {**METRIC_ATTRS, contract.LLM_MODEL: "gpt-4o-mini"}
    pts = [*good_points(), *good_points(10, 5, 16, attributes=other)]
    [violation] = v.validate_metric_points(pts)
    assert violation.kind == v.TOTAL_MISMATCH
    assert "gpt-4o-mini" in violation.message and "16 != prompt 10 + completion 5 = 15" in violation.message


def test_latest_values_are_compared_and_decreases_reported() -> None:
    # Two exports: the first is stale but consistent, the second consistent too: no violation.
    assert v.validate_metric_points([*good_points(1, 1, 2), *good_points()]) == []
    found = v.validate_metric_points([*good_points(), *good_points(100, 64, 164)])
    assert kinds(found) == [v.DECREASING_COUNTER] * 2  # prompt and total went down
    assert "went down from 128 to 100" in found[0].message
    assert "went down from 192 to 164" in found[1].message
    # A delta series may go down.
    assert v.validate_metric_points([*good_points(temporality=1), *good_points(1, 1, 2, temporality=1)]) == []


def test_missing_counter_and_missing_series() -> None:
    found = v.validate_metric_points(good_points()[:2])
    assert kinds(found) == [v.MISSING_COUNTER]
    assert found[0].subject == contract.TOTAL_TOKENS.instrument
    assert v.validate_metric_points(good_points()[:2], require_all=False) == []
    other = {**METRIC_ATTRS, contract.LLM_PROVIDER: "azure"}
    pts = [*good_points(), point(contract.PROMPT_TOKENS.instrument, 3, attributes=other)]
    [violation] = v.validate_metric_points(pts)
    assert violation.kind == v.MISSING_SERIES and "azure" in violation.message


def _metrics_request(unit: str, monotonic: bool) -> ExportMetricsServiceRequest:
    req = ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    for spec, value in zip(contract.TOKEN_COUNTERS, (128, 64, 192), strict=True):
        m = sm.metrics.add(name=spec.instrument, unit=unit)
        m.sum.is_monotonic = monotonic
        m.sum.aggregation_temporality = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
        dp = m.sum.data_points.add(as_int=value)
        dp.attributes.extend(to_key_values(METRIC_ATTRS))
    return req


def test_otlp_metrics_request() -> None:
    assert v.validate_metrics_request(_metrics_request(contract.TOKEN_UNIT, True)) == []
    found = v.validate_metrics_request(_metrics_request("1", False))
    assert sorted(set(kinds(found))) == sorted({v.WRONG_UNIT, v.NOT_MONOTONIC_SUM})
    assert len(found) == 6  # each of the three counters, twice


def test_sdk_metrics_data_wrong_unit_is_caught() -> None:
    mem = configure_in_memory()
    meter = mem.telemetry.meter_provider.get_meter("hand-made")
    meter.create_counter("prompt_tokens", unit="token").add(1, METRIC_ATTRS)
    found = v.validate_metrics_data(mem.reader.get_metrics_data())
    assert v.WRONG_UNIT in kinds(found)


# -- token classes (issue 9) ----------------------------------------------------------------------

DETAILED = {
    contract.LLM_TOKENS_CACHE_READ: 100,
    contract.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: 100,
    contract.LLM_TOKENS_CACHE_CREATION: 28,
    contract.GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: 28,
    contract.LLM_TOKENS_REASONING: 64,
    contract.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: 64,
}


def test_detail_classes_equal_to_their_parent_are_valid() -> None:
    assert span_violations(DETAILED) == []  # 100 + 28 = all 128 prompt tokens cached; all output reasoning


def test_cached_tokens_beyond_the_prompt_are_double_counting() -> None:
    found = span_violations({**DETAILED, contract.LLM_TOKENS_CACHE_CREATION: 29})
    assert kinds(found) == [v.SEMCONV_MISMATCH, v.DETAIL_EXCEEDS_PARENT]
    assert "= 129 exceeds 'llm.tokens.prompt' 128" in found[1].message


def test_reasoning_beyond_the_completion_and_bad_detail_values() -> None:
    found = span_violations({contract.LLM_TOKENS_REASONING: 65})
    assert kinds(found) == [v.DETAIL_EXCEEDS_PARENT] and found[0].attribute == contract.LLM_TOKENS_REASONING
    found = span_violations({contract.LLM_TOKENS_CACHE_READ: True, contract.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: -1})
    assert kinds(found) == [v.WRONG_TYPE, v.NEGATIVE_COUNT]


def test_detail_counters_are_optional_checked_and_parts_of_their_parent() -> None:
    detail = [point(d.counter.instrument, 10) for d in contract.TOKEN_DETAILS]
    assert v.validate_metric_points([*good_points(), *detail]) == []
    assert v.validate_metric_points(detail[:1], require_all=False) == []
    found = v.validate_metric_points([*good_points(), point(contract.CACHE_READ_TOKENS.instrument, 129, unit="")])
    assert kinds(found) == [v.MISSING_UNIT, v.DETAIL_EXCEEDS_PARENT]
    assert "exceeds prompt_tokens 128" in found[1].message
