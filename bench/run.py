"""Every benchmark of issue 6 in one command: a table of medians, percentiles, targets and verdicts.

    .venv/bin/python bench/run.py                    # all of them (about 5 minutes)
    .venv/bin/python bench/run.py --only sdk,store   # a subset
    .venv/bin/python bench/run.py --quick            # a smoke run of a few seconds each (numbers meaningless)
    .venv/bin/python bench/run.py --enforce          # exit 1 when any target is missed (a MISS row)

Benchmarks (targets from issue 6):
  sdk      overhead per instrumented LLM call vs the raw OTel SDK floor, OpenLLMetry and OpenLIT
           (each in its own process; competitors in .venv-bench, built on demand by setup_bench.sh)
  ingest   spans/s through the embedded collector into the trace store, OTLP/HTTP and gRPC
  latency  emit -> visible at /api/traces/{id}; wall time of `amtp-obs verify` on an embedded stack
  store    /api/traces/{id} and a tag search at one million stored spans

Results also go to artifacts/bench-results.json. Numbers are measured, never asserted: speed checks
live here, not in the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import httpx  # noqa: E402
from prometheus_client.parser import text_string_to_metric_families  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

import harness  # noqa: E402
import llm_overhead  # noqa: E402
from amtp_obs import env  # noqa: E402
from amtp_obs.durations import parse_duration  # noqa: E402
from amtp_obs.project import Project  # noqa: E402
from amtp_obs.stack import cadence  # noqa: E402
from amtp_obs.tempo.metrics import DISCARDED_SPANS, PER_PUSH_REASONS  # noqa: E402

ROOT = BENCH_DIR.parent
BENCHMARKS = ("sdk", "ingest", "latency", "store")
RESULTS_FILE = ROOT / "artifacts" / "bench-results.json"
BENCH_VENV = ROOT / ".venv-bench"
MAIN_PYTHON = Path(sys.executable)

# Targets (issue 6).
SDK_RATIO_TARGET = 1.3
INGEST_TARGET = 50_000.0
LATENCY_P95_TARGET_S = 1.5
VERIFY_TARGET_S = 10.0
LOOKUP_P99_TARGET_MS = 20.0
VERIFY_METRIC = "`amtp-obs verify` wall time (embedded stack already up)"
VERIFY_RUNS = 8


@dataclass
class Row:
    benchmark: str
    metric: str
    median: float | None = None
    unit: str = ""
    p95: float | None = None
    p99: float | None = None
    target: str = ""
    verdict: str = ""
    detail: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Options:
    quick: bool
    duration: float
    bench_python: Path | None
    workdir: Path
    verify: bool = True
    instructions: bool = True


def _fmt(v: float | None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.3g}"


PASS, MISS, ERROR, SKIP = "PASS", "MISS", "ERROR", "SKIP"


def _verdict(ok: bool) -> str:
    return PASS if ok else MISS


def failing(rows: list[Row], *, enforce: bool) -> list[Row]:
    """Rows that make the run exit non-zero: a benchmark that broke always; a missed target with --enforce."""
    words = (ERROR, MISS) if enforce else (ERROR,)
    return [r for r in rows if any(w in r.verdict.split() for w in words)]


def _run_json(argv: list[str], timeout: float, env_extra: dict[str, str] | None = None) -> dict[str, Any]:
    """Run a helper process that prints one JSON object as its last stdout line."""
    proc = subprocess.run(
        argv,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, **(env_extra or {})},
        cwd=ROOT,
    )
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-8:]
        raise RuntimeError(f"{' '.join(argv[1:3])} failed (exit {proc.returncode}): " + " | ".join(tail))
    return json.loads(lines[-1])


# ---------------------------------------------------------------------------------------------
# sdk
# ---------------------------------------------------------------------------------------------


def ensure_bench_venv(quick: bool) -> Path | None:
    """.venv-bench's python; built by setup_bench.sh when missing (not in --quick: no installs there)."""
    py = BENCH_VENV / "bin" / "python"
    if (BENCH_VENV / ".amtp-bench-ready").is_file() and py.is_file():
        return py
    if quick:
        return None
    print("building .venv-bench (OpenLIT, OpenLLMetry) with bench/setup_bench.sh ...", file=sys.stderr)
    subprocess.run(["bash", str(BENCH_DIR / "setup_bench.sh")], check=True, cwd=ROOT)
    return py if py.is_file() else None


