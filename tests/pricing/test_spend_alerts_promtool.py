"""The llm-spend alerts of alerting.yaml (translated as the embedded stack runs them) on the rendered
pricing rules: each burn-rate alert fires at its burn rate and not below it, "budget spent" fires at
the budget, and unpriced tokens raise a warning naming the model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from promtool_support import (
    FAST,
    HIGH,
    SPENT,
    STEP_S,
    TICKET,
    UNPRICED,
    Workload,
    fires,
    run_promtool,
    selector,
    silent,
    spend_alert_group,
)

from amtp_obs.pricing import budgets, catalog, rules

pytestmark = pytest.mark.needs("promtool")

CATALOG = """
currency: USD
models:
  - provider: openai
    model: m1
    source: https://example.invalid/m1
    prices:
      - {effective_from: 1970-01-01, input: 1.0, output: 1.0}
"""
BUDGET_USD = 720.0  # 1 USD per hour at burn rate 1 (30 days = 720 h)
BUDGETS = f"currency: USD\nmonthly_usd:\n  svc-a: {BUDGET_USD}\n"
SVC = {"cluster": "zt-amtp", "service_name": "svc-a", "llm_provider": "openai", "llm_model": "m1"}


def _pricing_groups(*names: str) -> list[dict[str, Any]]:
    groups = rules.rule_groups(catalog.parse(CATALOG).catalog, budgets.parse(BUDGETS))
    return [g for g in groups if not names or g["name"] in names]


def _tokens_per_step(burn: float) -> int:
    """Input tokens per 15 s step of m1 ($1 per 1M) that spend at ``burn`` x the budgeted rate."""
    usd_per_step = BUDGET_USD / (30 * 24 * 3600) * STEP_S * burn
    return round(usd_per_step * 1_000_000)


def _steady(burn: float, minutes: int) -> Workload:
    w = Workload(steps=minutes * 60 // STEP_S + 1)
    per = _tokens_per_step(burn)
    for s in range(w.steps):
        w.add(SVC, s, prompt_tokens=per, completion_tokens=0)
    return w


SERVICE = {"cluster": "zt-amtp", "service_name": "svc-a"}


def test_fifteen_x_pages_within_the_hour_and_fourteen_x_does_not(tmp_path: Path) -> None:
    """15x: the 1h window crosses 14.4 after 57.6 minutes of burn, so it pages within the hour."""
    w15, w14 = _steady(15, 70), _steady(14, 70)
    groups = [*_pricing_groups(), spend_alert_group()]
    tests = [
        {
            "interval": f"{STEP_S}s",
            "input_series": w15.input_series(),
            "alert_rule_test": [
                silent(FAST, 55 * 60),
                fires(FAST, 60 * 60, SERVICE),
                fires(FAST, 70 * 60, SERVICE),
                silent(HIGH, 70 * 60),  # 6x needs 6 hours of it
                silent(SPENT, 70 * 60),
            ],
        },
        {
            "interval": f"{STEP_S}s",
            "input_series": w14.input_series(),
            "alert_rule_test": [silent(FAST, m * 60) for m in (55, 60, 65, 70)],
        },
    ]
    run_promtool(tmp_path, groups, tests)


def _cost_minutes(per_minute_burn: list[float]) -> list[dict[str, str]]:
    """``llm:cost_usd:increment`` fed per minute: the long windows are tested on the budget groups
    alone at a 1-minute evaluation step (the burn-rate rules are sums over the window, so the step
    does not change them)."""
    usd = [BUDGET_USD / (30 * 24 * 60) * b for b in per_minute_burn]
    return [{"series": selector("llm:cost_usd:increment", SVC), "values": " ".join(repr(u) for u in usd)}]


def _run_minutes(tmp: Path, tests: list[dict[str, Any]]) -> None:
    groups = [*_pricing_groups(rules.GROUP_BUDGET_FAST, rules.GROUP_BUDGET_SLOW), spend_alert_group()]
    # Minute steps: the fast group's per-step rules are not under test here.
    run_promtool(tmp, groups, tests, evaluation_interval="1m")


def test_six_x_pages_over_six_hours_and_five_and_a_half_x_does_not(tmp_path: Path) -> None:
    hours = 7
    tests = [
        {
            "interval": "1m",
            "input_series": _cost_minutes([6.5] * (hours * 60 + 1)),
            # 6h window > 6 after 6h x 6 / 6.5 = 5.54 h of burn.
            "alert_rule_test": [silent(HIGH, 5 * 3600), fires(HIGH, 6 * 3600, SERVICE), silent(FAST, 6 * 3600)],
        },
        {
            "interval": "1m",
            "input_series": _cost_minutes([5.5] * (hours * 60 + 1)),
            "alert_rule_test": [silent(HIGH, h * 3600) for h in (5, 6, 7)],
        },
    ]
    _run_minutes(tmp_path, tests)


def test_ticket_at_one_x_over_three_days_and_one_x_never_pages(tmp_path: Path) -> None:
    minutes = 3 * 24 * 60 + 120
    tests = [
        {
            "interval": "1m",
            "input_series": _cost_minutes([1.1] * (minutes + 1)),
            # 3d window > 1 after 3d / 1.1 = 2.73 days of burn.
            "alert_rule_test": [
                silent(TICKET, int(2.5 * 86400)),
                fires(TICKET, 3 * 86400, SERVICE),
                silent(FAST, 3 * 86400),
                silent(HIGH, 3 * 86400),
            ],
        },
        {
            "interval": "1m",
            "input_series": _cost_minutes([0.9] * (minutes + 1)),
            "alert_rule_test": [silent(TICKET, 3 * 86400 + 3600)],
        },
    ]
    _run_minutes(tmp_path, tests)


def test_budget_spent_fires_at_the_budget_and_unpriced_tokens_name_the_model(tmp_path: Path) -> None:
    spent, under = Workload(steps=20), Workload(steps=20)
    spent.add(SVC, 3, prompt_tokens=int(BUDGET_USD * 1_000_000), completion_tokens=0)
    under.add(SVC, 3, prompt_tokens=int(BUDGET_USD * 0.99 * 1_000_000), completion_tokens=0)
    mystery = {**SVC, "llm_model": "m1-2099-01-01"}
    under.add(mystery, 4, prompt_tokens=10, completion_tokens=5)
    groups = [*_pricing_groups(), spend_alert_group()]
    end = 19 * STEP_S
    tests = [
        {
            "interval": f"{STEP_S}s",
            "input_series": spent.input_series(),
            "alert_rule_test": [fires(SPENT, end, SERVICE), silent(UNPRICED, end)],
        },
        {
            "interval": f"{STEP_S}s",
            "input_series": under.input_series(),
            "alert_rule_test": [
                silent(SPENT, end),
                fires(UNPRICED, end, {"cluster": "zt-amtp", "llm_provider": "openai", "llm_model": "m1-2099-01-01"}),
            ],
        },
    ]
    run_promtool(tmp_path, groups, tests)
