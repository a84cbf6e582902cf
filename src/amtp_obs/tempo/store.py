"""Durable trace storage: a write-ahead log, in-memory heads, immutable blocks and an id index.

Write path: an accepted export is appended to the current WAL segment (length, CRC32, bytes) and
fsync'd together with every other export waiting at that moment (group commit); only then is it
added to the in-memory head and acknowledged. A head is cut at ``max_block_duration`` or
``max_block_bytes``: the WAL rotates to a new segment and the sealed head is written as a block
(data file + index of trace id -> offset, built in a temp directory and renamed into place), after
which its WAL segment is deleted. Startup loads block indexes and replays the remaining segments,
skipping torn or corrupt stretches; a segment is "already a block" only when a block carries its
unique id, and segment numbers are never reused (issue 11). Damaged blocks are moved aside, a full
disk is reported and refused retryably (docs/embedded.md, "Durability"). Lookups go through one
dict of trace id -> locations.
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

from google.protobuf.message import DecodeError
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData

from amtp_obs.tempo.ingest import ParsedExport, parse_export
from amtp_obs.tempo.metrics import TENANT, TempoMetrics

log = logging.getLogger("amtp_obs.tempo.store")

WAL_MAGIC = b"AMTPWAL1"
"""v1 segments (read only): magic, then records."""
WAL_MAGIC_V2 = b"AMTPWAL2"
WAL_HEADER_V2 = len(WAL_MAGIC_V2) + 16
"""v2 segments: magic and a 16-byte random segment id, then records."""
WAL_SUFFIX = ".wal"
_REC = struct.Struct("<II")  # payload length, crc32(payload)
MAX_RECORD = 256 * 1024 * 1024

INDEX_MAGIC_V1 = b"AMTPIDX1"
_IDX_V1 = struct.Struct("<16sQIQQHH")  # trace id, offset, length, start ns, end ns, len(service), len(name)
BLOCK_FORMAT_V1 = "amtp-block-v1"
INDEX_MAGIC = b"AMTPIDX2"
_IDX = struct.Struct("<16sQIIQQHH")  # v1's fields with crc32(blob) after the length
BLOCK_FORMAT = "amtp-block-v2"
"""v2 adds a checksum per trace blob, the index's checksum and the WAL segment id in meta.json."""
_NONE = 0xFFFF
MAX_TAG_VALUES = 1000
"""Distinct values kept per tag key for the tag-values APIs."""
TAGS_FILE = "tags.json"
PROBE_FILE = ".write-probe"
PROBE_BYTES = 4096
"""While the WAL cannot be written, a page is written and fsync'd here every second to see whether it can."""
FLUSH_FAILURE_LOG_PERIOD = 60.0
"""A block write that keeps failing (disk full) is logged once, then at most once a minute."""
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
    """Bytes up to the end of the last record read (the header alone when there is none)."""
    corrupt: bool
    segment_id: bytes | None = None
    """The unique id in a v2 header; None for a v1 segment or an unreadable header."""
    skipped: list[tuple[int, int]] = field(default_factory=list)
    """Byte ranges skipped as torn or corrupt (start, end)."""


def _record_at(data: bytes, pos: int) -> int | None:
    """End offset of a whole record with a good checksum starting at ``pos``, else None."""
    if pos + _REC.size > len(data):
        return None
    length, crc = _REC.unpack_from(data, pos)
    end = pos + _REC.size + length
    if length > MAX_RECORD or end > len(data):
        return None
    if zlib.crc32(memoryview(data)[pos + _REC.size : end]) != crc:
        return None
    return end


def _resync(data: bytes, pos: int) -> int | None:
    """The next offset after ``pos`` where a whole, non-empty, checksummed record starts.

    Every payload is an ExportTraceServiceRequest, whose first byte is field 1's tag (0x0a), so only
    offsets followed by that byte are tried; a random match also needs its CRC32 to agree.
    """
    probe = pos + 1
    while True:
        at = data.find(b"\x0a", probe + _REC.size)
        if at < 0:
            return None
        cand = at - _REC.size
        length = _REC.unpack_from(data, cand)[0]
        if length and _record_at(data, cand) is not None:
            return cand
        probe = cand + 1