SDK_LABELS = {
    "raw": "raw OTel SDK (floor): overhead/call",
    "ours_call": "amtp_obs llm_call: overhead/call",
    "ours_decorator": "amtp_obs @llm_call decorator: overhead/call",
    "ours_auto": "amtp_obs auto-instrumented openai: overhead/call",
    "openllmetry": "OpenLLMetry (opentelemetry-instrumentation-openai): overhead/call",
    "openlit": "OpenLIT: overhead/call",
}
SDK_COMPETITOR_FACTOR = 2.0
"""Ours must be at least this many times cheaper than each competitor on the same path (issue 12)."""
IMPORT_LABELS = {
    "otel_sdk": "import: OpenTelemetry SDK alone (floor)",
    "ours": "import: amtp_obs.sdk + amtp_obs.instrument",
    "ours_instrument": "import + instrument(): amtp_obs",
    "openllmetry": "import: OpenLLMetry OpenAIInstrumentor",
    "openllmetry_instrument": "import + instrument(): OpenLLMetry",
    "openlit": "import: openlit",
}


def _import_rows(opts: Options, python: Path) -> list[Row]:
    """Seconds to import (and instrument) in a fresh interpreter, ours next to theirs."""
    rows: list[Row] = []
    runs = 1 if opts.quick else 9
    for probe, label in IMPORT_LABELS.items():
        if probe.startswith(("openllmetry", "openlit")) and opts.bench_python is None:
            rows.append(Row("sdk", label, verdict=SKIP, detail="skipped: no .venv-bench (run bench/setup_bench.sh)"))
            continue
        try:
            r = _run_json(
                [str(python), str(BENCH_DIR / "llm_overhead.py"), "--import-time", probe, "--runs", str(runs)],
                timeout=600,
            )
        except Exception as exc:
            rows.append(Row("sdk", label, verdict=ERROR, detail=str(exc)))
            continue
        detail = f"median of {runs} fresh interpreters: {r['code']}"
        rows.append(
            Row("sdk", label, r["seconds"] * 1000, "ms", target="(reported)", verdict="-", detail=detail, extra=r)
        )
    return rows


def sdk_label(contestant: str) -> str:
    path, mode = llm_overhead.split(contestant)
    prefix = {"call": "", "stream": "stream: ", "stream_usage": "stream, caller asks for usage: "}[mode]
    return prefix + SDK_LABELS[path]


SDK_ROUNDS = 5
"""Each contestant's pairs are taken in this many rounds, every contestant once per round, so that
ours and a competitor (separate processes, compared by their medians) see the same drift of the machine."""


