"""The SDK bench's interleaved rounds: a contestant's rounds pool into one result, statistics retaken."""

from __future__ import annotations

import statistics

import llm_overhead  # bench/llm_overhead.py (bench/ is on sys.path via conftest)
import run  # bench/run.py


def _part(diffs: list[float], bare: float, blocked: list[str]) -> dict[str, object]:
    return {
        "contestant": "ours_auto_stream",
        "pairs": len(diffs),
        "overhead_ns_all": diffs,
        "bare_ns_all": [bare] * len(diffs),
        "instrumented_ns_all": [bare + d for d in diffs],
        "spans_per_call": 1,
        "blocked_connections": blocked,
    }


def test_rounds_pool_every_pair_and_retake_the_statistics() -> None:
    pooled = run.pool_rounds([_part([10.0, 12.0, 11.0], 100.0, []), _part([30.0, 31.0], 200.0, ["10.0.0.1:443"])])
    assert pooled["pairs"] == 5 and pooled["rounds"] == 2
    assert pooled["overhead_ns_all"] == [10.0, 12.0, 11.0, 30.0, 31.0]
    assert pooled["overhead_ns"] == 12.0  # the median of all five pairs, not of the two rounds' medians (20.5)
    lo, hi = pooled["overhead_ci95"]
    assert lo <= pooled["overhead_ns"] <= hi
    assert pooled["bare_ns"] == statistics.median([100.0] * 3 + [200.0] * 2)
    assert pooled["blocked_connections"] == ["10.0.0.1:443"]  # a connection in any round is reported


def test_every_mode_has_a_floor_and_a_mode() -> None:
    for name in llm_overhead.CONTESTANTS:
        path, mode = llm_overhead.split(name)
        assert mode in llm_overhead.MODES and path in llm_overhead.PATHS
        floor = llm_overhead.floor_of(name)
        assert floor in llm_overhead.CONTESTANTS and llm_overhead.split(floor) == ("raw", mode)
    assert llm_overhead.split("ours_auto_stream_usage") == ("ours_auto", "stream_usage")
    assert llm_overhead._create_kwargs("stream_usage")["stream_options"] == {"include_usage": True}
    assert "stream_options" not in llm_overhead._create_kwargs("stream")
