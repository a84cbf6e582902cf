"""Processors: ``memory_limiter``, ``attributes`` and ``batch`` with collector 0.100.0 semantics."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import gc
import hashlib
import logging
import math
import re
import struct
import time
import weakref
from collections.abc import Callable
from typing import Any, Self

from google.protobuf import message_factory
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from pydantic import Field, model_validator

from amtp_obs.collector import telemetry as tm
from amtp_obs.collector.component import (
    PROCESSOR,
    Component,
    ComponentID,
    Consumer,
    DataRefusedError,
    Factory,
    Host,
    StrictModel,
)
from amtp_obs.collector.config import Duration
from amtp_obs.collector.signals import METRICS, SIGNALS, Signal
from amtp_obs.otlp import to_any_value

log = logging.getLogger(__name__)


class Processor(Component):
    kind = PROCESSOR

    def __init__(self, cid: ComponentID, config: Any) -> None:
        super().__init__(cid, config)
        self.next: Consumer | None = None
        self.host: Host | None = None

    async def start(self, host: Host) -> None:
        self.host = host


# ---------------------------------------------------------------------------------------------
# memory_limiter
# ---------------------------------------------------------------------------------------------

ERR_DATA_REFUSED = "data refused due to high memory usage"


class MemoryLimiterConfig(StrictModel):
    check_interval: Duration = 0.0
    limit_mib: int = 0
    spike_limit_mib: int = 0
    limit_percentage: int = 0
    spike_limit_percentage: int = 0

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.check_interval <= 0:
            raise ValueError("'check_interval' must be greater than zero")
        if self.limit_mib == 0 and self.limit_percentage == 0:
            raise ValueError("'limit_mib' or 'limit_percentage' must be greater than zero")
        if self.limit_mib > 0 and self.spike_limit_mib >= self.limit_mib:
            raise ValueError("'spike_limit_mib' must be smaller than 'limit_mib'")
        if self.limit_percentage > 100 or self.spike_limit_percentage > 100:
            raise ValueError("'limit_percentage' and 'spike_limit_percentage' must be within [0, 100]")
        return self


def total_memory_bytes() -> int:
    """Memory available to this process: the cgroup v2 limit if set, else MemTotal."""
    try:
        with open("/sys/fs/cgroup/memory.max") as f:
            text = f.read().strip()
        if text != "max":
            return int(text)
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def release_memory() -> None:
    """``gc.collect()`` then glibc ``malloc_trim(0)`` (where available) so freed memory leaves RSS."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):
        pass


MIN_GC_INTERVAL_WHEN_SOFT_LIMITED = 10.0
"""internal/memorylimiter/memorylimiter.go (collector v0.100.0) minGCIntervalWhenSoftLimited."""


class MemoryCheck:
    """One configured ``memory_limiter``'s state, shared by every pipeline that lists it.

    As collector v0.100.0 internal/memorylimiter/memorylimiter.go CheckMemLimits: every
    ``check_interval`` (the first check one interval after start) it reads memory; above the hard
    limit it forces a collection; on crossing the soft limit it collects only if the last forced
    collection is more than 10 s old; it refuses while usage is at or above the soft limit. The
    collector measures the Go heap; a Python process has no comparable figure, so this reads the
    resident set size, and a forced collection is ``gc.collect()`` plus ``malloc_trim`` (run in a
    worker thread: the trim, the slow part, releases the GIL, so ingest keeps going meanwhile).
    """

    def __init__(self, label: str, config: MemoryLimiterConfig) -> None:
        self.label = label
        self.config = config
        mib = 1024 * 1024
        if config.limit_mib:
            self.hard = config.limit_mib * mib
            spike = config.spike_limit_mib * mib if config.spike_limit_mib else self.hard // 5
        else:
            total = total_memory_bytes()
            self.hard = total * config.limit_percentage // 100
            spike = total * config.spike_limit_percentage // 100
        self.soft = self.hard - spike
        self.refusing = False
        self.last_rss = 0
        self.forced_gcs = 0
        self._last_gc = -math.inf
        self._users = 0
        self._task: asyncio.Task[None] | None = None

    async def _collect(self) -> int:
        await asyncio.to_thread(release_memory)
        self._last_gc = time.monotonic()
        self.forced_gcs += 1
        return tm.rss_bytes()

    async def check(self) -> None:
        rss = tm.rss_bytes()
        if rss >= self.hard:
            log.warning("%s: memory usage %d MiB is above the hard limit: forcing a GC", self.label, rss >> 20)
            rss = await self._collect()
        was = self.refusing
        refusing = rss >= self.soft
        if was and not refusing:
            log.info("%s: memory usage back within limits: accepting data", self.label)
        if refusing and not was:
            if time.monotonic() - self._last_gc > MIN_GC_INTERVAL_WHEN_SOFT_LIMITED:
                rss = await self._collect()
                refusing = rss >= self.soft
            if refusing:
                log.warning(
                    "%s: memory usage %d MiB is above the soft limit %d MiB: refusing data",
                    self.label,
                    rss >> 20,
                    self.soft >> 20,
                )
        self.last_rss = rss
        self.refusing = refusing

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.config.check_interval)
            await self.check()

    def start(self) -> None:
        """startMonitoring: the first user starts the one ticker."""
        self._users += 1
        if self._users == 1:
            self._task = asyncio.create_task(self._loop(), name=f"{self.label}-check")

    async def shutdown(self) -> None:
        """The last user stops it."""
        self._users = max(0, self._users - 1)
        if self._users == 0 and self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


