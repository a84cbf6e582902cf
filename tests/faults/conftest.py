"""Fault tests: the embedded collector and trace store as real processes on free loopback ports.

The process harness lives in bench/harness.py (shared with the benchmarks); each test is bounded in
time and stops exactly the processes it started.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import harness  # noqa: E402


@pytest.fixture
def procs() -> Iterator[list[harness.Proc]]:
    """Processes a test starts; whatever is still running at the end is stopped (SIGTERM, then KILL)."""
    started: list[harness.Proc] = []
    yield started
    for p in reversed(started):
        p.stop(timeout=10)


def start(procs: list[harness.Proc], proc: harness.Proc, timeout: float = 30.0) -> harness.Proc:
    procs.append(proc)
    return proc.start(timeout)
