"""Durable trace storage: a write-ahead log, in-memory heads, immutable blocks and an id index.

Write path: an accepted export is appended to the current WAL segment (length, CRC32, bytes) and
fsync'd together with every other export waiting at that moment (group commit); only then is it
added to the in-memory head and acknowledged. A head is cut at ``max_block_duration`` or
``max_block_bytes``: the WAL rotates to a new segment and the sealed head is written as a block
(data file + index of trace id -> offset, built in a temp directory and renamed into place), after
which its WAL segment is deleted. Startup loads block indexes and replays the remaining segments,
stopping at a torn last record. Lookups go through one dict of trace id -> locations.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import struct
import time
import uuid
import zlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from amtp_obs.tempo.ingest import ParsedExport, parse_export
from amtp_obs.tempo.metrics import TENANT, TempoMetrics

log = logging.getLogger("amtp_obs.tempo.store")

WAL_MAGIC = b"AMTPWAL1"
WAL_SUFFIX = ".wal"
_REC = struct.Struct("<II")  # payload length, crc32(payload)
MAX_RECORD = 256 * 1024 * 1024

INDEX_MAGIC = b"AMTPIDX1"
_IDX = struct.Struct("<16sQIQQHH")  # trace id, offset, length, start ns, end ns, len(service), len(name)
_NONE = 0xFFFF
BLOCK_FORMAT = "amtp-block-v1"
MAX_TAG_VALUES = 1000
"""Distinct values kept per tag key for the tag-values APIs."""
TAGS_FILE = "tags.json"
HEAD_MEMORY_CAP = 64 * 1024 * 1024
"""Heads live in memory (Tempo keeps its head block on disk): cut at this size whatever max_block_bytes says."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


# --------------------------------------------------------------------------------------------
# WAL
# --------------------------------------------------------------------------------------------


def segment_path(wal_dir: Path, seq: int) -> Path:
    return wal_dir / f"{seq:010d}{WAL_SUFFIX}"


def list_segments(wal_dir: Path) -> list[int]:
    out = []
    for p in wal_dir.glob(f"*{WAL_SUFFIX}"):
        with contextlib.suppress(ValueError):
            out.append(int(p.stem))
    return sorted(out)


def encode_record(payload: bytes) -> bytes:
    return _REC.pack(len(payload), zlib.crc32(payload)) + payload


@dataclass
class SegmentReplay:
    records: list[bytes]
    good_length: int
    corrupt: bool


def read_segment(path: Path) -> SegmentReplay:
    """Records of one segment up to the first torn or corrupt one (a crash mid-append leaves one)."""
    data = path.read_bytes()
    if not data.startswith(WAL_MAGIC):
        # A segment whose header never reached the disk holds nothing acknowledged.
        return SegmentReplay([], 0, bool(data))
    pos, records = len(WAL_MAGIC), []
    while pos < len(data):
        if pos + _REC.size > len(data):
            return SegmentReplay(records, pos, True)
        length, crc = _REC.unpack_from(data, pos)
        start, end = pos + _REC.size, pos + _REC.size + length
        if length > MAX_RECORD or end > len(data):
            return SegmentReplay(records, pos, True)
        payload = data[start:end]
        if zlib.crc32(payload) != crc:
            return SegmentReplay(records, pos, True)
        records.append(payload)
        pos = end
    return SegmentReplay(records, pos, False)


class WalSegment:
    def __init__(self, wal_dir: Path, seq: int) -> None:
        self.seq = seq
        self.path = segment_path(wal_dir, seq)
        new = not self.path.exists()
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        if new:
            _write_all(self.fd, WAL_MAGIC)
            os.fsync(self.fd)
            _fsync_dir(wal_dir)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


# --------------------------------------------------------------------------------------------
# heads and blocks
# --------------------------------------------------------------------------------------------


@dataclass
class Head:
    """Traces of one WAL segment, in memory until the segment becomes a block."""

    seq: int
    traces: dict[bytes, list[bytes]] = field(default_factory=dict)
    metas: dict[bytes, list] = field(default_factory=dict)  # [start, end, root service, root name]
    size: int = 0
    created: float = field(default_factory=time.monotonic)


