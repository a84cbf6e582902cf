"""check, verify and the embedded dashboard send the same query text for the same panel, range and variables.

All three build it through amtp_obs.grafana; this runs each user's own entry point on the provisioned
dashboard and compares the strings. The dashboard's backends are a loopback port nobody listens on:
the engine records a query before it sends it, so the refused connection only ends that panel.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from amtp_obs import contract
from amtp_obs.check import promql
from amtp_obs.dashboard.engine import Engine
from amtp_obs.dashboard.model import Dashboard
from amtp_obs.grafana import panels
from amtp_obs.grafana.datasources import Datasource, load_datasources
from amtp_obs.grafana.timerange import TimeRange
from amtp_obs.net import free_ports
from amtp_obs.project import DASHBOARDS_DIR, DATASOURCES_DIR, Project
from amtp_obs.verify_panels import dashboard_panel_queries, panel_queries

REPO = Path(__file__).resolve().parents[2]
NOW = datetime(2026, 11, 25, 14, 37, 12, tzinfo=UTC)


PROM = {"type": "prometheus", "uid": "prometheus"}
EXTRA_PANELS = [
    # No Min interval: $__interval and $__rate_interval follow the range, the width and the scrape interval.
    {
        "type": "timeseries",
        "title": "extra rate",
        "gridPos": {"w": 8},
        "datasource": PROM,
        "targets": [
            {
                "refId": "A",
                "expr": 'sum(rate(llm_total_tokens_total{service_name=~"$service_name"}[$__rate_interval]))',
            },
            {"refId": "B", "expr": "sum(increase(up[${__interval}])) / $__interval_ms", "interval": "30s"},
        ],
    },
    {
        "type": "stat",
        "title": "extra range",
        "maxDataPoints": 100,
        "datasource": PROM,
        "targets": [{"refId": "A", "expr": "count_over_time(up[$__range]) / ${__range_s} + $__rate_interval_ms * 0"}],
    },
]


def _dashboard() -> tuple[Path, dict]:
    """The provisioned dashboard plus panels using every interval macro (and a Min step)."""
    [path] = sorted((REPO / DASHBOARDS_DIR).glob("*.json"))
    doc = json.loads(path.read_text())
    doc["panels"] = [*doc["panels"], *EXTRA_PANELS]
    return path, doc


def _dashboard_queries(
    datasources: list[Datasource], doc: dict, tr: TimeRange, requested: dict[str, list[str]]
) -> list[str]:
    """What the embedded dashboard sends, one target at a time, in page order."""
    (dead,) = free_ports(1)
    url = f"http://127.0.0.1:{dead}"

    async def run() -> list[str]:
        async with httpx.AsyncClient(timeout=2) as client:
            engine = Engine(datasources, client, url_overrides={ds.uid: url for ds in datasources})
            states = await engine.resolve_variables(Dashboard("d", "d", Path("d.json"), doc), requested, tr)
            scope = {s.name: s.selection for s in states}
            out: list[str] = []
            for panel in panels.iter_panels(doc):
                for target in panels.visible_targets(panel):
                    result = await engine.run_panel({**panel, "targets": [target]}, scope, tr)
                    out.extend(result.queries)
            return out

    return asyncio.run(run())


def _with_time_interval(datasources: list[Datasource], seconds: int) -> list[Datasource]:
    return [
        replace(ds, json_data={**ds.json_data, "timeInterval": f"{seconds}s"}) if ds.type == "prometheus" else ds
        for ds in datasources
    ]


# 3 h over 8/24 of a 1400 px page = 467 points: 10800 s / 467 = 23.1 s -> 20 s (at least the scrape
# interval), so $__rate_interval = max(20 s + scrape, 4 x scrape): 1m0s at 15 s, 25s at 5 s.
@pytest.mark.parametrize(("scrape", "rate"), [(15, "1m0s"), (5, "25s")])
def test_check_verify_and_dashboard_agree_on_a_default_load(scrape: int, rate: str) -> None:
    path, doc = _dashboard()
    datasources = _with_time_interval(load_datasources(REPO / DATASOURCES_DIR, {}), scrape)
    tr = panels.dashboard_time_range(doc, NOW)

    check = [
        promql.substitute(q.raw, q)
        for q in promql.dashboard_queries(doc, path.name, "prometheus", {"prometheus": float(scrape)}, now=NOW)
        if q.where.startswith("panel ")
    ]
    verify = [q.query for q in dashboard_panel_queries(doc, tr, time_interval=float(scrape)) if q.kind == "prometheus"]
    dashboard = [q for q in _dashboard_queries(datasources, doc, tr, {}) if not q.lstrip().startswith("{")]

    assert check, "the provisioned dashboard has no Prometheus panel"
    assert check == verify == dashboard
    assert not any("$" in q for q in check)
    assert check[-3] == f'sum(rate(llm_total_tokens_total{{service_name=~".*"}}[{rate}]))'
    assert check[-2] == "sum(increase(up[30s])) / 30000"  # the target's Min step 30s sets the interval


def test_verify_and_dashboard_agree_with_the_service_set() -> None:
    _, doc = _dashboard()
    datasources = _with_time_interval(load_datasources(REPO / DATASOURCES_DIR, {}), 5)
    tr = TimeRange.parse("now-5m", "now", NOW)
    service = contract.VERIFY_SERVICE_NAME

    verify = dashboard_panel_queries(doc, tr, service=service, time_interval=5.0)
    variable = next(v["name"] for v in doc["templating"]["list"] if "service" in str(v.get("definition")))
    dashboard = _dashboard_queries(datasources, doc, tr, {variable: [service]})

    assert [q.query for q in verify] == dashboard  # TraceQL included
    uses_service = {
        (p["title"], t.get("refId"))
        for p in panels.iter_panels(doc)
        for t in p.get("targets") or []
        if f"${variable}" in str(t.get("expr") or t.get("query"))
    }
    assert len(uses_service) >= 10
    picked = [q.query for q in verify if (q.panel, q.ref) in uses_service]
    assert len(picked) == len(uses_service) and all(f'"{service}"' in q for q in picked), picked
    totals = {q.panel: q.exact_total for q in verify if q.exact_total}
    assert totals.get("Total Tokens") == contract.TOTAL_TOKENS
    assert totals.get("Prompt Tokens") == contract.PROMPT_TOKENS
    assert totals.get("Completion Tokens") == contract.COMPLETION_TOKENS


def test_verify_reads_the_provisioned_dashboards() -> None:
    tr = TimeRange.parse("now-5m", "now", NOW)
    _, doc = _dashboard()
    provisioned = [q for q in dashboard_panel_queries(doc, tr) if q.panel not in {p["title"] for p in EXTRA_PANELS}]
    assert panel_queries(Project(REPO, {}), tr) == provisioned


def test_check_names_what_grafana_would_leave_unsubstituted() -> None:
    doc = {
        "time": {"from": "now-1h", "to": "now"},
        "templating": {"list": [{"name": "svc", "type": "query", "includeAll": True, "allValue": ".*"}]},
        "panels": [
            {"type": "stat", "title": "t", "datasource": PROM, "targets": [{"refId": "A", "expr": e}]}
            for e in (
                'label_replace(up{s=~"$svc"}, "x", "$1", "job", "(.*)")[$__range:]',
                "rate(up[$__rate_interva])",
                'up{s="$nope"}',
            )
        ],
    }
    queries = list(promql.dashboard_queries(doc, "d.json", "prometheus", now=NOW))
    assert (
        promql.substitute(queries[0].raw, queries[0]) == 'label_replace(up{s=~".*"}, "x", "$1", "job", "(.*)")[3600s:]'
    )
    with pytest.raises(promql.QueryError, match=r"unknown Grafana macro \$__rate_interva"):
        promql.substitute(queries[1].raw, queries[1])
    with pytest.raises(promql.QueryError, match="defines no variable 'nope'"):
        promql.substitute(queries[2].raw, queries[2])