def pool_rounds(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One result from a contestant's rounds: the paired blocks pooled, the statistics taken again."""
    first = parts[0]
    diffs = [d for p in parts for d in p["overhead_ns_all"]]
    bare = [b for p in parts for b in p["bare_ns_all"]]
    inst = [n for p in parts for n in p["instrumented_ns_all"]]
    lo, hi = llm_overhead.bootstrap_ci(diffs)
    return {
        **first,
        "pairs": len(diffs),
        "rounds": len(parts),
        "bare_ns": statistics.median(bare),
        "instrumented_ns": statistics.median(inst),
        "overhead_ns": statistics.median(diffs),
        "overhead_ci95": [lo, hi],
        "overhead_ns_all": diffs,
        "bare_ns_all": bare,
        "instrumented_ns_all": inst,
        "spans_per_call": max(p["spans_per_call"] for p in parts),
        "blocked_connections": [c for p in parts for c in p["blocked_connections"]],
    }


SDK_TARGET_TEXT = f"<= {SDK_RATIO_TARGET}x floor; >= {SDK_COMPETITOR_FACTOR:g}x cheaper than OpenLLMetry, OpenLIT"


def _ours_verdict(ratio: float | None, cheaper: dict[str, float]) -> tuple[str, str]:
    """(target, verdict) of one of our rows: within the ratio of its floor and cheaper enough than each rival."""
    if ratio is None:
        return SDK_TARGET_TEXT, "?"
    ok = ratio <= SDK_RATIO_TARGET and all(f >= SDK_COMPETITOR_FACTOR for f in cheaper.values())
    return SDK_TARGET_TEXT, f"{ratio:.2f}x " + _verdict(ok)


def _judge(row: Row, name: str, ratio: float | None, results: dict[str, dict[str, Any]], key: str) -> dict[str, float]:
    """Target and verdict of an SDK row by its role (floor, ours, competitor); ours' factors over each rival."""
    path, mode = llm_overhead.split(name)
    if path == "raw":
        row.target, row.verdict = "(the floor)", "-"
        return {}
    if path.startswith("ours"):
        rivals = [c for c in llm_overhead.COMPETITORS if llm_overhead.split(c)[1] == mode and c in results]
        cheaper = {c: results[c][key] / results[name][key] for c in rivals}
        row.extra["competitor_factor"] = cheaper
        row.target, row.verdict = _ours_verdict(ratio, cheaper)
        return cheaper
    row.target = "(competitor)"
    row.verdict = f"{ratio:.2f}x floor" if ratio is not None else "-"
    return {}


INSTRUCTION_CALLS = 40
"""Calls per callgrind phase: counts are exact, so a few dozen calls are enough."""


def _instruction_rows(opts: Options, python: Path, names: list[str]) -> list[Row]:
    """The same contestants counted in instructions (callgrind): a figure no neighbour on the machine moves."""
    label = "instructions/call (callgrind)"
    if opts.quick or not opts.instructions:
        return []
    if shutil.which("valgrind") is None:
        return [Row("sdk", label, verdict=SKIP, detail="valgrind is not installed")]
    print(f"  sdk: counting instructions of {len(names)} contestants under callgrind ...", file=sys.stderr, flush=True)
    # Instruction counts do not depend on load, so two run at once (one per core).
    with ThreadPoolExecutor(max_workers=2) as pool:
        futures = {n: pool.submit(llm_overhead.count_instructions, str(python), n, INSTRUCTION_CALLS) for n in names}
    results: dict[str, dict[str, Any]] = {}
    rows: list[Row] = []
    for name, future in futures.items():
        try:
            results[name] = future.result()
        except Exception as exc:  # one broken contestant must not hide the others
            rows.append(Row("sdk", f"{label}: {sdk_label(name)}", verdict=ERROR, detail=str(exc)))
    for name, r in results.items():
        floor = results.get(llm_overhead.floor_of(name))
        ratio = r["overhead_instructions"] / floor["overhead_instructions"] if floor else None
        extra = {**r, "ratio_to_floor": ratio}
        detail = (
            f"{r['calls']} calls per phase, bare/instrumented/bare/instrumented; pairs "
            + ", ".join(f"{d / 1000:.0f}k" for d in r["overhead_instructions_all"])
            + f"; bare client {r['bare_instructions'] / 1e6:.2f}M instructions/call"
        )
        row = Row("sdk", f"{label}: {sdk_label(name)}", r["overhead_instructions"] / 1000, "k instr", extra=extra)
        cheaper = _judge(row, name, ratio, results, "overhead_instructions")
        if cheaper:
            detail = "; ".join(f"{f:.1f}x fewer than {c}" for c, f in cheaper.items()) + "; " + detail
        row.detail = detail
        rows.append(row)
    return rows


def bench_sdk(opts: Options) -> list[Row]:
    iterations, pairs, rounds = (40, 6, 1) if opts.quick else (100, 30, SDK_ROUNDS)
    py_all = opts.bench_python or MAIN_PYTHON  # one interpreter for every contestant when possible
    results: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    names = []
    for name in llm_overhead.CONTESTANTS:
        if name in llm_overhead.COMPETITORS and opts.bench_python is None:
            errors[name] = "skipped: no .venv-bench (run bench/setup_bench.sh)"
        elif opts.quick and name in llm_overhead.COMPETITORS and llm_overhead.split(name)[1] != "call":
            errors[name] = "skipped in --quick (its numbers mean nothing there; the full run measures it)"
        else:
            names.append(name)
    parts: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for round_no in range(rounds):
        for name in names:
            if name in errors:
                continue
            print(f"  sdk round {round_no + 1}/{rounds}: {name}", file=sys.stderr, flush=True)
            try:
                parts[name].append(
                    _run_json(
                        [
                            str(py_all),
                            str(BENCH_DIR / "llm_overhead.py"),
                            "--contestant",
                            name,
                            "--iterations",
                            str(iterations),
                            "--pairs",
                            str(max(1, pairs // rounds)),
                        ],
                        timeout=900,
                    )
                )
            except Exception as exc:  # one broken contestant must not hide the others
                errors[name] = f"error: {exc}"
    for name in names:
        if name not in errors:
            results[name] = pool_rounds(parts[name])
    rows: list[Row] = []
    for name in llm_overhead.CONTESTANTS:
        r = results.get(name)
        label = sdk_label(name)
        if r is None:
            rows.append(Row("sdk", label, verdict=ERROR if "error" in errors[name] else SKIP, detail=errors[name]))
            continue
        floor = results.get(llm_overhead.floor_of(name))
        ratio = r["overhead_ns"] / floor["overhead_ns"] if floor else None
        lo_r, hi_r = llm_overhead.ratio_ci(r["overhead_ns_all"], floor["overhead_ns_all"]) if floor else (None, None)
        lo, hi = r["overhead_ci95"]
        ver = f"{r['contestant']} {r['version']}, otel-sdk {r['otel_sdk']}, openai {r['openai']}"
        detail = (
            f"95% CI {lo / 1000:.1f}..{hi / 1000:.1f} us over {r['pairs']} ABBA pairs of {r['iterations']} calls "
            f"in {r.get('rounds', 1)} interleaved round(s) "
            f"(thread CPU time); bare client {r['bare_ns'] / 1000:.0f} us; {r['spans_per_call']} span(s)/call; "
            f"blocked outbound connects: {len(r['blocked_connections'])}; {ver}"
        )
        extra = {**r, "ratio_to_floor": ratio, "ratio_ci95": [lo_r, hi_r]}
        row = Row("sdk", label, r["overhead_ns"] / 1000, "us", extra=extra)
        cheaper = _judge(row, name, ratio, results, "overhead_ns")
        if name.startswith("ours"):
            if ratio is not None:
                detail = f"ratio 95% CI {lo_r:.2f}..{hi_r:.2f}x; " + detail
            if cheaper:
                detail = "; ".join(f"{f:.1f}x cheaper than {c}" for c, f in cheaper.items()) + "; " + detail
            else:
                detail += "; competitors not measured"
        row.detail = detail
        rows.append(row)
    rows += _instruction_rows(opts, py_all, [n for n in llm_overhead.CONTESTANTS if n in results])
    rows += _import_rows(opts, py_all)
    # Helper C's bench: llm_call vs raw with no client around them (pure SDK cost).
    try:
        c = _run_json(
            [
                str(MAIN_PYTHON),
                "-c",
                "import json,sys,io,contextlib; sys.path.insert(0, 'bench'); import sdk_overhead as s; "
                "buf=io.StringIO();\nwith contextlib.redirect_stdout(buf): r=s.main(sys.argv[1:])\n"
                "print(json.dumps(r))",
                "--iterations",
                str(200 if opts.quick else 20000),
                "--repeats",
                str(3 if opts.quick else 7),
            ],
            timeout=600,
        )
        rows.append(
            Row(
                "sdk",
                "llm_call vs raw span+3 counters, no client (bench/sdk_overhead.py)",
                c["ours_ns"] / 1000,
                "us",
                target=f"<= {SDK_RATIO_TARGET}x",
                verdict=f"{c['ratio']:.2f}x " + _verdict(c["ratio"] <= SDK_RATIO_TARGET),
                detail=f"raw {c['raw_ns'] / 1000:.1f} us/call",
                extra=c,
            )
        )
    except Exception as exc:
        rows.append(Row("sdk", "llm_call vs raw, no client (bench/sdk_overhead.py)", verdict=ERROR, detail=str(exc)))
    return rows


# ---------------------------------------------------------------------------------------------
# ingest
# ---------------------------------------------------------------------------------------------


class RssSampler:
    """Peak and last RSS of some processes, sampled in a background thread."""

    def __init__(self, procs: list[harness.Proc], interval: float = 0.5) -> None:
        self.procs = procs
        self.interval = interval
        self.peak: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.interval)

    def sample(self) -> None:
        for p in self.procs:
            rss = p.rss_mib()
            if rss is not None:
                self.last[p.name] = rss
                self.peak[p.name] = max(rss, self.peak.get(p.name, 0.0))

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.sample()


@contextlib.contextmanager
def pipeline(
    workdir: Path, *, ingestion_limits: bool = True, **collector_kwargs: Any
) -> Iterator[tuple[harness.Proc, harness.Proc, Any, Any]]:
    tports = harness.TempoPorts()
    cports = harness.CollectorPorts()
    tempo = harness.tempo_proc(workdir / "tempo", tports, ingestion_limits=ingestion_limits)
    coll = harness.collector_proc(workdir / "collector", cports, tports.otlp_target, **collector_kwargs)
    with harness.running(tempo, coll):
        yield tempo, coll, tports, cports


def _store_received(tports: harness.TempoPorts) -> float:
    """Spans the store took: received by its distributor, less those its ingester limits discarded
    (Tempo 2.4.1 counts a push's spans as received before the per-trace limits apply)."""
    text = httpx.get(f"{tports.api}/metrics", timeout=5.0).text
    received = discarded = 0.0
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name == "tempo_distributor_spans_received_total":
                received += s.value
            elif s.name == DISCARDED_SPANS + "_total" and s.labels.get("reason") in PER_PUSH_REASONS:
                discarded += s.value
    return received - discarded


def run_loadgens(arg_lists: list[list[str]], *, timeout: float) -> list[dict[str, Any]]:
    """Run one bench/loadgen.py per argument list concurrently; each one's final JSON tally."""
    procs = [
        subprocess.Popen(
            [str(MAIN_PYTHON), str(BENCH_DIR / "loadgen.py"), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        for args in arg_lists
    ]
    outs = []
    for p in procs:
        out, errout = p.communicate(timeout=timeout)
        lines = [ln for ln in out.splitlines() if ln.startswith("{")]
        if p.returncode != 0 or not lines:
            raise RuntimeError(f"loadgen failed: {errout.strip()[-500:]}")
        outs.append(json.loads(lines[-1]))
    return outs


def bench_ingest(opts: Options) -> list[Row]:
    from amtp_obs.collector.telemetry import EXPORTER_SEND_FAILED, EXPORTER_SENT, RECEIVER_ACCEPTED

    duration = 1.5 if opts.quick else opts.duration
    senders, concurrency = (1, 2) if opts.quick else (2, 4)
    rows: list[Row] = []
    # First as configured (tempo.yaml's 15 MB/s ingestion limit caps the store, as it would real Tempo),
    # then with the store's byte limits lifted: the code's capacity, which the target is about.
    for protocol, limited in (("http", True), ("grpc", True), ("http", False), ("grpc", False)):
        workdir = opts.workdir / f"ingest-{protocol}-{'limited' if limited else 'capacity'}"
        with pipeline(workdir, ingestion_limits=limited) as (tempo, coll, tports, cports):
            target = cports.http_url if protocol == "http" else cports.grpc_target
            cpu0 = {p.name: p.cpu_seconds() or 0.0 for p in (tempo, coll)}
            with RssSampler([tempo, coll]) as rss:
                outs = run_loadgens(
                    [
                        [
                            *("--protocol", protocol, "--target", target, "--duration", str(duration)),
                            *("--seed", str(100 + k), "--concurrency", str(concurrency)),
                        ]
                        for k in range(senders)
                    ],
                    timeout=duration + 120,
                )
                send_elapsed = max(o["elapsed_s"] for o in outs)
                acked = sum(o["spans_ok"] for o in outs)
                refused = sum(o["requests_refused"] for o in outs)
                errors = sum(o["requests_error"] for o in outs)
                # Drain: wait until the store has everything the collector acknowledged (or it stops moving).
                t_end_send = time.monotonic()
                last, still = -1.0, 0
                while time.monotonic() - t_end_send < 60:
                    got = _store_received(tports)
                    if got >= acked:
                        break
                    still = still + 1 if got == last else 0
                    if still >= 30:  # 3 s without progress
                        break
                    last = got
                    time.sleep(0.1)
                drain = time.monotonic() - t_end_send
                stored = _store_received(tports)
            m = harness.scrape(cports.metrics_url)
            cpu = {p.name: (p.cpu_seconds() or 0.0) - cpu0[p.name] for p in (tempo, coll)}
        noun = "spans"
        accepted_rate = acked / send_elapsed
        e2e_rate = stored / (send_elapsed + drain)
        lost = max(0, int(acked - stored))
        extra = {
            "acked": acked,
            "stored": stored,
            "refused_requests": refused,
            "error_requests": errors,
            "send_s": send_elapsed,
            "drain_s": drain,
            "rss_peak_mib": rss.peak,
            "rss_end_mib": rss.last,
            "cpu_s": cpu,
            "collector": {
                k.format(noun=noun): m.get(k.format(noun=noun) + "_total")
                for k in (RECEIVER_ACCEPTED, EXPORTER_SENT, EXPORTER_SEND_FAILED)
            },
            "senders": outs,
        }
        label = ("OTLP/HTTP protobuf" if protocol == "http" else "OTLP/gRPC") + (
            "" if limited else " (store limits lifted)"
        )
        rows.append(
            Row(
                "ingest",
                f"{label}: spans/s collector -> store (end to end)",
                e2e_rate,
                "spans/s",
                target=f">= {INGEST_TARGET:,.0f}"
                if not limited
                else "(reported: capped by tempo.yaml ingestion limits)",
                verdict=_verdict(e2e_rate >= INGEST_TARGET) if not limited else "-",
                detail=(
                    f"{acked:,.0f} acked in {send_elapsed:.1f}s ({accepted_rate:,.0f}/s accepted), drained in "
                    f"{drain:.1f}s; lost {lost:,} ({lost / acked:.2%} of acked)"
                    if acked
                    else "nothing acked"
                )
                + f"; refused {refused} req, errors {errors}; RSS peak collector "
                f"{rss.peak.get('collector', 0):.0f} MiB, store {rss.peak.get('tempo', 0):.0f} MiB; CPU s "
                f"collector {cpu['collector']:.1f}, store {cpu['tempo']:.1f}; batch 512, {senders}x{concurrency} "
                "in flight",
                extra=extra,
            )
        )
        rows.append(
            Row(
                "ingest",
                f"{label}: spans lost (acked - stored)",
                float(lost),
                "spans",
                target="0",
                verdict=_verdict(lost == 0),
                detail=f"store received {stored:,.0f} of {acked:,.0f} acknowledged",
            )
        )
    return rows


# ---------------------------------------------------------------------------------------------
# latency
# ---------------------------------------------------------------------------------------------


def _free_obs_ports() -> dict[str, str]:
    names = Project(ROOT, {}).port_variables()
    return {n: str(harness.free_port()) for n in names}


def bench_latency(opts: Options) -> list[Row]:
    from amtp_obs import contract
    from amtp_obs.sdk import configure, llm_call, shutdown

    n = 5 if opts.quick else 50
    rows: list[Row] = []
    with pipeline(opts.workdir / "latency") as (_tempo, _coll, tports, cports):
        configure(
            harness.BENCH_SERVICE,
            endpoint=f"http://{cports.grpc_target}",
            protocol="grpc",
            span_processor="simple",
            metric_export_interval_ms=60_000,
        )
        client = httpx.Client(timeout=5.0)
        lat: list[float] = []
        misses = 0
        for _ in range(n):
            with llm_call(contract.PROVIDER_OPENAI, "gpt-4o") as call:
                call.set_usage(128, 64)
                tid = format(call.span.get_span_context().trace_id, "032x")
            t0 = time.monotonic()  # the span has ended and was exported synchronously (simple processor)
            url = f"{tports.api}/api/traces/{tid}"
            while time.monotonic() - t0 < 10:
                if client.get(url).status_code == 200:
                    lat.append(time.monotonic() - t0)
                    break
                time.sleep(0.01)
            else:
                misses += 1
        client.close()
        shutdown()  # flush while the collector is still up
    p50, p95 = harness.percentile(lat, 50), harness.percentile(lat, 95)
    rows.append(
        Row(
            "latency",
            f"emit -> visible at /api/traces/{{id}} ({n} traces, collector batch timeout 1s)",
            p50,
            "s",
            p95=p95,
            target=f"p95 <= {LATENCY_P95_TARGET_S} s",
            verdict=_verdict(p95 <= LATENCY_P95_TARGET_S and misses == 0),
            detail=f"max {max(lat) if lat else float('nan'):.3f}s; not visible within 10s: {misses}; "
            "emitted by amtp_obs.sdk (simple span processor, OTLP gRPC), polled every 10 ms",
            extra={"latencies_s": lat, "misses": misses},
        )
    )
    if opts.verify:
        rows.append(bench_verify(opts))
    else:
        rows.append(Row("latency", VERIFY_METRIC, verdict=SKIP, detail="--no-verify"))
    return rows


def bench_verify(opts: Options) -> Row:
    """`amtp-obs up` on free ports in a scratch state dir, then time `amtp-obs verify`, then `down`."""
    cli = [str(MAIN_PYTHON), "-m", "amtp_obs.cli"]
    state = opts.workdir / "stack-state"
    environ = {**os.environ, **_free_obs_ports(), env.AMTP_OBS_STATE_DIR: str(state)}
    up = subprocess.run(
        [*cli, "up", "--state-dir", str(state)], capture_output=True, text=True, env=environ, cwd=ROOT, timeout=180
    )
    try:
        if up.returncode != 0:
            return Row(
                "latency",
                VERIFY_METRIC,
                verdict=ERROR,
                detail=f"amtp-obs up failed: {(up.stderr or up.stdout).strip()[-400:]}",
            )
        # A demo workload first (back to back, the harder case: its counters have one sample each), then
        # the gate, several times, since each run waits for the next scrape and so varies by up to one
        # scrape interval (the embedded cadence, stack/cadence.py).
        subprocess.run([*cli, "demo"], capture_output=True, text=True, env=environ, cwd=ROOT, timeout=300)
        walls: list[float] = []
        rng = random.Random(7)
        scrape_s = parse_duration(cadence.interval_from(Project(ROOT, environ).variables))
        for i in range(1 if opts.quick else VERIFY_RUNS):
            if i:
                # Back-to-back runs would each start just after a scrape and wait a whole interval:
                # a random pause samples where in the scrape cycle a user's run starts.
                time.sleep(rng.uniform(0, scrape_s))
            t0 = time.monotonic()
            ver = subprocess.run([*cli, "verify"], capture_output=True, text=True, env=environ, cwd=ROOT, timeout=300)
            walls.append(time.monotonic() - t0)
            if ver.returncode != 0:
                break
    finally:
        subprocess.run(
            [*cli, "down", "--state-dir", str(state)], capture_output=True, env=environ, cwd=ROOT, timeout=120
        )
    ok = ver.returncode == 0
    wall = statistics.median(walls)
    return Row(
        "latency",
        VERIFY_METRIC,
        wall,
        "s",
        p95=max(walls),
        target=f"<= {VERIFY_TARGET_S:.0f} s (median and slowest) and passing",
        verdict=_verdict(ok and max(walls) <= VERIFY_TARGET_S),
        detail=(
            f"verify passed {len(walls)}x, collection every {scrape_s:g} s (p95 column: slowest run)"
            if ok
            else f"verify FAILED (exit {ver.returncode}): "
            + " | ".join((ver.stdout + ver.stderr).strip().splitlines()[-4:])
        ),
        extra={"returncode": ver.returncode},
    )


# ---------------------------------------------------------------------------------------------
# store
# ---------------------------------------------------------------------------------------------


def _timed_gets(client: httpx.Client, urls: list[tuple[str, dict[str, Any] | None]]) -> tuple[list[float], int]:
    lat, bad = [], 0
    for url, params in urls:
        t0 = time.perf_counter()
        r = client.get(url, params=params)
        lat.append((time.perf_counter() - t0) * 1000)
        if r.status_code != 200:
            bad += 1
    return lat, bad


def bench_store(opts: Options) -> list[Row]:
    total_spans = 10_240 if opts.quick else 1_000_000
    batch, spans_per_trace = 512, 4
    requests = math.ceil(total_spans / batch)
    senders, concurrency = (1, 2) if opts.quick else (2, 3)
    tports = harness.TempoPorts()
    tempo = harness.tempo_proc(opts.workdir / "store", tports)
    rows: list[Row] = []
    with harness.running(tempo):
        per = [requests // senders + (1 if k < requests % senders else 0) for k in range(senders)]
        seeds = [500 + k for k in range(senders)]
        t0 = time.monotonic()
        outs = run_loadgens(
            [
                [
                    *("--protocol", "grpc", "--target", tports.otlp_target),
                    *("--unique-requests", str(per[k]), "--seed", str(seeds[k]), "--batch", str(batch)),
                    *("--spans-per-trace", str(spans_per_trace), "--concurrency", str(concurrency)),
                ]
                for k in range(senders)
            ],
            timeout=1800,
        )
        ingest_s = time.monotonic() - t0
        stored = _store_received(tports)
        refused = sum(o["requests_refused"] for o in outs)
        rss_after = tempo.rss_mib()
        rows.append(
            Row(
                "store",
                f"direct OTLP gRPC ingest of {stored:,.0f} spans",
                ingest_s,
                "s",
                target="(reported)",
                verdict="-",
                detail=f"{stored / ingest_s:,.0f} spans/s; {refused} refused requests retried; "
                f"store RSS after {rss_after or 0:.0f} MiB; {spans_per_trace} spans/trace",
                extra={"senders": outs, "stored": stored, "rss_mib": rss_after},
            )
        )
        rng = random.Random(7)
        traces_per_req = batch // spans_per_trace
        ids = []
        for _ in range(20 if opts.quick else 500):
            k = rng.randrange(senders)
            idx = rng.randrange(per[k] * traces_per_req)
            ids.append(harness.trace_id_for(seeds[k], idx).hex())
        with httpx.Client(timeout=30.0) as client:
            _timed_gets(client, [(f"{tports.api}/api/traces/{ids[0]}", None)] * 3)  # warm the connection
            lat, bad = _timed_gets(client, [(f"{tports.api}/api/traces/{t}", None) for t in ids])
            rows.append(
                Row(
                    "store",
                    f"/api/traces/{{id}} at {stored:,.0f} spans ({len(ids)} random known ids)",
                    statistics.median(lat),
                    "ms",
                    p95=harness.percentile(lat, 95),
                    p99=harness.percentile(lat, 99),
                    target=f"p99 <= {LOOKUP_P99_TARGET_MS:.0f} ms",
                    verdict=_verdict(harness.percentile(lat, 99) <= LOOKUP_P99_TARGET_MS and bad == 0),
                    detail=f"non-200 answers: {bad}",
                    extra={"latencies_ms": lat},
                )
            )
            searches = [
                (f"{tports.api}/api/search", {"tags": f"service.name={harness.BENCH_SERVICE}", "limit": "20"}),
                (f"{tports.api}/api/search", {"tags": "llm.model=gpt-4o", "limit": "20"}),
                (f"{tports.api}/api/search", {"q": '{ span.llm.model = "gpt-4o" }', "limit": "20"}),
            ]
            n = 5 if opts.quick else 30
            for url, params in searches:
                lat, bad = _timed_gets(client, [(url, params)] * n)
                what = params.get("tags") or params.get("q")
                rows.append(
                    Row(
                        "store",
                        f"search {what!s} limit 20 at {stored:,.0f} spans",
                        statistics.median(lat),
                        "ms",
                        p95=harness.percentile(lat, 95),
                        p99=harness.percentile(lat, 99),
                        target="(reported)",
                        verdict="-",
                        detail=f"{n} queries; non-200 answers: {bad}",
                        extra={"latencies_ms": lat},
                    )
                )
    return rows


# ---------------------------------------------------------------------------------------------
# main
# ---------------------------------------------------------------------------------------------

RUNNERS: dict[str, Callable[[Options], list[Row]]] = {
    "sdk": bench_sdk,
    "ingest": bench_ingest,
    "latency": bench_latency,
    "store": bench_store,
}


def machine() -> dict[str, Any]:
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gib = None
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_gib = round(int(line.split()[1]) / 1024 / 1024, 1)
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "mem_gib": mem_gib,
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def render(rows: list[Row], console: Console) -> None:
    table = Table(title="AMTP Observability benchmarks", title_justify="left", show_lines=False)
    for col in ("benchmark", "metric", "median", "p95", "p99", "unit", "target", "verdict"):
        table.add_column(col, overflow="fold", justify="right" if col in ("median", "p95", "p99") else "left")
    for r in rows:
        style = {PASS: "green", MISS: "red", ERROR: "red", SKIP: "yellow"}
        color = next((c for k, c in style.items() if k in r.verdict), None)
        verdict = f"[{color}]{r.verdict}[/{color}]" if color else r.verdict
        table.add_row(r.benchmark, r.metric, _fmt(r.median), _fmt(r.p95), _fmt(r.p99), r.unit, r.target, verdict)
    console.print(table)
    for r in rows:
        if r.detail:
            console.print(f"[dim]{r.benchmark} / {r.metric}:[/dim] {r.detail}", highlight=False)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", default=",".join(BENCHMARKS), help=f"comma list of {', '.join(BENCHMARKS)}")
    ap.add_argument("--duration", type=float, default=30.0, help="seconds of sustained ingest per protocol")
    ap.add_argument("--quick", action="store_true", help="smoke run: tiny sizes, no .venv-bench install")
    ap.add_argument("--no-verify", action="store_true", help="skip the `amtp-obs up/verify/down` timing")
    ap.add_argument(
        "--no-instructions", action="store_true", help="skip the SDK's callgrind instruction counts (~7 minutes)"
    )
    ap.add_argument("--output", type=Path, default=RESULTS_FILE, help="where the JSON results go")
    ap.add_argument("--enforce", action="store_true", help="exit 1 when any target is missed (not only on errors)")
    args = ap.parse_args(argv)
    chosen = [b.strip() for b in args.only.split(",") if b.strip()]
    unknown = [b for b in chosen if b not in RUNNERS]
    if unknown:
        ap.error(f"unknown benchmark(s) {', '.join(unknown)}; choose from {', '.join(BENCHMARKS)}")
    if args.duration <= 0:
        ap.error("--duration must be positive")
    console = Console(width=160)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="amtp-bench-") as tmp:
        bench_py = None
        if "sdk" in chosen:
            try:
                bench_py = ensure_bench_venv(args.quick)
            except subprocess.CalledProcessError as exc:
                console.print(f"[yellow]could not build .venv-bench ({exc}); competitors skipped[/yellow]")
        opts = Options(
            args.quick,
            args.duration,
            bench_py,
            Path(tmp),
            verify=not args.no_verify,
            instructions=not args.no_instructions,
        )
        for name in chosen:
            console.print(f"[bold]running {name}[/bold] ...")
            t0 = time.monotonic()
            try:
                rows.extend(RUNNERS[name](opts))
            except Exception as exc:
                rows.append(Row(name, "(benchmark failed)", verdict=ERROR, detail=f"{type(exc).__name__}: {exc}"))
            console.print(f"  {name} took {time.monotonic() - t0:.0f}s")
    render(rows, console)
    doc = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "quick": args.quick,
        "duration_s": args.duration,
        "machine": machine(),
        "rows": [asdict(r) for r in rows],
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=2, default=str))
    console.print(f"results written to {args.output}")
    bad = failing(rows, enforce=args.enforce)
    for r in bad:
        console.print(f"[red]{r.verdict}[/red] {r.benchmark} / {r.metric} (target {r.target or '-'})", highlight=False)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
