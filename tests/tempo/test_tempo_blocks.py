"""WAL -> blocks, restart from blocks, torn WAL records, and block_retention."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import grpc
import httpx
from tempo_helpers import Exporter, new_id, request, span, tempo_doc, wait_until

from amtp_obs.tempo import TempoApp, TempoThread
from amtp_obs.tempo.metrics import TENANT
from amtp_obs.tempo.store import WAL_HEADER_V2, WAL_SUFFIX, encode_record

HOUR_NS = 3600 * 10**9


def _blocks(state: Path) -> list[Path]:
    root = state / "blocks" / TENANT
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")) if root.exists() else []


def _span_names(http_url: str, tid: bytes) -> list[str]:
    resp = httpx.get(f"{http_url}/api/traces/{tid.hex()}")
    if resp.status_code != 200:
        return []
    return sorted(s["name"] for b in resp.json()["batches"] for ss in b["scopeSpans"] for s in ss["spans"])


def test_blocks_are_cut_and_survive_restart(tmp_path: Path) -> None:
    doc = tempo_doc(tmp_path, ingester={"flush_check_period": "50ms", "max_block_duration": "100ms"})
    tid = new_id(16)
    with TempoThread(TempoApp.from_config(doc)) as app, Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(request("svc", [span(tid, "first")]))[0] == grpc.StatusCode.OK
        assert wait_until(lambda: _blocks(tmp_path), timeout=10)
        # The WAL segment that became the block is gone.
        assert wait_until(
            lambda: not any(p.stat().st_size > WAL_HEADER_V2 for p in (tmp_path / "wal").glob(f"*{WAL_SUFFIX}"))
        )
        # A trace can span a block and the live head.
        assert ex.export(request("svc", [span(tid, "second")]))[0] == grpc.StatusCode.OK
        assert _span_names(app.http_url, tid) == ["first", "second"]
        assert wait_until(lambda: len(_blocks(tmp_path)) >= 2, timeout=10)
    block = _blocks(tmp_path)[0]
    assert {p.name for p in block.iterdir()} == {"data", "index", "meta.json"}
    meta = json.loads((block / "meta.json").read_text())
    assert meta["totalObjects"] == 1 and meta["tenantID"] == TENANT
    with TempoThread(TempoApp.from_config(doc)) as again:
        assert _span_names(again.http_url, tid) == ["first", "second"]
        found = httpx.get(f"{again.http_url}/api/search", params={"q": '{ name = "first" }'}).json()["traces"]
        assert [t["traceID"] for t in found] == [tid.hex().lstrip("0")]
        assert "svc" in httpx.get(f"{again.http_url}/api/search/tag/service.name/values").json()["tagValues"]


def test_flush_endpoint_writes_a_block(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    app = start_tempo()
    tid = new_id(16)
    with Exporter(app.otlp_grpc_endpoint) as ex:
        ex.export(request("svc", [span(tid, "flushed")]))
    assert _blocks(tmp_path) == []
    assert httpx.post(f"{app.http_url}/flush").status_code == 204
    assert len(_blocks(tmp_path)) == 1
    assert _span_names(app.http_url, tid) == ["flushed"]


def test_torn_wal_tail_is_skipped(tmp_path: Path) -> None:
    doc = tempo_doc(tmp_path)
    tid = new_id(16)
    with TempoThread(TempoApp.from_config(doc)) as app, Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(request("svc", [span(tid, "whole")]))[0] == grpc.StatusCode.OK
    (segment,) = sorted((tmp_path / "wal").glob(f"*{WAL_SUFFIX}"))
    torn = encode_record(request("svc", [span(new_id(16), "torn")]).SerializeToString())
    with open(segment, "ab") as f:
        f.write(torn[: len(torn) // 2])  # a crash in the middle of an append
    with TempoThread(TempoApp.from_config(doc)) as app:
        assert _span_names(app.http_url, tid) == ["whole"]
        metrics = httpx.get(f"{app.http_url}/metrics").text
        assert "tempo_ingester_wal_corrupt_records_total 1.0" in metrics
        assert "tempo_ingester_wal_replayed_records_total 1.0" in metrics


def test_corrupt_record_checksum_is_skipped(tmp_path: Path) -> None:
    doc = tempo_doc(tmp_path)
    good, bad = new_id(16), new_id(16)
    with TempoThread(TempoApp.from_config(doc)) as app, Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(request("svc", [span(good, "good")]))[0] == grpc.StatusCode.OK
        assert ex.export(request("svc", [span(bad, "flipped")]))[0] == grpc.StatusCode.OK
    (segment,) = sorted((tmp_path / "wal").glob(f"*{WAL_SUFFIX}"))
    data = bytearray(segment.read_bytes())
    data[-3] ^= 0xFF  # flip a byte inside the last record's payload
    segment.write_bytes(bytes(data))
    with TempoThread(TempoApp.from_config(doc)) as app:
        assert _span_names(app.http_url, good) == ["good"]
        assert _span_names(app.http_url, bad) == []


def test_retention_deletes_old_blocks(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    app = start_tempo(
        tempo_doc(
            tmp_path,
            compactor={"compaction": {"block_retention": "1h", "compaction_cycle": "100ms"}},
            ingester={"flush_check_period": "50ms", "max_block_duration": "100ms"},
        )
    )
    old, fresh = new_id(16), new_id(16)
    with Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(request("svc", [span(old, "old", start_ns=time.time_ns() - 3 * HOUR_NS)]))[0] == (
            grpc.StatusCode.OK
        )
        assert wait_until(lambda: _blocks(tmp_path), timeout=10)
        assert ex.export(request("svc", [span(fresh, "fresh")]))[0] == grpc.StatusCode.OK
    assert wait_until(lambda: _span_names(app.http_url, old) == [], timeout=10)
    assert wait_until(lambda: len(_blocks(tmp_path)) == 1, timeout=10)
    remaining = json.loads((_blocks(tmp_path)[0] / "meta.json").read_text())
    assert remaining["endTime"] > time.time_ns() - HOUR_NS
    assert _span_names(app.http_url, fresh) == ["fresh"]
    assert "tempodb_retention_deleted_total 1.0" in httpx.get(f"{app.http_url}/metrics").text


def test_full_head_is_cut_without_waiting_for_the_period(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    app = start_tempo(
        tempo_doc(tmp_path, ingester={"flush_check_period": "1h", "max_block_duration": "1h", "max_block_bytes": 2000})
    )
    small = request("svc", [span(new_id(16), "small")])
    big = request("svc", [span(new_id(16), "big", attrs={"pad": "x" * 3000})])
    with Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(small)[0] == grpc.StatusCode.OK
        time.sleep(0.2)
        assert _blocks(tmp_path) == []  # below max_block_bytes: stays in the head
        assert ex.export(big)[0] == grpc.StatusCode.OK
    assert wait_until(lambda: len(_blocks(tmp_path)) == 1, timeout=10)
    for r in (small, big):
        tid = r.resource_spans[0].scope_spans[0].spans[0].trace_id
        assert _span_names(app.http_url, tid) == [r.resource_spans[0].scope_spans[0].spans[0].name]
