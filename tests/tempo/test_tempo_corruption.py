"""Damaged block files and WAL segments: skipped or repaired with a warning and a metric, the rest served.

Each test builds real state through the store (two blocks and a WAL head), damages one file the way
a crash or a bad disk would, restarts the store on it and checks what is served, what is counted and
what is logged.
"""

from __future__ import annotations

import json
import logging
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from tempo_helpers import Exporter, new_id, request, span, tempo_doc

from amtp_obs.tempo import TempoApp, TempoThread
from amtp_obs.tempo.metrics import TENANT
from amtp_obs.tempo.store import WAL_MAGIC, WAL_SUFFIX, encode_record

STORE_LOGGER = "amtp_obs.tempo.store"


@dataclass
class State:
    doc: dict[str, Any]
    root: Path
    blocks: list[tuple[Path, list[bytes]]]
    """Each block directory with the trace ids it holds, in the order they were written."""
    wal: list[bytes]

    def all_ids(self) -> list[bytes]:
        return [t for _, ids in self.blocks for t in ids] + self.wal

    @property
    def segment(self) -> Path:
        (seg,) = [p for p in (self.root / "wal").glob(f"*{WAL_SUFFIX}") if p.stat().st_size > 24]
        return seg


def _send(ex: Exporter, n: int, name: str) -> list[bytes]:
    tids = [new_id(16) for _ in range(n)]
    for tid in tids:
        assert ex.export(request("svc-corrupt", [span(tid, name)]))[0] == grpc.StatusCode.OK
    return tids


def _block_dirs(root: Path) -> set[Path]:
    base = root / "blocks" / TENANT
    return {p for p in base.iterdir() if p.is_dir() and not p.name.startswith(".")}


@pytest.fixture
def state(tmp_path: Path) -> State:
    doc = tempo_doc(tmp_path, ingester={"flush_check_period": "50ms", "max_block_duration": "1h"})
    blocks: list[tuple[Path, list[bytes]]] = []
    with TempoThread(TempoApp.from_config(doc)) as app, Exporter(app.otlp_grpc_endpoint) as ex:
        for name in ("block-a", "block-b"):
            before = _block_dirs(tmp_path)
            ids = _send(ex, 3, name)
            assert httpx.post(f"{app.http_url}/flush").status_code == 204
            (new,) = _block_dirs(tmp_path) - before
            blocks.append((new, ids))
        wal = _send(ex, 3, "in-wal")
    return State(doc, tmp_path, blocks, wal)


def _served(app: TempoApp, ids: list[bytes]) -> list[bytes]:
    with httpx.Client(base_url=app.http_url, timeout=10) as http:
        return [t for t in ids if http.get(f"/api/traces/{t.hex()}").status_code == 200]


def _searchable(app: TempoApp) -> set[str]:
    r = httpx.get(f"{app.http_url}/api/search", params={"tags": "service.name=svc-corrupt", "limit": 100})
    return {t["traceID"] for t in r.json()["traces"]}


def _metric(app: TempoApp, name: str) -> float:
    for line in httpx.get(f"{app.http_url}/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def _warned(caplog: pytest.LogCaptureFixture, *words: str) -> bool:
    return any(
        r.levelno >= logging.WARNING and all(w in r.getMessage() for w in words)
        for r in caplog.records
        if r.name == STORE_LOGGER
    )


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda b: (b / "meta.json").write_text('{"format": "amtp-bl'), id="truncated-meta"),
        pytest.param(lambda b: (b / "index").write_bytes((b / "index").read_bytes()[:30]), id="truncated-index"),
        pytest.param(lambda b: _flip(b / "index", 40), id="flipped-index-byte"),
        pytest.param(lambda b: (b / "data").unlink(), id="missing-data"),
    ],
)
def test_unreadable_block_is_moved_aside_and_the_rest_served(
    state: State, caplog: pytest.LogCaptureFixture, damage: Any
) -> None:
    bad, bad_ids = state.blocks[0]
    damage(bad)
    caplog.set_level(logging.WARNING, logger=STORE_LOGGER)
    with TempoThread(TempoApp.from_config(state.doc)) as app:
        good = [t for _, ids in state.blocks[1:] for t in ids] + state.wal
        assert _served(app, good) == good
        assert _served(app, bad_ids) == []
        assert _searchable(app) == {t.hex().lstrip("0") for t in good}
        assert _metric(app, "tempodb_corrupt_blocks_total") == 1
        assert _warned(caplog, "skipping unreadable block", bad.name)
    assert not bad.exists() and (bad.parent / f".corrupt-{bad.name}").is_dir()
    # Moved aside: the next start neither counts it again nor fails.
    with TempoThread(TempoApp.from_config(state.doc)) as app:
        assert _metric(app, "tempodb_corrupt_blocks_total") == 0
        assert _served(app, state.wal) == state.wal


