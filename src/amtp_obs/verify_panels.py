"""What ``amtp-obs verify`` asks of the provisioned dashboards' panels, and what the answers must be.

Every visible Prometheus/Tempo target is built by :mod:`amtp_obs.grafana` exactly as Grafana 10.4,
the embedded dashboard and ``amtp-obs check`` build it, for a time range that starts just before
the gate's emit and ends now, with the service variables set to the verify service and every
other variable at All. A panel that reads the exact token totals (``sum(sum_over_time(
llm:<class>:increment[$__range]))``, optionally ``by`` a label) must then show a whole number of
verify runs' tokens of that class, at least one: the number the gate itself emitted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx
import promql_parser
import yaml

from amtp_obs import contract
from amtp_obs.accounting import rules
from amtp_obs.durations import parse_duration
from amtp_obs.grafana import panels, templating
from amtp_obs.grafana.timerange import DEFAULT_TIME_INTERVAL, TimeRange
from amtp_obs.project import Project

SERVICE_LABELS = frozenset({rules.SERVICE_LABEL, "service"})
"""Labels whose values are service names: the accounting rules' and the span-metrics generator's."""
PROMETHEUS_DEFAULT_SCRAPE_INTERVAL = "1m"
"""Prometheus' ``global.scrape_interval`` when its configuration does not set one."""


class PanelQueryError(ValueError):
    """A dashboard cannot be read; the message names it."""


class Contradiction(ValueError):
    """A panel's value contradicts what the gate emitted; the message says how."""


@dataclass(frozen=True)
class PanelQuery:
    dashboard: str
    panel: str
    kind: str  # prometheus | tempo
    query: str
    ref: str
    exact_total: contract.CounterSpec | None = None
    """The token class whose exact total over the whole range this query is, if it is one."""


def service_selection(doc: Mapping[str, Any], service: str) -> dict[str, list[str]]:
    """The dashboard's variables that list service names, each set to ``service``."""
    out: dict[str, list[str]] = {}
    for var in templating.variables(doc):
        if var.get("type") not in (None, "query"):
            continue
        try:
            query = templating.parse_variable_query(templating.variable_query_text(var))
        except templating.VariableQueryError:
            continue
        if query.kind == "label_values" and query.label in SERVICE_LABELS:
            out[str(var["name"])] = [service]
    return out


def panel_queries(
    project: Project,
    time_range: TimeRange,
    *,
    service: str | None = None,
    time_interval: float = DEFAULT_TIME_INTERVAL,
) -> list[PanelQuery]:
    """Every visible Prometheus/Tempo target of every provisioned dashboard, as Grafana sends it."""
    out: list[PanelQuery] = []
    for path in project.dashboards():
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise PanelQueryError(f"{path.name}: not valid JSON: {exc}") from None
        out.extend(dashboard_panel_queries(doc, time_range, service=service, time_interval=time_interval))
    return out


def dashboard_panel_queries(
    doc: Mapping[str, Any],
    time_range: TimeRange,
    *,
    service: str | None = None,
    time_interval: float = DEFAULT_TIME_INTERVAL,
) -> list[PanelQuery]:
    """:func:`panel_queries` of one dashboard document."""
    out: list[PanelQuery] = []
    title = str(doc.get("title") or doc.get("uid") or "?")
    scope = templating.offline_scope(doc, service_selection(doc, service) if service else None)
    for panel in panels.iter_panels(doc):
        for target in panels.visible_targets(panel):
            kind = panels.datasource_type(panels.datasource_ref(panel, target)) or ""
            raw = target.get("expr") if kind == "prometheus" else target.get("query")
            if kind not in ("prometheus", "tempo") or not isinstance(raw, str) or not raw.strip():
                continue
            total = None
            if kind == "prometheus":
                query, _ = panels.prometheus_query(panel, target, time_range, scope, time_interval)
                total = exact_total_counter(query, time_range)
            else:
                query = templating.interpolate(raw, scope)
            out.append(
                PanelQuery(title, str(panel.get("title") or "?"), kind, query, str(target.get("refId") or "A"), total)
            )
    return out


def exact_total_counter(expr: str, time_range: TimeRange) -> contract.CounterSpec | None:
    """The counter when ``expr`` is ``sum [by (...)] (sum_over_time(llm:<class>:increment{...}[range]))``
    over the whole ``time_range`` (what :func:`amtp_obs.accounting.rules.total_expr` writes)."""
    try:
        node = promql_parser.parse(expr)
    except ValueError:
        return None
    if not isinstance(node, promql_parser.AggregateExpr) or str(node.op) != "sum":
        return None
    call = node.expr
    if not isinstance(call, promql_parser.Call) or call.func.name != "sum_over_time" or len(call.args) != 1:
        return None
    matrix = call.args[0]
    if not isinstance(matrix, promql_parser.MatrixSelector):
        return None
    if round(matrix.range.total_seconds()) != round(time_range.seconds):
        return None
    name = matrix.vector_selector.name
    return next((c for c in contract.ALL_TOKEN_COUNTERS if c.increment_record == name), None)


def whole_runs(got: float, per_run: int, seen: int) -> int | None:
    """How many runs of ``per_run`` tokens ``got`` is; ``None`` while it is less than one run.

    Other verify runs may fall inside the range, so any whole number of runs up to the runs
    Prometheus saw is right; a fraction or more runs than seen (a lost token or a double count)
    raises :class:`Contradiction`.
    """
    if got < per_run:
        return None
    runs = got / per_run
    if not runs.is_integer() or runs > max(seen, 1):
        raise Contradiction(
            f"{got:g} is not a whole number of runs of {per_run} tokens, or more runs than the "
            f"{seen} Prometheus saw (a double count or a lost token)"
        )
    return int(runs)


def scrape_interval(client: httpx.Client, prometheus_url: str) -> float:
    """The running Prometheus' ``global.scrape_interval`` (seconds), from ``/api/v1/status/config``.

    ``$__rate_interval`` exists so that a rate window holds at least four scrapes of the data
    Prometheus actually has. Grafana reads that cadence from the datasource's ``timeInterval``, which
    the provisioning sets equal to prometheus.yml's interval; the embedded stack scrapes every 5 s
    while the provisioned datasource still says 15 s (stack/cadence.py), so the gate asks the
    Prometheus it verifies. In production both are 15 s and give the same query text.
    """
    r = client.get(f"{prometheus_url}/api/v1/status/config")
    body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
    if r.status_code != 200 or body.get("status") != "success":
        raise ValueError(f"Prometheus /api/v1/status/config: HTTP {r.status_code}")
    config = yaml.safe_load(body["data"]["yaml"]) or {}
    raw = (config.get("global") or {}).get("scrape_interval") or PROMETHEUS_DEFAULT_SCRAPE_INTERVAL
    return parse_duration(str(raw))
