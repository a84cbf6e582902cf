"""Drive ``promtool test rules`` on the rendered pricing rules with synthetic increment series.

The accounting increments (``llm:<class>:increment``, one sample per 15 s step) are fed directly
as input series, so these tests depend only on the series' documented shape, not on the rules
that produce them. Expected values are computed here by hand, in Decimal.
"""

from __future__ import annotations

import subprocess
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml

from amtp_obs import env
from amtp_obs import project as proj
from amtp_obs.alerting import FOLDER_LABEL, translate
from amtp_obs.tools import find_tool

REPO = Path(__file__).resolve().parents[2]
STEP_S = 15
LABELS = ("cluster", "service_name", "llm_provider", "llm_model")
CLASSES = ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_creation_tokens", "reasoning_tokens")


def promtool() -> str | None:
    return find_tool("promtool")


def selector(name: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def compress(values: Sequence[float | None]) -> str:
    """Values per step -> promtool's expanding notation (runs of a value as ``vxN``, gaps as ``_``)."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        run = j - i
        if values[i] is None:  # ``_xN`` is N gaps, where ``vxN`` is N + 1 samples
            out.append(f"_x{run + 1}" if run else "_")
        else:
            out.append(f"{values[i]}x{run}" if run else str(values[i]))
        i = j + 1
    return " ".join(out)


@dataclass
class Workload:
    """Tokens per (labels, class, step): the ground truth the tests price by hand."""

    steps: int
    calls: dict[tuple[tuple[str, str], ...], dict[str, dict[int, int]]] = field(default_factory=dict)
    present: dict[tuple[tuple[str, str], ...], set[str]] = field(default_factory=dict)

    def add(self, labels: Mapping[str, str], step: int, **tokens: int) -> None:
        key = tuple(sorted(labels.items()))
        per = self.calls.setdefault(key, {})
        self.present.setdefault(key, set()).update(tokens)
        for cls, n in tokens.items():
            assert cls in CLASSES, cls
            per.setdefault(cls, {})
            per[cls][step] = per[cls].get(step, 0) + n

    def input_series(self) -> list[dict[str, str]]:
        out = []
        for key, per in self.calls.items():
            for cls in sorted(self.present[key]):
                vals: list[int | None] = [per.get(cls, {}).get(s, 0) for s in range(self.steps)]
                out.append({"series": selector(f"llm:{cls}:increment", dict(key)), "values": compress(vals)})
        return out


def promtool_test(
    tmp: Path,
    rule_groups: list[dict[str, Any]],
    tests: list[dict[str, Any]],
    evaluation_interval: str = f"{STEP_S}s",
    *,
    in_order: bool = False,
) -> subprocess.CompletedProcess[str]:
    """Write rules + tests, run ``promtool test rules``; returns the finished process, pass or fail.

    ``in_order``: evaluate the groups in the order given at each step (promtool's own order of
    groups is unspecified otherwise), so a group reads what the groups before it recorded at this step.
    """
    tool = promtool()
    assert tool is not None
    (tmp / "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
    order = {"group_eval_order": [g["name"] for g in rule_groups]} if in_order else {}
    (tmp / "test.yml").write_text(
        yaml.safe_dump(
            {"rule_files": ["rules.yml"], "evaluation_interval": evaluation_interval, **order, "tests": tests},
            sort_keys=False,
        )
    )
    return subprocess.run([tool, "test", "rules", "test.yml"], cwd=tmp, capture_output=True, text=True, timeout=600)


def run_promtool(
    tmp: Path, rule_groups: list[dict[str, Any]], tests: list[dict[str, Any]], evaluation_interval: str = f"{STEP_S}s"
) -> str:
    """Write rules + tests, run ``promtool test rules``; returns its output, raises on failure."""
    cp = promtool_test(tmp, rule_groups, tests, evaluation_interval)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return cp.stdout


def close_to(expr: str, expected: Decimal | float, rel: float = 1e-9) -> dict[str, Any]:
    """A promql_expr_test asserting ``expr`` equals ``expected`` to ``rel`` relative (1 = true)."""
    e = repr(float(expected))
    return {"expr": f"abs(({expr}) - {e}) <= bool {rel} * {e}", "exp_samples": [{"value": 1}]}


SPEND_GROUP = "llm-spend"
"""The spend alerts' group in alerting.yaml."""
FAST, HIGH, TICKET, SPENT, UNPRICED = (
    "LLM Budget Burn Fast",
    "LLM Budget Burn High",
    "LLM Budget Burn Ticket",
    "LLM Monthly Budget Spent",
    "LLM Tokens Unpriced",
)
_ALERT_VARS = {
    env.AMTP_SLACK_WEBHOOK_URL: "https://hooks.slack.com/services/T/B/X",
    env.AMTP_ALERT_EMAIL_ADDRESSES: "a@b.test",
}


def spend_alert_group() -> dict[str, Any]:
    """The llm-spend alerts of alerting.yaml, translated as the embedded stack runs them."""
    doc = yaml.safe_load((REPO / proj.ALERTING_FILE).read_text())
    t = translate(doc, _ALERT_VARS)
    groups = [g for g in t.prometheus_rules["groups"] if g["name"] == SPEND_GROUP]
    assert len(groups) == 1
    # promtool compares annotations too; the behaviour under test is when and with which labels.
    return {**groups[0], "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in groups[0]["rules"]]}


def alert_labels(title: str, extra: Mapping[str, str]) -> dict[str, str]:
    """The labels a firing ``title`` alert carries: its rule's, the series' ``extra``, the folder."""
    rule = next(r for r in spend_alert_group()["rules"] if r["alert"] == title)
    return {**rule["labels"], **extra, FOLDER_LABEL: "LLM Observability"}


def fires(title: str, at_s: int, *extras: Mapping[str, str]) -> dict[str, Any]:
    """An alert_rule_test: at ``at_s``, ``title`` fires once per label set in ``extras``, nothing else."""
    alerts = [{"exp_labels": alert_labels(title, extra)} for extra in extras]
    return {"eval_time": f"{at_s}s", "alertname": title, "exp_alerts": alerts}


def silent(title: str, at_s: int) -> dict[str, Any]:
    return {"eval_time": f"{at_s}s", "alertname": title, "exp_alerts": []}