def _flip(path: Path, at: int) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def test_truncated_block_data_serves_the_traces_before_the_cut(state: State, caplog: pytest.LogCaptureFixture) -> None:
    block, ids = state.blocks[1]
    data = block / "data"
    data.write_bytes(data.read_bytes()[:-1])  # the last trace written loses its last byte
    caplog.set_level(logging.WARNING, logger=STORE_LOGGER)
    with TempoThread(TempoApp.from_config(state.doc)) as app:
        kept = [t for t in state.all_ids() if t != ids[-1]]
        assert _served(app, kept) == kept
        assert _served(app, [ids[-1]]) == []
        assert ids[-1].hex().lstrip("0") not in _searchable(app)
        assert _metric(app, "tempodb_corrupt_block_traces_total") == 1
        assert _warned(caplog, "past the end of its data file", block.name)


def test_flipped_byte_in_block_data_skips_that_trace_only(state: State, caplog: pytest.LogCaptureFixture) -> None:
    block, ids = state.blocks[0]
    _flip(block / "data", 5)  # inside the first trace written
    caplog.set_level(logging.WARNING, logger=STORE_LOGGER)
    with TempoThread(TempoApp.from_config(state.doc)) as app:
        assert _served(app, [ids[0]]) == []
        kept = [t for t in state.all_ids() if t != ids[0]]
        assert _served(app, kept) == kept
        assert _metric(app, "tempodb_corrupt_block_traces_total") == 1
        assert _warned(caplog, ids[0].hex(), "damaged")
        # Counted once, not at every read.
        assert _served(app, [ids[0]]) == []
        assert _metric(app, "tempodb_corrupt_block_traces_total") == 1


