"""Overhead per instrumented LLM call on one fake in-process ``openai`` client: us versus the others.

Every contestant runs in its own process (OpenLIT and OpenLLMetry monkeypatch globally) and calls the
same ``openai.OpenAI`` client, whose ``httpx.MockTransport`` answers one canned ChatCompletion, so the
figures are instrumentation cost, not network. Each records through the same pipeline: an SDK
``TracerProvider`` with a ``SimpleSpanProcessor`` into an in-memory exporter and an SDK
``MeterProvider`` with an in-memory reader. Content capture is off for everyone (our default).

Contestants:
  raw          the floor: the raw OpenTelemetry SDK wrapping the call by hand (one CLIENT span with
               the same attributes as ours, three counter adds)
  ours_call    ``amtp_obs.sdk.llm_call`` wrapping the call by hand
  ours_auto    ``amtp_obs.instrument.instrument()`` (auto-instrumented client)
  openllmetry  ``opentelemetry-instrumentation-openai`` (Traceloop)
  openlit      ``openlit.init()`` with only its OpenAI instrumentor, pricing from a local file

In each process the uninstrumented method (kept before patching) and the instrumented call are timed
interleaved, so overhead = median(instrumented) - median(bare) is immune to drift between processes.
Outbound connections are refused by a socket guard and counted (must stay 0).

    python bench/llm_overhead.py --contestant ours_auto [--iterations 3000] [--repeats 7]
prints one JSON object. ``bench/run.py --only sdk`` runs them all and prints the table.
"""

from __future__ import annotations

import argparse
import gc
import ipaddress
import json
import os
import socket
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

CONTESTANTS = ("raw", "ours_call", "ours_auto", "openllmetry", "openlit")
COMPETITORS = ("openllmetry", "openlit")
"""Contestants that need the separate ``.venv-bench``."""

MODEL = "gpt-4o"
PROMPT_TOKENS, COMPLETION_TOKENS = 128, 64
MESSAGES = [{"role": "user", "content": "Say hello."}]
CANNED = {
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "gpt-4o-2024-08-06",
    "system_fingerprint": "fp_bench",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Hello!", "refusal": None},
            "finish_reason": "stop",
            "logprobs": None,
        }
    ],
    "usage": {
        "prompt_tokens": PROMPT_TOKENS,
        "completion_tokens": COMPLETION_TOKENS,
        "total_tokens": PROMPT_TOKENS + COMPLETION_TOKENS,
        # As the real API sends them (OpenLIT fails on a usage block without the details).
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    },
    "service_tier": "default",
}

# Phone-home switches of the competitors, and content capture off for all (our default).
QUIET_ENV = {
    "TRACELOOP_TELEMETRY": "false",
    "TRACELOOP_TRACE_CONTENT": "false",
    "OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT": "false",
    "OPENLIT_DISABLE_TELEMETRY": "true",
    "HAYSTACK_TELEMETRY_ENABLED": "False",
    "DO_NOT_TRACK": "1",
    "OTEL_TRACES_EXPORTER": "none",
    "OTEL_METRICS_EXPORTER": "none",
    "OTEL_LOGS_EXPORTER": "none",
}


# ---------------------------------------------------------------------------------------------
# No outbound network: refuse and count every connection that is not to loopback
# ---------------------------------------------------------------------------------------------

BLOCKED: list[str] = []


def _is_loopback(address: Any) -> bool:
    if isinstance(address, tuple) and address:
        host = address[0]
        if host in ("localhost",):
            return True
        try:
            return ipaddress.ip_address(host).is_loopback
        except ValueError:
            return False
    return isinstance(address, str | bytes)  # AF_UNIX paths are local


def install_net_guard() -> None:
    """Make every non-loopback connect fail (and record it) so no contestant can phone home."""
    original_connect = socket.socket.connect
    original_connect_ex = socket.socket.connect_ex

    def connect(self: socket.socket, address: Any) -> None:
        if not _is_loopback(address):
            BLOCKED.append(repr(address))
            raise ConnectionRefusedError(f"benchmark net guard: outbound connection to {address!r} refused")
        return original_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        if not _is_loopback(address):
            BLOCKED.append(repr(address))
            return 111  # ECONNREFUSED
        return original_connect_ex(self, address)

    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]


# ---------------------------------------------------------------------------------------------
# The shared fake client and telemetry pipeline
# ---------------------------------------------------------------------------------------------


def make_client() -> Any:
    """A real ``openai.OpenAI`` whose transport answers the canned completion in-process."""
    import httpx
    import openai

    body = json.dumps(CANNED).encode()
    headers = {"content-type": "application/json"}

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, content=body, headers=headers)

    http_client = httpx.Client(transport=httpx.MockTransport(handler))
    # The base URL is never contacted: the mock transport answers every request.
    return openai.OpenAI(
        api_key="sk-bench-not-a-key", base_url="http://127.0.0.1:9/v1", http_client=http_client, max_retries=0
    )


