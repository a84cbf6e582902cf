"""The accounting rules, run by the real ``promtool test rules`` on synthetic raw series.

Every expected number below is derived by hand from the input series (cumulative counters sampled
every 15 s, as the collector's exporter is scraped), not read back from the rules.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from amtp_obs import contract
from amtp_obs.accounting import rules
from amtp_obs.project import Project

PROMPT = contract.PROMPT_TOKENS


def _series(service: str, instance: str, values: str, metric: str = PROMPT.prometheus_name) -> dict[str, str]:
    labels = (
        f'cluster="zt-amtp",job="otel-collector",service_name="{service}",service_instance_id="{instance}",'
        f'llm_provider="openai",llm_model="gpt-4o",gen_ai_system="openai"'
    )
    return {"series": f"{metric}{{{labels}}}", "values": values}


def _by_service(total: dict[str, float], eval_time: str, range_: str) -> dict[str, Any]:
    return {
        "expr": rules.total_expr(PROMPT, range_=range_, by=("service_name",)),
        "eval_time": eval_time,
        "exp_samples": [{"labels": f'{{service_name="{s}"}}', "value": v} for s, v in sorted(total.items())],
    }


def _promtool_test(tmp_path: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool is required (apt-get install prometheus; make test installs it)"
    rules_file = tmp_path / "accounting.rules.yml"
    rules_file.write_text(rules.render())
    test_file = tmp_path / "accounting_test.yml"
    test_file.write_text(
        yaml.safe_dump({"rule_files": [rules_file.name], "evaluation_interval": rules.STEP, "tests": tests})
    )
    return subprocess.run(
        [promtool, "test", "rules", test_file.name], cwd=tmp_path, capture_output=True, text=True, check=False
    )


# Raw series over 60 min (240 steps of 15 s). "stale" is the marker Prometheus writes when a series
# leaves the collector's /metrics (metric_expiration) or the target goes down.
WORKLOAD = [
    # A process born inside the range that exports once (50 tokens) and exits: the collector keeps
    # the series 5 min (20 scrapes), then it goes stale. increase() would count 0 here.
    _series("born-inside", "p1", "_x10 50x20 stale"),
    # Two more short-lived processes of the same service, overlapping the first.
    _series("born-inside", "p2", "_x15 70x20 stale"),
    _series("born-inside", "p3", "_x100 30x20 stale"),
    # A long-lived process that ends inside the range: 0, 5, ..., 150 then stale.
    _series("ends-inside", "q1", "0+5x30 stale"),
    # A counter reset inside one series (a restart that reuses its instance id): 10+10+10, then 5+10+10.
    _series("reset", "r1", "10 20 30 5 15 25 25x20 stale"),
    # Two replicas of one service: each its own series, both counted in full.
    _series("replicas", "a", "0+1x100 stale"),
    _series("replicas", "b", "0+2x100 stale"),
    # A collector restart: the series vanishes (stale) for a minute and comes back with the same
    # cumulative value plus the work done meanwhile; nothing counted twice, nothing lost.
    _series("collector-restart", "c1", "0+10x20 stale _x3 230+10x10 stale"),
]
# Hand-derived truth: the last cumulative value of each process, resets adding the value before them.
TRUTH = {
    "born-inside": 50 + 70 + 30,
    "ends-inside": 150,
    "reset": 30 + 25,
    "replicas": 100 + 200,
    "collector-restart": 330,
}


def test_totals_exact_right_away_and_after_every_series_is_stale(tmp_path: Path) -> None:
    tests = [
        {
            "interval": rules.STEP,
            "input_series": WORKLOAD,
            "promql_expr_test": [
                # 40 min in, every process has exported and most series are still live.
                _by_service(TRUTH, "40m", "40m"),
                # 60 min in, every raw series has been stale for at least 15 minutes.
                _by_service(TRUTH, "60m", "1h"),
                # The grand total (the "Total Tokens" stat's form).
                {
                    "expr": rules.total_expr(PROMPT, range_="1h"),
                    "eval_time": "60m",
                    "exp_samples": [{"labels": "{}", "value": sum(TRUTH.values())}],
                },
            ],
        }
    ]
    res = _promtool_test(tmp_path, tests)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_range_counts_only_its_own_work_within_one_step_at_each_edge(tmp_path: Path) -> None:
    # 10 tokens every 15 s for 30 min. The range (20m, 30m] counts the samples in (19m30s, 29m45s]:
    # the rules read DELAY (15 s) late, so each edge moves by one step's work, never more.
    steady = [_series("steady", "s1", "0+10x120")]
    tests = [
        {
            "interval": rules.STEP,
            "input_series": steady,
            "promql_expr_test": [
                _by_service({"steady": 1190 - 780}, "30m", "10m"),
                # Born inside (10m, 20m]: the series' first sample at t=0 is in no later range.
                _by_service({"steady": 790 - 380}, "20m", "10m"),
            ],
        }
    ]
    res = _promtool_test(tmp_path, tests)
    assert res.returncode == 0, res.stdout + res.stderr


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The harness itself can fail: an off-by-one total is reported by promtool."""
    tests = [
        {
            "interval": rules.STEP,
            "input_series": WORKLOAD,
            "promql_expr_test": [_by_service({**TRUTH, "replicas": TRUTH["replicas"] + 1}, "60m", "1h")],
        }
    ]
    res = _promtool_test(tmp_path, tests)
    assert res.returncode != 0
    assert "replicas" in res.stdout + res.stderr


@pytest.mark.parametrize("counter", contract.ALL_TOKEN_COUNTERS, ids=lambda c: c.instrument)
def test_every_token_class_is_rolled_up(tmp_path: Path, counter: contract.CounterSpec) -> None:
    series = [
        _series("svc", "p1", "_x2 7x20 stale", metric=counter.prometheus_name),
        _series("svc", "p2", "0+3x10 stale", metric=counter.prometheus_name),
    ]
    tests = [
        {
            "interval": rules.STEP,
            "input_series": series,
            "promql_expr_test": [
                {
                    "expr": rules.total_expr(counter, range_="30m"),
                    "eval_time": "30m",
                    "exp_samples": [{"labels": "{}", "value": 7 + 30}],
                }
            ],
        }
    ]
    res = _promtool_test(tmp_path, tests)
    assert res.returncode == 0, res.stdout + res.stderr


def test_committed_rules_file_is_current() -> None:
    project = Project.discover()
    committed = project.path(rules.RULES_FILE).read_text()
    assert committed == rules.render(), "run `amtp-obs accounting render`"
