"""Render the price catalog and the budgets into Prometheus rules (``pricing.rules.yml``).

Why query-time pricing: the raw token series (and the accounting increments built on them) stay
the record; prices are series computed from the catalog by date (``time()``), so a price fix is a
catalog edit plus a re-render and applies to every step evaluated after it, and history can be
re-priced by re-running the rules (docs/cost.md) without re-ingesting anything.

The accounting rules (docs/accounting.md) record ``llm:<class>:increment``: tokens accounted per
15 s step. Here, every :data:`STEP`, for the window of the *previous* step ``(t-30s, t-15s]``:

* ``llm:billable_tokens:increment{token_class}`` splits the tokens into the four billing classes:
  uncached input (``prompt - cache_read - cache_creation``), ``cache_read``, ``cache_write``
  (cache creation), ``output`` (completion, reasoning included);
* ``llm:cost_usd:increment`` multiplies each class by the price in force at ``t-15s``
  (``llm:price_usd_per_token offset 15s``; a cache class without its own price costs input);
* ``llm:unpriced_tokens:increment`` keeps the tokens of models with no price in force: never $0.

Reading the previous step's window (``[14999ms] offset 15s``: Prometheus 2.x ranges are closed,
so this is exactly the half-open step) makes consecutive windows partition time whatever the
accounting group's evaluation phase, and every sample in it was committed a step ago. So the USD of
a range is ``sum(sum_over_time(llm:cost_usd:increment[range]))``: the exact tokens times the prices,
one step (15 s) behind the token series.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import yaml

from amtp_obs import contract
from amtp_obs.collector.prometheus_naming import normalize_label
from amtp_obs.durations import parse_duration
from amtp_obs.pricing import budgets as budgets_mod
from amtp_obs.pricing import catalog as catalog_mod
from amtp_obs.pricing.budgets import Budgets
from amtp_obs.pricing.catalog import PRICE_CLASSES, Catalog

RULES_FILE: Final = "infra/observability/rules/pricing.rules.yml"
"""Rendered by ``amtp-obs pricing render``; ``amtp-obs check`` fails when it is stale."""
RULES_NAME: Final = Path(RULES_FILE).name
STEP: Final = "15s"
"""Evaluation interval of the pricing group: the accounting step (one increment per step)."""
SLOW_STEP: Final = "1m"
"""Interval of the long burn-rate windows (6h, 3d): they move slowly and read many samples."""

GROUP_PRICING: Final = "llm-pricing"
GROUP_BUDGET_FAST: Final = "llm-budget-burn-fast"
GROUP_BUDGET_SLOW: Final = "llm-budget-burn-slow"

CLUSTER: Final = "cluster"
SERVICE: Final = normalize_label("service.name")
PROVIDER: Final = normalize_label(contract.LLM_PROVIDER)
MODEL: Final = normalize_label(contract.LLM_MODEL)
BY: Final = (CLUSTER, SERVICE, PROVIDER, MODEL)
"""Labels of the accounting increments, kept by every cost series."""
CLASS: Final = "token_class"

PRICE: Final = "llm:price_usd_per_token"
BILLABLE: Final = "llm:billable_tokens:increment"
COST: Final = "llm:cost_usd:increment"
UNPRICED: Final = "llm:unpriced_tokens:increment"
MONTH_TO_DATE: Final = "llm:cost_usd:month_to_date"
MONTH_INDEX: Final = "llm:calendar:month_index"
BUDGET: Final = "llm:budget_usd:monthly"
BUDGET_USED: Final = "llm:budget_used:ratio"
BURN_WINDOWS: Final = ("5m", "30m", "1h", "6h", "3d")
"""Burn-rate windows of the SRE workbook's scheme (page 1h/5m and 6h/30m, ticket 3d/6h)."""
SLOW_WINDOWS: Final = ("6h", "3d")
BUDGET_PERIOD: Final = "30d"
"""A monthly budget spread over 30 days (720 h): burn rate 1 spends it in exactly a month."""


def burn_rate_record(window: str) -> str:
    return f"llm:budget_burn_rate:{window}"


def increment(instrument: str) -> str:
    """The accounting series of a counter instrument (``llm:<instrument>:increment``, docs/accounting.md)."""
    return f"{contract.METRICS_NAMESPACE}:{instrument}:increment"


