"""``amtp-obs demo``: a short agent workload that lights up every panel of the dashboard.

Three demo services run as separate processes (the SDK configures one service per process, as an
agent would): a planner on the real ``openai`` client and a coder on the real ``anthropic`` client,
both auto-instrumented by :mod:`amtp_obs.instrument` and talking to the local fake vendor server
(:mod:`amtp_obs.testing.fake_llm`), and a router that wraps an in-process model with ``llm_call``
and its child spans. Each makes a few calls with several models, a stream, and an error or two,
exports via OTLP gRPC to the stack's collector, flushes, and reports what it sent. The vendor calls
report cached and reasoning tokens, so every billing class gets a price (docs/cost.md); the router's
in-process models are in no price catalog, so they show as Unpriced Tokens.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

from rich.console import Console
from rich.table import Table

from amtp_obs import contract, env
from amtp_obs.project import Project, ProjectError

LOOPBACK = "127.0.0.1"
MAX_DURATION_S = 600.0
WORKER_TIMEOUT_S = 60.0

SERVICES: dict[str, dict[str, Any]] = {
    "amtp-demo-planner": {"kind": "openai", "models": ["gpt-4o", "gpt-4o-mini"]},
    "amtp-demo-coder": {"kind": "anthropic", "models": ["claude-sonnet-4-5", "claude-haiku-4-5"]},
    "amtp-demo-router": {"kind": "inprocess", "models": ["local-small", "local-large"]},
}
"""Demo service name -> how its calls are made."""

EXPORT_EVERY_SECOND = {env.OTEL_METRIC_EXPORT_INTERVAL: "1000", env.OTEL_BSP_SCHEDULE_DELAY: "1000"}
"""Workers export counters and spans every second (SDK defaults: 60 s and 5 s). A latency
histogram has no rate until one series rises between two span-metrics pushes (Tempo 2.4.1 writes
no zero sample for a new histogram series, unlike a counter), so spans must reach the store about
when the call ends, not batched with the next call's five seconds later."""

IN_PROCESS_PROVIDER = "amtp-local"
"""``llm.provider`` of the router's in-process model (not a vendor)."""


@dataclass
class CallRecord:
    service: str
    provider: str
    model: str
    stream: bool
    ok: bool
    detail: str
    trace_id: str


# ------------------------------------------------------------------------------------------------
# Worker side (runs in its own process)
# ------------------------------------------------------------------------------------------------


def _trace_id() -> str:
    from opentelemetry import trace

    return format(trace.get_current_span().get_span_context().trace_id, "032x")


def _paced(calls: int, duration: float) -> Iterator[int]:
    """Call indices spread evenly over ``duration`` seconds: counters that rise across several scrapes
    give the rate panels something to show (a series seen once has no rate)."""
    start = time.monotonic()
    for i in range(calls):
        if i and duration > 0:
            time.sleep(max(0.0, start + duration * i / max(calls - 1, 1) - time.monotonic()))
        yield i


def _worker_openai(service: str, models: list[str], calls: int, base_url: str, duration: float) -> list[CallRecord]:
    import openai

    from amtp_obs.testing.fake_llm import HEADER_CACHE_READ, HEADER_CHUNKS, HEADER_ERROR, HEADER_REASONING

    client = openai.OpenAI(base_url=base_url, api_key="demo-not-a-key", max_retries=0)
    out = []
    for i in _paced(calls, duration):
        model = models[i % len(models)]
        stream = i % 3 == 1
        error = i == calls - 1 and calls > 1
        # A cached system prompt after the first call, and some reasoning: every billing class gets a price.
        headers = {HEADER_CHUNKS: str(4 + 3 * i), HEADER_CACHE_READ: str(1024 if i else 0), HEADER_REASONING: "64"}
        if error:
            headers[HEADER_ERROR] = "429"
        messages = [{"role": "user", "content": f"plan step {i}: break the task into smaller tasks please"}]
        with _agent_span(service, i) as tid:
            try:
                if stream:
                    chunks = client.chat.completions.create(
                        model=model, messages=messages, stream=True, extra_headers=headers
                    )
                    text = "".join((c.choices[0].delta.content or "") for c in chunks if c.choices)
                    detail = f"streamed {len(text.split())} words"
                else:
                    reply = client.chat.completions.create(model=model, messages=messages, extra_headers=headers)
                    detail = f"{reply.usage.prompt_tokens}+{reply.usage.completion_tokens} tokens"
                ok = True
            except openai.APIStatusError as exc:
                ok, detail = False, f"HTTP {exc.status_code} (injected)"
            out.append(CallRecord(service, contract.PROVIDER_OPENAI, model, stream, ok, detail, tid))
    return out


