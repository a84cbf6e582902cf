"""`bench/run.py --quick` produces every row of every benchmark, with numbers that agree with each other.

Speeds are not asserted here (targets live in bench/): what is asserted is what holds at any speed:
an instrumented call costs more than the bare one, every acknowledged span is stored, percentiles
are ordered, a verdict agrees with its number and target, and a row's figure is the one its raw
data gives. `amtp-obs verify` is timed by the full run only (--no-verify here: it brings the whole
embedded stack up and is covered by the e2e tests); its row must still be present, marked SKIP.
"""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import run  # bench/run.py (bench/ is on sys.path via conftest)
from amtp_obs import contract

EXPECTED = {
    "sdk": [
        *(run.sdk_label(c) for c in run.llm_overhead.CONTESTANTS),
        *run.IMPORT_LABELS.values(),
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


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess[str], dict[str, Any]]:
    out = tmp_path_factory.mktemp("bench") / "results.json"
    proc = subprocess.run(
        [sys.executable, str(Path(run.__file__)), "--quick", "--no-verify", "--output", str(out)],
        capture_output=True,
        text=True,
        timeout=420,  # every SDK path and import probe, on a shared machine
        cwd=Path(run.__file__).parents[1],
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def _rows(doc: dict[str, Any], bench: str, prefix: str = "") -> list[dict[str, Any]]:
    found = [r for r in doc["rows"] if r["benchmark"] == bench and r["metric"].startswith(prefix)]
    assert found, f"{bench}: no row {prefix!r}"
    return found


def test_quick_run_produces_every_row(quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]]) -> None:
    proc, doc = quick_run
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
        # Percentiles are ordered.
        if r["p95"] is not None:
            assert r["median"] <= r["p95"], r
        if r["p99"] is not None:
            assert r["p95"] <= r["p99"], r
    # The table went to stdout too.
    assert "AMTP Observability benchmarks" in proc.stdout