def _ms(duration: str) -> int:
    return round(parse_duration(duration) * 1000)


def _by(labels: Sequence[str] = BY) -> str:
    return ", ".join(labels)


def previous_step(series: str, step: str = STEP) -> str:
    """The samples of ``series`` in the previous step's window ``(t-2*step, t-step]``, summed per BY."""
    return f"sum by ({_by()}) (\n  sum_over_time({series}[{_ms(step) - 1}ms] offset {step})\n)"


def this_step(series: str, by: Sequence[str] = BY, step: str = STEP) -> str:
    """The samples of ``series`` in ``(t-step, t]``: what this group recorded at this evaluation."""
    return f"sum by ({_by(by)}) (sum_over_time({series}[{_ms(step) - 1}ms]))"


def _num(value: float) -> str:
    return repr(float(value))


def price_expr(entry_prices: Sequence[tuple[float, float]]) -> str:
    """``(start, usd_per_token)`` pairs ascending -> the value in force at ``time()``, nothing before."""
    parts = []
    for k, (start, value) in enumerate(entry_prices):
        cond = f"vector(time()) >= {start:.0f}"
        if k + 1 < len(entry_prices):
            cond = f"({cond} < {entry_prices[k + 1][0]:.0f})"
        parts.append(f"vector({_num(value)}) and on () {cond}")
    return "\n  or ".join(parts) if len(parts) > 1 else parts[0]


def price_rules(catalog: Catalog) -> list[dict[str, Any]]:
    """One rule per (provider, model or alias, class): aliases price by exact name only."""
    rules = []
    for e in catalog.models:
        for cls in PRICE_CLASSES:
            pairs = [(p.starts, p.per_token(cls)) for p in e.prices]
            expr = price_expr(pairs)
            for name in e.names:
                rules.append({"record": PRICE, "expr": expr, "labels": {PROVIDER: e.provider, MODEL: name, CLASS: cls}})
    return rules


def keeping(labels: Sequence[str], expr: str) -> str:
    """``sum by (labels) (expr)``: a no-op on unique label sets that states the labels a series keeps
    (the series model of ``amtp-obs check`` reads them from the outer ``by``)."""
    body = "\n".join(f"  {line}" for line in expr.splitlines())
    return f"sum by ({_by(labels)}) (\n{body}\n)"


def _or_zero(series: str, base: str) -> str:
    """``series`` where it exists, else 0 for every label set of ``base`` (a class a vendor never reported)."""
    return f"(\n    {series}\n  or\n    {base} * 0\n)"


def billable_rules(step: str = STEP) -> list[dict[str, Any]]:
    prompt = previous_step(increment(contract.PROMPT_TOKENS.instrument), step)
    completion = previous_step(increment(contract.COMPLETION_TOKENS.instrument), step)
    cache_read = previous_step(increment(contract.CACHE_READ_TOKENS.instrument), step)
    cache_creation = previous_step(increment(contract.CACHE_CREATION_TOKENS.instrument), step)
    uncached = keeping(BY, f"{prompt}\n- {_or_zero(cache_read, prompt)}\n- {_or_zero(cache_creation, prompt)}")
    exprs = {"input": uncached, "cache_read": cache_read, "cache_write": cache_creation, "output": completion}
    return [{"record": BILLABLE, "expr": exprs[c], "labels": {CLASS: c}} for c in PRICE_CLASSES]


def cost_rules(step: str = STEP) -> list[dict[str, Any]]:
    billable = this_step(BILLABLE, (*BY, CLASS), step)
    on = f"on ({PROVIDER}, {MODEL}, {CLASS})"
    price = f"{PRICE} offset {step}"
    return [
        {"record": COST, "expr": f"sum by ({_by()}) (\n  {billable}\n  * {on} group_left ()\n  {price}\n)"},
        {"record": UNPRICED, "expr": f"sum by ({_by()}) (\n  {billable}\n  unless {on}\n  {price}\n)"},
    ]