_SHARED_CHECKS: weakref.WeakKeyDictionary[Host, dict[ComponentID, MemoryCheck]] = weakref.WeakKeyDictionary()
"""Per running collector: one MemoryCheck per configured memory_limiter (factory.go getMemoryLimiter)."""


class MemoryLimiter(Processor):
    """The ``memory_limiter`` in one pipeline: refuses while its shared :class:`MemoryCheck` says so."""

    def __init__(self, cid: ComponentID, config: MemoryLimiterConfig) -> None:
        super().__init__(cid, config)
        self.memory: MemoryCheck | None = None

    async def start(self, host: Host) -> None:
        await super().start(host)
        for name in self.signals:
            noun = SIGNALS[name].item_noun
            for template in (tm.PROCESSOR_ACCEPTED, tm.PROCESSOR_REFUSED):
                host.telemetry.add(tm.metric_name(template, noun), 0, processor=str(self.id))
        checks = _SHARED_CHECKS.setdefault(host, {})
        self.memory = checks.get(self.id)
        if self.memory is None:
            self.memory = checks[self.id] = MemoryCheck(self.label, self.config)
        self.memory.start()

    async def shutdown(self) -> None:
        if self.memory is not None:
            await self.memory.shutdown()

    async def consume(self, signal: Signal, req: Any) -> None:
        assert self.host is not None and self.next is not None and self.memory is not None
        labels = {"processor": str(self.id)}
        if self.memory.refusing:
            self.host.telemetry.add(tm.metric_name(tm.PROCESSOR_REFUSED, signal.item_noun), signal.count(req), **labels)
            raise DataRefusedError(ERR_DATA_REFUSED)
        self.host.telemetry.add(tm.metric_name(tm.PROCESSOR_ACCEPTED, signal.item_noun), signal.count(req), **labels)
        await self.next.consume(signal, req)


# ---------------------------------------------------------------------------------------------
# attributes
# ---------------------------------------------------------------------------------------------

Scalar = str | int | float | bool


class ActionConfig(StrictModel):
    key: str = ""
    value: Scalar | list[Scalar] | None = None
    pattern: str = ""
    from_attribute: str = ""
    from_context: str = ""
    action: str = ""
    converted_type: str = ""

    @model_validator(mode="after")
    def _check(self) -> Self:
        act = self.action.lower()
        if act not in ("insert", "update", "upsert", "delete", "hash", "extract", "convert"):
            raise ValueError(
                f"error creating AttrProc due to unsupported action {self.action!r} at the {self.key!r} key"
            )
        if act in ("insert", "update", "upsert"):
            if not self.key:
                raise ValueError(f"error creating AttrProc. Missing key for action {act}")
            sources = (self.value is not None) + bool(self.from_attribute) + bool(self.from_context)
            if sources != 1:
                raise ValueError(
                    f'error creating AttrProc. Either field "value", "from_attribute" or '
                    f'"from_context" setting must be specified for {self.key} key and '
                    f"action {act}"
                )
        elif act in ("delete", "hash"):
            if not self.key and not self.pattern:
                raise ValueError(
                    f'error creating AttrProc. Either field "key" or "pattern" is required for action {act}'
                )
            if self.pattern:
                try:
                    re.compile(self.pattern)
                except re.error as exc:
                    raise ValueError(f'error creating AttrProc. Field "pattern" has invalid pattern: {exc}') from None
        return self


