"""``promtool test rules`` on the rendered pricing rules: exact USD, price switch by date, unpriced tokens."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest
import yaml
from promtool_support import STEP_S, Workload, close_to, run_promtool

from amtp_obs.pricing import budgets, catalog, rules

pytestmark = pytest.mark.needs("promtool")

DAY = 86400
CATALOG = """
currency: USD
models:
  - provider: openai
    model: m1
    aliases: [m1-1970-01-01]
    source: https://example.invalid/m1
    prices:
      - effective_from: 1970-01-01
        input: 1.0
        cache_read: 0.5
        output: 2.0
      - effective_from: 1970-01-02
        input: 2.0
        cache_read: 1.0
        cache_write: 3.0
        output: 4.0
  - provider: anthropic
    model: m2
    source: https://example.invalid/m2
    prices:
      - effective_from: 1970-01-01
        input: 3.0
        cache_read: 0.3
        cache_write: 3.75
        output: 15.0
"""
BUDGETS = "currency: USD\nmonthly_usd:\n  svc-a: 720\n"

A_M1 = {"cluster": "c", "service_name": "svc-a", "llm_provider": "openai", "llm_model": "m1"}
A_ALIAS = {**A_M1, "llm_model": "m1-1970-01-01"}
A_DATED = {**A_M1, "llm_model": "m1-19700101"}  # a date suffix that is not an alias: unpriced
A_UNKNOWN = {**A_M1, "llm_model": "mystery"}
B_M2 = {"cluster": "c", "service_name": "svc-b", "llm_provider": "anthropic", "llm_model": "m2"}
B_M1_WRONG_PROVIDER = {**B_M2, "llm_model": "m1"}  # m1 is an openai entry: anthropic/m1 is unpriced

# USD per token, by hand: (input, cache_read, cache_write, output).
PRICE = {
    ("m1", 0): (Decimal(1), Decimal("0.5"), Decimal(1), Decimal(2)),
    ("m1", 1): (Decimal(2), Decimal(1), Decimal(3), Decimal(4)),
    ("m2", 0): (Decimal(3), Decimal("0.3"), Decimal("3.75"), Decimal(15)),
}


def _groups() -> list[dict]:
    cat = catalog.parse(CATALOG).catalog
    return rules.rule_groups(cat, budgets.parse(BUDGETS))


def _usd(
    model: str, period: int, prompt: int, completion: int, cache_read: int = 0, cache_creation: int = 0
) -> Decimal:
    i, cr, cw, o = PRICE[(model, period)]
    uncached = prompt - cache_read - cache_creation
    return (uncached * i + cache_read * cr + cache_creation * cw + completion * o) / Decimal(1_000_000)


def test_rendered_rules_price_a_workload_exactly(tmp_path: Path) -> None:
    w = Workload(steps=80)
    # openai m1: cached input and reasoning (part of completion); no cache-creation series at all.
    w.add(A_M1, 4, prompt_tokens=1_234_567, cache_read_tokens=234_567, completion_tokens=8_901, reasoning_tokens=4_000)
    w.add(A_M1, 9, prompt_tokens=777, cache_read_tokens=0, completion_tokens=333, reasoning_tokens=0)
    w.add(A_ALIAS, 10, prompt_tokens=100, completion_tokens=10)
    # anthropic m2: prompt counts all input (uncached + cache read + cache creation).
    w.add(B_M2, 5, prompt_tokens=50_000, cache_read_tokens=30_000, cache_creation_tokens=15_000, completion_tokens=700)
    w.add(B_M2, 6, prompt_tokens=3, cache_read_tokens=0, cache_creation_tokens=0, completion_tokens=1)
    # unpriced: unknown model, a date-suffixed name that is no alias, a model under another provider.
    w.add(A_UNKNOWN, 7, prompt_tokens=11, completion_tokens=5)
    w.add(A_DATED, 8, prompt_tokens=13, completion_tokens=7)
    w.add(B_M1_WRONG_PROVIDER, 8, prompt_tokens=17, completion_tokens=19)

    a_m1 = _usd("m1", 0, 1_234_567, 8_901, cache_read=234_567) + _usd("m1", 0, 777, 333)
    alias = _usd("m1", 0, 100, 10)
    b = _usd("m2", 0, 50_000, 700, cache_read=30_000, cache_creation=15_000) + _usd("m2", 0, 3, 1)
    at = f"{(w.steps - 1) * STEP_S}s"
    total = "sum(sum_over_time(llm:cost_usd:increment[1h]))"
    tests = [
        close_to(total, a_m1 + alias + b),
        close_to('sum(sum_over_time(llm:cost_usd:increment{service_name="svc-a"}[1h]))', a_m1 + alias),
        close_to('sum(sum_over_time(llm:cost_usd:increment{llm_model="m1-1970-01-01"}[1h]))', alias),
        close_to('sum(sum_over_time(llm:cost_usd:increment{service_name="svc-b"}[1h]))', b),
        # billable classes: the uncached input of m1 excludes its cache reads.
        close_to(
            'sum(sum_over_time(llm:billable_tokens:increment{llm_provider="openai",llm_model="m1",token_class="input"}[1h]))',
            1_234_567 - 234_567 + 777,
        ),
        close_to(
            'sum(sum_over_time(llm:billable_tokens:increment{llm_model="m2",token_class="cache_write"}[1h]))', 15_000
        ),
        # reasoning is billed as output, once: output tokens are the completion tokens.
        close_to(
            'sum(sum_over_time(llm:billable_tokens:increment{llm_provider="openai",llm_model="m1",token_class="output"}[1h]))',
            8_901 + 333,
        ),
    ]
    unpriced = {
        "expr": "sum by (llm_provider, llm_model) (sum_over_time(llm:unpriced_tokens:increment[1h]))",
        "exp_samples": [
            {"labels": '{llm_provider="openai",llm_model="mystery"}', "value": 16},
            {"labels": '{llm_provider="openai",llm_model="m1-19700101"}', "value": 20},
            {"labels": '{llm_provider="anthropic",llm_model="m1"}', "value": 36},
        ],
    }
    # An unpriced model never appears with a cost, not even $0.
    no_cost = {"expr": 'llm:cost_usd:increment{llm_model=~"mystery|m1-19700101"}', "exp_samples": []}
    no_cost_b = {"expr": 'llm:cost_usd:increment{llm_provider="anthropic",llm_model="m1"}', "exp_samples": []}
    exprs = [{**t, "eval_time": at} for t in [*tests, unpriced]] + [
        {**t, "eval_time": f"{s * STEP_S}s"} for s in range(6, 12) for t in (no_cost, no_cost_b)
    ]
    run_promtool(
        tmp_path, _groups(), [{"interval": f"{STEP_S}s", "input_series": w.input_series(), "promql_expr_test": exprs}]
    )


def test_price_switches_on_its_effective_date(tmp_path: Path) -> None:
    """Tokens accounted at 23:59:45 cost the old price; at 00:00:00 the next day, the new one."""
    midnight = DAY // STEP_S
    w = Workload(steps=midnight + 12)
    w.add(A_M1, midnight - 1, prompt_tokens=1_000, cache_read_tokens=200, completion_tokens=50)
    w.add(A_M1, midnight, prompt_tokens=3_000, cache_read_tokens=1_000, cache_creation_tokens=500, completion_tokens=70)
    w.add(A_M1, midnight + 1, prompt_tokens=10, cache_read_tokens=0, cache_creation_tokens=0, completion_tokens=1)
    old = _usd("m1", 0, 1_000, 50, cache_read=200)
    new = _usd("m1", 1, 3_000, 70, cache_read=1_000, cache_creation=500) + _usd("m1", 1, 10, 1)
    at = f"{(w.steps - 1) * STEP_S}s"
    before = f"{DAY}s"  # the 23:59:45 step is priced one step later, at 00:00:00, at its own price
    exprs = [
        {**close_to("sum(sum_over_time(llm:cost_usd:increment[1h]))", old + new), "eval_time": at},
        {**close_to("sum(sum_over_time(llm:cost_usd:increment[5m]))", old), "eval_time": before},
        {
            "expr": 'llm:price_usd_per_token{llm_model="m1",token_class="cache_write"}',
            "eval_time": f"{DAY - STEP_S}s",
            "exp_samples": [
                {
                    "labels": 'llm:price_usd_per_token{llm_model="m1",llm_provider="openai",token_class="cache_write"}',
                    "value": 1e-06,
                }
            ],
        },
        {
            "expr": 'llm:price_usd_per_token{llm_model="m1",token_class="cache_write"}',
            "eval_time": f"{DAY}s",
            "exp_samples": [
                {
                    "labels": 'llm:price_usd_per_token{llm_model="m1",llm_provider="openai",token_class="cache_write"}',
                    "value": 3e-06,
                }
            ],
        },
    ]
    run_promtool(
        tmp_path, _groups(), [{"interval": f"{STEP_S}s", "input_series": w.input_series(), "promql_expr_test": exprs}]
    )


def test_month_to_date_and_budget_used(tmp_path: Path) -> None:
    w = Workload(steps=60)
    w.add(A_M1, 3, prompt_tokens=100_000_000, completion_tokens=0)  # 100 USD
    w.add(A_M1, 20, prompt_tokens=260_000_000, completion_tokens=130_000_000)  # 260 + 260 USD
    at = f"{(w.steps - 1) * STEP_S}s"
    exprs = [
        {**close_to('sum(llm:cost_usd:month_to_date{service_name="svc-a"})', 620), "eval_time": at},
        {**close_to('sum(llm:budget_used:ratio{service_name="svc-a"})', Decimal(620) / 720), "eval_time": at},
        {**close_to('sum(llm:cost_usd:month_to_date{service_name="svc-a"})', 100), "eval_time": f"{15 * STEP_S}s"},
    ]
    run_promtool(
        tmp_path, _groups(), [{"interval": f"{STEP_S}s", "input_series": w.input_series(), "promql_expr_test": exprs}]
    )


def test_committed_rules_before_any_price_date_report_tokens_unpriced(tmp_path: Path) -> None:
    """The real rendered rules at 1970 (promtool's clock): no entry is in force yet, so the demo
    and verify models' tokens are unpriced, none is priced at $0."""
    from amtp_obs import contract

    text = (Path(__file__).resolve().parents[2] / rules.RULES_FILE).read_text()
    groups = yaml.safe_load(text)["groups"]
    models = [(contract.PROVIDER_OPENAI, m) for m in ("gpt-4o", "gpt-4o-mini", contract.VERIFY_MODEL)]
    models += [(contract.PROVIDER_ANTHROPIC, m) for m in ("claude-sonnet-4-5", "claude-haiku-4-5")]
    w = Workload(steps=40)
    total = 0
    for k, (prov, model) in enumerate(dict.fromkeys(models)):
        labels = {"cluster": "c", "service_name": "svc", "llm_provider": prov, "llm_model": model}
        w.add(labels, 3 + k, prompt_tokens=10_000 + k, cache_read_tokens=2_000, completion_tokens=500 + k)
        total += 10_500 + 2 * k
    at = f"{(w.steps - 1) * STEP_S}s"
    exprs = [
        {**close_to("sum(sum_over_time(llm:unpriced_tokens:increment[1h]))", total), "eval_time": at},
        {"expr": "llm:cost_usd:increment", "eval_time": at, "exp_samples": []},
    ]
    run_promtool(
        tmp_path, groups, [{"interval": f"{STEP_S}s", "input_series": w.input_series(), "promql_expr_test": exprs}]
    )
