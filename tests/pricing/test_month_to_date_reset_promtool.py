"""Month to date across a calendar month boundary, with real ``promtool test rules``.

promtool's clock starts at 1970-01-01 00:00 UTC and January has 31 days, so February starts at
31 d = 2678400 s. The rules under test are taken from the committed rendered file (not retyped):
``llm:cost_usd:month_to_date`` and ``llm:calendar:month_index`` of the pricing group, the budgets and
``llm:budget_used:ratio`` of the fast budget group, plus the "LLM Monthly Budget Spent" alert as the
embedded stack runs it. Their one input, ``llm:cost_usd:increment`` (USD per step, recorded by the
pricing rules ahead of them), is fed directly, so 31 days stay cheap to evaluate.

What the rules are meant to do at the boundary (docs/cost.md, the alert's description "this
calendar month (UTC), counted from 00:00 UTC on the 1st"): the running total starts again from the
first increment of February, and a service that had spent its budget in January stops alerting.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import yaml
from promtool_support import REPO, SPENT, close_to, compress, fires, promtool_test, selector, silent, spend_alert_group

from amtp_obs.durations import parse_duration
from amtp_obs.pricing import rules

pytestmark = pytest.mark.needs("promtool")

DAY = 86400
FEB_1 = 31 * DAY
"""1970-02-01 00:00:00 UTC in promtool's clock."""

# The rules are evaluated every 5 minutes, not at production's 15 s: 31 days at 15 s are 178,560
# evaluations, at 5 minutes 8,928 (about 7 s of promtool). The loaded rules tolerate the longer step
# (``_check_windows`` asserts it on the rendered expressions): the previous total and month index are
# read back with ``last_over_time(...[1h])``, which holds the previous evaluation for any step
# under an hour; and the this-step window ``sum_over_time(llm:cost_usd:increment[14999ms])`` is
# shorter than the step, so the increments are fed with one sample per evaluation at the
# evaluation's own timestamp: each lies in exactly one window, added once, as at 15 s. 5 minutes is
# also the lookback of an instant selector, so the ratio and the alert would still find the month to
# date at worst one step late if the groups ran in another order (they run in file order here).
EVAL_S = 300
STEPS = (FEB_1 + 2 * 3600) // EVAL_S + 1
END = (STEPS - 1) * EVAL_S
CLUSTER = "zt-amtp"  # the cluster label the translated alerts carry
KEPT = {
    rules.GROUP_PRICING: (rules.MONTH_TO_DATE, rules.MONTH_INDEX),
    rules.GROUP_BUDGET_FAST: (rules.BUDGET, rules.BUDGET_USED),
}
FED = rules.COST


def _rendered_groups() -> list[dict[str, Any]]:
    """The kept records of the committed pricing rules, in their groups and order."""
    doc = yaml.safe_load((REPO / rules.RULES_FILE).read_text())
    out = []
    for g in doc["groups"]:
        if g["name"] in KEPT:
            out.append({**g, "rules": [r for r in g["rules"] if r.get("record") in KEPT[g["name"]]]})
    found = {r["record"] for g in out for r in g["rules"]}
    assert found == {rec for recs in KEPT.values() for rec in recs}, found
    return out


def _windows(expr: str) -> list[tuple[str, str]]:
    """(series, range) of each range selector in ``expr``."""
    return re.findall(r"(llm:[a-z0-9_:]+)\[([0-9a-z]+)\]", expr)


def _check_windows(groups: list[dict[str, Any]]) -> None:
    """The kept rules read nothing but each other and the fed increments, with windows the step keeps."""
    records = {r["record"] for g in groups for r in g["rules"] if "record" in r}
    this_step = _windows(rules.this_step(FED))[0][1]
    for g in groups:
        for r in g["rules"]:
            expr = r["expr"]
            read = set(re.findall(r"llm:[a-z0-9_]+:[a-z0-9_]+", expr))
            assert read <= records | {FED}, f"{r.get('record') or r.get('alert')} also reads {read - records - {FED}}"
            for series, window in _windows(expr):
                if parse_duration(window) < EVAL_S:
                    # only the fed increments, one sample per evaluation at its timestamp
                    assert (series, window) == (FED, this_step), (series, window)
                else:
                    assert parse_duration(window) > EVAL_S, (series, window)