def read_segment(path: Path) -> SegmentReplay:
    """Every good record of one segment; torn or corrupt stretches are skipped, not the rest of the file.

    A crash mid-append leaves a torn last record; a bad block on disk can damage one in the middle.
    Records after a damaged stretch were acknowledged too, so replay looks for the next good one.
    """
    data = path.read_bytes()
    segment_id: bytes | None = None
    if data.startswith(WAL_MAGIC_V2) and len(data) >= WAL_HEADER_V2:
        segment_id, pos = data[len(WAL_MAGIC_V2) : WAL_HEADER_V2], WAL_HEADER_V2
    elif data.startswith(WAL_MAGIC):
        pos = len(WAL_MAGIC)
    elif not data or (len(data) < WAL_HEADER_V2 and WAL_MAGIC_V2.startswith(data[: len(WAL_MAGIC_V2)])):
        # A header that never fully reached the disk: the segment was created, nothing acknowledged.
        return SegmentReplay([], 0, False)
    else:
        start = _resync(data, -1)
        if start is None:
            return SegmentReplay([], 0, True, skipped=[(0, len(data))])
        replay = _read_records(data, start)
        replay.skipped.insert(0, (0, start))
        replay.corrupt = True
        return replay
    replay = _read_records(data, pos)
    replay.segment_id = segment_id
    return replay


def _read_records(data: bytes, pos: int) -> SegmentReplay:
    records: list[bytes] = []
    skipped: list[tuple[int, int]] = []
    good = pos
    while pos < len(data):
        end = _record_at(data, pos)
        if end is None:
            nxt = _resync(data, pos)
            skipped.append((pos, len(data) if nxt is None else nxt))
            if nxt is None:
                break
            pos = nxt
            continue
        records.append(data[pos + _REC.size : end])
        pos = good = end
    return SegmentReplay(records, good, bool(skipped), skipped=skipped)


class WalSegment:
    """One WAL file, created new (never reopened): header = magic + a random id, then records.

    The id, copied into the block made from the segment, is what the loader matches: a segment
    number alone could be reused (issue 11).
    """

    def __init__(self, wal_dir: Path, seq: int) -> None:
        self.seq = seq
        self.id = uuid.uuid4().bytes
        self.path = segment_path(wal_dir, seq)
        self.fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o644)
        try:
            _write_all(self.fd, WAL_MAGIC_V2 + self.id)
            os.fsync(self.fd)
            _fsync_dir(wal_dir)
        except OSError:
            os.close(self.fd)
            self.path.unlink(missing_ok=True)
            raise
        self.size = WAL_HEADER_V2
        """Bytes known to be on disk: appends that fail are cut back to here."""
        self.broken = False
        """Set when a failed append could not be cut back: the segment takes no more records."""

    def append(self, data: bytes) -> None:
        """Write and fdatasync ``data``; on failure cut the file back so no torn record stays behind."""
        try:
            _write_all(self.fd, data)
            os.fdatasync(self.fd)
        except OSError:
            try:
                os.ftruncate(self.fd, self.size)
                os.fdatasync(self.fd)
            except OSError:
                self.broken = True
            raise
        self.size += len(data)

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
    segment_id: bytes | None = None
    """The segment's unique id (None for a replayed v1 segment); recorded in the block's meta."""
    traces: dict[bytes, list[bytes]] = field(default_factory=dict)
    metas: dict[bytes, list] = field(default_factory=dict)  # [start, end, root service, root name]
    size: int = 0
    created: float = field(default_factory=time.monotonic)
    flush_failures: int = 0
    failure_logged: float = 0.0


class CorruptBlock(ValueError):
    """A block whose files cannot be trusted as a whole (bad meta, index or checksum)."""


Entry = tuple[int, int, int, int, str | None, str | None, int | None]
"""offset, length, start ns, end ns, root service, root name, crc32 of the blob (None in v1 blocks)."""


