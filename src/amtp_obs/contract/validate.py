"""Validators of the LLM instrumentation contract: precise violations for spans and counter exports.

They accept what the project handles in practice: plain (name, attributes) pairs, SDK ReadableSpans,
OTLP protobuf export requests, OtlpSink records and SDK MetricsData. Each problem becomes one
Violation whose message names the span/metric, the attribute and what is wrong, so a failing check
or test says exactly what to fix.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

from opentelemetry.proto.trace.v1.trace_pb2 import Span as _OtlpSpan

from amtp_obs import contract
from amtp_obs.otlp import attributes

# Violation kinds.
MISSING_ATTRIBUTE: Final = "missing_attribute"
WRONG_TYPE: Final = "wrong_type"
NEGATIVE_COUNT: Final = "negative_count"
TOTAL_MISMATCH: Final = "total_mismatch"
MODEL_MISMATCH: Final = "model_mismatch"
SEMCONV_MISMATCH: Final = "semconv_mismatch"
BAD_PROVENANCE: Final = "bad_provenance"
WRONG_SPAN_KIND: Final = "wrong_span_kind"
WRONG_UNIT: Final = "wrong_unit"
MISSING_UNIT: Final = "missing_unit"
NOT_MONOTONIC_SUM: Final = "not_monotonic_sum"
DECREASING_COUNTER: Final = "decreasing_counter"
MISSING_COUNTER: Final = "missing_counter"
MISSING_SERIES: Final = "missing_series"
DETAIL_EXCEEDS_PARENT: Final = "detail_exceeds_parent"

TOKEN_ATTRIBUTES: Final = (
    contract.LLM_TOKENS_PROMPT,
    contract.LLM_TOKENS_COMPLETION,
    contract.LLM_TOKENS_TOTAL,
)

OTLP_SPAN_KIND_CLIENT: Final = int(_OtlpSpan.SPAN_KIND_CLIENT)


@dataclass(frozen=True)
class Violation:
    """One way a span or metric breaks the contract."""

    kind: str
    subject: str
    """The span or metric name."""
    message: str
    attribute: str | None = None

    def __str__(self) -> str:
        return self.message


class ContractViolationError(AssertionError):
    """Raised by assert_valid(); carries the violations."""

    def __init__(self, violations: list[Violation]) -> None:
        self.violations = violations
        super().__init__("contract violations:\n" + "\n".join(f"  - {v.message}" for v in violations))


def assert_valid(violations: list[Violation]) -> None:
    """Raise ContractViolationError listing every violation, if there are any."""
    if violations:
        raise ContractViolationError(violations)


def _type_name(value: Any) -> str:
    return type(value).__name__


def _has_type(value: Any, expected: type) -> bool:
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)  # bool is an int subclass
    return isinstance(value, expected)


def _kind_name(kind: Any) -> str | None:
    """CLIENT/SERVER/... from an SDK SpanKind, a name, or an OTLP protobuf enum int."""
    if kind is None:
        return None
    if isinstance(kind, str):
        name = kind.upper()
        return name.removeprefix("SPAN_KIND_")
    if isinstance(kind, int) and not isinstance(kind, bool) and not hasattr(kind, "name"):
        try:
            return str(_OtlpSpan.SpanKind.Name(kind)).removeprefix("SPAN_KIND_")
        except ValueError:
            return f"unknown({kind})"
    return str(getattr(kind, "name", kind)).upper()


# ---------------------------------------------------------------------------------------------
# Spans
# ---------------------------------------------------------------------------------------------


def validate_span(name: str, attributes: Mapping[str, Any], *, kind: Any = None) -> list[Violation]:
    """Violations of one span. Only ``llm.completion`` carries the contract; other names pass.

    ``kind`` may be an SDK SpanKind, a name ("CLIENT") or an OTLP protobuf enum int (3 = CLIENT).
    Token attributes may be absent only when ``llm.tokens.provenance`` is ``unavailable``.
    """
    if name != contract.SPAN_LLM_COMPLETION:
        return []
    out: list[Violation] = []

    def add(vkind: str, message: str, attribute: str | None = None) -> None:
        out.append(Violation(vkind, name, f"span {name!r}: {message}", attribute))

    kind_name = _kind_name(kind)
    if kind_name is not None and kind_name != "CLIENT":
        add(WRONG_SPAN_KIND, f"span kind is {kind_name}, the contract requires CLIENT")

    provenance = attributes.get(contract.LLM_TOKENS_PROVENANCE)
    if contract.LLM_TOKENS_PROVENANCE in attributes and provenance not in contract.PROVENANCE_VALUES:
        add(
            BAD_PROVENANCE,
            f"attribute {contract.LLM_TOKENS_PROVENANCE!r} is {provenance!r}, "
            f"expected one of {', '.join(contract.PROVENANCE_VALUES)}",
            contract.LLM_TOKENS_PROVENANCE,
        )
    tokens_optional = provenance == contract.PROVENANCE_UNAVAILABLE

    for attr, expected in contract.REQUIRED_SPAN_ATTRIBUTES.items():
        if attr not in attributes or attributes[attr] is None:
            if attr in TOKEN_ATTRIBUTES and tokens_optional:
                continue
            hint = (
                f" (allowed only when {contract.LLM_TOKENS_PROVENANCE}={contract.PROVENANCE_UNAVAILABLE})"
                if attr in TOKEN_ATTRIBUTES
                else ""
            )
            add(MISSING_ATTRIBUTE, f"required attribute {attr!r} is missing{hint}", attr)
            continue
        value = attributes[attr]
        if not _has_type(value, expected):
            add(
                WRONG_TYPE,
                f"attribute {attr!r} must be {expected.__name__}, got {_type_name(value)} {value!r}",
                attr,
            )
        elif expected is int and value < 0:
            add(NEGATIVE_COUNT, f"attribute {attr!r} is negative ({value})", attr)

    for attr, expected in contract.SEMCONV_SPAN_ATTRIBUTES.items():
        if attr in attributes and not _has_type(attributes[attr], expected):
            value = attributes[attr]
            add(
                WRONG_TYPE,
                f"attribute {attr!r} must be {expected.__name__}, got {_type_name(value)} {value!r}",
                attr,
            )

    def ints(*names: str) -> list[int] | None:
        vals = [attributes.get(n) for n in names]
        return vals if all(_has_type(v, int) for v in vals) else None  # type: ignore[return-value]

    tok = ints(*TOKEN_ATTRIBUTES)
    if tok is not None and tok[0] + tok[1] != tok[2]:
        add(
            TOTAL_MISMATCH,
            f"{contract.LLM_TOKENS_TOTAL!r} is {tok[2]} but {contract.LLM_TOKENS_PROMPT!r} + "
            f"{contract.LLM_TOKENS_COMPLETION!r} = {tok[0]} + {tok[1]} = {tok[0] + tok[1]}",
            contract.LLM_TOKENS_TOTAL,
        )

    for ours, semconv in (
        (contract.LLM_TOKENS_PROMPT, contract.GEN_AI_USAGE_INPUT_TOKENS),
        (contract.LLM_TOKENS_COMPLETION, contract.GEN_AI_USAGE_OUTPUT_TOKENS),
    ):
        pair = ints(ours, semconv)
        if pair is not None and pair[0] != pair[1]:
            add(SEMCONV_MISMATCH, f"{semconv!r} is {pair[1]} but {ours!r} is {pair[0]}", semconv)

    out.extend(_detail_violations(name, attributes, ints))

    model, req_model = attributes.get(contract.LLM_MODEL), attributes.get(contract.GEN_AI_REQUEST_MODEL)
    if isinstance(model, str) and isinstance(req_model, str) and model != req_model:
        add(
            MODEL_MISMATCH,
            f"{contract.GEN_AI_REQUEST_MODEL!r} is {req_model!r} but {contract.LLM_MODEL!r} is {model!r}",
            contract.GEN_AI_REQUEST_MODEL,
        )
    return out


def _detail_violations(name: str, attributes: Mapping[str, Any], ints: Any) -> list[Violation]:
    """Cache read / cache creation / reasoning: counts, equal GenAI twins, and parts of their parent."""
    out: list[Violation] = []

    def add(vkind: str, message: str, attribute: str) -> None:
        out.append(Violation(vkind, name, f"span {name!r}: {message}", attribute))

    for detail in contract.TOKEN_DETAILS:
        for attr in (detail.attribute, detail.semconv_attribute):
            value = attributes.get(attr)
            if value is None:
                continue
            if not _has_type(value, int):
                add(WRONG_TYPE, f"attribute {attr!r} must be int, got {_type_name(value)} {value!r}", attr)
            elif value < 0:
                add(NEGATIVE_COUNT, f"attribute {attr!r} is negative ({value})", attr)
        pair = ints(detail.attribute, detail.semconv_attribute)
        if pair is not None and pair[0] != pair[1]:
            add(
                SEMCONV_MISMATCH,
                f"{detail.semconv_attribute!r} is {pair[1]} but {detail.attribute!r} is {pair[0]}",
                detail.semconv_attribute,
            )
    for parent, parent_attr in (
        (contract.PROMPT_TOKENS, contract.LLM_TOKENS_PROMPT),
        (contract.COMPLETION_TOKENS, contract.LLM_TOKENS_COMPLETION),
    ):
        whole = attributes.get(parent_attr)
        parts = [d.attribute for d in contract.TOKEN_DETAILS if d.part_of == parent]
        known: list[tuple[str, int]] = []
        for a in parts:
            v = attributes.get(a)
            if isinstance(v, int) and not isinstance(v, bool):
                known.append((a, v))
        if not isinstance(whole, int) or isinstance(whole, bool) or not known:
            continue
        total = sum(v for _, v in known)
        if total > whole:
            listed = " + ".join(f"{a!r} {v}" for a, v in known)
            add(
                DETAIL_EXCEEDS_PARENT,
                f"{listed} = {total} exceeds {parent_attr!r} {whole}: the detail classes are parts of "
                f"{parent_attr!r} (which includes them), never more than it",
                known[0][0],
            )
    return out


def validate_readable_span(span: Any) -> list[Violation]:
    """Violations of an SDK ReadableSpan (what span processors and in-memory exporters hold)."""
    return validate_span(span.name, dict(span.attributes or {}), kind=span.kind)


def validate_trace_request(request: Any) -> list[Violation]:
    """Violations of every span in an OTLP ExportTraceServiceRequest (protobuf)."""
    out: list[Violation] = []
    for rs in request.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.extend(validate_span(s.name, attributes(s.attributes), kind=int(s.kind)))
    return out


def validate_spans(spans: Iterable[Any]) -> list[Violation]:
    """Violations of many spans: SDK ReadableSpans, OtlpSink ReceivedSpans or OTLP protobuf Spans."""
    out: list[Violation] = []
    for s in spans:
        attrs = s.attributes
        if not isinstance(attrs, Mapping):  # protobuf repeated KeyValue
            attrs = attributes(attrs)
        kind = s.kind if hasattr(s.kind, "name") else int(s.kind)
        out.extend(validate_span(s.name, attrs, kind=kind))
    return out


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


class PointLike(Protocol):
    """What validate_metric_points reads; OtlpSink's ReceivedPoint and MetricPoint both fit."""

    @property
    def metric(self) -> str: ...
    @property
    def unit(self) -> str: ...
    @property
    def kind(self) -> str: ...
    @property
    def monotonic(self) -> bool | None: ...
    @property
    def attributes(self) -> dict[str, Any]: ...
    @property
    def resource(self) -> dict[str, Any]: ...
    @property
    def value(self) -> float | None: ...