class Block:
    """An immutable block on disk: ``data`` (trace blobs back to back), ``index`` and ``meta.json``."""

    def __init__(self, path: Path, meta: dict, entries: dict[bytes, tuple[int, int, int, int, str | None, str | None]]):
        self.path = path
        self.id = path.name
        self.meta = meta
        self.entries = entries
        self.fd = os.open(path / "data", os.O_RDONLY)

    @property
    def end_ns(self) -> int:
        return int(self.meta.get("endTime", 0))

    @property
    def wal_seq(self) -> int | None:
        seq = self.meta.get("walSeq")
        return int(seq) if seq is not None else None

    def read(self, offset: int, length: int) -> bytes:
        return os.pread(self.fd, length, offset)

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @classmethod
    def open(cls, path: Path) -> Block:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != BLOCK_FORMAT:
            raise ValueError(f"{path}: unknown block format {meta.get('format')!r}")
        raw = (path / "index").read_bytes()
        if not raw.startswith(INDEX_MAGIC):
            raise ValueError(f"{path}/index: bad magic")
        (count,) = struct.unpack_from("<Q", raw, len(INDEX_MAGIC))
        pos = len(INDEX_MAGIC) + 8
        entries: dict[bytes, tuple[int, int, int, int, str | None, str | None]] = {}
        unpack = _IDX.unpack_from
        for _ in range(count):
            tid, off, ln, start, end, ls, lnm = unpack(raw, pos)
            pos += _IDX.size
            svc = None if ls == _NONE else raw[pos : pos + ls].decode()
            pos += 0 if ls == _NONE else ls
            name = None if lnm == _NONE else raw[pos : pos + lnm].decode()
            pos += 0 if lnm == _NONE else lnm
            entries[tid] = (off, ln, start, end, svc, name)
        return cls(path, meta, entries)


def _enc_str(s: str | None) -> tuple[int, bytes]:
    if s is None:
        return _NONE, b""
    b = s.encode()[: _NONE - 1]
    return len(b), b


def write_block(blocks_dir: Path, head: Head) -> Block:
    """Write a sealed head as a block; atomic: readers see the whole block or none of it."""
    bid = str(uuid.uuid4())
    tmp = blocks_dir / f".tmp-{bid}"
    tmp.mkdir(parents=True)
    index = bytearray(INDEX_MAGIC + struct.pack("<Q", len(head.traces)))
    offset, start_all, end_all = 0, None, 0
    with open(tmp / "data", "wb") as f:
        for tid, parts in head.traces.items():
            blob = b"".join(parts)
            f.write(blob)
            start, end, svc, name = head.metas[tid]
            ls, bs = _enc_str(svc)
            ln, bn = _enc_str(name)
            index += _IDX.pack(tid, offset, len(blob), start, end, ls, ln) + bs + bn
            offset += len(blob)
            start_all = start if start_all is None else min(start_all, start)
            end_all = max(end_all, end)
        f.flush()
        os.fsync(f.fileno())
    with open(tmp / "index", "wb") as f:
        f.write(index)
        f.flush()
        os.fsync(f.fileno())
    meta = {
        "format": BLOCK_FORMAT,
        "blockID": bid,
        "tenantID": TENANT,
        "walSeq": head.seq,
        "startTime": start_all or 0,
        "endTime": end_all,
        "totalObjects": len(head.traces),
        "size": offset,
        "createdAt": time.time(),
    }
    with open(tmp / "meta.json", "w") as f:
        json.dump(meta, f)
        f.flush()
        os.fsync(f.fileno())
    _fsync_dir(tmp)
    final = blocks_dir / bid
    os.rename(tmp, final)
    _fsync_dir(blocks_dir)
    return Block.open(final)


# --------------------------------------------------------------------------------------------
# the store
# --------------------------------------------------------------------------------------------


class TraceInfo:
    """Summary of one trace across heads and blocks: what search and limits need without parsing."""

    __slots__ = ("end_ns", "locations", "root_name", "root_service", "start_ns")

    def __init__(self, start_ns: int, end_ns: int, root_service: str | None, root_name: str | None) -> None:
        self.start_ns = start_ns
        self.end_ns = end_ns
        self.root_service = root_service
        self.root_name = root_name
        self.locations: list[tuple[Block, int, int]] = []

    def merge(self, start: int, end: int, svc: str | None, name: str | None) -> None:
        if start and (not self.start_ns or start < self.start_ns):
            self.start_ns = start
        if end > self.end_ns:
            self.end_ns = end
        if name is not None and self.root_name is None:
            self.root_service, self.root_name = svc, name


class StoreClosed(RuntimeError):
    pass


