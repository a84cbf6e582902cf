"""Overhead per instrumented LLM call on one fake in-process ``openai`` client: us versus the others.

Every contestant runs in its own process (OpenLIT and OpenLLMetry monkeypatch globally) and calls the
same ``openai.OpenAI`` client, whose ``httpx.MockTransport`` answers in-process (a canned
ChatCompletion, or its SSE stream), so no network is involved. Each records through the same
pipeline: an SDK ``TracerProvider`` with a ``SimpleSpanProcessor`` into an in-memory exporter and an
SDK ``MeterProvider`` with an in-memory reader. Content capture is off for everyone (our default).

Contestants (``*_stream``: the same with ``stream=True``, the caller reading every chunk;
``*_stream_usage``: streaming where the caller itself asks for the usage chunk, so no instrumentation
changes the request and everyone gets exact token counts - the same work for all):
  raw            the floor: the raw OpenTelemetry SDK wrapping the call by hand - one CLIENT span with
                 the same attributes as ours (cost included when ours prices), the same counter adds
  ours_call      ``amtp_obs.sdk.llm_call`` wrapping the call by hand (context manager)
  ours_decorator ``@llm_call(..., usage=...)`` on a function making the call
  ours_auto      ``amtp_obs.instrument.instrument()`` (auto-instrumented client)
  openllmetry    ``opentelemetry-instrumentation-openai`` (Traceloop)
  openlit        ``openlit.init()`` with only its OpenAI instrumentor, pricing from a local file

Measurement: the client's own cost (hundreds of us) dwarfs the instrumentation's (tens of us), so a
difference of two separately taken medians is mostly noise. Instead each process times PAIRS of
blocks - the bare call (the method kept before patching) and the instrumented one, back to back, in
ABBA order - and the overhead is the median of the per-pair differences, with a 95% bootstrap
confidence interval. Drift between pairs (a busy machine) hits both halves of a pair alike. Blocks
are timed in the thread's CPU time, so time the scheduler gives to other processes is not counted.
Outbound connections are refused by a socket guard and counted (must stay 0).

    python bench/llm_overhead.py --contestant ours_auto [--iterations 200] [--pairs 30]
    python bench/llm_overhead.py --import-time ours      # seconds to import + instrument, fresh process
prints one JSON object. ``bench/run.py --only sdk`` runs them all and prints the table.
"""

from __future__ import annotations

import argparse
import functools
import gc
import ipaddress
import json
import math
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from typing import Any

PATHS = ("raw", "ours_call", "ours_decorator", "ours_auto", "openllmetry", "openlit")
STREAM_PATHS = ("raw", "ours_auto", "openllmetry", "openlit")
MODES = ("call", "stream", "stream_usage")
"""How the caller calls: a plain call, a stream, a stream asking for its usage chunk itself."""
CONTESTANTS = PATHS + tuple(f"{p}_{mode}" for mode in MODES[1:] for p in STREAM_PATHS)
COMPETITORS = tuple(c for c in CONTESTANTS if c.startswith(("openllmetry", "openlit")))
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


def _sse(include_usage: bool) -> bytes:
    """The canned completion as the API streams it: role, content, finish, [usage], [DONE]."""
    base = {k: CANNED[k] for k in ("id", "created", "model", "system_fingerprint", "service_tier")}
    base["object"] = "chat.completion.chunk"
    extra = {"usage": None} if include_usage else {}
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
    deltas += [({"content": "Hel"}, None), ({"content": "lo!"}, None), ({}, "stop")]
    events = [
        {**base, "choices": [{"index": 0, "delta": d, "finish_reason": f, "logprobs": None}], **extra}
        for d, f in deltas
    ]
    if include_usage:
        events.append({**base, "choices": [], "usage": CANNED["usage"]})
    return b"".join(f"data: {json.dumps(e)}\n\n".encode() for e in events) + b"data: [DONE]\n\n"


def make_client() -> Any:
    """A real ``openai.OpenAI`` whose transport answers in-process: JSON, or SSE when streaming."""
    import httpx
    import openai

    body = json.dumps(CANNED).encode()
    json_headers = {"content-type": "application/json"}
    sse_headers = {"content-type": "text/event-stream"}
    streams = {True: _sse(True), False: _sse(False)}

    def handler(request: httpx.Request) -> httpx.Response:
        sent = json.loads(request.content)
        if sent.get("stream"):
            usage = bool((sent.get("stream_options") or {}).get("include_usage"))
            return httpx.Response(200, content=streams[usage], headers=sse_headers)
        return httpx.Response(200, content=body, headers=json_headers)

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