def _worker_anthropic(service: str, models: list[str], calls: int, base_url: str, duration: float) -> list[CallRecord]:
    import anthropic

    from amtp_obs.testing.fake_llm import HEADER_CACHE_CREATION, HEADER_CACHE_READ, HEADER_CHUNKS, HEADER_ERROR

    client = anthropic.Anthropic(base_url=base_url, api_key="demo-not-a-key", max_retries=0)
    out = []
    for i in _paced(calls, duration):
        model = models[i % len(models)]
        stream = i % 2 == 1
        error = i == calls - 1 and calls > 1
        # The first call writes a 2,048-token prompt cache, the later ones read it.
        cache = {HEADER_CACHE_CREATION: "2048"} if i == 0 else {HEADER_CACHE_READ: "2048"}
        headers = {HEADER_CHUNKS: str(6 + 2 * i), **cache}
        if error:
            headers[HEADER_ERROR] = "500"
        messages = [{"role": "user", "content": f"write function number {i} that adds two numbers"}]
        with _agent_span(service, i) as tid:
            try:
                if stream:
                    events = client.messages.create(
                        model=model, max_tokens=256, messages=messages, stream=True, extra_headers=headers
                    )
                    n = sum(1 for e in events if e.type == "content_block_delta")
                    detail = f"streamed {n} deltas"
                else:
                    msg = client.messages.create(model=model, max_tokens=256, messages=messages, extra_headers=headers)
                    detail = f"{msg.usage.input_tokens}+{msg.usage.output_tokens} tokens"
                ok = True
            except anthropic.APIStatusError as exc:
                ok, detail = False, f"HTTP {exc.status_code} (injected)"
            out.append(CallRecord(service, contract.PROVIDER_ANTHROPIC, model, stream, ok, detail, tid))
    return out


class DemoModelError(RuntimeError):
    """The in-process model's deliberate failure (shows up as an error span)."""


def _worker_inprocess(service: str, models: list[str], calls: int, _base_url: str, duration: float) -> list[CallRecord]:
    from amtp_obs.sdk import llm_call

    out = []
    for i in _paced(calls, duration):
        model = models[i % len(models)]
        prompt = f"route request {i} to the right agent"
        fail = i == calls - 1 and calls > 1
        with _agent_span(service, i) as tid:
            try:
                with llm_call(IN_PROCESS_PROVIDER, model) as call:
                    with call.inference():
                        time.sleep(0.01 * (1 + i % 3))
                        if fail:
                            raise DemoModelError("in-process model overloaded (demo error)")
                        answer = "route to the " + ("coder" if i % 2 else "planner")
                    with call.response_parse():
                        route = answer.rsplit(" ", 1)[-1]
                    prompt_tokens, completion_tokens = len(prompt.split()), len(answer.split())
                    call.set_usage(prompt_tokens, completion_tokens)
                out.append(
                    CallRecord(
                        service,
                        IN_PROCESS_PROVIDER,
                        model,
                        False,
                        True,
                        f"{prompt_tokens}+{completion_tokens} tokens -> {route}",
                        tid,
                    )
                )
            except DemoModelError as exc:
                out.append(CallRecord(service, IN_PROCESS_PROVIDER, model, False, False, str(exc), tid))
    return out


class _agent_span:
    """A parent span per agent step, so each LLM call is a child in a multi-span trace."""

    def __init__(self, service: str, step: int) -> None:
        from opentelemetry import trace

        self._cm = trace.get_tracer("amtp_obs.demo").start_as_current_span(
            "agent.step", attributes={"agent.name": service, "agent.step": step}
        )

    def __enter__(self) -> str:
        self._cm.__enter__()
        return _trace_id()

    def __exit__(self, *exc: Any) -> None:
        self._cm.__exit__(*exc)


WORKERS: dict[str, Callable[[str, list[str], int, str, float], list[CallRecord]]] = {
    "openai": _worker_openai,
    "anthropic": _worker_anthropic,
    "inprocess": _worker_inprocess,
}


