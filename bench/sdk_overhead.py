"""Per-call overhead of amtp_obs.sdk.llm_call versus the raw OpenTelemetry SDK (issue 6: <= 1.3x).

Both sides record the same thing: one CLIENT ``llm.completion`` span made current for the duration,
with the same attributes, ended and exported through a SimpleSpanProcessor into an in-memory
exporter, plus three counter adds with the same attributes into an in-memory metric reader, made
while the span is current (so both sides pay for the trace-based exemplars that link the counters
to the trace).
Prints the median ns/call of each side over several repeats and the ratio.

    .venv/bin/python bench/sdk_overhead.py [--iterations 20000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind

from amtp_obs import contract
from amtp_obs.pricing import catalog
from amtp_obs.sdk import llm_call, shutdown
from amtp_obs.sdk.testing import configure_with

PROVIDER, MODEL, PROMPT, COMPLETION = "openai", "gpt-4o", 128, 64


def _providers() -> tuple[TracerProvider, MeterProvider, InMemorySpanExporter, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return tp, MeterProvider(metric_readers=[reader]), exporter, reader


def raw_sdk() -> tuple[Callable[[], None], InMemorySpanExporter]:
    """What a careful hand-written instrumentation does with the OTel SDK directly."""
    tp, mp, exporter, _ = _providers()
    tracer = tp.get_tracer("bench-raw")
    meter = mp.get_meter("bench-raw")
    prompt, completion, total = (
        meter.create_counter(s.instrument, unit=s.unit, description=s.description) for s in contract.TOKEN_COUNTERS
    )
    start_attrs = {
        contract.LLM_PROVIDER: PROVIDER,
        contract.LLM_MODEL: MODEL,
        contract.LLM_REQUEST_TYPE: contract.REQUEST_TYPE_CHAT,
        contract.GEN_AI_SYSTEM: PROVIDER,
        contract.GEN_AI_REQUEST_MODEL: MODEL,
        contract.GEN_AI_OPERATION_NAME: contract.REQUEST_TYPE_CHAT,
        contract.GEN_AI_PROVIDER_NAME: PROVIDER,
        contract.GEN_AI_REQUEST_STREAM: False,
    }
    metric_attrs = {
        contract.LLM_MODEL: MODEL,
        contract.LLM_PROVIDER: PROVIDER,
        contract.GEN_AI_SYSTEM: PROVIDER,
    }

    # Cost as a hand-written instrumentation would price it: per-token prices looked up once.
    loaded = catalog.packaged()
    price = loaded.catalog.price_at(PROVIDER, MODEL, datetime.now(UTC))
    assert price is not None
    usd_in, usd_out = price.per_token("input"), price.per_token("output")

    def call() -> None:
        with tracer.start_as_current_span(
            contract.SPAN_LLM_COMPLETION, kind=SpanKind.CLIENT, attributes=start_attrs
        ) as span:
            p, c = PROMPT, COMPLETION
            span.set_attributes(
                {
                    contract.LLM_TOKENS_PROMPT: p,
                    contract.LLM_TOKENS_COMPLETION: c,
                    contract.LLM_TOKENS_TOTAL: p + c,
                    contract.GEN_AI_USAGE_INPUT_TOKENS: p,
                    contract.GEN_AI_USAGE_OUTPUT_TOKENS: c,
                    contract.LLM_TOKENS_PROVENANCE: contract.PROVENANCE_REPORTED,
                    contract.LLM_COST_USD: p * usd_in + c * usd_out,
                    contract.LLM_COST_CATALOG: loaded.version,
                }
            )
            # Inside the span, like ours: the counters get exemplars pointing at the trace.
            prompt.add(p, metric_attrs)
            completion.add(c, metric_attrs)
            total.add(p + c, metric_attrs)

    return call, exporter


def ours() -> tuple[Callable[[], None], InMemorySpanExporter]:
    tp, mp, exporter, _ = _providers()
    configure_with(tp, mp, service_name="bench")

    def call() -> None:
        with llm_call(PROVIDER, MODEL) as c:
            c.set_usage(PROMPT, COMPLETION)

    return call, exporter


def _time(fn: Callable[[], None], exporter: InMemorySpanExporter, iterations: int) -> float:
    exporter.clear()
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(iterations):
        fn()
    elapsed = time.perf_counter_ns() - start
    exporter.clear()
    return elapsed / iterations


def _check_same_output(raw_exp: InMemorySpanExporter, our_exp: InMemorySpanExporter) -> None:
    """The comparison is only fair if both sides produced the same span."""
    a, b = raw_exp.get_finished_spans()[-1], our_exp.get_finished_spans()[-1]
    if (a.name, a.kind, dict(a.attributes)) != (b.name, b.kind, dict(b.attributes)):
        raise SystemExit(f"spans differ:\nraw:  {dict(a.attributes)}\nours: {dict(b.attributes)}")


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=20_000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)

    raw_fn, raw_exp = raw_sdk()
    our_fn, our_exp = ours()
    try:
        raw_fn()
        our_fn()
        _check_same_output(raw_exp, our_exp)
        for fn, exp in ((raw_fn, raw_exp), (our_fn, our_exp)):  # warm up
            _time(fn, exp, max(1, args.iterations // 10))
        raw_ns, our_ns = [], []
        for _ in range(args.repeats):  # interleaved, so drift on a busy machine hits both sides
            raw_ns.append(_time(raw_fn, raw_exp, args.iterations))
            our_ns.append(_time(our_fn, our_exp, args.iterations))
    finally:
        shutdown()
    raw_med, our_med = statistics.median(raw_ns), statistics.median(our_ns)
    ratio = our_med / raw_med
    print(f"iterations x repeats : {args.iterations} x {args.repeats}")
    print(f"raw OTel SDK         : {raw_med:8.0f} ns/call (median; min {min(raw_ns):.0f})")
    print(f"amtp_obs llm_call    : {our_med:8.0f} ns/call (median; min {min(our_ns):.0f})")
    print(f"ratio                : {ratio:.3f}x (target <= 1.3x)")
    return {"raw_ns": raw_med, "ours_ns": our_med, "ratio": ratio}


if __name__ == "__main__":
    main()