def split(contestant: str) -> tuple[str, str]:
    """(path, mode): ``ours_auto_stream_usage`` -> (``ours_auto``, ``stream_usage``)."""
    for mode in reversed(MODES[1:]):
        if contestant.endswith(f"_{mode}"):
            return contestant.removesuffix(f"_{mode}"), mode
    return contestant, "call"


def floor_of(contestant: str) -> str:
    """The raw-OTel floor a contestant is compared with: the one called the same way."""
    mode = split(contestant)[1]
    return "raw" if mode == "call" else f"raw_{mode}"


def _create_kwargs(mode: str = "call") -> dict[str, Any]:
    """What the caller passes to ``create`` in ``mode``."""
    kwargs: dict[str, Any] = {"model": MODEL, "messages": MESSAGES}
    if mode != "call":
        kwargs["stream"] = True
    if mode == "stream_usage":
        kwargs["stream_options"] = {"include_usage": True}
    return kwargs


def _original_create() -> Callable[..., Any]:
    from openai.resources.chat.completions import Completions

    return Completions.create


def _drain(result: Any, stream: bool) -> Any:
    """What a streaming caller does: read every chunk (the last one is returned)."""
    if not stream:
        return result
    last = None
    for last in result:  # noqa: B007
        pass
    return last


# ---------------------------------------------------------------------------------------------
# Contestants: each returns the instrumented call
# ---------------------------------------------------------------------------------------------


class _RawFloor:
    """What a careful hand-written instrumentation does with the OTel SDK directly, producing what ours does."""

    def __init__(self, tp: Any, mp: Any, stream: bool) -> None:
        from amtp_obs import contract

        self.c = contract
        self.tracer = tp.get_tracer("bench-raw")
        meter = mp.get_meter("bench-raw")
        self.counters = {
            s.instrument: meter.create_counter(s.instrument, unit=s.unit, description=s.description)
            for s in contract.ALL_TOKEN_COUNTERS
        }
        self.start_attrs = {
            contract.LLM_PROVIDER: contract.PROVIDER_OPENAI,
            contract.LLM_MODEL: MODEL,
            contract.LLM_REQUEST_TYPE: contract.REQUEST_TYPE_CHAT,
            contract.GEN_AI_SYSTEM: contract.PROVIDER_OPENAI,
            contract.GEN_AI_REQUEST_MODEL: MODEL,
            contract.GEN_AI_OPERATION_NAME: contract.REQUEST_TYPE_CHAT,
            contract.GEN_AI_PROVIDER_NAME: contract.PROVIDER_OPENAI,
            contract.GEN_AI_REQUEST_STREAM: stream,
        }
        self.metric_attrs = {
            contract.LLM_MODEL: MODEL,
            contract.LLM_PROVIDER: contract.PROVIDER_OPENAI,
            contract.GEN_AI_SYSTEM: contract.PROVIDER_OPENAI,
        }
        self.price = _price_per_token()
        self.zero_added = False

    def record(self, span: Any, model: str, rid: str, finish: list[str], usage: Any, ctx: Any) -> None:
        c = self.c
        p, o = usage.prompt_tokens, usage.completion_tokens
        cached = usage.prompt_tokens_details.cached_tokens
        reasoning = usage.completion_tokens_details.reasoning_tokens
        attrs = {
            c.GEN_AI_RESPONSE_MODEL: model,
            c.GEN_AI_RESPONSE_ID: rid,
            c.GEN_AI_RESPONSE_FINISH_REASONS: finish,
            c.LLM_TOKENS_PROMPT: p,
            c.LLM_TOKENS_COMPLETION: o,
            c.LLM_TOKENS_TOTAL: p + o,
            c.GEN_AI_USAGE_INPUT_TOKENS: p,
            c.GEN_AI_USAGE_OUTPUT_TOKENS: o,
            c.LLM_TOKENS_PROVENANCE: c.PROVENANCE_REPORTED,
            c.LLM_TOKENS_CACHE_READ: cached,
            c.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: cached,
            c.LLM_TOKENS_REASONING: reasoning,
            c.GEN_AI_USAGE_REASONING_OUTPUT_TOKENS: reasoning,
        }
        if self.price is not None:
            usd_in, usd_out, catalog_version = self.price
            attrs[c.LLM_COST_USD] = p * usd_in + o * usd_out
            attrs[c.LLM_COST_CATALOG] = catalog_version
        span.set_attributes(attrs)
        span.end()
        m, add = self.metric_attrs, self.counters
        add["prompt_tokens"].add(p, m, ctx)
        add["completion_tokens"].add(o, m, ctx)
        add["total_tokens"].add(p + o, m, ctx)
        # Zeros only once per series (it exists then; more zeros change nothing), as ours does.
        if cached or not self.zero_added:
            add["cache_read_tokens"].add(cached, m, ctx)
        if reasoning or not self.zero_added:
            add["reasoning_tokens"].add(reasoning, m, ctx)
        self.zero_added = True


