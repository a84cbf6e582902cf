"""memory_limiter as collector v0.100.0 runs it: one limiter per configured component, GC only when due.

Written from go.opentelemetry.io/collector v0.100.0: processor/memorylimiterprocessor/factory.go
(getMemoryLimiter caches one limiter per component config) and internal/memorylimiter/memorylimiter.go
(CheckMemLimits: a forced GC above the hard limit at every check, on crossing the soft limit only if
the last one is more than minGCIntervalWhenSoftLimited = 10 s old).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import pytest
from collector_support import find_id, project_config, render

from amtp_obs.collector import processors
from amtp_obs.collector import telemetry as tm
from amtp_obs.collector.component import ComponentID
from amtp_obs.collector.processors import MemoryCheck, MemoryLimiter, MemoryLimiterConfig
from amtp_obs.testing.otlp_sink import OtlpSink

MIB = 1024 * 1024


async def test_one_limiter_per_component_across_pipelines(sink: OtlpSink, make_collector: Any) -> None:
    """factory.go getMemoryLimiter: every pipeline listing memory_limiter shares one limiter (one check loop)."""
    doc = render(project_config(), sink.grpc_endpoint)
    ml_id = find_id(doc, "processors", "memory_limiter")
    users = [pid for pid, p in doc["service"]["pipelines"].items() if ml_id in (p.get("processors") or [])]
    assert len(users) >= 2, "the project's config lists memory_limiter in several pipelines"
    c = await make_collector(doc)
    limiters = [p for p in c.processors if isinstance(p, MemoryLimiter) and str(p.id) == ml_id]
    assert len(limiters) == len(users)
    assert len({id(p.memory) for p in limiters}) == 1
    tasks = [t for t in asyncio.all_tasks() if t.get_name() == f"{limiters[0].label}-check"]
    assert len(tasks) == 1


@pytest.fixture
def memory(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[list[int], list[float]]]:
    """Drive the limiter's memory reading and record forced collections (upstream's tests swap ReadMemStatsFn)."""
    usage = [0]
    collections: list[float] = []

    def release() -> None:
        collections.append(time.monotonic())

    monkeypatch.setattr(tm, "rss_bytes", lambda: usage[0])
    monkeypatch.setattr(processors, "release_memory", release)
    yield usage, collections


def _check(limit: int = 100, spike: int = 20) -> MemoryCheck:
    cfg = MemoryLimiterConfig(check_interval=1.0, limit_mib=limit, spike_limit_mib=spike)
    return MemoryCheck(str(ComponentID.parse("memory_limiter")), cfg)


async def test_gc_only_above_hard_limit_or_when_newly_soft_limited(
    memory: tuple[list[int], list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    usage, collections = memory
    ml = _check()  # hard 100 MiB, soft 80 MiB
    usage[0] = 50 * MIB
    await ml.check()
    assert not ml.refusing and collections == []
    usage[0] = 90 * MIB  # crosses the soft limit: one GC, which does not help
    await ml.check()
    assert ml.refusing and len(collections) == 1
    await ml.check()  # still refusing between soft and hard: no GC at every check
    await ml.check()
    assert ml.refusing and len(collections) == 1
    usage[0] = 50 * MIB
    await ml.check()
    assert not ml.refusing
    usage[0] = 90 * MIB  # crosses again within 10 s of the last GC: refuse without collecting
    await ml.check()
    assert ml.refusing and len(collections) == 1
    usage[0] = 120 * MIB  # above the hard limit: a GC at every check
    await ml.check()
    await ml.check()
    assert len(collections) == 3
    usage[0] = 50 * MIB
    await ml.check()
    clock = time.monotonic() + processors.MIN_GC_INTERVAL_WHEN_SOFT_LIMITED + 1
    monkeypatch.setattr(processors.time, "monotonic", lambda: clock)
    usage[0] = 90 * MIB  # newly soft-limited, last GC long ago: collects again
    await ml.check()
    assert len(collections) == 4


async def test_a_forced_gc_does_not_stall_the_event_loop(
    memory: tuple[list[int], list[float]], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The collection runs in a worker thread: the loop keeps serving (ingest) while it runs."""
    usage, collections = memory
    ticks: list[float] = []

    def slow_release() -> None:
        time.sleep(0.5)  # a long malloc_trim (ctypes releases the GIL)
        collections.append(time.monotonic())

    monkeypatch.setattr(processors, "release_memory", slow_release)
    ml = _check()
    usage[0] = 150 * MIB

    async def ticker() -> None:
        while True:
            ticks.append(time.monotonic())
            await asyncio.sleep(0.01)

    t = asyncio.create_task(ticker())
    await asyncio.sleep(0.02)
    before = len(ticks)
    await ml.check()
    t.cancel()
    assert collections and len(ticks) - before >= 20, (len(ticks) - before, collections)