def test_corrupt_record_in_the_middle_of_a_segment_loses_only_that_record(
    state: State, caplog: pytest.LogCaptureFixture
) -> None:
    seg = state.segment
    raw = seg.read_bytes()
    first_len = struct.unpack_from("<I", raw, 24)[0]
    _flip(seg, 24 + 8 + first_len // 2)  # inside the first record's payload
    caplog.set_level(logging.WARNING, logger=STORE_LOGGER)
    with TempoThread(TempoApp.from_config(state.doc)) as app:
        assert _served(app, state.wal[1:]) == state.wal[1:], "records after the damage were lost"
        assert _served(app, state.wal[:1]) == []
        assert _metric(app, "tempo_ingester_wal_corrupt_records_total") == 1
        assert _metric(app, "tempo_ingester_wal_replayed_records_total") == 2
        assert _warned(caplog, "torn or corrupt bytes", seg.name)


def test_torn_tail_after_good_records_keeps_them(state: State, caplog: pytest.LogCaptureFixture) -> None:
    seg = state.segment
    torn = encode_record(request("svc-corrupt", [span(new_id(16), "torn")]).SerializeToString())
    with open(seg, "ab") as f:
        f.write(torn[: len(torn) - 7])  # killed in the middle of an append
    caplog.set_level(logging.WARNING, logger=STORE_LOGGER)
    with TempoThread(TempoApp.from_config(state.doc)) as app:
        assert _served(app, state.all_ids()) == state.all_ids()
        assert _metric(app, "tempo_ingester_wal_corrupt_records_total") == 1
        assert _warned(caplog, "torn or corrupt bytes", seg.name)


def test_damaged_segment_header_still_replays_its_records(state: State, caplog: pytest.LogCaptureFixture) -> None:
    seg = state.segment
    data = bytearray(seg.read_bytes())
    data[0:8] = b"\0" * 8
    seg.write_bytes(bytes(data))
    caplog.set_level(logging.WARNING, logger=STORE_LOGGER)
    with TempoThread(TempoApp.from_config(state.doc)) as app:
        assert _served(app, state.all_ids()) == state.all_ids()
        assert _metric(app, "tempo_ingester_wal_corrupt_records_total") == 1


# ---------------------------------------------------------------------------------------------
# State written by the previous format (v1 blocks, v1 segments) keeps working
# ---------------------------------------------------------------------------------------------


def _v1_block(blocks_dir: Path, name: str, wal_seq: int, traces: dict[bytes, bytes]) -> None:
    """A block as the v1 writer laid it out (index without checksums, meta without segment id)."""
    d = blocks_dir / name
    d.mkdir(parents=True)
    index = bytearray(b"AMTPIDX1" + struct.pack("<Q", len(traces)))
    offset, data = 0, bytearray()
    for tid, blob in traces.items():
        index += struct.pack("<16sQIQQHH", tid, offset, len(blob), 1, 2, 0xFFFF, 0xFFFF)
        data += blob
        offset += len(blob)
    (d / "data").write_bytes(bytes(data))
    (d / "index").write_bytes(bytes(index))
    meta = {"format": "amtp-block-v1", "blockID": name, "walSeq": wal_seq, "endTime": 2, "createdAt": 1}
    (d / "meta.json").write_text(json.dumps(meta))


def _v1_segment(wal_dir: Path, seq: int, exports: list[bytes]) -> Path:
    wal_dir.mkdir(parents=True, exist_ok=True)
    path = wal_dir / f"{seq:010d}{WAL_SUFFIX}"
    path.write_bytes(WAL_MAGIC + b"".join(encode_record(e) for e in exports))
    return path


def test_v1_state_with_a_reused_segment_number_loses_nothing(tmp_path: Path) -> None:
    """What the old numbering left behind: block walSeq 1, and a later segment 1 with other traces."""
    from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

    doc = tempo_doc(tmp_path)
    blocks_dir = tmp_path / "blocks" / TENANT
    in_block, in_segment, crashed = new_id(16), new_id(16), new_id(16)

    def export(tid: bytes, name: str) -> bytes:
        return request("svc-v1", [span(tid, name)]).SerializeToString()

    def blob(tid: bytes, name: str) -> bytes:
        req = request("svc-v1", [span(tid, name)])
        return TracesData(resource_spans=req.resource_spans).SerializeToString()

    _v1_block(blocks_dir, "b1", 1, {in_block: blob(in_block, "in-block")})
    _v1_segment(tmp_path / "wal", 1, [export(in_segment, "in-segment")])
    # And a real crash window: block b2 is segment 2, whose file was not deleted yet.
    _v1_block(blocks_dir, "b2", 2, {crashed: blob(crashed, "crashed")})
    seg2 = _v1_segment(tmp_path / "wal", 2, [export(crashed, "crashed")])
    with TempoThread(TempoApp.from_config(doc)) as app:
        assert _served(app, [in_block, in_segment, crashed]) == [in_block, in_segment, crashed]
        assert not seg2.exists()
        spans = httpx.get(f"{app.http_url}/api/traces/{crashed.hex()}").json()["batches"][0]["scopeSpans"][0]["spans"]
        assert len(spans) == 1, "a segment already in a block was replayed"