class TraceStore:
    """WAL + heads + blocks for one tenant; every public coroutine runs on the owning event loop."""

    def __init__(
        self,
        wal_dir: Path | str,
        blocks_dir: Path | str,
        metrics: TempoMetrics | None = None,
        max_head_bytes: int = HEAD_MEMORY_CAP,
    ) -> None:
        self.wal_dir = Path(wal_dir)
        self.max_head_bytes = min(max_head_bytes, HEAD_MEMORY_CAP)
        self.head_full = asyncio.Event()
        """Set by the writer when the head reaches ``max_head_bytes``: the flush loop cuts at once."""
        self.blocks_dir = Path(blocks_dir)
        self.metrics = metrics or TempoMetrics()
        self.traces: dict[bytes, TraceInfo] = {}
        self._order: list[bytes] = []
        """The keys of ``traces`` in insertion order, append-only (searches walk it from threads)."""
        self.blocks: dict[str, Block] = {}
        self.sealed: list[Head] = []
        self.head: Head | None = None
        self.tag_index: dict[str, dict[str, dict[tuple[str, str], None]]] = {"span": {}, "resource": {}}
        self.span_names: dict[str, None] = {}
        self._segment: WalSegment | None = None
        self._queue: asyncio.Queue[tuple[bytes, ParsedExport, asyncio.Future[None]] | None] = asyncio.Queue()
        self._lock = asyncio.Lock()
        self._writer: asyncio.Task[None] | None = None
        # fsync gets its own thread so that searches in the default pool never delay an acknowledgement.
        self._fsync_pool = ThreadPoolExecutor(1, thread_name_prefix="tempo-wal-fsync")
        self._graveyard: list[Block] = []
        self._flushing: set[int] = set()
        self._closed = False

    # -- lifecycle -------------------------------------------------------------------------

    async def open(self) -> None:
        """Load blocks and replay the WAL (in a worker thread: big stores take a while)."""
        await asyncio.to_thread(self._load)
        self._segment = WalSegment(self.wal_dir, (max((h.seq for h in self.sealed), default=0)) + 1)
        self.head = Head(self._segment.seq)
        self._writer = asyncio.create_task(self._write_loop(), name="tempo-wal-writer")
        if self.sealed:
            self.head_full.set()  # turn the replayed segments into blocks now, not at the next period

    def _load(self) -> None:
        self.wal_dir.mkdir(parents=True, exist_ok=True)
        self.blocks_dir.mkdir(parents=True, exist_ok=True)
        for tmp in self.blocks_dir.glob(".tmp-*"):
            shutil.rmtree(tmp, ignore_errors=True)
        tags_path = self.blocks_dir / TAGS_FILE
        if tags_path.is_file():
            try:
                saved = json.loads(tags_path.read_text())
                for scope in ("span", "resource"):
                    for key, values in saved.get(scope, {}).items():
                        bucket = self.tag_index[scope].setdefault(key, {})
                        for t, v in values:
                            bucket[(t, v)] = None
                for n in saved.get("names", []):
                    self.span_names[n] = None
            except (ValueError, TypeError, AttributeError) as exc:
                log.warning("ignoring unreadable %s: %s", tags_path, exc)
        blocks: list[Block] = []
        for path in self.blocks_dir.iterdir():
            if not path.is_dir() or path.name.startswith("."):
                continue
            try:
                blocks.append(Block.open(path))
            except (OSError, ValueError, struct.error) as exc:
                log.warning("skipping unreadable block %s: %s", path, exc)
        blocks.sort(key=lambda b: (b.meta.get("createdAt", 0), b.id))
        for block in blocks:
            self._register_block(block)
        blocked = {b.wal_seq for b in blocks}
        for seq in list_segments(self.wal_dir):
            path = segment_path(self.wal_dir, seq)
            if seq in blocked:
                path.unlink(missing_ok=True)  # crashed between block rename and WAL delete
                continue
            replay = read_segment(path)
            if replay.corrupt:
                self.metrics.wal_torn_records.inc()
                log.warning("WAL %s: torn or corrupt record at byte %d, skipped", path, replay.good_length)
                if replay.good_length:
                    os.truncate(path, replay.good_length)
            head = Head(seq)
            for payload in replay.records:
                try:
                    parsed = parse_export(payload)
                except ValueError as exc:
                    log.warning("WAL %s: undecodable record skipped: %s", path, exc)
                    continue
                self._apply(head, parsed)
                self.metrics.wal_replayed_records.inc()
            if head.traces:
                self.sealed.append(head)
            else:
                path.unlink(missing_ok=True)
        self.metrics.blocklist_length.labels(TENANT).set(len(self.blocks))

    async def close(self) -> None:
        """Stop accepting writes, finish the pending group commit, close files (the WAL stays)."""
        if self._closed:
            return
        self._closed = True
        if self._writer is not None:
            await self._queue.put(None)
            await self._writer
        if self._segment is not None:
            self._segment.close()
        for block in (*self.blocks.values(), *self._graveyard):
            block.close()
        self._fsync_pool.shutdown(wait=True)

    # -- write path ------------------------------------------------------------------------

    async def commit(self, raw: bytes, parsed: ParsedExport) -> None:
        """Return once the export is fsync'd to the WAL and visible to readers."""
        if self._closed or self._writer is None:
            raise StoreClosed("trace store is shutting down")
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        await self._queue.put((raw, parsed, fut))
        await fut

    async def _write_loop(self) -> None:
        loop = asyncio.get_running_loop()
        stop = False
        while not stop:
            item = await self._queue.get()
            items = []
            if item is None:
                stop = True
            else:
                items.append(item)
            while not self._queue.empty():
                nxt = self._queue.get_nowait()
                if nxt is None:
                    stop = True
                else:
                    items.append(nxt)
            if not items:
                continue
            async with self._lock:
                seg, head = self._segment, self.head
                assert seg is not None and head is not None
                try:
                    _write_all(seg.fd, b"".join(encode_record(raw) for raw, _, _ in items))
                    await loop.run_in_executor(self._fsync_pool, os.fdatasync, seg.fd)
                except OSError as exc:
                    for _, _, fut in items:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self.metrics.wal_fsyncs.inc()
                for _, parsed, _ in items:
                    self._apply(head, parsed)
                if head.size >= self.max_head_bytes:
                    self.head_full.set()
            for _, _, fut in items:
                if not fut.done():
                    fut.set_result(None)

    def _apply(self, head: Head, parsed: ParsedExport) -> None:
        traces, created = self.traces, 0
        for tid, d in parsed.traces.items():
            parts = head.traces.get(tid)
            if parts is None:
                head.traces[tid] = [d.data]
                head.metas[tid] = [d.start_ns, d.end_ns, d.root_service, d.root_name]
            else:
                parts.append(d.data)
                m = head.metas[tid]
                if d.start_ns < m[0]:
                    m[0] = d.start_ns
                if d.end_ns > m[1]:
                    m[1] = d.end_ns
                if d.root_name is not None:
                    m[2], m[3] = d.root_service, d.root_name
            info = traces.get(tid)
            if info is None:
                traces[tid] = TraceInfo(d.start_ns, d.end_ns, d.root_service, d.root_name)
                self._order.append(tid)
                created += 1
            else:
                info.merge(d.start_ns, d.end_ns, d.root_service, d.root_name)
        head.size += parsed.size
        if created:
            self.metrics.traces_created.labels(TENANT).inc(created)
        idx = self.tag_index
        for scope, key, typ, value in parsed.tags:
            bucket = idx[scope].get(key)
            if bucket is None:
                bucket = idx[scope][key] = {}
            if len(bucket) < MAX_TAG_VALUES:
                bucket[(typ, value)] = None
        for name in parsed.span_names:
            if len(self.span_names) < MAX_TAG_VALUES * 10:
                self.span_names[name] = None

    # -- blocks ----------------------------------------------------------------------------

    def _register_block(self, block: Block) -> None:
        self.blocks[block.id] = block
        traces = self.traces
        for tid, (off, ln, start, end, svc, name) in block.entries.items():
            info = traces.get(tid)
            if info is None:
                info = traces[tid] = TraceInfo(start, end, svc, name)
                self._order.append(tid)
            else:
                info.merge(start, end, svc, name)
            info.locations.append((block, off, ln))

    def head_age(self) -> float:
        return time.monotonic() - self.head.created if self.head else 0.0

    def head_bytes(self) -> int:
        return self.head.size if self.head else 0

    async def rotate(self) -> Head | None:
        """Seal the current head and start a new WAL segment; None when the head is empty."""
        async with self._lock:
            head = self.head
            if head is None or not head.traces or self._closed:
                return None
            old = self._segment
            assert old is not None
            self._segment = WalSegment(self.wal_dir, old.seq + 1)
            old.close()
            self.head = Head(self._segment.seq)
            self.sealed.append(head)
            return head

    async def flush_sealed(self) -> int:
        """Write every sealed head as a block, then drop its WAL segment; returns blocks written."""
        written = 0
        for head in list(self.sealed):
            if head.seq in self._flushing:
                continue
            self._flushing.add(head.seq)
            try:
                block = await asyncio.to_thread(write_block, self.blocks_dir, head)
            except OSError as exc:
                self.metrics.failed_flushes.inc()
                log.error("writing block for WAL segment %d failed: %s", head.seq, exc)
                continue
            finally:
                self._flushing.discard(head.seq)
            # Register and drop the head with no await in between: readers see one or the other.
            self._register_block(block)
            self.sealed.remove(head)
            segment_path(self.wal_dir, head.seq).unlink(missing_ok=True)
            written += 1
            self.metrics.blocks_flushed.inc()
        if written:
            await asyncio.to_thread(self._save_tags, self._tags_doc())
        self.metrics.blocklist_length.labels(TENANT).set(len(self.blocks))
        return written

    async def cut(self) -> int:
        """Rotate and flush now (Tempo's ``/flush``)."""
        await self.rotate()
        return await self.flush_sealed()

    def _tags_doc(self) -> dict[str, Any]:
        """Snapshot of the tag index, taken on the loop (the writer thread must not iterate live dicts)."""
        doc: dict[str, Any] = {
            scope: {k: [list(tv) for tv in v] for k, v in self.tag_index[scope].items()}
            for scope in ("span", "resource")
        }
        doc["names"] = list(self.span_names)
        return doc

    def _save_tags(self, doc: dict[str, Any]) -> None:
        tmp = self.blocks_dir / f".{TAGS_FILE}.tmp"
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.blocks_dir / TAGS_FILE)

    def enforce_retention(self, retention_s: float, now_ns: int | None = None) -> int:
        """Delete blocks whose newest span ended before now - retention; returns how many."""
        for block in self._graveyard:
            block.close()  # closed one cycle late so that a running search never reads a reused fd
        self._graveyard.clear()
        if retention_s <= 0:
            return 0
        cutoff = (now_ns if now_ns is not None else time.time_ns()) - int(retention_s * 1e9)
        doomed = [b for b in self.blocks.values() if b.end_ns < cutoff]
        for block in doomed:
            del self.blocks[block.id]
            for tid in block.entries:
                info = self.traces.get(tid)
                if info is None:
                    continue
                info.locations = [loc for loc in info.locations if loc[0] is not block]
                if not info.locations and not self._in_heads(tid):
                    del self.traces[tid]
            shutil.rmtree(block.path, ignore_errors=True)
            self._graveyard.append(block)
            self.metrics.retention_deleted.inc()
        if doomed:
            self._order = list(self.traces)  # a new list: a running search keeps walking the old one
            self.metrics.blocklist_length.labels(TENANT).set(len(self.blocks))
        return len(doomed)

    # -- read path -------------------------------------------------------------------------

    def _heads(self) -> Iterator[Head]:
        yield from list(self.sealed)
        if self.head is not None:
            yield self.head

    def _in_heads(self, tid: bytes) -> bool:
        return any(tid in h.traces for h in self._heads())

    def find(self, tid: bytes) -> bytes | None:
        """The trace as TracesData / tempopb.Trace protobuf bytes, or None."""
        info = self.traces.get(tid)
        if info is None:
            return None
        parts = []
        for block, off, ln in list(info.locations):
            try:
                parts.append(block.read(off, ln))
            except OSError:
                continue  # block removed by retention while we read
        for head in self._heads():
            hp = head.traces.get(tid)
            if hp:
                parts.extend(list(hp))
        return b"".join(parts) or None

    def trace_ids_newest_first(self) -> Iterator[bytes]:
        """Trace ids, newest first, without copying them (a search usually stops after a few).

        Walks ``_order`` by index from the end: safe in a worker thread while the loop appends,
        and retention swaps in a new list rather than changing the one being walked.
        """
        order = self._order
        for i in range(len(order) - 1, -1, -1):
            yield order[i]

    @property
    def stats(self) -> dict[str, int]:
        return {
            "traces": len(self.traces),
            "blocks": len(self.blocks),
            "sealed_heads": len(self.sealed),
            "head_traces": len(self.head.traces) if self.head else 0,
        }
