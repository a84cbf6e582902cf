#!/usr/bin/env python3
"""Emit one LLM trace and the LLM token counters through the OTel Collector: the pipeline gate.

Self-contained (OpenTelemetry packages only, see requirements.txt). It emits a root span
``llm.completion`` (CLIENT) with children ``llm.inference`` and ``llm.response.parse``, carrying the
LLM instrumentation contract's attributes (128 prompt / 64 completion / 192 total tokens, gpt-4o,
openai) and the current GenAI semconv attributes alongside, plus the counters ``prompt_tokens``,
``completion_tokens`` and ``total_tokens`` (unit ``{token}``). It flushes, checks that the collector
accepted every export, and prints ``Trace ID: <32 hex>`` on stdout, so CI can run

    TRACE_ID=$(python apps/otel-verify/verify_trace.py | grep -oE '[0-9a-f]{32}' | head -n 1)

Endpoint: OTEL_EXPORTER_OTLP_ENDPOINT, else http://localhost:${OBS_OTEL_GRPC_PORT:-4317}
(http/protobuf: ${OBS_OTEL_HTTP_PORT:-4318}). Protocol: --protocol, else OTEL_EXPORTER_OTLP_PROTOCOL,
else grpc. Service name: OTEL_SERVICE_NAME, else amtp-otel-verify. ``--run-id`` (or
AMTP_VERIFY_RUN_ID) is put on the resource as ``amtp.verify.run_id`` so concurrent runs are told
apart. Exits 1 with a message on stderr when no collector answers (within about 10 s).
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
import sys
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import MetricExportResult, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExportResult
from opentelemetry.trace import SpanKind, set_span_in_context

# -- the LLM instrumentation contract (tests pin every literal here to amtp_obs.contract) ----------
SPAN_LLM_COMPLETION = "llm.completion"
SPAN_LLM_INFERENCE = "llm.inference"
SPAN_LLM_RESPONSE_PARSE = "llm.response.parse"
LLM_PROVIDER = "llm.provider"
LLM_MODEL = "llm.model"
LLM_REQUEST_TYPE = "llm.request.type"
LLM_TOKENS_PROMPT = "llm.tokens.prompt"
LLM_TOKENS_COMPLETION = "llm.tokens.completion"
LLM_TOKENS_TOTAL = "llm.tokens.total"
LLM_TOKENS_PROVENANCE = "llm.tokens.provenance"
GEN_AI_SYSTEM = "gen_ai.system"
GEN_AI_REQUEST_MODEL = "gen_ai.request.model"
GEN_AI_OPERATION_NAME = "gen_ai.operation.name"
GEN_AI_PROVIDER_NAME = "gen_ai.provider.name"
GEN_AI_USAGE_INPUT_TOKENS = "gen_ai.usage.input_tokens"
GEN_AI_USAGE_OUTPUT_TOKENS = "gen_ai.usage.output_tokens"
GEN_AI_RESPONSE_MODEL = "gen_ai.response.model"
GEN_AI_REQUEST_STREAM = "gen_ai.request.stream"
PROVENANCE_REPORTED = "reported"
REQUEST_TYPE_CHAT = "chat"
COUNTERS = (
    ("prompt_tokens", "Prompt (input) tokens billed by the LLM provider"),
    ("completion_tokens", "Completion (output) tokens billed by the LLM provider"),
    ("total_tokens", "Prompt plus completion tokens"),
)
TOKEN_UNIT = "{token}"
SCOPE_NAME = "amtp.otel-verify"

MODEL = "gpt-4o"
PROVIDER = "openai"
PROMPT_TOKENS = 128
COMPLETION_TOKENS = 64

# -- environment and defaults --------------------------------------------------------------------
SERVICE_NAME = "amtp-otel-verify"
RUN_ID_ATTRIBUTE = "amtp.verify.run_id"
ENV_ENDPOINT = "OTEL_EXPORTER_OTLP_ENDPOINT"
ENV_PROTOCOL = "OTEL_EXPORTER_OTLP_PROTOCOL"
ENV_SERVICE_NAME = "OTEL_SERVICE_NAME"
ENV_RUN_ID = "AMTP_VERIFY_RUN_ID"
ENV_GRPC_PORT = "OBS_OTEL_GRPC_PORT"
ENV_HTTP_PORT = "OBS_OTEL_HTTP_PORT"
DEFAULT_GRPC_PORT = "4317"
DEFAULT_HTTP_PORT = "4318"
PROTOCOLS = ("grpc", "http/protobuf")
EXPORT_TIMEOUT_S = 4.0
"""Per export (spans, then metrics): the whole run stays well under 15 s when nothing answers."""

HINT = "Open Grafana -> Explore -> Tempo and search by Trace ID above"


class VerifyError(Exception):
    """A failure with a message meant for the person reading the CI log."""


def _checked(base: type, failure: Any) -> type:
    """Subclass an OTLP exporter so every export result is kept (the SDK processors discard them)."""

    class Checked(base):  # type: ignore[misc, valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.results: list[Any] = []
            self.skip = False

        def export(self, *args: Any, **kwargs: Any) -> Any:
            # Once the collector failed to answer, do not wait out another timeout.
            result = failure if self.skip else super().export(*args, **kwargs)
            self.results.append(result)
            return result

    return Checked


def resolve_endpoint(protocol: str, environ: dict[str, str]) -> str:
    endpoint = environ.get(ENV_ENDPOINT, "").strip()
    if endpoint:
        return endpoint.rstrip("/")
    if protocol == "grpc":
        port = environ.get(ENV_GRPC_PORT, "").strip() or DEFAULT_GRPC_PORT
    else:
        port = environ.get(ENV_HTTP_PORT, "").strip() or DEFAULT_HTTP_PORT
    return f"http://localhost:{port}"


def _exporters(protocol: str, endpoint: str, timeout: float) -> tuple[Any, Any]:
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        insecure = not endpoint.startswith("https://")
        spans = _checked(OTLPSpanExporter, SpanExportResult.FAILURE)(
            endpoint=endpoint, insecure=insecure, timeout=timeout
        )
        metrics = _checked(OTLPMetricExporter, MetricExportResult.FAILURE)(
            endpoint=endpoint, insecure=insecure, timeout=timeout
        )
        return spans, metrics
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetrics
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpans

    spans = _checked(HttpSpans, SpanExportResult.FAILURE)(endpoint=f"{endpoint}/v1/traces", timeout=timeout)
    metrics = _checked(HttpMetrics, MetricExportResult.FAILURE)(endpoint=f"{endpoint}/v1/metrics", timeout=timeout)
    return spans, metrics


def _probe(endpoint: str, timeout: float) -> None:
    """Fail fast, and say so plainly, when nothing listens at the collector's address."""
    parts = urlsplit(endpoint if "://" in endpoint else f"http://{endpoint}")
    host = parts.hostname or "localhost"
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise VerifyError(f"invalid collector endpoint {endpoint!r}: {exc}") from None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as exc:
        raise VerifyError(
            f"no OTel collector answered at {endpoint} ({host}:{port}: {exc.strerror or exc}). "
            f"Is the observability stack up? Set {ENV_ENDPOINT} or {ENV_GRPC_PORT} to its OTLP port."
        ) from None