class Block:
    """An immutable block on disk: ``data`` (trace blobs back to back), ``index`` and ``meta.json``."""

    def __init__(self, path: Path, meta: dict, entries: dict[bytes, Entry], fd: int, dropped: int = 0):
        self.path = path
        self.id = path.name
        self.meta = meta
        self.entries = entries
        self.fd = fd
        self.dropped = dropped
        """Index entries left out at open because they point past the end of ``data``."""

    @property
    def end_ns(self) -> int:
        return int(self.meta.get("endTime", 0))

    @property
    def wal_seq(self) -> int | None:
        seq = self.meta.get("walSeq")
        return int(seq) if seq is not None else None

    @property
    def wal_segment_id(self) -> bytes | None:
        sid = self.meta.get("walSegmentID")
        return bytes.fromhex(sid) if isinstance(sid, str) else None

    def read(self, offset: int, length: int, crc: int | None = None) -> bytes:
        """The blob at ``offset``; :class:`CorruptBlock` when it is short or fails its checksum."""
        blob = os.pread(self.fd, length, offset)
        if len(blob) != length or (crc is not None and zlib.crc32(blob) != crc):
            raise CorruptBlock(f"{self.path}/data: trace data at byte {offset} is damaged")
        return blob

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    @classmethod
    def open(cls, path: Path) -> Block:
        """Load meta and index, checking what can be checked cheaply; raises CorruptBlock or OSError."""
        try:
            meta = json.loads((path / "meta.json").read_text())
        except ValueError as exc:
            raise CorruptBlock(f"{path}/meta.json: {exc}") from None
        if not isinstance(meta, dict):
            raise CorruptBlock(f"{path}/meta.json: not an object")
        fmt = meta.get("format")
        if fmt not in (BLOCK_FORMAT, BLOCK_FORMAT_V1):
            raise CorruptBlock(f"{path}: unknown block format {fmt!r}")
        raw = (path / "index").read_bytes()
        v2 = fmt == BLOCK_FORMAT
        magic, rec = (INDEX_MAGIC, _IDX) if v2 else (INDEX_MAGIC_V1, _IDX_V1)
        if not raw.startswith(magic):
            raise CorruptBlock(f"{path}/index: bad magic")
        if v2 and zlib.crc32(raw) != meta.get("indexCRC"):
            raise CorruptBlock(f"{path}/index: checksum does not match meta.json")
        entries: dict[bytes, Entry] = {}
        try:
            (count,) = struct.unpack_from("<Q", raw, len(magic))
            pos = len(magic) + 8
            unpack = rec.unpack_from
            for _ in range(count):
                if v2:
                    tid, off, ln, crc, start, end, ls, lnm = unpack(raw, pos)
                else:
                    tid, off, ln, start, end, ls, lnm = unpack(raw, pos)
                    crc = None
                pos += rec.size
                svc = None if ls == _NONE else raw[pos : pos + ls].decode()
                pos += 0 if ls == _NONE else ls
                name = None if lnm == _NONE else raw[pos : pos + lnm].decode()
                pos += 0 if lnm == _NONE else lnm
                entries[tid] = (off, ln, start, end, svc, name, crc)
        except (struct.error, UnicodeDecodeError) as exc:
            raise CorruptBlock(f"{path}/index: truncated or damaged ({exc})") from None
        fd = os.open(path / "data", os.O_RDONLY)
        size = os.fstat(fd).st_size
        whole = {t: e for t, e in entries.items() if e[0] + e[1] <= size}
        return cls(path, meta, whole, fd, dropped=len(entries) - len(whole))


def _enc_str(s: str | None) -> tuple[int, bytes]:
    if s is None:
        return _NONE, b""
    b = s.encode()[: _NONE - 1]
    return len(b), b


def write_block(blocks_dir: Path, head: Head) -> Block:
    """Write a sealed head as a block; atomic: readers see the whole block or none of it.

    A failure (disk full) removes the half-written temp directory, so it does not hold the space.
    """
    bid = str(uuid.uuid4())
    tmp = blocks_dir / f".tmp-{bid}"
    try:
        return _write_block(blocks_dir, tmp, bid, head)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _write_block(blocks_dir: Path, tmp: Path, bid: str, head: Head) -> Block:
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
            index += _IDX.pack(tid, offset, len(blob), zlib.crc32(blob), start, end, ls, ln) + bs + bn
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
        "walSegmentID": head.segment_id.hex() if head.segment_id else None,
        "indexCRC": zlib.crc32(index),
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
        self.locations: list[tuple[Block, int, int, int | None]] = []  # block, offset, length, crc32

    def merge(self, start: int, end: int, svc: str | None, name: str | None) -> None:
        if start and (not self.start_ns or start < self.start_ns):
            self.start_ns = start
        if end > self.end_ns:
            self.end_ns = end
        if name is not None and self.root_name is None:
            self.root_service, self.root_name = svc, name


UNLISTED_VALUE_TYPES = ("array", "kvlist")
"""Tag-index types that make a key appear in tag lists but offer no values (vParquet3 keeps them as JSON)."""


