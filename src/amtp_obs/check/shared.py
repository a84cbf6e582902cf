"""What the checks share: the files they read, Grafana 10.4 facts, and data derived once per run.

Derived data (datasources, the series model, dashboards, their PromQL, the alerting translation) is
memoised in ``Context.cache`` so that every check that needs it pays for it once.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from amtp_obs import alerting
from amtp_obs import project as proj
from amtp_obs.check import promql, series
from amtp_obs.check.framework import Context, FileProblem, Finding, error
from amtp_obs.grafana.timerange import time_interval

PROM = proj.PROMETHEUS_CONFIG.as_posix()
PROM_DIR = proj.PROMETHEUS_CONFIG.parent.as_posix()
COLLECTOR = proj.COLLECTOR_CONFIG.as_posix()
TEMPO = proj.TEMPO_CONFIG.as_posix()
ALERTING = proj.ALERTING_FILE.as_posix()
COMPOSE = proj.COMPOSE_FILE

GRAFANA_BUILTIN_UIDS = (
    "-- Grafana --",
    "grafana",
    "-- Mixed --",
    "-- Dashboard --",
    alerting.EXPR_DATASOURCE,
)
KNOWN_PANEL_TYPES = frozenset(
    [
        "stat",
        "timeseries",
        "table",
        "traces",
        "barchart",
        "bargauge",
        "gauge",
        "text",
        "logs",
        "nodeGraph",
        "piechart",
        "heatmap",
        "histogram",
        "state-timeline",
        "status-history",
        "row",
        "dashlist",
        "alertlist",
        "news",
        "annotationslist",
        "canvas",
        "flamegraph",
        "geomap",
        "trend",
        "xychart",
        "candlestick",
        "datagrid",
    ]
)
SCHEMA_VERSION = 39
PROMTOOL = "promtool"
AMTOOL = "amtool"


def line_in(ctx: Context, rel: str, needle: str) -> int | None:
    try:
        text = ctx.read_text(rel)
    except FileProblem:
        return None
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    return None


def tool_lines(output: str) -> list[str]:
    return [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("Warning: --config.file")]


def promtool_failure(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("Unit Testing", "Checking", "FAILED:"))]
    text = " | ".join(keep[:6])
    return text[:600]


def datasources(ctx: Context) -> dict[str, tuple[str, str, int | None]]:
    """uid -> (type, file, line) of every provisioned datasource."""
    if "datasources" in ctx.cache:
        return ctx.cache["datasources"]
    out: dict[str, tuple[str, str, int | None]] = {}
    ds_dir = ctx.root / proj.DATASOURCES_DIR
    for path in sorted([*ds_dir.glob("*.yaml"), *ds_dir.glob("*.yml")]):
        rel = path.relative_to(ctx.root).as_posix()
        doc = ctx.yaml(rel)
        for i, ds in enumerate((doc.data or {}).get("datasources") or []):
            if isinstance(ds, dict) and ds.get("uid"):
                out[str(ds["uid"])] = (str(ds.get("type", "")), rel, doc.line("datasources", i))
    ctx.cache["datasources"] = out
    return out


def datasource_json(ctx: Context) -> dict[str, Mapping[str, Any]]:
    """uid -> ``jsonData`` of every provisioned datasource (its timeInterval sizes the query intervals)."""
    out: dict[str, Mapping[str, Any]] = {}
    ds_dir = ctx.root / proj.DATASOURCES_DIR
    for path in sorted([*ds_dir.glob("*.yaml"), *ds_dir.glob("*.yml")]):
        for ds in (ctx.yaml(path.relative_to(ctx.root).as_posix()).data or {}).get("datasources") or []:
            if isinstance(ds, dict) and ds.get("uid") and isinstance(ds.get("jsonData"), dict):
                out[str(ds["uid"])] = ds["jsonData"]
    return out


def rule_files(ctx: Context) -> list[Path]:
    """The recording/alerting rule files prometheus.yml loads, found through the compose mounts."""
    from amtp_obs.stack.render import PathMapper

    if "rule_files" not in ctx.cache:
        mapper = PathMapper.for_service(ctx.compose, ctx.root, ctx.scratch, proj.SERVICE_PROMETHEUS)
        found: list[Path] = []
        for pattern in ctx.mapping(PROM).get("rule_files") or []:
            host = mapper.map(str(pattern)) if str(pattern).startswith("/") else ctx.root / PROM_DIR / str(pattern)
            found.extend(sorted(host.parent.glob(host.name)))
        ctx.cache["rule_files"] = found
    return ctx.cache["rule_files"]


def model(ctx: Context) -> series.SeriesModel:
    if "model" not in ctx.cache:
        docs = []
        for path in rule_files(ctx):
            rel = path.relative_to(ctx.root).as_posix() if path.is_relative_to(ctx.root) else str(path)
            docs.append((rel, ctx.mapping(rel) if path.is_relative_to(ctx.root) else {}))
        ctx.cache["model"] = series.build_model(
            ctx.mapping(PROM), ctx.mapping(COLLECTOR), ctx.mapping(TEMPO), ctx.compose, docs
        )
    return ctx.cache["model"]


def dashboards(ctx: Context) -> list[tuple[str, dict[str, Any]]]:
    """(relative path, document) of each dashboard JSON; unparsable ones raise with the line."""
    out = []
    for path in sorted((ctx.root / proj.DASHBOARDS_DIR).glob("*.json")):
        rel = path.relative_to(ctx.root).as_posix()
        try:
            doc = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise FileProblem(rel, exc.lineno, f"invalid JSON: {exc.msg}") from None
        out.append((rel, doc))
    return out


def prom_queries(ctx: Context) -> tuple[list[promql.Query], list[Finding]]:
    """Every PromQL query of every dashboard, substituted and parsed (problems as findings)."""
    if "queries" in ctx.cache:
        return ctx.cache["queries"]
    ds = datasources(ctx)
    default = next((uid for uid, (t, _, _) in ds.items() if t == "prometheus"), None)
    queries: list[promql.Query] = []
    problems: list[Finding] = []
    intervals = {uid: time_interval(json_data) for uid, json_data in datasource_json(ctx).items()}
    for rel, doc in dashboards(ctx):
        for q in promql.dashboard_queries(doc, rel, default, intervals):
            if q.datasource_uid not in ds or ds[q.datasource_uid][0] != "prometheus":
                continue
            line = line_in(ctx, rel, q.line_hint)
            text = q.raw
            lv = promql.split_label_values(text)
            if lv is not None:
                text, q.label = lv
                if not text:
                    q.expr = ""
                    queries.append(q)
                    continue
            else:
                text = promql.unwrap_query_result(text)
            try:
                q.expr = promql.substitute(text, q)
                q.selectors = promql.parse_selectors(q.expr)
            except promql.QueryError as exc:
                problems.append(error(f"{q.where}: {exc} (query: {q.raw})", rel, line))
                continue
            queries.append(q)
    ctx.cache["queries"] = (queries, problems)
    return queries, problems


def translation(ctx: Context) -> alerting.Translation:
    if "translation" not in ctx.cache:
        doc = ctx.mapping(ALERTING)
        variables = dict(ctx.deployment_values)
        try:
            ctx.cache["translation"] = alerting.translate(doc, variables)
        except alerting.TranslationError as exc:
            raise FileProblem(ALERTING, None, f"cannot translate to Prometheus/Alertmanager: {exc}") from None
    return ctx.cache["translation"]


def selector_findings(
    m: series.SeriesModel, sel: promql.Selector, where: str, file: str, line: int | None
) -> Iterator[Finding]:
    names = m.names()
    if sel.name is None:
        return
    if sel.name not in names:
        if m.is_open(sel.name):
            return
        close = difflib.get_close_matches(sel.name, list(names), n=3, cutoff=0.6)
        hint = f"; similar series: {', '.join(sorted(close))}" if close else ""
        yield error(
            f"{where} queries metric {sel.name}, which nothing in the pipeline produces "
            f"(derived from the collector exporter naming, prometheus.yml relabelling, Tempo span metrics "
            f"and scrape jobs){hint}",
            file,
            line,
        )
        return
    have = names[sel.name]
    for label, op, value in sel.matchers:
        if label in have:
            continue
        # Negative matchers and `=""` ask for the label's absence, which is fine; any other matcher on a
        # label the series never carries filters everything out once a value is selected.
        if op in ("!=", "!~") or (op == "=" and value == ""):
            continue
        yield error(
            f"{where}: label {label!r} does not exist on {sel.name} (it has: {', '.join(sorted(have))})",
            file,
            line,
        )
