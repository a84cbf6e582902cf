"""The SDK bench's instruction counts: callgrind splits one run into bare and instrumented phases."""

from __future__ import annotations

import sys

import pytest

import llm_overhead  # bench/llm_overhead.py (bench/ is on sys.path via conftest)

pytestmark = pytest.mark.needs("valgrind")


def test_callgrind_phases_give_the_floors_instructions_per_call() -> None:
    r = llm_overhead.count_instructions(sys.executable, "raw", calls=4, timeout=600)
    assert r["contestant"] == "raw" and r["calls"] == 4
    assert len(r["overhead_instructions_all"]) == 2  # two (bare, instrumented) phase pairs
    # A bare call of the client is millions of instructions; the floor's telemetry adds to it.
    assert r["bare_instructions"] > 1e6
    assert r["instrumented_instructions"] > r["bare_instructions"]
    first, second = r["overhead_instructions_all"]
    assert first > 0 and second > 0
    assert abs(first - second) < 0.2 * max(first, second), r  # counts, not timings: the pairs agree
