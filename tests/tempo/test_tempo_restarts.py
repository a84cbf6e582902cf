"""Restarts of a store that has history: WAL segment numbering and the loader's "already a block" decision.

Every test here starts from a state directory that already holds blocks, because the bugs this file
guards against (issue 11) only appear once blocks and WAL segments coexist.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import httpx
from tempo_helpers import Exporter, new_id, request, span, tempo_doc, wait_until

from amtp_obs.tempo import TempoApp, TempoThread
from amtp_obs.tempo.metrics import TENANT
from amtp_obs.tempo.store import WAL_SUFFIX, list_segments


def _doc(state: Path) -> dict[str, Any]:
    # Blocks are cut only on /flush, so what stays in the WAL across a restart is up to the test.
    return tempo_doc(state, ingester={"flush_check_period": "50ms", "max_block_duration": "1h"})


def _blocks(state: Path) -> list[Path]:
    root = state / "blocks" / TENANT
    return sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def _send(app: TempoApp, n: int, name: str) -> list[bytes]:
    tids = [new_id(16) for _ in range(n)]
    with Exporter(app.otlp_grpc_endpoint) as ex:
        for tid in tids:
            assert ex.export(request("svc-restart", [span(tid, name)]))[0] == grpc.StatusCode.OK
    return tids


def _found(app: TempoApp, tids: list[bytes]) -> list[bytes]:
    with httpx.Client(base_url=app.http_url, timeout=10) as http:
        return [t for t in tids if http.get(f"/api/traces/{t.hex()}").status_code == 200]


def test_traffic_after_two_idle_restarts_survives_the_next_restart(tmp_path: Path) -> None:
    """The reported loss: up, traffic, a block cut, down/up twice, traffic, restart -> all of it gone."""
    doc = _doc(tmp_path)
    with TempoThread(TempoApp.from_config(doc)) as app:
        first = _send(app, 5, "first")
        assert httpx.post(f"{app.http_url}/flush").status_code == 204
        assert len(_blocks(tmp_path)) == 1
    for _ in range(2):  # idle restarts: the segment left behind is empty each time
        with TempoThread(TempoApp.from_config(doc)) as app:
            assert _found(app, first) == first
    with TempoThread(TempoApp.from_config(doc)) as app:
        last = _send(app, 5, "last")
        assert _found(app, last) == last
    with TempoThread(TempoApp.from_config(doc)) as app:
        assert _found(app, first) == first
        assert _found(app, last) == last, "traffic acknowledged since the previous restart was lost"


def test_a_new_segment_number_is_above_every_block_and_segment(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    seen: list[int] = []
    for _ in range(4):
        with TempoThread(TempoApp.from_config(doc)) as app:
            assert app.store.head is not None
            seg = app.store.head.seq
            blocked = [json.loads((b / "meta.json").read_text())["walSeq"] for b in _blocks(tmp_path)]
            assert all(seg > s for s in blocked), (seg, blocked)
            assert all(seg > s for s in seen), (seg, seen)
            seen.append(seg)
            _send(app, 1, "x")
            assert httpx.post(f"{app.http_url}/flush").status_code == 204


def test_a_segment_sharing_a_blocks_number_is_replayed_unless_the_block_holds_it(tmp_path: Path) -> None:
    """Even if a number were reused, a segment is dropped only when a block really is that segment."""
    doc = _doc(tmp_path)
    with TempoThread(TempoApp.from_config(doc)) as app:
        in_block = _send(app, 3, "in-block")
        assert httpx.post(f"{app.http_url}/flush").status_code == 204
        in_wal = _send(app, 3, "in-wal")
    (block,) = _blocks(tmp_path)
    meta = json.loads((block / "meta.json").read_text())
    segments = list_segments(tmp_path / "wal")
    live = max(segments)
    # Give the block the live segment's number, as the old numbering could.
    meta["walSeq"] = live
    (block / "meta.json").write_text(json.dumps(meta))
    with TempoThread(TempoApp.from_config(doc)) as app:
        assert _found(app, in_block) == in_block
        assert _found(app, in_wal) == in_wal
    with TempoThread(TempoApp.from_config(doc)) as app:
        assert _found(app, in_wal) == in_wal


def test_crash_between_block_rename_and_wal_delete_replays_nothing_twice(tmp_path: Path) -> None:
    doc = _doc(tmp_path)
    with TempoThread(TempoApp.from_config(doc)) as app:
        tids = _send(app, 3, "once")
        (seg,) = [p for p in (tmp_path / "wal").glob(f"*{WAL_SUFFIX}")]
        saved = seg.read_bytes()
        assert httpx.post(f"{app.http_url}/flush").status_code == 204
    assert not seg.exists()
    seg.write_bytes(saved)  # the segment as it was when the block's rename reached the disk
    with TempoThread(TempoApp.from_config(doc)) as app:
        assert wait_until(lambda: not seg.exists(), timeout=5), "the segment already in a block was kept"
        store = app.store
        for tid in tids:
            # Reads deduplicate spans, so count where the store keeps the trace: one block, no head.
            info = store.traces[tid]
            in_heads = sum(tid in h.traces for h in (*store.sealed, store.head) if h is not None)
            assert len(info.locations) + in_heads == 1, f"trace {tid.hex()} loaded twice"
        with httpx.Client(base_url=app.http_url, timeout=10) as http:
            for tid in tids:
                spans = [
                    s
                    for b in http.get(f"/api/traces/{tid.hex()}").json()["batches"]
                    for ss in b["scopeSpans"]
                    for s in ss["spans"]
                ]
                assert len(spans) == 1, f"trace {tid.hex()} replayed twice"