def _budgets(groups: list[dict[str, Any]]) -> dict[str, Decimal]:
    """USD per month by service, as the rendered budget records state them (``vector(50.0)``)."""
    out = {}
    for r in (r for g in groups for r in g["rules"] if r.get("record") == rules.BUDGET):
        m = re.fullmatch(r"vector\((.+)\)", r["expr"])
        assert m is not None, r
        out[r["labels"][rules.SERVICE]] = Decimal(m[1])
    return out


class Spend:
    """USD per evaluation step per service: the ground truth, fed as ``llm:cost_usd:increment``."""

    def __init__(self) -> None:
        self.usd: dict[str, dict[int, Decimal]] = {}
        self.steady: set[str] = set()

    def add(self, service: str, at_s: int, usd: Decimal) -> None:
        assert at_s % EVAL_S == 0
        per = self.usd.setdefault(service, {})
        per[at_s // EVAL_S] = per.get(at_s // EVAL_S, Decimal(0)) + usd

    def between(self, service: str, start_s: int, end_s: int) -> Decimal:
        """USD of the increments at ``start_s <= t <= end_s``."""
        return sum((v for s, v in self.usd[service].items() if start_s <= s * EVAL_S <= end_s), Decimal(0))

    def input_series(self) -> list[dict[str, str]]:
        """A steady service has an increment every step (0 when idle); another only when it spends."""
        out = []
        for svc, per in self.usd.items():
            idle = 0.0 if svc in self.steady else None
            vals = [float(per[s]) if s in per else idle for s in range(STEPS)]
            labels = {"cluster": CLUSTER, rules.SERVICE: svc, rules.PROVIDER: "openai", rules.MODEL: "m1"}
            out.append({"series": selector(FED, labels), "values": compress(vals)})
        return out


def _mtd(svc: str) -> str:
    return f'sum({rules.MONTH_TO_DATE}{{{rules.SERVICE}="{svc}"}})'


def _ratio(svc: str) -> str:
    return f'sum({rules.BUDGET_USED}{{{rules.SERVICE}="{svc}"}})'


def _at(test: dict[str, Any], at_s: int) -> dict[str, Any]:
    return {**test, "eval_time": f"{at_s}s"}


def month_index(at_s: int) -> int:
    """Months since year 0 of the UTC date at ``at_s``: what the rules record."""
    d = datetime.fromtimestamp(at_s, UTC)
    return d.year * 12 + d.month - 1


def _month_index(at_s: int, index: int) -> dict[str, Any]:
    return {
        "expr": rules.MONTH_INDEX,
        "eval_time": f"{at_s}s",
        "exp_samples": [{"labels": rules.MONTH_INDEX, "value": index}],
    }


def _spent_alert() -> dict[str, Any]:
    """The llm-spend group with only "LLM Monthly Budget Spent" (the others read burn rates)."""
    g = spend_alert_group()
    return {**g, "rules": [r for r in g["rules"] if r["alert"] == SPENT]}


def _scenario() -> tuple[list[dict[str, Any]], Spend, str, str, dict[str, Decimal]]:
    groups = [*_rendered_groups(), _spent_alert()]
    _check_windows(groups)
    budget = _budgets(groups)
    assert len(budget) >= 2, "the committed budgets.yaml budgets fewer than two services"
    a, b = sorted(budget)[:2]
    spend = Spend()
    spend.steady.add(a)
    # a: over budget from day 20, more at the last January step, then February's first step and +1h.
    spend.add(a, DAY, budget[a] * Decimal("0.25"))
    spend.add(a, 20 * DAY, budget[a] * Decimal("0.875"))
    spend.add(a, FEB_1 - EVAL_S, budget[a] * Decimal("0.125"))
    spend.add(a, FEB_1, budget[a] * Decimal("0.1"))
    spend.add(a, FEB_1 + 3600, budget[a] * Decimal("0.2"))
    # b: one over-budget spend in January, no increment series at all otherwise.
    spend.add(b, 10 * DAY, budget[b] * Decimal("1.5"))
    return groups, spend, a, b, budget


def test_month_to_date_resets_at_the_month_boundary(tmp_path: Path) -> None:
    groups, spend, a, b, budget = _scenario()
    jan_end = FEB_1 - EVAL_S  # the last evaluation in January
    jan_a, jan_b = spend.between(a, 0, jan_end), spend.between(b, 0, jan_end)
    assert jan_a == budget[a] * Decimal("1.25") and jan_b == budget[b] * Decimal("1.5")
    feb_first = spend.between(a, FEB_1, FEB_1)
    feb_a = spend.between(a, FEB_1, END)
    january = month_index(0)
    assert month_index(FEB_1 - 1) == january and month_index(FEB_1) == january + 1
    exprs = [
        # January accumulates, and keeps its total between spends.
        _at(close_to(_mtd(a), spend.between(a, 0, DAY)), DAY),
        _at(close_to(_mtd(a), spend.between(a, 0, DAY)), 20 * DAY - EVAL_S),
        _at(close_to(_mtd(a), spend.between(a, 0, 20 * DAY)), 20 * DAY),
        {"expr": _mtd(b), "eval_time": f"{10 * DAY - EVAL_S}s", "exp_samples": []},  # nothing spent yet
        _at(close_to(_mtd(b), jan_b), 10 * DAY),
        _at(close_to(_mtd(a), jan_a), jan_end),
        _at(close_to(_mtd(b), jan_b), jan_end),
        _at(close_to(_ratio(a), jan_a / budget[a]), jan_end),
        _at(close_to(_ratio(b), Decimal("1.5")), jan_end),
        _month_index(0, january),
        _month_index(jan_end, january),
        # 1970-02-01 00:00: the month index moves on; the total is February's first increment alone.
        _month_index(FEB_1, january + 1),
        _at(close_to(_mtd(a), feb_first), FEB_1),
        _at(close_to(_ratio(a), feb_first / budget[a]), FEB_1),
        # b spends nothing in February: 0 (not absent, not January's total), and its increments are absent.
        _at(close_to(_mtd(b), 0), FEB_1),
        _at(close_to(_ratio(b), 0), FEB_1),
        # February accumulates from there.
        _at(close_to(_mtd(a), feb_first), FEB_1 + 3600 - EVAL_S),
        _at(close_to(_mtd(a), feb_a), END),
        _at(close_to(_mtd(b), 0), END),
        _month_index(END, january + 1),
    ]
    alerts = [
        silent(SPENT, 10 * DAY - EVAL_S),
        fires(SPENT, 10 * DAY, {"cluster": CLUSTER, rules.SERVICE: b}),
        fires(SPENT, 20 * DAY, {"cluster": CLUSTER, rules.SERVICE: a}, {"cluster": CLUSTER, rules.SERVICE: b}),
        fires(SPENT, jan_end, {"cluster": CLUSTER, rules.SERVICE: a}, {"cluster": CLUSTER, rules.SERVICE: b}),
        # the budget is per calendar month: both stop at the reset and stay quiet
        silent(SPENT, FEB_1),
        silent(SPENT, END),
    ]
    tests = [
        {
            "interval": f"{EVAL_S}s",
            "input_series": spend.input_series(),
            "promql_expr_test": exprs,
            "alert_rule_test": alerts,
        }
    ]
    cp = promtool_test(tmp_path, groups, tests, evaluation_interval=f"{EVAL_S}s", in_order=True)
    assert cp.returncode == 0, cp.stdout + cp.stderr


def test_a_total_carried_over_the_boundary_fails_the_check(tmp_path: Path) -> None:
    """The negative case: the same rules and input, expecting what a month to date without the reset
    would show (January's total plus February's first increment, the alert still firing, the index
    unchanged). promtool must fail each of these expectations."""
    groups, spend, a, _b, _budget = _scenario()
    carried = spend.between(a, 0, FEB_1)
    wrong_mtd = _at(close_to(_mtd(a), carried), FEB_1)
    wrong_index = _month_index(FEB_1, month_index(0))
    wrong_alert = fires(SPENT, FEB_1, {"cluster": CLUSTER, rules.SERVICE: a})
    tests = [
        {
            "interval": f"{EVAL_S}s",
            "input_series": spend.input_series(),
            "promql_expr_test": [wrong_mtd, wrong_index],
            "alert_rule_test": [wrong_alert],
        }
    ]
    cp = promtool_test(tmp_path, groups, tests, evaluation_interval=f"{EVAL_S}s", in_order=True)
    out = cp.stdout + cp.stderr
    assert cp.returncode != 0, out
    # promtool lists each failed expectation (Go-quoted expr, time as a Prometheus duration), and only those.
    failed_at = f"time: {FEB_1 // DAY}d"
    for wrong in (wrong_mtd["expr"], wrong_index["expr"]):
        assert f"expr: {json.dumps(wrong)}, {failed_at}" in out, out
    assert f"alertname: {SPENT}, {failed_at}" in out, out
    assert out.count("got:") == 3, out