@dataclass(frozen=True)
class MetricPoint:
    """One data point flattened from an OTLP request or SDK MetricsData."""

    metric: str
    unit: str
    kind: str  # sum | gauge | histogram | exponential_histogram | summary
    monotonic: bool | None
    temporality: int | None
    attributes: dict[str, Any] = field(default_factory=dict)
    resource: dict[str, Any] = field(default_factory=dict)
    value: float | None = None
    """Sum and gauge points; None for the others."""
    count: int | None = None
    sum: float | None = None
    bucket_counts: list[int] = field(default_factory=list)
    explicit_bounds: list[float] = field(default_factory=list)
    """Histogram points (count also for the other distribution kinds)."""


def points_from_otlp(request: Any) -> list[MetricPoint]:
    """Flatten an OTLP ExportMetricsServiceRequest (protobuf) into MetricPoints."""
    out: list[MetricPoint] = []
    for rm in request.resource_metrics:
        res = attributes(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data") or ""
                data = getattr(m, kind) if kind else None
                for dp in getattr(data, "data_points", ()):
                    value: float | None = None
                    if kind in ("sum", "gauge"):
                        value = float(dp.as_int if dp.WhichOneof("value") == "as_int" else dp.as_double)
                    histogram = kind == "histogram"
                    out.append(
                        MetricPoint(
                            metric=m.name,
                            unit=m.unit,
                            kind=kind,
                            monotonic=getattr(data, "is_monotonic", None),
                            temporality=getattr(data, "aggregation_temporality", None),
                            attributes=attributes(dp.attributes),
                            resource=res,
                            value=value,
                            count=getattr(dp, "count", None),
                            sum=dp.sum if histogram else None,
                            bucket_counts=list(dp.bucket_counts) if histogram else [],
                            explicit_bounds=list(dp.explicit_bounds) if histogram else [],
                        )
                    )
    return out


def points_from_metrics_data(data: Any) -> list[MetricPoint]:
    """Flatten SDK MetricsData (e.g. from InMemoryMetricReader.get_metrics_data())."""
    from opentelemetry.sdk.metrics.export import Gauge, Histogram, Sum

    out: list[MetricPoint] = []
    if data is None:
        return out
    for rm in data.resource_metrics:
        res = dict(rm.resource.attributes)
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                d = m.data
                kind = {Sum: "sum", Gauge: "gauge", Histogram: "histogram"}.get(type(d), type(d).__name__.lower())
                temporality = getattr(d, "aggregation_temporality", None)
                for dp in d.data_points:
                    out.append(
                        MetricPoint(
                            metric=m.name,
                            unit=m.unit or "",
                            kind=kind,
                            monotonic=getattr(d, "is_monotonic", None),
                            temporality=int(temporality.value) if temporality is not None else None,
                            attributes=dict(dp.attributes or {}),
                            resource=res,
                            value=float(dp.value) if hasattr(dp, "value") else None,
                        )
                    )
    return out


def _key(d: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((k, repr(v)) for k, v in d.items()))


def validate_metric_points(points: Iterable[PointLike], *, require_all: bool = True) -> list[Violation]:
    """Violations of the contract's token counters among ``points`` (other metrics are ignored).

    Points are read in arrival order: a cumulative series that goes down is reported, and the
    total == prompt + completion check uses the latest value of each (resource, attributes) series.
    ``require_all`` reports one of the three required counters that has no point at all (the detail
    classes - cache read/creation, reasoning - exist only where a vendor reports them).
    """
    specs = {s.instrument: s for s in contract.ALL_TOKEN_COUNTERS}
    required = [s.instrument for s in contract.TOKEN_COUNTERS]
    out: list[Violation] = []
    reported: set[tuple[str, str]] = set()  # (metric, kind): report unit/type problems once
    latest: dict[str, dict[tuple[Any, Any], tuple[float | None, dict[str, Any]]]] = {n: {} for n in specs}

    def add(vkind: str, metric: str, message: str, attribute: str | None = None) -> None:
        out.append(Violation(vkind, metric, f"metric {metric!r}: {message}", attribute))

    for p in points:
        spec = specs.get(p.metric)
        if spec is None:
            continue
        if not p.unit and (p.metric, MISSING_UNIT) not in reported:
            reported.add((p.metric, MISSING_UNIT))
            add(MISSING_UNIT, p.metric, f"unit is missing, expected {spec.unit!r}")
        elif p.unit and p.unit != spec.unit and (p.metric, WRONG_UNIT) not in reported:
            reported.add((p.metric, WRONG_UNIT))
            add(WRONG_UNIT, p.metric, f"unit is {p.unit!r}, expected {spec.unit!r}")
        if (p.kind != "sum" or p.monotonic is not True) and (p.metric, NOT_MONOTONIC_SUM) not in reported:
            reported.add((p.metric, NOT_MONOTONIC_SUM))
            what = "a non-monotonic sum" if p.kind == "sum" else f"a {p.kind or 'metric without data'}"
            add(NOT_MONOTONIC_SUM, p.metric, f"is {what}; the contract requires a monotonic sum (a counter)")
        missing = [a for a in contract.REQUIRED_METRIC_ATTRIBUTES if p.attributes.get(a) in (None, "")]
        for attr in missing:
            if (p.metric, f"{MISSING_ATTRIBUTE}:{attr}") not in reported:
                reported.add((p.metric, f"{MISSING_ATTRIBUTE}:{attr}"))
                add(MISSING_ATTRIBUTE, p.metric, f"data point lacks required attribute {attr!r}", attr)
        key = (_key(p.resource), _key(p.attributes))
        previous = latest[p.metric].get(key)
        if (
            previous is not None
            and previous[0] is not None
            and p.value is not None
            and p.value < previous[0]
            and getattr(p, "temporality", 2) != 1  # a delta series may go down
        ):
            add(
                DECREASING_COUNTER,
                p.metric,
                f"series {p.attributes} went down from {previous[0]:g} to {p.value:g}",
            )
        latest[p.metric][key] = (p.value, p.attributes)

    if require_all:
        for name in required:
            spec = specs[name]
            if not latest[name]:
                add(MISSING_COUNTER, name, f"no data point (unit {spec.unit!r}, a counter) was exported")

    prompt_s = latest[contract.PROMPT_TOKENS.instrument]
    completion_s = latest[contract.COMPLETION_TOKENS.instrument]
    total_s = latest[contract.TOTAL_TOKENS.instrument]
    for key in sorted(set(prompt_s) | set(completion_s) | set(total_s), key=repr):
        present = {
            name: series[key]
            for name, series in (
                (contract.PROMPT_TOKENS.instrument, prompt_s),
                (contract.COMPLETION_TOKENS.instrument, completion_s),
                (contract.TOTAL_TOKENS.instrument, total_s),
            )
            if key in series
        }
        attrs = next(iter(present.values()))[1]
        if len(present) < 3 and all(latest[n] for n in required):
            absent = [n for n in required if n not in present]
            add(
                MISSING_SERIES,
                absent[0],
                f"series {attrs} is exported by {', '.join(sorted(present))} but not by {', '.join(absent)}",
            )
            continue
        if len(present) < 3:
            continue
        pv, cv, tv = (present[s.instrument][0] for s in contract.TOKEN_COUNTERS)
        if pv is not None and cv is not None and tv is not None and pv + cv != tv:
            add(
                TOTAL_MISMATCH,
                contract.TOTAL_TOKENS.instrument,
                f"series {attrs}: total {tv:g} != prompt {pv:g} + completion {cv:g} = {pv + cv:g}",
            )
    for parent in (contract.PROMPT_TOKENS, contract.COMPLETION_TOKENS):
        parts = [d.counter.instrument for d in contract.TOKEN_DETAILS if d.part_of == parent]
        for key, (whole, attrs) in latest[parent.instrument].items():
            values = [latest[n][key][0] for n in parts if key in latest[n]]
            total = sum(v for v in values if v is not None)
            if whole is not None and values and total > whole:
                add(
                    DETAIL_EXCEEDS_PARENT,
                    parts[0],
                    f"series {attrs}: {' + '.join(parts)} = {total:g} exceeds {parent.instrument} {whole:g}"
                    " (the detail classes are parts of it)",
                )
    return out


def validate_metrics_request(request: Any, *, require_all: bool = True) -> list[Violation]:
    """Violations of the token counters in an OTLP ExportMetricsServiceRequest (protobuf)."""
    return validate_metric_points(points_from_otlp(request), require_all=require_all)


def validate_metrics_data(data: Any, *, require_all: bool = True) -> list[Violation]:
    """Violations of the token counters in SDK MetricsData (InMemoryMetricReader)."""
    return validate_metric_points(points_from_metrics_data(data), require_all=require_all)


__all__ = [
    "BAD_PROVENANCE",
    "DECREASING_COUNTER",
    "DETAIL_EXCEEDS_PARENT",
    "MISSING_ATTRIBUTE",
    "MISSING_COUNTER",
    "MISSING_SERIES",
    "MISSING_UNIT",
    "MODEL_MISMATCH",
    "NEGATIVE_COUNT",
    "NOT_MONOTONIC_SUM",
    "SEMCONV_MISMATCH",
    "TOTAL_MISMATCH",
    "WRONG_SPAN_KIND",
    "WRONG_TYPE",
    "WRONG_UNIT",
    "ContractViolationError",
    "MetricPoint",
    "PointLike",
    "Violation",
    "assert_valid",
    "points_from_metrics_data",
    "points_from_otlp",
    "validate_metric_points",
    "validate_metrics_data",
    "validate_metrics_request",
    "validate_readable_span",
    "validate_span",
    "validate_spans",
    "validate_trace_request",
]
