"""Disk full under the trace store: nothing corrupt, nothing crashes, nothing acknowledged lost.

The store's data directory (WAL and blocks) is a small tmpfs mounted for the test (the suite runs as
root, as CI does). The test fills it to the last page, sends a batch through the collector, and
checks that the store refuses it retryably and says why (log line, metric, ``/ready``), that reads
still work, that the batch arrives once space returns (inside the collector's retry window), and
that a kill -9 and restart afterwards replays a clean WAL with every span exactly once.
"""

from __future__ import annotations

import errno
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

import harness
from amtp_obs.collector.telemetry import EXPORTER_SEND_FAILED, metric_name
from amtp_obs.tempo import TempoApp, TempoThread
from amtp_obs.testing.poll import eventually
from amtp_obs.testing.tools import unavailable
from conftest import start

TMPFS_BYTES = 4 * 1024 * 1024
PAGE = 4096
SERVICE = "amtp-disk-full"
RETRY = {"initial_interval": "200ms", "max_interval": "1s", "max_elapsed_time": "120s"}
# Blocks are cut by the test (/flush), so that what meets the full disk is the same every run; a
# sealed head whose block write failed is retried every flush_check_period.
INGESTER = {"flush_check_period": "200ms", "max_block_duration": "1h"}
SEND_FAILED = metric_name(EXPORTER_SEND_FAILED, "spans") + "_total"


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs at tmp_path/data: a real filesystem that runs out of space."""
    mnt = tmp_path / "data"
    mnt.mkdir()
    res = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={TMPFS_BYTES},mode=0755", "tmpfs", str(mnt)],
        capture_output=True,
        text=True,
    )
    if res.returncode != 0:
        unavailable(f"cannot mount a tmpfs (needs root): {res.stderr.strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def fill(mnt: Path, leave: int = 0) -> Path:
    """Write a file until the filesystem refuses more, then give back ``leave`` bytes."""
    filler = mnt / "filler"
    chunk = b"\0" * (64 * 1024)
    with open(filler, "wb", buffering=0) as f:
        while True:
            try:
                if f.write(chunk) < len(chunk):
                    break
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
                break
    if leave:
        size = filler.stat().st_size
        with open(filler, "r+b") as f:
            f.truncate(max(0, size - leave))
    return filler


def _batch(seed: int, traces: int) -> tuple[bytes, dict[bytes, set[str]]]:
    req, _ = harness.build_request(seed, 0, traces * 4, 4, service=SERVICE)
    # Pad the spans so that one export is several pages: an append can be cut short mid-record.
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for sp in ss.spans:
                sp.attributes.add(key="pad", value={"string_value": "x" * 400})
    return req.SerializeToString(), harness.expected_span_ids(
        ExportTraceServiceRequest.FromString(req.SerializeToString())
    )


def _send(target: str, body: bytes) -> None:
    with grpc.insecure_channel(target) as ch:
        assert harness.grpc_export_retrying(ch, body, time.monotonic() + 15).acked


def _span_counts(api: str, tid: bytes) -> dict[str, int]:
    r = httpx.get(f"{api}/api/traces/{tid.hex()}", timeout=10)
    if r.status_code == 404:
        return {}
    r.raise_for_status()
    out: dict[str, int] = {}
    for b in r.json()["batches"]:
        for ss in b.get("scopeSpans", []):
            for s in ss.get("spans", []):
                out[s["spanId"]] = out.get(s["spanId"], 0) + 1
    return out


def _all_stored(api: str, want: dict[bytes, set[str]]) -> bool:
    return all(set(_span_counts(api, t)) >= ids for t, ids in want.items())


def test_disk_full_refuses_retryably_reports_it_and_loses_nothing(
    small_disk: Path, tmp_path: Path, procs: list[harness.Proc]
) -> None:
    tports, cports = harness.TempoPorts(), harness.CollectorPorts()
    tempo_root = tmp_path / "tempo"  # config and log off the small disk
    tempo = start(procs, harness.tempo_proc(tempo_root, tports, ingester=INGESTER, data=small_disk))
    coll = start(procs, harness.collector_proc(tmp_path / "collector", cports, tports.otlp_target, retry=RETRY))

    in_block_body, in_block = _batch(1, 4)
    _send(cports.grpc_target, in_block_body)
    assert eventually(lambda: _all_stored(tports.api, in_block), 15, 0.2), "data sent before the disk filled is missing"
    assert httpx.post(f"{tports.api}/flush", timeout=10).status_code == 204
    in_head_body, in_head = _batch(2, 4)
    _send(cports.grpc_target, in_head_body)
    assert eventually(lambda: _all_stored(tports.api, in_head), 15, 0.2)
    before = {**in_block, **in_head}

    # Two pages left: the cut below starts a new WAL segment (one page), then its block does not fit.
    filler = fill(small_disk, leave=2 * PAGE)
    assert httpx.post(f"{tports.api}/flush", timeout=10).status_code == 204
    m = harness.scrape(f"{tports.api}/metrics")
    assert m.get("tempo_ingester_failed_flushes_total", 0) >= 1, "the block write did not meet the full disk"
    assert not list((small_disk / "blocks").rglob(".tmp-*")), "a half-written block holds space"
    # What is left is less than the next export: its append is cut short mid-record, then refused.
    during_body, during = _batch(3, 6)
    assert len(during_body) > 2 * PAGE
    _send(cports.grpc_target, during_body)  # the collector acknowledges and holds it

    def reported() -> bool:
        r = httpx.get(f"{tports.api}/ready", timeout=5)
        m = harness.scrape(f"{tports.api}/metrics")
        return (
            r.status_code == 503
            and "wal: No space left on device" in r.text
            and m.get("tempo_ingester_storage_write_failing") == 1
            and m.get("tempo_ingester_storage_write_failures_total", 0) >= 1
        )

    assert eventually(reported, 15, 0.2, ignore=(httpx.HTTPError,)), (
        f"disk full not reported: /ready {httpx.get(f'{tports.api}/ready').text!r}"
    )
    assert "cannot write the WAL" in tempo.log.read_text() and "No space left on device" in tempo.log.read_text()
    time.sleep(2.0)  # several refused attempts and block cut attempts while full
    assert tempo.alive() and coll.alive()
    assert _all_stored(tports.api, before), "reads stopped working while the disk was full"
    assert not any(_span_counts(tports.api, t) for t in during), "stored although the disk was full"

    filler.unlink()  # space returns
    assert eventually(lambda: _all_stored(tports.api, during), 30, 0.3, ignore=(httpx.HTTPError,)), (
        "what the collector acknowledged while the disk was full never arrived"
    )
    assert eventually(lambda: httpx.get(f"{tports.api}/ready", timeout=5).status_code == 200, 10, 0.2)
    assert harness.scrape(f"{tports.api}/metrics").get("tempo_ingester_storage_write_failing") == 0
    assert harness.scrape(cports.metrics_url).get(SEND_FAILED, 0) == 0

    # Nothing corrupt on disk: a kill -9 and restart replays every record cleanly, each span once.
    tempo.kill()
    start(procs, harness.tempo_proc(tempo_root, tports, ingester=INGESTER, data=small_disk))
    m = harness.scrape(f"{tports.api}/metrics")
    assert m.get("tempo_ingester_wal_corrupt_records_total", 0) == 0, "a torn record was left in the WAL"
    assert m.get("tempodb_corrupt_blocks_total", 0) == 0
    for want in (before, during):
        for tid, ids in want.items():
            counts = _span_counts(tports.api, tid)
            assert set(counts) == ids and set(counts.values()) == {1}, f"trace {tid.hex()}: {counts}"
    assert "Traceback" not in tempo.log.read_text()


def test_readiness_returns_when_space_returns_without_traffic(small_disk: Path, tmp_path: Path) -> None:
    """Nothing retries here: the store's own probe must notice that the disk takes writes again."""
    doc = harness.tempo_config(tmp_path / "tempo", harness.TempoPorts(), data=small_disk)
    with TempoThread(TempoApp.from_config(doc)) as app:
        filler = fill(small_disk)
        body, _ = _batch(4, 2)
        with grpc.insecure_channel(app.otlp_grpc_endpoint) as ch:
            export = ch.unary_unary(harness.GRPC_EXPORT)
            with pytest.raises(grpc.RpcError) as refused:
                export(body, timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "No space left on device" in (refused.value.details() or "")
        ready = httpx.get(f"{app.http_url}/ready", timeout=5)
        assert ready.status_code == 503 and "wal: No space left on device" in ready.text
        time.sleep(1.5)  # probes while still full keep it not ready
        assert httpx.get(f"{app.http_url}/ready", timeout=5).status_code == 503
        filler.unlink()
        assert eventually(lambda: httpx.get(f"{app.http_url}/ready", timeout=5).status_code == 200, 10, 0.2)
        assert "tempo_ingester_storage_write_failing 0.0" in httpx.get(f"{app.http_url}/metrics").text
        with grpc.insecure_channel(app.otlp_grpc_endpoint) as ch:
            ch.unary_unary(harness.GRPC_EXPORT)(body, timeout=10)