def combine_spans(td: TracesData) -> int:
    """Drop every span whose (span id, kind) was seen earlier in the trace; returns how many were dropped.

    Tempo 2.4.1 pkg/model/trace/combine.go dedupes by a hash of span id and kind (Zipkin shares
    ids between client and server spans), so a retried export shows once.
    """
    seen: set[tuple[bytes, int]] = set()
    dropped = 0
    for rs in td.resource_spans:
        for ss in rs.scope_spans:
            dup = []
            for i, sp in enumerate(ss.spans):
                key = (sp.span_id, sp.kind)
                if key in seen:
                    dup.append(i)
                else:
                    seen.add(key)
            for i in reversed(dup):
                del ss.spans[i]
            dropped += len(dup)
    if dropped:
        for rs in td.resource_spans:
            for i in reversed([i for i, ss in enumerate(rs.scope_spans) if not ss.spans]):
                del rs.scope_spans[i]
        for i in reversed([i for i, rs in enumerate(td.resource_spans) if not rs.scope_spans]):
            del td.resource_spans[i]
    return dropped


@dataclass
class StoredTrace:
    """A trace as read back: its summary, the combined TracesData and, when nothing was dropped, the stored bytes."""

    info: TraceInfo
    data: TracesData
    raw: bytes | None
    size: int
    """Bytes read from storage for this trace (search's inspectedBytes)."""

    def protobuf(self) -> bytes:
        return self.raw if self.raw is not None else self.data.SerializeToString()


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
        self._next_seq = 1
        """The next WAL segment number: above every segment file and block seen, never handed out twice."""
        self.storage_errors: dict[str, str] = {}
        """What cannot be written now (``wal``, ``block``) -> the error; empty when the disk takes writes."""
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
        try:
            self._new_segment()
        except OSError as exc:
            # Disk full at startup: serve what is stored, refuse exports until a segment can be made.
            self._storage_failed("wal", exc)
        self._writer = asyncio.create_task(self._write_loop(), name="tempo-wal-writer")
        if self.sealed:
            self.head_full.set()  # turn the replayed segments into blocks now, not at the next period

    def _new_segment(self) -> None:
        """Start the next WAL segment and an empty head for it; the previous head must be sealed already."""
        seg = WalSegment(self.wal_dir, self._next_seq)
        self._next_seq = seg.seq + 1
        self._segment = seg
        self.head = Head(seg.seq, seg.id)

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
                block = Block.open(path)
            except (OSError, CorruptBlock) as exc:
                self._quarantine(path, exc)
                continue
            if block.dropped:
                self.metrics.corrupt_block_entries.inc(block.dropped)
                log.warning(
                    "block %s: %d of its traces point past the end of its data file (truncated); serving the other %d",
                    path,
                    block.dropped,
                    len(block.entries),
                )
            blocks.append(block)
        blocks.sort(key=lambda b: (b.meta.get("createdAt", 0), b.id))
        for block in blocks:
            self._register_block(block)
        segments = list_segments(self.wal_dir)
        # Numbers of everything on disk, the files about to be deleted included: never reuse one.
        self._next_seq = max([*segments, *(b.wal_seq or 0 for b in blocks), 0]) + 1
        by_id = {b.wal_segment_id: b for b in blocks if b.wal_segment_id}
        legacy: dict[int, list[Block]] = {}
        for b in blocks:
            if b.wal_segment_id is None and b.wal_seq is not None:
                legacy.setdefault(b.wal_seq, []).append(b)
        for seq in segments:
            self._replay_segment(seq, by_id, legacy)
        self.metrics.blocklist_length.labels(TENANT).set(len(self.blocks))

    def _quarantine(self, path: Path, exc: BaseException) -> None:
        """Move an unreadable block aside (kept for inspection, skipped from now on) and count it."""
        self.metrics.corrupt_blocks.inc()
        aside = path.with_name(f".corrupt-{path.name}")
        try:
            os.rename(path, aside)
            where = f"moved to {aside.name}"
        except OSError:
            where = "left in place"
        log.warning("skipping unreadable block %s (%s): %s; its traces are not served", path, where, exc)

    def _replay_segment(self, seq: int, by_id: dict[bytes, Block], legacy: dict[int, list[Block]]) -> None:
        path = segment_path(self.wal_dir, seq)
        try:
            replay = read_segment(path)
        except OSError as exc:
            self.metrics.wal_torn_records.inc()
            log.warning("WAL %s: unreadable, kept but not replayed: %s", path, exc)
            return
        if replay.segment_id is not None and replay.segment_id in by_id:
            # Crashed between the block's rename and the segment's delete: the block is this segment.
            path.unlink(missing_ok=True)
            return
        for start, end in replay.skipped:
            self.metrics.wal_torn_records.inc()
            log.warning("WAL %s: torn or corrupt bytes %d-%d skipped", path, start, end)
        parsed_records = []
        for payload in replay.records:
            try:
                parsed_records.append(parse_export(payload))
            except ValueError as exc:
                self.metrics.wal_torn_records.inc()
                log.warning("WAL %s: undecodable record skipped: %s", path, exc)
        if replay.segment_id is None and self._already_in_legacy_block(seq, parsed_records, legacy):
            path.unlink(missing_ok=True)
            return
        head = Head(seq, replay.segment_id)
        for parsed in parsed_records:
            self._apply(head, parsed)
            self.metrics.wal_replayed_records.inc()
        if head.traces:
            self.sealed.append(head)
        elif not replay.skipped:
            path.unlink(missing_ok=True)

    @staticmethod
    def _already_in_legacy_block(seq: int, records: list[ParsedExport], legacy: dict[int, list[Block]]) -> bool:
        """A v1 segment (no id) is a block's only if that block has its number AND every one of its traces."""
        tids = {t for parsed in records for t in parsed.traces}
        return bool(tids) and any(tids <= b.entries.keys() for b in legacy.get(seq, []))

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

    # -- storage health --------------------------------------------------------------------

    def _storage_failed(self, what: str, exc: OSError) -> None:
        self.metrics.storage_write_failures.labels(what).inc()
        if what not in self.storage_errors:
            log.error(
                "cannot write %s under %s: %s; exports are refused (retryable) until writes succeed again",
                "the WAL" if what == "wal" else "blocks",
                self.wal_dir if what == "wal" else self.blocks_dir,
                exc.strerror or exc,
            )
        self.storage_errors[what] = exc.strerror or str(exc)
        self.metrics.storage_write_failing.set(1)

    def _storage_ok(self, what: str) -> None:
        if self.storage_errors.pop(what, None) is not None:
            log.warning("writing %s works again", "the WAL" if what == "wal" else "blocks")
            if not self.storage_errors:
                self.metrics.storage_write_failing.set(0)

    @property
    def storage_error(self) -> str | None:
        """Why the store cannot write right now (disk full, I/O error), or None."""
        if not self.storage_errors:
            return None
        return "; ".join(f"{k}: {v}" for k, v in sorted(self.storage_errors.items()))

    async def probe_storage(self) -> None:
        """While the WAL cannot be written, check whether it can again: readiness returns without traffic."""
        if "wal" not in self.storage_errors or self._closed:
            return
        async with self._lock:
            with contextlib.suppress(OSError):
                await asyncio.to_thread(self._probe_wal)

    def _probe_wal(self) -> None:
        """Write and fsync a page next to the WAL (and a segment, if there is none); raises OSError if it fails."""
        seg = self._segment
        if seg is None or seg.broken:
            self._ensure_segment()
            return
        probe = self.wal_dir / PROBE_FILE
        try:
            fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            try:
                _write_all(fd, bytes(PROBE_BYTES))
                os.fsync(fd)
            finally:
                os.close(fd)
        finally:
            probe.unlink(missing_ok=True)
        self._storage_ok("wal")

    def _ensure_segment(self) -> None:
        """A segment that takes appends, sealing the head of a broken one; raises OSError when none can be made."""
        seg = self._segment
        if seg is not None and not seg.broken:
            return
        try:
            if seg is not None:
                # Appends failed and the file could not be cut back: keep it (replay skips the torn
                # tail) and move on; its records stay in the head, which is sealed to become a block.
                head = self.head
                if head is not None and head.traces:
                    self.sealed.append(head)
                    self.head_full.set()
                seg.close()
                if head is None or not head.traces:
                    with contextlib.suppress(OSError):
                        seg.path.unlink()  # nothing acknowledged in it, only the torn tail
                self._segment, self.head = None, None
            self._new_segment()
        except OSError as exc:
            self._storage_failed("wal", exc)
            raise
        self._storage_ok("wal")

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
                try:
                    self._ensure_segment()
                    seg, head = self._segment, self.head
                    assert seg is not None and head is not None
                    data = b"".join(encode_record(raw) for raw, _, _ in items)
                    await loop.run_in_executor(self._fsync_pool, seg.append, data)
                except OSError as exc:
                    self._storage_failed("wal", exc)
                    for _, _, fut in items:
                        if not fut.done():
                            fut.set_exception(exc)
                    continue
                self._storage_ok("wal")
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
        for tid, (off, ln, start, end, svc, name, crc) in block.entries.items():
            info = traces.get(tid)
            if info is None:
                info = traces[tid] = TraceInfo(start, end, svc, name)
                self._order.append(tid)
            else:
                info.merge(start, end, svc, name)
            info.locations.append((block, off, ln, crc))

    def head_age(self) -> float:
        return time.monotonic() - self.head.created if self.head else 0.0

    def head_bytes(self) -> int:
        return self.head.size if self.head else 0

    async def rotate(self) -> Head | None:
        """Seal the current head and start a new WAL segment; None when the head is empty.

        When no new segment can be made (disk full), the head stays open and None is returned.
        """
        async with self._lock:
            head, old = self.head, self._segment
            if head is None or old is None or not head.traces or self._closed:
                return None
            try:
                self._new_segment()
            except OSError as exc:
                self._segment, self.head = old, head
                self._storage_failed("wal", exc)
                return None
            old.close()
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
            except (OSError, CorruptBlock) as exc:
                # The head stays sealed in memory and its segment on disk: the next cycle retries.
                self.metrics.failed_flushes.inc()
                if isinstance(exc, OSError):
                    self._storage_failed("block", exc)
                head.flush_failures += 1
                now = time.monotonic()
                if head.flush_failures == 1 or now - head.failure_logged >= FLUSH_FAILURE_LOG_PERIOD:
                    head.failure_logged = now
                    log.error(
                        "writing block for WAL segment %d failed (%d attempts so far, retried every cycle): %s",
                        head.seq,
                        head.flush_failures,
                        exc,
                    )
                continue
            finally:
                self._flushing.discard(head.seq)
            self._storage_ok("block")
            # Register and drop the head with no await in between: readers see one or the other.
            self._register_block(block)
            self.sealed.remove(head)
            segment_path(self.wal_dir, head.seq).unlink(missing_ok=True)
            written += 1
            self.metrics.blocks_flushed.inc()
        if written:
            try:
                await asyncio.to_thread(self._save_tags, self._tags_doc())
            except OSError as exc:
                # Only autocomplete values of restarts to come depend on it; retried after the next block.
                log.warning("cannot save %s: %s", self.blocks_dir / TAGS_FILE, exc.strerror or exc)
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
        try:
            tmp.write_text(json.dumps(doc))
            os.replace(tmp, self.blocks_dir / TAGS_FILE)
        except OSError:
            tmp.unlink(missing_ok=True)
            raise

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
        for loc in list(info.locations):
            block, off, ln, crc = loc
            try:
                parts.append(block.read(off, ln, crc))
            except CorruptBlock as exc:
                # Serve the rest of the trace; stop offering the damaged part (counted once).
                info.locations = [x for x in info.locations if x is not loc]
                self.metrics.corrupt_block_entries.inc()
                log.warning("trace %s: part skipped: %s", tid.hex(), exc)
            except OSError:
                continue  # block removed by retention while we read
        for head in self._heads():
            hp = head.traces.get(tid)
            if hp:
                parts.extend(list(hp))
        return b"".join(parts) or None

    def trace_info(self, tid: bytes) -> TraceInfo | None:
        """Start, end and root of a trace without reading it."""
        return self.traces.get(tid)

    def trace(self, tid: bytes) -> StoredTrace | None:
        """The trace with every span once (a retried export is stored twice), or None."""
        info = self.traces.get(tid)
        blob = self.find(tid)
        if info is None or blob is None:
            return None
        td = TracesData()
        try:
            td.ParseFromString(blob)
        except DecodeError as exc:
            log.warning("trace %s: undecodable stored data: %s", tid.hex(), exc)
            return None
        return StoredTrace(info, td, None if combine_spans(td) else blob, len(blob))

    def tag_names(self, scope: str) -> list[str]:
        """Attribute keys seen in ``span`` or ``resource`` scope (array and kvlist values included)."""
        return sorted(self.tag_index[scope])

    def tag_values(self, scope: str, key: str) -> list[tuple[str, str]]:
        """(TraceQL type, value) pairs seen for a key; array/kvlist values are not offered, as in Tempo."""
        return [tv for tv in self.tag_index[scope].get(key, {}) if tv[0] not in UNLISTED_VALUE_TYPES]

    def span_name_values(self) -> list[str]:
        return list(self.span_names)

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