def make_pipeline() -> tuple[Any, Any, Any, Any]:
    """Same providers for every contestant; installed globally too, since OpenLIT reuses global ones."""
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import InMemoryMetricReader
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader])
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    return tp, mp, exporter, reader


def _create_kwargs() -> dict[str, Any]:
    return {"model": MODEL, "messages": MESSAGES}


def _original_create() -> Callable[..., Any]:
    from openai.resources.chat.completions import Completions

    return Completions.create


# ---------------------------------------------------------------------------------------------
# Contestants: each returns the instrumented call
# ---------------------------------------------------------------------------------------------


def setup_raw(client: Any, tp: Any, mp: Any) -> Callable[[], Any]:
    """The floor: what a careful hand-written instrumentation does with the OTel SDK directly."""
    from opentelemetry.trace import SpanKind

    from amtp_obs import contract

    tracer = tp.get_tracer("bench-raw")
    meter = mp.get_meter("bench-raw")
    prompt_c, completion_c, total_c = (
        meter.create_counter(s.instrument, unit=s.unit, description=s.description) for s in contract.TOKEN_COUNTERS
    )
    start_attrs = {
        contract.LLM_PROVIDER: contract.PROVIDER_OPENAI,
        contract.LLM_MODEL: MODEL,
        contract.LLM_REQUEST_TYPE: contract.REQUEST_TYPE_CHAT,
        contract.GEN_AI_SYSTEM: contract.PROVIDER_OPENAI,
        contract.GEN_AI_REQUEST_MODEL: MODEL,
        contract.GEN_AI_OPERATION_NAME: contract.REQUEST_TYPE_CHAT,
        contract.GEN_AI_PROVIDER_NAME: contract.PROVIDER_OPENAI,
        contract.GEN_AI_REQUEST_STREAM: False,
    }
    metric_attrs = {
        contract.LLM_MODEL: MODEL,
        contract.LLM_PROVIDER: contract.PROVIDER_OPENAI,
        contract.GEN_AI_SYSTEM: contract.PROVIDER_OPENAI,
    }
    create = client.chat.completions.create
    kwargs = _create_kwargs()

    def call() -> Any:
        with tracer.start_as_current_span(
            contract.SPAN_LLM_COMPLETION, kind=SpanKind.CLIENT, attributes=start_attrs
        ) as span:
            resp = create(**kwargs)
            usage = resp.usage
            p, c = usage.prompt_tokens, usage.completion_tokens
            span.set_attributes(
                {
                    contract.GEN_AI_RESPONSE_MODEL: resp.model,
                    contract.GEN_AI_RESPONSE_ID: resp.id,
                    contract.GEN_AI_RESPONSE_FINISH_REASONS: [ch.finish_reason for ch in resp.choices],
                    contract.LLM_TOKENS_PROMPT: p,
                    contract.LLM_TOKENS_COMPLETION: c,
                    contract.LLM_TOKENS_TOTAL: usage.total_tokens,
                    contract.GEN_AI_USAGE_INPUT_TOKENS: p,
                    contract.GEN_AI_USAGE_OUTPUT_TOKENS: c,
                    contract.LLM_TOKENS_PROVENANCE: contract.PROVENANCE_REPORTED,
                }
            )
            prompt_c.add(p, metric_attrs)
            completion_c.add(c, metric_attrs)
            total_c.add(usage.total_tokens, metric_attrs)
            return resp

    return call


def _configure_ours(tp: Any, mp: Any) -> None:
    from amtp_obs.sdk.testing import configure_with

    configure_with(tp, mp, service_name="bench", capture_content=False)


def setup_ours_call(client: Any, tp: Any, mp: Any) -> Callable[[], Any]:
    from amtp_obs import contract
    from amtp_obs.sdk import llm_call

    _configure_ours(tp, mp)
    create = client.chat.completions.create
    kwargs = _create_kwargs()

    def call() -> Any:
        with llm_call(contract.PROVIDER_OPENAI, MODEL) as c:
            resp = create(**kwargs)
            c.set_response(model=resp.model, response_id=resp.id, finish_reasons=["stop"])
            u = resp.usage
            c.set_usage(u.prompt_tokens, u.completion_tokens, u.total_tokens)
            return resp

    return call


def setup_ours_auto(client: Any, tp: Any, mp: Any) -> Callable[[], Any]:
    from amtp_obs.instrument import instrument

    _configure_ours(tp, mp)
    instrument(openai=True, anthropic=False)
    create = client.chat.completions.create
    kwargs = _create_kwargs()
    return lambda: create(**kwargs)