class AttributesConfig(StrictModel):
    actions: list[ActionConfig] = Field(default_factory=list)
    include: dict[str, Any] | None = None
    exclude: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.actions:
            raise ValueError('error creating "attributes" processor due to missing required field "actions"')
        return self


def _attributes_unsupported(cfg: AttributesConfig) -> list[str]:
    out = [f"actions: action {a.action!r}" for a in cfg.actions if a.action.lower() in ("extract", "convert")]
    out += [f"actions: from_context ({a.key})" for a in cfg.actions if a.from_context]
    if cfg.include is not None:
        out.append("include")
    if cfg.exclude is not None:
        out.append("exclude")
    return out


def hash_value(v: AnyValue) -> str:
    """SHA-1 hex of the value as the attributes processor hashes it (big-endian numbers)."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        data = v.string_value.encode()
    elif kind == "bool_value":
        data = b"\x01" if v.bool_value else b"\x00"
    elif kind == "int_value":
        data = struct.pack(">q", v.int_value)
    elif kind == "double_value":
        data = struct.pack(">d", v.double_value)
    elif kind == "bytes_value":
        data = v.bytes_value
    else:
        data = v.SerializeToString()
    return hashlib.sha1(data).hexdigest()


def _find(attrs: Any, key: str) -> Any:
    for kv in attrs:
        if kv.key == key:
            return kv
    return None


def compile_action(a: ActionConfig) -> Callable[[Any], None]:
    """One action as a closure over a repeated ``KeyValue`` field; prebuilt values are copied in."""
    act, key = a.action.lower(), a.key
    template = to_any_value(a.value) if a.value is not None else None
    new_kv = KeyValue(key=key, value=template) if template is not None else None
    src = a.from_attribute

    if act == "insert":
        if new_kv is not None:

            def insert(attrs: Any) -> None:
                for kv in attrs:
                    if kv.key == key:
                        return
                attrs.append(new_kv)

            return insert

        def insert_from(attrs: Any) -> None:
            if _find(attrs, key) is None:
                s = _find(attrs, src)
                if s is not None:
                    attrs.add(key=key, value=s.value)

        return insert_from

    if act == "update":

        def update(attrs: Any) -> None:
            kv = _find(attrs, key)
            if kv is None:
                return
            if template is not None:
                kv.value.CopyFrom(template)
            else:
                s = _find(attrs, src)
                if s is not None:
                    kv.value.CopyFrom(s.value)

        return update

    if act == "upsert":

        def upsert(attrs: Any) -> None:
            value = template
            if value is None:
                s = _find(attrs, src)
                if s is None:
                    return
                value = s.value
            for kv in attrs:
                if kv.key == key:
                    kv.value.CopyFrom(value)
                    return
            attrs.add(key=key, value=value)

        return upsert

    regex = re.compile(a.pattern) if a.pattern else None

    def matches(k: str) -> bool:
        return k == key or (regex is not None and regex.fullmatch(k) is not None)

    if act == "delete":

        def delete(attrs: Any) -> None:
            for i in range(len(attrs) - 1, -1, -1):
                if matches(attrs[i].key):
                    del attrs[i]

        return delete

    def hash_action(attrs: Any) -> None:
        for kv in attrs:
            if matches(kv.key):
                kv.value.CopyFrom(AnyValue(string_value=hash_value(kv.value)))

    return hash_action


def _constant_plan(actions: list[ActionConfig]) -> list[tuple[str, str, KeyValue, AnyValue]] | None:
    """For the common case (only insert/update/upsert of constant values): one key scan per item."""
    plan = []
    for a in actions:
        act = a.action.lower()
        if act not in ("insert", "update", "upsert") or a.value is None:
            return None
        value = to_any_value(a.value)
        plan.append((a.key, act, KeyValue(key=a.key, value=value), value))
    return plan


def _key_needle(key: str) -> bytes:
    """How a KeyValue with this (non-empty) key starts on the wire: field 1, length, UTF-8."""
    raw = key.encode()
    n, prefix = len(raw), bytearray(b"\x0a")
    while n > 0x7F:
        prefix.append((n & 0x7F) | 0x80)
        n >>= 7
    prefix.append(n)
    return bytes(prefix) + raw


def _item_class(signal: Signal) -> Any:
    """The span / log record message class of a signal."""
    desc = signal.request_cls.DESCRIPTOR.fields_by_name[signal.resource_field].message_type
    desc = desc.fields_by_name[signal.scope_field].message_type
    return message_factory.GetMessageClass(desc.fields_by_name[signal.item_field].message_type)


class AttributesProcessor(Processor):
    """Applies the actions to every span / data point / log record attribute list, in order."""

    def __init__(self, cid: ComponentID, config: AttributesConfig) -> None:
        super().__init__(cid, config)
        self.actions = [compile_action(a) for a in config.actions]
        self.plan = _constant_plan(config.actions)
        self._patches: dict[str, bytes] = {}
        self._needles: tuple[bytes, ...] = ()
        if self.plan is not None and len({key for key, *_ in self.plan}) == len(self.plan):
            self._needles = tuple(_key_needle(key) for key, *_ in self.plan)

    def _patch(self, signal: Signal) -> bytes:
        """The plan's inserted/upserted attributes, serialized as a span / log record fragment."""
        patch = self._patches.get(signal.name)
        if patch is None:
            assert self.plan is not None
            kvs = [kv for _, act, kv, _ in self.plan if act != "update"]
            patch = self._patches[signal.name] = _item_class(signal)(attributes=kvs).SerializeToString()
        return patch

    def _apply_plan(self, signal: Signal, req: Any) -> None:
        plan = self.plan
        assert plan is not None
        if self._needles and signal is not METRICS:
            self._apply_plan_by_scope(signal, req)
            return
        for attrs in signal.attribute_lists(req):
            self._apply_plan_to(attrs)

    def _apply_plan_to(self, attrs: Any) -> None:
        assert self.plan is not None
        keys = [kv.key for kv in attrs]
        for key, act, kv_template, value in self.plan:
            if key in keys:
                if act != "insert":
                    attrs[keys.index(key)].value.CopyFrom(value)
            elif act != "update":
                attrs.append(kv_template)
                keys.append(key)

    def _apply_plan_by_scope(self, signal: Signal, req: Any) -> None:
        """Spans / log records of a scope in which no plan key occurs at all get the patch merged in.

        Without any of the keys every item ends up with the inserted/upserted attributes appended
        in plan order, which is what merging the serialized attributes into the item does (repeated
        fields append), in one C call per item instead of a Python scan of every attribute. A scope
        whose serialization contains a key (anywhere: a false alarm only costs speed) takes the
        per-item path.
        """
        patch, needles = self._patch(signal), self._needles
        scope_field, item_field = signal.scope_field, signal.item_field
        for res in getattr(req, signal.resource_field):
            for scope in getattr(res, scope_field):
                items = getattr(scope, item_field)
                if not items:
                    continue
                data = scope.SerializeToString()
                if any(n in data for n in needles):
                    for item in items:
                        self._apply_plan_to(item.attributes)
                elif patch:
                    for item in items:
                        item.MergeFromString(patch)

    async def consume(self, signal: Signal, req: Any) -> None:
        assert self.next is not None
        actions = self.actions
        if self.plan is not None:
            self._apply_plan(signal, req)
        elif len(actions) == 1:
            fn = actions[0]
            for attrs in signal.attribute_lists(req):
                fn(attrs)
        else:
            for attrs in signal.attribute_lists(req):
                for fn in actions:
                    fn(attrs)
        await self.next.consume(signal, req)