def worker_main(argv: list[str]) -> int:
    """Entry of one demo process: configure the SDK for one service, run its calls, print JSON."""
    p = argparse.ArgumentParser(prog="python -m amtp_obs.demo")
    p.add_argument("--service", required=True, choices=sorted(SERVICES))
    p.add_argument("--endpoint", required=True)
    p.add_argument("--calls", type=int, default=4)
    p.add_argument("--duration", type=float, default=0.0)
    p.add_argument("--openai-base-url", default="")
    p.add_argument("--anthropic-base-url", default="")
    args = p.parse_args(argv)
    spec = SERVICES[args.service]
    kind = spec["kind"]

    from amtp_obs.sdk import configure, shutdown

    configure(args.service, endpoint=args.endpoint, protocol="grpc")
    base_url = {"openai": args.openai_base_url, "anthropic": args.anthropic_base_url}.get(kind, "")
    if kind in ("openai", "anthropic"):
        try:
            importlib.import_module(kind)
            from amtp_obs.instrument import instrument

            instrument(openai=kind == "openai", anthropic=kind == "anthropic")
        except ImportError as exc:  # no vendor client here: the calls still happen, in process
            print(f"{args.service}: {exc}; using the in-process model", file=sys.stderr)
            kind = "inprocess"
    try:
        records = WORKERS[kind](args.service, spec["models"], args.calls, base_url, args.duration)
    finally:
        shutdown()
    print(json.dumps([asdict(r) for r in records]))
    return 0


# ------------------------------------------------------------------------------------------------
# Parent side
# ------------------------------------------------------------------------------------------------


def run_demo(project: Project, *, calls: int, console: Console, duration: float = 0.0) -> int:
    """Start the fake vendor server, run each demo service in its own process, print what was sent.

    ``duration`` spreads each service's calls over that many seconds (0: back to back).
    """
    if calls < 1:
        console.print("[red]error:[/red] --calls must be at least 1")
        return 2
    if not 0 <= duration <= MAX_DURATION_S:
        console.print(f"[red]error:[/red] --duration must be between 0 and {MAX_DURATION_S:.0f} seconds")
        return 2
    try:
        endpoint = f"http://{LOOPBACK}:{project.port(env.OBS_OTEL_GRPC_PORT)}"
    except ProjectError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    from amtp_obs.testing.fake_llm import FakeLLMServer

    over = f" over {duration:g} s" if duration else ""
    console.print(f"sending the demo workload to the collector at {endpoint}{over}")
    with FakeLLMServer() as fake:
        procs = {
            service: subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "amtp_obs.demo",
                    "--service",
                    service,
                    "--endpoint",
                    endpoint,
                    "--calls",
                    str(calls),
                    "--duration",
                    str(duration),
                    "--openai-base-url",
                    fake.openai_base_url,
                    "--anthropic-base-url",
                    fake.anthropic_base_url,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env={**os.environ, **EXPORT_EVERY_SECOND},
            )
            for service in SERVICES
        }
        results: list[CallRecord] = []
        failures: list[str] = []
        for service, proc in procs.items():
            try:
                out, errout = proc.communicate(timeout=WORKER_TIMEOUT_S + duration)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                failures.append(f"{service}: no answer within {WORKER_TIMEOUT_S:.0f} s")
                continue
            if proc.returncode != 0:
                failures.append(f"{service}: exit code {proc.returncode}: {errout.strip()[-600:]}")
                continue
            try:
                results.extend(CallRecord(**r) for r in json.loads(out.strip().splitlines()[-1]))
            except (ValueError, IndexError, TypeError) as exc:
                failures.append(f"{service}: unreadable report ({exc}): {out[-300:]!r}")

    table = Table(title="amtp-obs demo: LLM calls sent", title_justify="left")
    for col in ("service", "provider", "model", "stream", "result", "trace id"):
        table.add_column(col)
    for r in results:
        table.add_row(
            r.service,
            r.provider,
            r.model,
            "yes" if r.stream else "no",
            f"[green]{r.detail}[/green]" if r.ok else f"[yellow]error: {r.detail}[/yellow]",
            r.trace_id,
        )
    console.print(table)
    errors = sum(not r.ok for r in results)
    console.print(
        f"{len(results)} calls from {len({r.service for r in results})} services "
        f"({errors} deliberate errors), flushed to {endpoint}"
    )
    for f in failures:
        console.print(f"[red]demo worker failed:[/red] {f}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(worker_main(sys.argv[1:]))