def _price_per_token() -> tuple[float, float, str] | None:
    """Input and output USD per token and the catalog version, when our SDK prices spans here too."""
    from amtp_obs.sdk._internal.config import _catalog_cost_hook

    if _catalog_cost_hook() is None:
        return None
    from datetime import UTC, datetime

    from amtp_obs.pricing import catalog

    loaded = catalog.packaged()
    price = loaded.catalog.price_at("openai", MODEL, datetime.now(UTC))
    assert price is not None
    return price.per_token("input"), price.per_token("output"), loaded.version


def setup_raw(client: Any, tp: Any, mp: Any) -> Callable[[], Any]:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    floor = _RawFloor(tp, mp, stream=False)
    create = client.chat.completions.create
    kwargs = _create_kwargs()

    def call() -> Any:
        span = floor.tracer.start_span(floor.c.SPAN_LLM_COMPLETION, kind=SpanKind.CLIENT, attributes=floor.start_attrs)
        with trace.use_span(span, end_on_exit=False):
            resp = create(**kwargs)
            floor.record(span, resp.model, resp.id, [ch.finish_reason for ch in resp.choices], resp.usage, None)
        return resp

    return call


def setup_raw_stream(client: Any, tp: Any, mp: Any, mode: str = "stream") -> Callable[[], Any]:
    from opentelemetry import trace
    from opentelemetry.trace import SpanKind

    floor = _RawFloor(tp, mp, stream=True)
    create = client.chat.completions.create
    # The floor asks for the usage chunk the documented way (when the caller has not already).
    kwargs = {**_create_kwargs(mode), "stream_options": {"include_usage": True}}
    keep_usage_chunk = mode == "stream_usage"  # the caller asked for it: it is theirs
    ttfc = floor.c.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK

    def call() -> Any:
        span = floor.tracer.start_span(floor.c.SPAN_LLM_COMPLETION, kind=SpanKind.CLIENT, attributes=floor.start_attrs)
        with trace.use_span(span, end_on_exit=False):
            stream = create(**kwargs)
        first, usage, finish, last = True, None, [], None
        for chunk in stream:  # the caller reads every chunk; the floor watches them go by
            if first:
                span.set_attribute(ttfc, (time.time_ns() - span.start_time) / 1e9)
                first = False
            if chunk.usage is not None:
                usage = chunk.usage
            finish += [ch.finish_reason for ch in chunk.choices if ch.finish_reason]
            if chunk.choices or keep_usage_chunk:  # the caller is handed the chunks it asked for (as ours does)
                last = chunk
        floor.record(span, last.model, last.id, finish, usage, trace.set_span_in_context(span))
        return last

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
            c.set_response(
                model=resp.model, response_id=resp.id, finish_reasons=[ch.finish_reason for ch in resp.choices]
            )
            u = resp.usage
            c.set_usage(
                u.prompt_tokens,
                u.completion_tokens,
                cache_read_tokens=u.prompt_tokens_details.cached_tokens,
                reasoning_tokens=u.completion_tokens_details.reasoning_tokens,
            )
            return resp

    return call


def setup_ours_decorator(client: Any, tp: Any, mp: Any) -> Callable[[], Any]:
    from amtp_obs import contract
    from amtp_obs.sdk import Usage, llm_call

    _configure_ours(tp, mp)
    create = client.chat.completions.create
    kwargs = _create_kwargs()

    def usage(resp: Any) -> Usage:
        u = resp.usage
        return Usage(
            u.prompt_tokens,
            u.completion_tokens,
            cache_read_tokens=u.prompt_tokens_details.cached_tokens,
            reasoning_tokens=u.completion_tokens_details.reasoning_tokens,
        )

    @llm_call(contract.PROVIDER_OPENAI, MODEL, usage=usage)
    def ask() -> Any:
        return create(**kwargs)

    return ask


