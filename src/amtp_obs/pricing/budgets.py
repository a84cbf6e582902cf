"""Monthly USD budgets per service (``infra/observability/pricing/budgets.yaml``).

Why a file and not ``AMTP_BUDGET_USD_<SERVICE>`` variables: Prometheus rules cannot read the
environment, and service names (``amtp-demo-planner``) are not valid variable names. The file is
rendered into ``llm:budget_usd:monthly`` series next to the prices, so production and the embedded
stack alert on the same numbers, and a budget change is reviewed like a price change.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import yaml

from amtp_obs.pricing.catalog import CatalogError, Problem

BUDGETS_FILE: Final = "infra/observability/pricing/budgets.yaml"


@dataclass(frozen=True)
class Budgets:
    """``service.name`` -> monthly budget in USD (a service without one is never budget-alerted)."""

    services: dict[str, float]


def parse(text: str | bytes) -> Budgets:
    """Parse and validate; raises :class:`CatalogError` listing every fault."""
    try:
        data: Any = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise CatalogError([Problem(("budgets",), f"invalid YAML: {getattr(exc, 'problem', exc)}")]) from None
    problems: list[Problem] = []
    if not isinstance(data, dict):
        raise CatalogError([Problem(("budgets",), "expected a mapping with `currency` and `monthly_usd`")])
    for key in data:
        if key not in ("currency", "monthly_usd"):
            problems.append(Problem((str(key),), "unknown key (allowed: currency, monthly_usd)"))
    if data.get("currency") != "USD":
        problems.append(Problem(("currency",), "must be USD"))
    raw = data.get("monthly_usd") or {}
    if not isinstance(raw, dict):
        problems.append(Problem(("monthly_usd",), "must map service.name to a monthly budget in USD"))
        raw = {}
    services: dict[str, float] = {}
    for svc, value in raw.items():
        if not isinstance(svc, str) or not svc:
            problems.append(Problem(("monthly_usd", str(svc)), "service name must be a non-empty string"))
        elif isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value <= 0:
            problems.append(Problem(("monthly_usd", svc), f"must be a number > 0 (USD per month), got {value!r}"))
        else:
            services[svc] = float(value)
    if problems:
        raise CatalogError(problems)
    return Budgets(services)


def load(path: Path) -> Budgets:
    return parse(path.read_bytes())