# ---------------------------------------------------------------------------------------------
# batch
# ---------------------------------------------------------------------------------------------


class BatchConfig(StrictModel):
    timeout: Duration = 0.2
    send_batch_size: int = 8192
    send_batch_max_size: int = 0
    metadata_keys: list[str] = Field(default_factory=list)
    metadata_cardinality_limit: int = 1000

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.send_batch_max_size > 0 and self.send_batch_max_size < self.send_batch_size:
            raise ValueError("send_batch_max_size must be greater or equal to send_batch_size")
        if self.timeout < 0:
            raise ValueError("timeout must be greater or equal to 0")
        if self.send_batch_size < 0 or self.send_batch_max_size < 0:
            raise ValueError("batch sizes must not be negative")
        return self


def _batch_unsupported(cfg: BatchConfig) -> list[str]:
    return ["metadata_keys"] if cfg.metadata_keys else []


class _Pending:
    def __init__(self) -> None:
        self.reqs: list[Any] = []
        self.count = 0
        self.first_at = 0.0


class BatchProcessor(Processor):
    """Acknowledges the sender at once and exports from a background task, like the real one.

    Flushes when ``send_batch_size`` items are pending or ``timeout`` after the first item of a
    batch; batches above ``send_batch_max_size`` are split. The sender is made to wait only when
    the backlog exceeds a few batches, bounding memory as the real processor's channel does.
    """

    def __init__(self, cid: ComponentID, config: BatchConfig) -> None:
        super().__init__(cid, config)
        self.pending: dict[str, _Pending] = {}
        self._signal_of: dict[str, Signal] = {}
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closing = False
        size = max(config.send_batch_size, config.send_batch_max_size, 1)
        self.backlog_limit = max(size * 4, 4096)

    async def start(self, host: Host) -> None:
        await super().start(host)
        self._wake = asyncio.Event()
        self._space = asyncio.Event()
        self._task = asyncio.create_task(self._run())

    async def consume(self, signal: Signal, req: Any) -> None:
        n = signal.count(req)
        if n == 0:
            return
        p = self.pending.get(signal.name)
        if p is None:
            p = self.pending[signal.name] = _Pending()
            self._signal_of[signal.name] = signal
        while p.count >= self.backlog_limit and not self._closing:
            self._space.clear()
            self._wake.set()
            await self._space.wait()
        first = not p.reqs
        if first:
            p.first_at = time.monotonic()
        p.reqs.append(req)
        p.count += n
        if first or p.count >= self.config.send_batch_size or self.config.timeout == 0:
            self._wake.set()

    def _due(self, now: float) -> tuple[str | None, float]:
        """Signal to flush now (if any) and the wait until the next timeout."""
        wait = math.inf
        cfg = self.config
        for name, p in self.pending.items():
            if not p.reqs:
                continue
            if p.count >= cfg.send_batch_size or self._closing or cfg.timeout == 0:
                return name, 0.0
            left = p.first_at + cfg.timeout - now
            if left <= 0:
                return name, 0.0
            wait = min(wait, left)
        return None, wait

    async def _run(self) -> None:
        while True:
            name, wait = self._due(time.monotonic())
            if name is None:
                if self._closing:
                    return
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), None if math.isinf(wait) else wait)
                continue
            await self._flush(name)

    async def _flush(self, name: str) -> None:
        assert self.host is not None and self.next is not None
        p, signal, cfg = self.pending[name], self._signal_of[name], self.config
        size_trigger = p.count >= cfg.send_batch_size
        # Take at most send_batch_size items worth of whole requests (the rest waits).
        take: list[Any] = []
        n = 0
        while p.reqs and (n < cfg.send_batch_size or cfg.send_batch_size == 0):
            req = p.reqs.pop(0)
            take.append(req)
            n += signal.count(req)
        p.count -= n
        if p.reqs:
            p.first_at = time.monotonic()
        self._space.set()
        self.host.telemetry.add(
            tm.BATCH_SIZE_TRIGGER if size_trigger else tm.BATCH_TIMEOUT_TRIGGER, 1, processor=str(self.id)
        )
        merged = signal.merge(take)
        for chunk in signal.split(merged, cfg.send_batch_max_size):
            try:
                await self.next.consume(signal, chunk)
            except Exception as exc:
                log.warning("%s: exporting failed: %s", self.label, exc)

    async def shutdown(self) -> None:
        """Flush everything pending, then stop the background task."""
        self._closing = True
        self._wake.set()
        self._space.set()
        if self._task is not None:
            await self._task
            self._task = None


MEMORY_LIMITER_FACTORY = Factory(
    PROCESSOR, "memory_limiter", MemoryLimiterConfig, lambda cid, cfg: MemoryLimiter(cid, cfg)
)
"""The ``memory_limiter`` processor."""
ATTRIBUTES_FACTORY = Factory(
    PROCESSOR,
    "attributes",
    AttributesConfig,
    lambda cid, cfg: AttributesProcessor(cid, cfg),
    unsupported=_attributes_unsupported,
)
"""The ``attributes`` processor."""
BATCH_FACTORY = Factory(
    PROCESSOR,
    "batch",
    BatchConfig,
    lambda cid, cfg: BatchProcessor(cid, cfg),
    unsupported=_batch_unsupported,
)
"""The ``batch`` processor."""
