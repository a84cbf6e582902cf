"""Token totals per service or model over a time range, read from Prometheus' accounting rules.

The same expressions as the dashboard's panels (:func:`amtp_obs.accounting.rules.total_expr`), so
the terminal and the dashboard cannot disagree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import httpx

from amtp_obs import contract
from amtp_obs.accounting import rules
from amtp_obs.durations import parse_duration
from amtp_obs.pricing import rules as pricing

GroupBy = Literal["service", "model"]
GROUP_LABELS: Mapping[str, str] = {"service": rules.SERVICE_LABEL, "model": rules.MODEL_LABEL}
"""``--by`` value -> the increment label it groups on."""
QUERY_TIMEOUT_S = 30.0


class UsageError(Exception):
    """A bad argument or an unreachable/refusing Prometheus: the message says which."""


@dataclass
class UsageRow:
    group: str
    tokens: dict[str, float] = field(default_factory=dict)
    """Counter instrument name (prompt_tokens, ...) -> exact tokens over the range."""
    usd: float | None = None
    """USD of the priced tokens over the range; None when none of them had a price (not $0)."""
    unpriced_tokens: float = 0.0
    """Tokens of models with no price in force (docs/cost.md)."""


@dataclass
class UsageReport:
    since: str
    by: GroupBy
    at: float
    """Evaluation time (Unix seconds): the range is (at - since, at]."""
    classes: list[str]
    rows: list[UsageRow]

    def totals(self) -> dict[str, float]:
        return {c: sum(r.tokens.get(c, 0.0) for r in self.rows) for c in self.classes}

    def total_usd(self) -> float | None:
        priced = [r.usd for r in self.rows if r.usd is not None]
        return sum(priced) if priced else None

    def as_json(self) -> dict[str, Any]:
        return {
            "since": self.since,
            "by": self.by,
            "at": self.at,
            "rows": [
                {
                    self.by: r.group,
                    **{c: r.tokens.get(c, 0.0) for c in self.classes},
                    "usd": r.usd,
                    "unpriced_tokens": r.unpriced_tokens,
                }
                for r in self.rows
            ],
            "total": {
                **self.totals(),
                "usd": self.total_usd(),
                "unpriced_tokens": sum(r.unpriced_tokens for r in self.rows),
            },
        }


def check_since(since: str) -> float:
    try:
        seconds = parse_duration(since)
    except ValueError:
        raise UsageError(f"--since {since!r} is not a duration (e.g. 30m, 24h, 7d)") from None
    if seconds <= 0:
        raise UsageError(f"--since {since!r} must be positive")
    return seconds


def _prom_range(since: str) -> str:
    """A range PromQL accepts for any duration spelling (1.5h -> 5400s)."""
    return f"{math.ceil(check_since(since))}s"


def query_usage(
    prometheus_url: str,
    *,
    since: str = "24h",
    by: GroupBy = "service",
    at: float | None = None,
    counters: Sequence[contract.CounterSpec] = contract.ALL_TOKEN_COUNTERS,
    client: httpx.Client | None = None,
) -> UsageReport:
    if by not in GROUP_LABELS:
        raise UsageError(f"--by must be one of {', '.join(GROUP_LABELS)}, got {by!r}")
    label = GROUP_LABELS[by]
    range_ = _prom_range(since)
    own = client is None
    http = client or httpx.Client(timeout=QUERY_TIMEOUT_S)
    rows: dict[str, UsageRow] = {}
    when = time.time() if at is None else at  # every class at the same instant

    def query(expr: str) -> list[dict[str, Any]]:
        params = {"query": expr, "time": f"{when:.3f}"}
        try:
            r = http.get(f"{prometheus_url.rstrip('/')}/api/v1/query", params=params)
        except httpx.HTTPError as exc:
            raise UsageError(f"cannot reach Prometheus at {prometheus_url}: {exc}") from None
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != 200 or body.get("status") != "success":
            raise UsageError(f"Prometheus refused {expr}: HTTP {r.status_code} {body.get('error', r.text[:200])}")
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    try:
        for counter in counters:
            for item in query(rules.total_expr(counter, range_=range_, by=(label,))):
                group = item["metric"].get(label, "")
                rows.setdefault(group, UsageRow(group)).tokens[counter.instrument] = float(item["value"][1])
        # Spend (docs/cost.md): USD of the priced tokens, and the tokens no price covers (never $0).
        for item in query(f"sum by ({label})(sum_over_time({pricing.COST}[{range_}]))"):
            rows.setdefault(item["metric"].get(label, ""), UsageRow(item["metric"].get(label, ""))).usd = float(
                item["value"][1]
            )
        for item in query(f"sum by ({label})(sum_over_time({pricing.UNPRICED}[{range_}]))"):
            group = item["metric"].get(label, "")
            rows.setdefault(group, UsageRow(group)).unpriced_tokens = float(item["value"][1])
    finally:
        if own:
            http.close()
    ordered = sorted(rows.values(), key=lambda r: (-r.tokens.get(contract.TOTAL_TOKENS.instrument, 0.0), r.group))
    return UsageReport(since, by, when, [c.instrument for c in counters], ordered)