def setup_ours_auto(client: Any, tp: Any, mp: Any) -> Callable[[], Any]:
    from amtp_obs.instrument import instrument

    _configure_ours(tp, mp)
    instrument(openai=True, anthropic=False)
    create = client.chat.completions.create
    kwargs = _create_kwargs()
    return lambda: create(**kwargs)


def setup_ours_auto_stream(client: Any, tp: Any, mp: Any, mode: str = "stream") -> Callable[[], Any]:
    from amtp_obs.instrument import instrument

    _configure_ours(tp, mp)
    instrument(openai=True, anthropic=False)
    create = client.chat.completions.create
    kwargs = _create_kwargs(mode)
    return lambda: _drain(create(**kwargs), True)


def setup_openllmetry(client: Any, tp: Any, mp: Any, mode: str = "call") -> Callable[[], Any]:
    from opentelemetry.instrumentation.openai import OpenAIInstrumentor

    OpenAIInstrumentor().instrument(tracer_provider=tp, meter_provider=mp)
    create = client.chat.completions.create
    kwargs = _create_kwargs(mode)
    return lambda: _drain(create(**kwargs), mode != "call")


def setup_openlit(client: Any, tp: Any, mp: Any, mode: str = "call") -> Callable[[], Any]:
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
    kwargs = _create_kwargs(mode)
    return lambda: _drain(create(**kwargs), mode != "call")


SETUPS: dict[str, Callable[[Any, Any, Any], Callable[[], Any]]] = {
    "raw": setup_raw,
    "ours_call": setup_ours_call,
    "ours_decorator": setup_ours_decorator,
    "ours_auto": setup_ours_auto,
    "openllmetry": setup_openllmetry,
    "openlit": setup_openlit,
    **{
        f"{path}_{mode}": functools.partial(setup, mode=mode)
        for mode in MODES[1:]
        for path, setup in (
            ("raw", setup_raw_stream),
            ("ours_auto", setup_ours_auto_stream),
            ("openllmetry", setup_openllmetry),
            ("openlit", setup_openlit),
        )
    },
}

DIST = {"openllmetry": "opentelemetry-instrumentation-openai", "openlit": "openlit", "raw": "opentelemetry-sdk"}


def _version(dist: str) -> str | None:
    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def _dist(contestant: str) -> str:
    return DIST.get(split(contestant)[0], "amtp-obs")


# ---------------------------------------------------------------------------------------------
# Timing and statistics
# ---------------------------------------------------------------------------------------------


def _time(fn: Callable[[], Any], iterations: int) -> float:
    """CPU ns per call of this thread: time the machine spent on other processes is not counted.

    On a shared, loaded machine wall-clock blocks mostly measure the neighbours; the thread's CPU
    time is what the instrumentation costs the application (everything here runs on this thread:
    the mock transport, the client, the simple span processor, the in-memory exporter).
    """
    start = time.thread_time_ns()
    for _ in range(iterations):
        fn()
    return (time.thread_time_ns() - start) / iterations


def bootstrap_ci(samples: list[float], stat: Callable[[list[float]], float] = statistics.median) -> tuple[float, float]:
    """95% percentile-bootstrap interval of ``stat`` (seeded: the same samples give the same interval)."""
    rng = random.Random(0)
    n = len(samples)
    boots = sorted(stat([samples[rng.randrange(n)] for _ in range(n)]) for _ in range(2000))
    return boots[int(0.025 * len(boots))], boots[int(0.975 * len(boots)) - 1]


def ratio_ci(num: list[float], den: list[float]) -> tuple[float, float]:
    """95% bootstrap interval of median(num) / median(den), resampling both independently."""
    rng = random.Random(1)
    out = []
    for _ in range(2000):
        a = statistics.median([num[rng.randrange(len(num))] for _ in num])
        b = statistics.median([den[rng.randrange(len(den))] for _ in den])
        out.append(a / b if b else math.inf)
    out.sort()
    return out[int(0.025 * len(out))], out[int(0.975 * len(out)) - 1]


def _contestant(contestant: str) -> tuple[Callable[[], Any], Callable[[], Any], Any, Any]:
    """(bare call, instrumented call, span exporter, metric reader) of one contestant, in this process."""
    if contestant not in SETUPS:
        raise SystemExit(f"unknown contestant {contestant!r}; choose from {', '.join(CONTESTANTS)}")
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    install_net_guard()
    mode = split(contestant)[1]
    client = make_client()
    tp, mp, exporter, reader = make_pipeline()
    original = _original_create()  # kept before anything patches the class
    completions = client.chat.completions
    kwargs = _create_kwargs(mode)

    def bare() -> Any:
        return _drain(original(completions, **kwargs), mode != "call")

    return bare, SETUPS[contestant](client, tp, mp), exporter, reader