def emit(run_id: str | None, protocol: str, endpoint: str, timeout: float) -> str:
    """Emit the trace and counters, flush, and return the trace id; VerifyError when not delivered."""
    attrs: dict[str, Any] = {
        "service.name": os.environ.get(ENV_SERVICE_NAME, "").strip() or SERVICE_NAME,
    }
    if run_id:
        attrs[RUN_ID_ATTRIBUTE] = run_id
    resource = Resource.create(attrs)
    span_exporter, metric_exporter = _exporters(protocol, endpoint, timeout)

    tracer_provider = TracerProvider(resource=resource)
    tracer_provider.add_span_processor(BatchSpanProcessor(span_exporter))
    reader = PeriodicExportingMetricReader(metric_exporter, export_interval_millis=3_600_000)
    meter_provider = MeterProvider(resource=resource, metric_readers=[reader])
    tracer = tracer_provider.get_tracer(SCOPE_NAME)
    meter = meter_provider.get_meter(SCOPE_NAME)
    counters = [meter.create_counter(name, unit=TOKEN_UNIT, description=desc) for name, desc in COUNTERS]

    total = PROMPT_TOKENS + COMPLETION_TOKENS
    root_attrs: dict[str, Any] = {
        LLM_PROVIDER: PROVIDER,
        LLM_MODEL: MODEL,
        LLM_REQUEST_TYPE: REQUEST_TYPE_CHAT,
        GEN_AI_SYSTEM: PROVIDER,
        GEN_AI_REQUEST_MODEL: MODEL,
        GEN_AI_OPERATION_NAME: REQUEST_TYPE_CHAT,
        GEN_AI_PROVIDER_NAME: PROVIDER,
        GEN_AI_REQUEST_STREAM: False,
    }
    metric_attrs = {LLM_MODEL: MODEL, LLM_PROVIDER: PROVIDER, GEN_AI_SYSTEM: PROVIDER}
    with tracer.start_as_current_span(SPAN_LLM_COMPLETION, kind=SpanKind.CLIENT, attributes=root_attrs) as root:
        ctx = set_span_in_context(root)
        with tracer.start_as_current_span(SPAN_LLM_INFERENCE, context=ctx):
            time.sleep(0.005)
        with tracer.start_as_current_span(SPAN_LLM_RESPONSE_PARSE, context=ctx):
            time.sleep(0.001)
        root.set_attributes(
            {
                LLM_TOKENS_PROMPT: PROMPT_TOKENS,
                LLM_TOKENS_COMPLETION: COMPLETION_TOKENS,
                LLM_TOKENS_TOTAL: total,
                LLM_TOKENS_PROVENANCE: PROVENANCE_REPORTED,
                GEN_AI_USAGE_INPUT_TOKENS: PROMPT_TOKENS,
                GEN_AI_USAGE_OUTPUT_TOKENS: COMPLETION_TOKENS,
                GEN_AI_RESPONSE_MODEL: MODEL,
            }
        )
        for counter, value in zip(counters, (PROMPT_TOKENS, COMPLETION_TOKENS, total), strict=True):
            counter.add(value, metric_attrs)
        trace_id = format(root.get_span_context().trace_id, "032x")

    timeout_ms = int(timeout * 1000) + 2000
    try:
        tracer_provider.force_flush(timeout_ms)
        spans_ok = bool(span_exporter.results) and all(r == SpanExportResult.SUCCESS for r in span_exporter.results)
        metric_exporter.skip = not spans_ok
        meter_provider.force_flush(timeout_ms)
        metrics_ok = bool(metric_exporter.results) and all(
            r == MetricExportResult.SUCCESS for r in metric_exporter.results
        )
    finally:
        metric_exporter.skip = True  # shutdown's final collection must not wait on a dead collector
        tracer_provider.shutdown()
        meter_provider.shutdown()
    if not spans_ok:
        raise VerifyError(
            f"no OTel collector answered at {endpoint} ({protocol}) within {timeout:g} s, or it rejected "
            f"the spans: trace {trace_id} was not delivered"
        )
    if not metrics_ok:
        raise VerifyError(f"the collector at {endpoint} ({protocol}) did not accept the token counters")
    return trace_id


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Emit one LLM trace + token counters through the OTel Collector.")
    ap.add_argument("--run-id", default=os.environ.get(ENV_RUN_ID) or None, help=f"(env {ENV_RUN_ID})")
    ap.add_argument("--protocol", choices=PROTOCOLS, default=None, help=f"(env {ENV_PROTOCOL}; default grpc)")
    ap.add_argument("--timeout", type=float, default=EXPORT_TIMEOUT_S, help="seconds per export attempt")
    ap.add_argument("-v", "--verbose", action="store_true", help="show the OTel exporters' own log")
    args = ap.parse_args(argv)

    protocol = (args.protocol or os.environ.get(ENV_PROTOCOL, "").strip() or "grpc").lower()
    if protocol not in PROTOCOLS:
        print(f"verify_trace: unsupported {ENV_PROTOCOL}={protocol!r}; use one of {PROTOCOLS}", file=sys.stderr)
        return 2
    if not 0 < args.timeout <= 10:
        print("verify_trace: --timeout must be in (0, 10] seconds", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING if args.verbose else logging.CRITICAL)
    endpoint = resolve_endpoint(protocol, dict(os.environ))
    try:
        _probe(endpoint, min(args.timeout, 3.0))
        trace_id = emit(args.run_id, protocol, endpoint, args.timeout)
    except VerifyError as exc:
        print(f"verify_trace: FAILED: {exc}", file=sys.stderr)
        return 1
    # The Trace ID line comes first: `grep -oE '[0-9a-f]{32}' | head -n 1` must find it.
    print(f"Trace ID: {trace_id}")
    print(HINT)
    print(
        f"Exported 3 spans and 3 counters to {endpoint} ({protocol})"
        + (f", run id {args.run_id}" if args.run_id else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