def month_to_date_rules(step: str = STEP) -> list[dict[str, Any]]:
    """A running month-to-date sum per service; the month index resets it at 00:00 UTC on the 1st.

    Stateful on purpose: a calendar month is no fixed PromQL range. The previous total is read
    with ``last_over_time(...[1h])`` so a restart shorter than an hour keeps it (docs/cost.md).
    """
    svc = (CLUSTER, SERVICE)
    inc = this_step(COST, svc, step)
    current_month = "(year() * 12 + month() - 1)"
    last = f"last_over_time({MONTH_TO_DATE}[1h])"
    same_month = f"(last_over_time({MONTH_INDEX}[1h]) == on () {current_month})"
    prev = f"(\n    {last}\n    and on () {same_month}\n  or\n    {last} * 0\n)"
    expr = keeping(svc, f"(\n  {inc}\n  + on ({_by(svc)})\n  {prev}\n)\nor {inc}\nor {prev}")
    return [
        {"record": MONTH_TO_DATE, "expr": expr},
        {"record": MONTH_INDEX, "expr": current_month},
    ]


def budget_rules(budgets: Budgets) -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = [
        {"record": BUDGET, "expr": f"vector({_num(b)})", "labels": {SERVICE: svc}}
        for svc, b in sorted(budgets.services.items())
    ]
    used = keeping((CLUSTER, SERVICE), f"{MONTH_TO_DATE}\n/ on ({SERVICE}) group_left ()\n{BUDGET}")
    rules.append({"record": BUDGET_USED, "expr": used})
    return rules


def burn_rate_expr(window: str) -> str:
    """Spend over ``window`` / the budget's share of it (budget x window / 30d): 1 = on track."""
    share = parse_duration(window) / parse_duration(BUDGET_PERIOD)
    spend = f"sum by ({CLUSTER}, {SERVICE}) (sum_over_time({COST}[{window}]))"
    return keeping((CLUSTER, SERVICE), f"{spend}\n/ on ({SERVICE}) group_left ()\n({BUDGET} * {_num(share)})")


def rule_groups(catalog: Catalog, budgets: Budgets, *, step: str = STEP) -> list[dict[str, Any]]:
    """The three rule groups; ``step`` is the pricing step (the embedded stack uses its scrape cadence)."""
    pricing = price_rules(catalog) + billable_rules(step) + cost_rules(step) + month_to_date_rules(step)
    fast = budget_rules(budgets) + [
        {"record": burn_rate_record(w), "expr": burn_rate_expr(w)} for w in BURN_WINDOWS if w not in SLOW_WINDOWS
    ]
    slow = [{"record": burn_rate_record(w), "expr": burn_rate_expr(w)} for w in SLOW_WINDOWS]
    return [
        {"name": GROUP_PRICING, "interval": step, "rules": pricing},
        {"name": GROUP_BUDGET_FAST, "interval": step, "rules": fast},
        {"name": GROUP_BUDGET_SLOW, "interval": SLOW_STEP, "rules": slow},
    ]


class _Dumper(yaml.SafeDumper):
    """Indents list items under their key, as yamllint's default config expects."""

    def increase_indent(self, flow: bool = False, indentless: bool = False) -> None:
        return super().increase_indent(flow, False)


def _str(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style="|" if "\n" in data else None)


_Dumper.add_representer(str, _str)

HEADER: Final = (
    "# Generated by `amtp-obs pricing render` from infra/observability/pricing/catalog.yaml and\n"
    "# budgets.yaml: do not edit (amtp-obs check fails when this file is stale). docs/cost.md.\n"
    "# USD of a range: sum(sum_over_time(llm:cost_usd:increment[range])).\n"
)


def render(catalog: Catalog, budgets: Budgets, *, version: str = "", step: str = STEP) -> str:
    """The rules file's text (deterministic, so a stale committed copy is detectable)."""
    stamp = f"# catalog {version}\n" if version else ""
    body = yaml.dump(
        {"groups": rule_groups(catalog, budgets, step=step)}, Dumper=_Dumper, sort_keys=False, width=10_000
    )
    return HEADER + stamp + body


def labels_of(rule: Mapping[str, Any]) -> dict[str, str]:
    return dict(rule.get("labels") or {})


def render_checkout(root: Path, *, step: str = STEP) -> str:
    """The rules text for the catalog and budgets of the checkout at ``root`` (raises CatalogError)."""
    loaded = catalog_mod.load(root / catalog_mod.CATALOG_FILE)
    budgets = budgets_mod.load(root / budgets_mod.BUDGETS_FILE)
    return render(loaded.catalog, budgets, version=loaded.version, step=step)