def run(contestant: str, iterations: int, pairs: int) -> dict[str, Any]:
    mode = split(contestant)[1]
    stream = mode != "call"
    bare, instrumented, exporter, reader = _contestant(contestant)

    # One checked call: the bare path records nothing, the instrumented one records its span(s).
    exporter.clear()
    bare()
    if exporter.get_finished_spans():
        raise SystemExit(f"{contestant}: the bare path emitted spans; the comparison would be wrong")
    bare_last = bare()
    got = instrumented()
    if stream:
        # (The hand-written floor asks for usage and does not hide what that adds: not checked.)
        if contestant != "raw_stream" and got.model_dump(exclude_unset=True) != bare_last.model_dump(
            exclude_unset=True
        ):
            raise SystemExit(f"{contestant}: the caller's last chunk differs with instrumentation")
    elif got.usage.total_tokens != PROMPT_TOKENS + COMPLETION_TOKENS:
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

    warm = max(1, iterations // 2)
    _time(bare, warm)
    _time(instrumented, warm)
    bare_ns: list[float] = []
    inst_ns: list[float] = []
    gc.collect()
    for i in range(pairs):  # ABBA: within a pair the order alternates, so a trend cancels out
        if i % 2 == 0:
            b = _time(bare, iterations)
            n = _time(instrumented, iterations)
        else:
            n = _time(instrumented, iterations)
            b = _time(bare, iterations)
        exporter.clear()
        bare_ns.append(b)
        inst_ns.append(n)
    diffs = [n - b for n, b in zip(inst_ns, bare_ns, strict=True)]
    lo, hi = bootstrap_ci(diffs)
    return {
        "contestant": contestant,
        "stream": stream,
        "mode": mode,
        "version": _version(_dist(contestant)),
        "otel_sdk": _version("opentelemetry-sdk"),
        "openai": _version("openai"),
        "python": sys.version.split()[0],
        "iterations": iterations,
        "pairs": pairs,
        "bare_ns": statistics.median(bare_ns),
        "instrumented_ns": statistics.median(inst_ns),
        "overhead_ns": statistics.median(diffs),
        "overhead_ci95": [lo, hi],
        "overhead_ns_all": diffs,
        "bare_ns_all": bare_ns,
        "instrumented_ns_all": inst_ns,
        "spans_per_call": len(spans),
        "spans": span_sample,
        "metrics": metric_names,
        "blocked_connections": list(BLOCKED),
    }


# ---------------------------------------------------------------------------------------------
# Instructions: the same calls counted by callgrind, which no other load on the machine changes
# ---------------------------------------------------------------------------------------------

PHASE_MARKER = "os_getppid"
"""The CPython C function (``os.getppid``) callgrind dumps its counts before: one call opens each phase."""
PHASES = ("bare", "instrumented", "bare", "instrumented")


def instruction_phases(contestant: str, calls: int) -> None:
    """Run under callgrind: warm up, then ``calls`` bare / instrumented / bare / instrumented calls, each phase
    opened by the marker (so callgrind's dumps split the counts by phase), and a closing marker."""
    bare, instrumented, exporter, _reader = _contestant(contestant)
    fns = {"bare": bare, "instrumented": instrumented}
    for _ in range(30):
        fns["bare"]()
        fns["instrumented"]()
    exporter.clear()
    gc.collect()
    for phase in PHASES:
        fn = fns[phase]
        os.getppid()  # the marker
        for _ in range(calls):
            fn()
    os.getppid()


def count_instructions(python: str, contestant: str, calls: int, timeout: float = 900) -> dict[str, Any]:
    """Instructions per call, bare and instrumented, of ``contestant`` in a callgrind run of ``instruction_phases``.

    Deterministic for the same code and inputs whatever else the machine does, so two of these can
    run side by side. The overhead is the mean over the two (bare, instrumented) phase pairs.
    """
    with tempfile.TemporaryDirectory(prefix="amtp-callgrind-") as tmp:
        out = os.path.join(tmp, "cg.out")
        argv = [
            "valgrind",
            "--tool=callgrind",
            f"--dump-before={PHASE_MARKER}",
            f"--callgrind-out-file={out}",
            python,
            os.path.abspath(__file__),
            "--contestant",
            contestant,
            "--instructions",
            str(calls),
        ]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"callgrind run of {contestant} failed: {done.stderr.strip().splitlines()[-3:]}")
        dumps = sorted((f for f in os.listdir(tmp) if f.startswith("cg.out.")), key=lambda f: int(f.rsplit(".", 1)[1]))
        totals = []
        for name in dumps:
            with open(os.path.join(tmp, name)) as fh:
                totals.append(next(int(line.split()[1]) for line in fh if line.startswith("totals:")))
    # Dump 1 is start-up; then one per phase. More dumps would mean the marker ran elsewhere too.
    if len(totals) != 1 + len(PHASES):
        raise RuntimeError(f"{contestant}: expected {1 + len(PHASES)} callgrind dumps, got {len(totals)}")
    per_call = [t / calls for t in totals[1:]]
    bare = [v for v, p in zip(per_call, PHASES, strict=True) if p == "bare"]
    inst = [v for v, p in zip(per_call, PHASES, strict=True) if p == "instrumented"]
    diffs = [n - b for b, n in zip(bare, inst, strict=True)]
    return {
        "contestant": contestant,
        "calls": calls,
        "bare_instructions": statistics.fmean(bare),
        "instrumented_instructions": statistics.fmean(inst),
        "overhead_instructions": statistics.fmean(diffs),
        "overhead_instructions_all": diffs,
    }


