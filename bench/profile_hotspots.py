"""Where the time goes: py-spy samples of the collector and trace store under load, cProfile of the SDK.

    .venv/bin/python bench/profile_hotspots.py [--duration 10] [--top 15] [--only ingest,lookup,sdk]

ingest  the collector and the store while loadgen pushes OTLP/gRPC (batches of 512)
lookup  the store while /api/traces/{id} is hammered at ~100k stored spans
sdk     cProfile of 20k auto-instrumented fake-openai calls (in .venv-bench when present, else .venv)

py-spy (PyPI) comes from .venv-bench (bench/setup_bench.sh installs it) or PATH. Prints, per process,
the functions with the most samples on top of the stack (self) and anywhere on it (inclusive);
the raw collapsed stacks go to artifacts/profiles/ for flame graphs.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import pstats
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import httpx  # noqa: E402

import harness  # noqa: E402

ROOT = BENCH_DIR.parent
OUT_DIR = ROOT / "artifacts" / "profiles"


def py_spy() -> str:
    for cand in (ROOT / ".venv-bench" / "bin" / "py-spy", shutil.which("py-spy")):
        if cand and Path(cand).is_file():
            return str(cand)
    raise SystemExit("py-spy not found: run bench/setup_bench.sh (installs it into .venv-bench)")


def record(pid: int, seconds: float, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [
            py_spy(),
            "record",
            "--pid",
            str(pid),
            "--duration",
            str(int(seconds)),
            "--rate",
            "200",
            "--format",
            "raw",
            "--output",
            str(out),
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def summarize(collapsed: Path, top: int) -> str:
    """Self and inclusive sample shares per function from py-spy's collapsed stacks."""
    self_c: collections.Counter[str] = collections.Counter()
    incl: collections.Counter[str] = collections.Counter()
    total = 0
    for line in collapsed.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        self_c[frames[-1]] += n
        for f in set(frames):
            incl[f] += n
    if not total:
        return "(no samples)"
    lines = [f"{total} samples", "  self%  function (file:line)"]
    lines += [f"  {100 * n / total:5.1f}  {f}" for f, n in self_c.most_common(top)]
    lines.append("  incl%  function")
    skip = ("<module>", "run (", "_run_once", "run_forever", "run_until_complete", "_bootstrap", "serve_forever")
    shown = 0
    for f, n in incl.most_common(200):
        if any(s in f for s in skip):
            continue
        lines.append(f"  {100 * n / total:5.1f}  {f}")
        shown += 1
        if shown >= top:
            break
    return "\n".join(lines)


def profile_ingest(seconds: float, top: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tports, cports = harness.TempoPorts(), harness.CollectorPorts()
        tempo = harness.tempo_proc(Path(tmp) / "tempo", tports)
        coll = harness.collector_proc(Path(tmp) / "collector", cports, tports.otlp_target)
        with harness.running(tempo, coll):
            load = subprocess.Popen(
                [
                    sys.executable,
                    str(BENCH_DIR / "loadgen.py"),
                    "--protocol",
                    "grpc",
                    "--target",
                    cports.grpc_target,
                    "--duration",
                    str(seconds + 3),
                    "--concurrency",
                    "4",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
            time.sleep(2)
            outs = {p.name: OUT_DIR / f"ingest-{p.name}.collapsed" for p in (coll, tempo)}
            spies = [record(p.pid, seconds, outs[p.name]) for p in (coll, tempo)]
            for s in spies:
                s.wait(seconds + 60)
            load.wait(seconds + 60)
        for name, path in outs.items():
            print(f"\n=== ingest: {name} (OTLP/gRPC load, batches of 512) ===")
            print(summarize(path, top) if path.is_file() else "(py-spy produced nothing)")


def profile_lookup(seconds: float, top: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tports = harness.TempoPorts()
        tempo = harness.tempo_proc(Path(tmp) / "tempo", tports)
        with harness.running(tempo):
            subprocess.run(
                [
                    sys.executable,
                    str(BENCH_DIR / "loadgen.py"),
                    "--protocol",
                    "grpc",
                    "--target",
                    tports.otlp_target,
                    "--unique-requests",
                    "200",
                    "--seed",
                    "9",
                    "--spans-per-trace",
                    "4",
                    "--concurrency",
                    "2",
                ],
                check=True,
                capture_output=True,
            )
            stop = threading.Event()

            def hammer() -> None:
                with httpx.Client(timeout=10) as c:
                    i = 0
                    while not stop.is_set():
                        c.get(f"{tports.api}/api/traces/{harness.trace_id_for(9, i % 25_000).hex()}")
                        c.get(f"{tports.api}/api/search", params={"tags": "llm.model=gpt-4o", "limit": "20"})
                        i += 7919

            t = threading.Thread(target=hammer)
            t.start()
            out = OUT_DIR / "lookup-tempo.collapsed"
            record(tempo.pid, seconds, out).wait(seconds + 60)
            stop.set()
            t.join()
        print("\n=== store: /api/traces/{id} + tag search at ~100k spans ===")
        print(summarize(out, top) if out.is_file() else "(py-spy produced nothing)")


def profile_sdk(top: int) -> None:
    import llm_overhead

    client = llm_overhead.make_client()
    tp, mp, exporter, _ = llm_overhead.make_pipeline()
    call = llm_overhead.setup_ours_auto(client, tp, mp)
    for _ in range(500):
        call()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(20_000):
        call()
        if len(exporter.get_finished_spans()) > 1000:
            exporter.clear()
    prof.disable()
    buf = io.StringIO()
    # Our code and the OTel SDK only (the openai client itself dominates the raw profile).
    pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(r"amtp_obs|opentelemetry", top)
    print("\n=== sdk: auto-instrumented openai client, 20k calls (cProfile, amtp_obs + OTel, cumulative) ===")
    print(buf.getvalue())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--only", default="ingest,lookup,sdk")
    a = ap.parse_args()
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    chosen = a.only.split(",")
    if "ingest" in chosen:
        profile_ingest(a.duration, a.top)
    if "lookup" in chosen:
        profile_lookup(a.duration, a.top)
    if "sdk" in chosen:
        profile_sdk(a.top)


if __name__ == "__main__":
    main()
