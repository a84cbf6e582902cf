"""bench/accounting_cost.py at a tiny scale: its totals agree with each other and with the ground truth.

Real promtool and prometheus: the synthetic rollups are first proven equal to what the real rules
compute (``promtool test rules``), then built into blocks and queried. Speeds are not asserted here.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import accounting_cost as ac  # bench/accounting_cost.py (bench/ is on sys.path via conftest)

pytestmark = pytest.mark.needs("promtool", "prometheus")

TINY = ac.Workload(days=0.25, processes_per_day=800, services=3, models=2, seed=5)


@pytest.fixture(scope="module")
def result(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    out = ac.run(TINY, 1, tmp_path_factory.mktemp("acct"), Console(file=io.StringIO()))
    return out | {"q": {q["name"]: q for q in out["queries"]}}


def test_every_total_equals_the_ground_truth(result: dict[str, Any]) -> None:
    truth = sum(p.tokens for p in ac.processes(TINY))
    q = result["q"]
    assert result["data"]["tokens"] == truth
    for name in ("raw total", "rollup total (15 s)", "sparse rollup total (15 s, > 0)", "hourly rollup total"):
        assert q[name]["value"] == truth, name
    by_raw = q["raw total by service"]["by"]
    assert len(by_raw) == TINY.services
    assert q["rollup total by service (15 s)"]["by"] == by_raw
    assert q["sparse rollup by service"]["by"] == by_raw
    assert q["hourly rollup by service"]["by"] == by_raw


def test_rollups_read_fewer_samples_and_series(result: dict[str, Any]) -> None:
    q, data = result["q"], result["data"]
    assert ac.overlaps(TINY) > 0  # overlapping processes of one group: the rollup merges their steps
    raw = q["raw total"]["samples_read"]
    assert raw == TINY.processes * TINY.series_samples == data["raw_samples"]
    assert q["rollup total (15 s)"]["samples_read"] == data["increment_samples"] < raw
    # The sparse rollup keeps one sample per step that accounts tokens: at most one per process.
    assert q["sparse rollup total (15 s, > 0)"]["samples_read"] == data["sparse_samples"] <= TINY.processes
    assert data["sparse_samples"] < data["increment_samples"]
    assert q["hourly rollup total"]["samples_read"] == data["hourly_samples"] < data["increment_samples"]
    assert q["raw series that ever existed"]["value"] == TINY.processes
    assert q["rollup series"]["value"] == data["increment_series"] == TINY.groups


def test_live_series_track_running_processes(result: dict[str, Any]) -> None:
    live = result["q"]["live raw series at the last process start"]["value"]
    expected = result["live_expected"]
    assert live == expected["these blocks (no stale markers: 5 min lookback)"]
    assert 0 < expected["production (stale marker after the last scrape)"] <= live < TINY.processes / 10


def test_rule_check_fails_on_a_wrong_rollup(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The promtool proof can fail: a rollup off by one step (tokens at the first scrape) is caught."""
    right = ac.increments

    def early(w: ac.Workload, procs: Any) -> dict[int, dict[int, int]]:
        shifted = right(w, procs)
        p = procs[-1]
        steps = shifted[p.group]
        steps[p.first_step + 1] -= p.tokens
        steps[p.first_step] = steps.get(p.first_step, 0) + p.tokens
        return shifted

    monkeypatch.setattr(ac, "increments", early)
    with pytest.raises(SystemExit, match="differs from the rule"):
        ac.check_rules(ac.RULE_CHECK_WORKLOAD, tmp_path)
