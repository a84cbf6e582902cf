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

# Hypothesis keeps caches in ./.hypothesis by default; keep them with pytest's (gitignored) cache.
try:
    from hypothesis import configuration as _hypothesis_configuration

    _hypothesis_configuration.set_hypothesis_home_dir(
        Path(__file__).resolve().parents[2] / ".pytest_cache" / "hypothesis"
    )
except ImportError:  # pragma: no cover - only the fuzz module needs hypothesis
    pass


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