def setup_openllmetry(client: Any, tp: Any, mp: Any) -> Callable[[], Any]:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    create = client.chat.completions.create
    kwargs = _create_kwargs()
    return lambda: create(**kwargs)


def setup_openlit(client: Any, tp: Any, mp: Any) -> Callable[[], Any]:
    import openlit
    from openlit._instrumentors import MODULE_NAME_MAP

    # A local pricing file: openlit.init() would otherwise download one.
    fd, pricing = tempfile.mkstemp(prefix="openlit-pricing-", suffix=".json")
    with os.fdopen(fd, "w") as fh:
        json.dump({"chat": {MODEL: {"promptPrice": 0.0025, "completionPrice": 0.01}}}, fh)
    # Only its OpenAI instrumentor (its default also wraps httpx, requests, ...): its most favourable setup.
    others = [name for name in MODULE_NAME_MAP if name != "openai"]
    openlit.init(
        service_name="bench",
        pricing_json=pricing,
        capture_message_content=False,
        disabled_instrumentors=others,
        disable_events=True,
    )
    create = client.chat.completions.create
    kwargs = _create_kwargs()
    return lambda: create(**kwargs)


SETUPS: dict[str, Callable[[Any, Any, Any], Callable[[], Any]]] = {
    "raw": setup_raw,
    "ours_call": setup_ours_call,
    "ours_auto": setup_ours_auto,
    "openllmetry": setup_openllmetry,
    "openlit": setup_openlit,
}

VERSION_OF = {
    "openllmetry": "opentelemetry-instrumentation-openai",
    "openlit": "openlit",
    "raw": "opentelemetry-sdk",
    "ours_call": "amtp-obs",
    "ours_auto": "amtp-obs",
}


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


def _time(fn: Callable[[], Any], iterations: int) -> float:
    gc.collect()
    start = time.perf_counter_ns()
    for _ in range(iterations):
        fn()
    return (time.perf_counter_ns() - start) / iterations


def run(contestant: str, iterations: int, repeats: int) -> dict[str, Any]:
    if contestant not in SETUPS:
        raise SystemExit(f"unknown contestant {contestant!r}; choose from {', '.join(CONTESTANTS)}")
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    install_net_guard()

    client = make_client()
    tp, mp, exporter, reader = make_pipeline()
    original = _original_create()  # kept before anything patches the class
    completions = client.chat.completions
    kwargs = _create_kwargs()

    def bare() -> Any:
        return original(completions, **kwargs)

    instrumented = SETUPS[contestant](client, tp, mp)

    # One checked call: the bare path records nothing, the instrumented one records its span(s).
    exporter.clear()
    bare()
    if exporter.get_finished_spans():
        raise SystemExit(f"{contestant}: the bare path emitted spans; the comparison would be wrong")
    resp = instrumented()
    if resp.usage.total_tokens != PROMPT_TOKENS + COMPLETION_TOKENS:
        raise SystemExit(f"{contestant}: the instrumented call changed the response")
    spans = exporter.get_finished_spans()
    failed = [s.name for s in spans if s.status.status_code.name == "ERROR"]
    if failed or not spans:
        raise SystemExit(f"{contestant}: instrumentation recorded no span or an error span {failed}")
    span_sample = [
        {"name": s.name, "kind": s.kind.name, "attributes": sorted((s.attributes or {}).keys())} for s in spans
    ]
    data = reader.get_metrics_data()
    metric_names = sorted(
        {m.name for rm in data.resource_metrics for sm in rm.scope_metrics for m in sm.metrics} if data else set()
    )

    warm = max(1, iterations // 5)
    _time(bare, warm)
    _time(instrumented, warm)
    bare_ns: list[float] = []
    inst_ns: list[float] = []
    for _ in range(repeats):  # interleaved: drift on a busy machine hits both sides
        bare_ns.append(_time(bare, iterations))
        exporter.clear()
        inst_ns.append(_time(instrumented, iterations))
        exporter.clear()
    b, i = statistics.median(bare_ns), statistics.median(inst_ns)
    return {
        "contestant": contestant,
        "version": _version(VERSION_OF[contestant]),
        "otel_sdk": _version("opentelemetry-sdk"),
        "openai": _version("openai"),
        "python": sys.version.split()[0],
        "iterations": iterations,
        "repeats": repeats,
        "bare_ns": b,
        "instrumented_ns": i,
        "overhead_ns": i - b,
        "bare_ns_all": bare_ns,
        "instrumented_ns_all": inst_ns,
        "spans_per_call": len(spans),
        "spans": span_sample,
        "metrics": metric_names,
        "blocked_connections": list(BLOCKED),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contestant", required=True, choices=CONTESTANTS)
    ap.add_argument("--iterations", type=int, default=3000)
    ap.add_argument("--repeats", type=int, default=7)
    args = ap.parse_args(argv)
    result = run(args.contestant, args.iterations, args.repeats)
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
