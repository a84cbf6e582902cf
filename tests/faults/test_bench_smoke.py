"""`bench/run.py --quick` produces every row of every benchmark (speeds are not asserted here).

`amtp-obs verify` is timed by the full run only (--no-verify here: it brings the whole embedded
stack up and is covered by the e2e tests); its row must still be present, marked SKIP.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import run  # bench/run.py (bench/ is on sys.path via conftest)

EXPECTED = {
    "sdk": [
        "raw OTel SDK (floor): overhead/call",
        "amtp_obs llm_call: overhead/call",
        "amtp_obs auto-instrumented openai: overhead/call",
        "OpenLLMetry (opentelemetry-instrumentation-openai): overhead/call",
        "OpenLIT: overhead/call",
        "llm_call vs raw span+3 counters, no client (bench/sdk_overhead.py)",
    ],
    "ingest": [
        "OTLP/HTTP protobuf: spans/s collector -> store (end to end)",
        "OTLP/HTTP protobuf: spans lost (acked - stored)",
        "OTLP/gRPC: spans/s collector -> store (end to end)",
        "OTLP/gRPC: spans lost (acked - stored)",
    ],
    "latency": ["emit -> visible at /api/traces/{id}", run.VERIFY_METRIC],
    "store": [
        "direct OTLP gRPC ingest of",
        "/api/traces/{id} at",
        "search service.name=",
        "search llm.model=",
        "search {",
    ],
}


def test_quick_run_produces_every_row(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(Path(run.__file__)), "--quick", "--no-verify", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=Path(run.__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["quick"] is True
    assert doc["machine"]["nproc"] >= 1
    rows = doc["rows"]
    for bench, prefixes in EXPECTED.items():
        metrics = [r["metric"] for r in rows if r["benchmark"] == bench]
        for prefix in prefixes:
            assert any(m.startswith(prefix) for m in metrics), f"{bench}: no row {prefix!r} in {metrics}"
    for r in rows:
        assert "ERROR" not in r["verdict"], r
        if r["verdict"] == "SKIP":
            assert r["detail"], r  # a skip says why
            continue
        assert isinstance(r["median"], float) and math.isfinite(r["median"]), r
        assert r["median"] >= 0, r
    # The table went to stdout too.
    assert "AMTP Observability benchmarks" in proc.stdout


def test_unknown_benchmark_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, str(Path(run.__file__)), "--only", "sdk,warp"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "unknown benchmark(s) warp" in proc.stderr