def test_sdk_rows_agree_with_their_measurements(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, doc = quick_run
    floors = {
        mode: _rows(doc, "sdk", run.sdk_label(run.llm_overhead.floor_of(f"raw_{mode}")))[0]["extra"]
        for mode in run.llm_overhead.MODES
    }
    assert all(floor["ratio_to_floor"] == 1.0 for floor in floors.values())
    token_counters = {s.instrument for s in contract.ALL_TOKEN_COUNTERS}
    for r in _rows(doc, "sdk"):
        e = r["extra"]
        if r["verdict"] == "SKIP" or "overhead_ns" not in e:
            continue
        floor = floors[e["mode"]]
        # The row's figure is the median of the paired differences (instrumented block minus the bare
        # block timed next to it), inside its confidence interval; the instrumented call does the bare
        # call and more, so its median block is the slower one.
        assert e["instrumented_ns"] > e["bare_ns"], r
        pairs = [n - b for n, b in zip(e["instrumented_ns_all"], e["bare_ns_all"], strict=True)]
        assert pairs == e["overhead_ns_all"] and len(pairs) == e["pairs"], r
        assert math.isclose(r["median"], statistics.median(pairs) / 1000), r
        assert e["overhead_ci95"][0] <= e["overhead_ns"] <= e["overhead_ci95"][1], r
        assert math.isclose(e["ratio_to_floor"], e["overhead_ns"] / floor["overhead_ns"]), r
        assert e["spans_per_call"] == 1, r  # one span a call
        assert e["blocked_connections"] == [], r  # nothing left the machine
        if e["contestant"].startswith(("raw", "ours")):  # the contract's counters, the same on both sides
            assert token_counters >= set(e["metrics"]) >= {s.instrument for s in contract.TOKEN_COUNTERS}, r
            assert set(e["metrics"]) == set(floor["metrics"]), r
        if r["target"].startswith("<="):  # ours: the verdict follows the ratio and the competitors
            ok = e["ratio_to_floor"] <= run.SDK_RATIO_TARGET and all(
                f >= run.SDK_COMPETITOR_FACTOR for f in e["competitor_factor"].values()
            )
            assert ("PASS" in r["verdict"]) == ok, r
    for label in run.IMPORT_LABELS.values():
        [row] = _rows(doc, "sdk", label)
        if row["verdict"] != "SKIP":
            assert math.isclose(row["median"], statistics.median(row["extra"]["all"]) * 1000), row
    pure = _rows(doc, "sdk", "llm_call vs raw span+3 counters")[0]
    assert math.isclose(pure["extra"]["ratio"], pure["extra"]["ours_ns"] / pure["extra"]["raw_ns"])
    assert ("PASS" in pure["verdict"]) == (pure["extra"]["ratio"] <= run.SDK_RATIO_TARGET)


def test_ingest_stores_every_acknowledged_span(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, doc = quick_run
    rates = [r for r in _rows(doc, "ingest") if r["metric"].endswith("(end to end)")]
    lost = [r for r in _rows(doc, "ingest") if "spans lost" in r["metric"]]
    assert len(rates) == len(lost) == 4
    for rate, loss in zip(rates, lost, strict=True):
        e = rate["extra"]
        assert e["acked"] > 0 and e["acked"] == sum(s["spans_ok"] for s in e["senders"]), rate
        assert e["stored"] == e["acked"], rate
        assert e["collector"]["otelcol_receiver_accepted_spans"] == e["acked"], rate
        assert e["collector"]["otelcol_exporter_sent_spans"] == e["stored"], rate
        assert math.isclose(rate["median"], e["stored"] / (e["send_s"] + e["drain_s"])), rate
        assert loss["median"] == e["acked"] - e["stored"] == 0 and loss["verdict"] == "PASS", loss
        if rate["target"].startswith(">="):
            assert (rate["verdict"] == "PASS") == (rate["median"] >= run.INGEST_TARGET), rate


def test_latency_and_store_rows_count_what_they_measured(
    quick_run: tuple[subprocess.CompletedProcess[str], dict[str, Any]],
) -> None:
    _, doc = quick_run
    emit = _rows(doc, "latency", "emit -> visible")[0]
    lat = emit["extra"]["latencies_s"]
    assert emit["extra"]["misses"] == 0 and len(lat) == 5
    assert min(lat) <= emit["median"] <= emit["p95"] <= max(lat)
    assert (emit["verdict"] == "PASS") == (emit["p95"] <= run.LATENCY_P95_TARGET_S)

    ingest = _rows(doc, "store", "direct OTLP gRPC ingest of")[0]
    assert ingest["extra"]["stored"] == sum(s["spans_ok"] for s in ingest["extra"]["senders"]) > 0
    lookup = _rows(doc, "store", "/api/traces/{id} at")[0]
    ms = lookup["extra"]["latencies_ms"]
    assert len(ms) == 20 and lookup["median"] == statistics.median(ms)
    assert "non-200 answers: 0" in lookup["detail"]
    assert (lookup["verdict"] == "PASS") == (lookup["p99"] <= run.LOOKUP_P99_TARGET_MS)


def test_enforce_turns_a_missed_target_into_a_failing_exit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rows = [run.Row("store", "fast enough", 1.0, verdict="PASS"), run.Row("store", "too slow", 9.0, verdict="MISS")]
    monkeypatch.setitem(run.RUNNERS, "store", lambda _opts: list(rows))
    argv = ["--only", "store", "--output", str(tmp_path / "r.json")]
    assert run.main(argv) == 0  # a MISS is reported, and without --enforce nothing fails
    assert run.main([*argv, "--enforce"]) == 1
    rows[1].verdict = "1.40x MISS"  # the SDK rows put the ratio first
    assert run.main([*argv, "--enforce"]) == 1
    rows[1].verdict = "PASS"
    assert run.main([*argv, "--enforce"]) == 0
    rows.append(run.Row("store", "broken", verdict="ERROR"))
    assert run.main(argv) == 1  # a broken benchmark fails with or without --enforce


def test_unknown_benchmark_is_a_clear_error() -> None:
    proc = subprocess.run(
        [sys.executable, str(Path(run.__file__)), "--only", "sdk,warp"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2
    assert "unknown benchmark(s) warp" in proc.stderr
