"""Benchmark smoke tests: the scripts in bench/ run at a tiny scale (their numbers are not asserted as speeds)."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))