# ---------------------------------------------------------------------------------------------
# Import time: a fresh interpreter importing the instrumentation and instrumenting
# ---------------------------------------------------------------------------------------------

IMPORTS = {
    "ours": "import amtp_obs.sdk, amtp_obs.instrument",
    "ours_instrument": "import amtp_obs.sdk, amtp_obs.instrument; amtp_obs.instrument.instrument(anthropic=False)",
    "openllmetry": "from opentelemetry.instrumentation.openai import OpenAIInstrumentor",
    "openllmetry_instrument": "from opentelemetry.instrumentation.openai import OpenAIInstrumentor; "
    "OpenAIInstrumentor().instrument()",
    "openlit": "import openlit",
    "otel_sdk": "import opentelemetry.sdk.trace, opentelemetry.sdk.metrics",
}
"""What each import-time probe runs; ``otel_sdk`` is the floor every OTel instrumentation pays."""

_PROBE = (
    "import os, sys, time\n"
    "for k, v in {env!r}.items(): os.environ.setdefault(k, v)\n"
    "t = time.perf_counter()\n"
    "{code}\n"
    "print(time.perf_counter() - t)\n"
)


def import_time(name: str, runs: int) -> dict[str, Any]:
    """Median seconds over ``runs`` fresh interpreters (each after one warm-up run fills the OS file cache)."""
    code = _PROBE.format(env=QUIET_ENV, code=IMPORTS[name])
    seconds: list[float] = []
    for i in range(runs + 1):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
        if done.returncode != 0:
            raise SystemExit(f"import probe {name} failed: {done.stderr.strip().splitlines()[-1:]}")
        if i:
            seconds.append(float(done.stdout.strip().splitlines()[-1]))
    return {"probe": name, "code": IMPORTS[name], "runs": runs, "seconds": statistics.median(seconds), "all": seconds}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--contestant", choices=CONTESTANTS)
    ap.add_argument("--iterations", type=int, default=200, help="calls per timed block")
    ap.add_argument("--pairs", type=int, default=30, help="(bare, instrumented) block pairs")
    ap.add_argument("--import-time", choices=sorted(IMPORTS), help="measure an import instead")
    ap.add_argument("--runs", type=int, default=7, help="fresh interpreters per import probe")
    ap.add_argument(
        "--instructions", type=int, metavar="CALLS", help="run the callgrind phases (see count_instructions)"
    )
    ap.add_argument("--count-instructions", type=int, metavar="CALLS", help="count a contestant's instructions")
    args = ap.parse_args(argv)
    if args.import_time:
        result = import_time(args.import_time, args.runs)
    elif args.contestant and args.instructions:
        instruction_phases(args.contestant, args.instructions)
        return
    elif args.contestant and args.count_instructions:
        result = count_instructions(sys.executable, args.contestant, args.count_instructions)
    elif args.contestant:
        result = run(args.contestant, args.iterations, args.pairs)
    else:
        ap.error("give --contestant or --import-time")
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
