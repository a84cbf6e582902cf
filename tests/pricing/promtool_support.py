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

from amtp_obs.tools import find_tool

STEP_S = 15
LABELS = ("cluster", "service_name", "llm_provider", "llm_model")
CLASSES = ("prompt_tokens", "completion_tokens", "cache_read_tokens", "cache_creation_tokens", "reasoning_tokens")


def promtool() -> str | None:
    return find_tool("promtool")


def selector(name: str, labels: Mapping[str, str]) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def compress(values: Sequence[int | None]) -> str:
    """Values per step -> promtool's expanding notation (runs of a value as ``vxN``, gaps as ``_``)."""
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[i]:
            j += 1
        v = "_" if values[i] is None else str(values[i])
        run = j - i
        out.append(f"{v}x{run}" if run else v)
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


def run_promtool(tmp: Path, rule_groups: list[dict[str, Any]], tests: list[dict[str, Any]]) -> str:
    """Write rules + tests, run ``promtool test rules``; returns its output, raises on failure."""
    tool = promtool()
    assert tool is not None
    (tmp / "rules.yml").write_text(yaml.safe_dump({"groups": rule_groups}, sort_keys=False))
    (tmp / "test.yml").write_text(
        yaml.safe_dump(
            {"rule_files": ["rules.yml"], "evaluation_interval": f"{STEP_S}s", "tests": tests}, sort_keys=False
        )
    )
    cp = subprocess.run([tool, "test", "rules", "test.yml"], cwd=tmp, capture_output=True, text=True, timeout=600)
    assert cp.returncode == 0, cp.stdout + cp.stderr
    return cp.stdout


def close_to(expr: str, expected: Decimal | float, rel: float = 1e-9) -> dict[str, Any]:
    """A promql_expr_test asserting ``expr`` equals ``expected`` to ``rel`` relative (1 = true)."""
    e = repr(float(expected))
    return {"expr": f"abs(({expr}) - {e}) <= bool {rel} * {e}", "exp_samples": [{"value": 1}]}
