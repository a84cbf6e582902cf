"""The checks of ``amtp-obs check``: real validators first, then the cross-file rules no tool sees.

Each function is registered with :func:`~amtp_obs.check.framework.check` and yields findings.
Names of files, services and metrics come from :mod:`amtp_obs.project` and :mod:`amtp_obs.contract`.
"""

from __future__ import annotations

import difflib
import json
import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import yaml

from amtp_obs import alerting, contract, env
from amtp_obs import project as proj
from amtp_obs.check import promql, series
from amtp_obs.check.framework import (
    Context,
    FileProblem,
    Finding,
    Skip,
    check,
    error,
    require_tool,
    run_tool,
    warning,
)
from amtp_obs.durations import parse_duration
from amtp_obs.grafana.timerange import time_interval
from amtp_obs.project import ProjectError, variables_in

PROM = proj.PROMETHEUS_CONFIG.as_posix()
PROM_DIR = proj.PROMETHEUS_CONFIG.parent.as_posix()
COLLECTOR = proj.COLLECTOR_CONFIG.as_posix()
TEMPO = proj.TEMPO_CONFIG.as_posix()
ALERTING = proj.ALERTING_FILE.as_posix()
COMPOSE = proj.COMPOSE_FILE

SEVERITY_LABEL = "severity"
CRITICAL = "critical"
WARNING_SEVERITY = "warning"
PAGING_TYPES = ("email", "slack")
"""Contact-point types a critical alert must reach (NOTES §12); warnings go to chat only."""
CHAT_TYPES = ("slack",)

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


def _line_in(ctx: Context, rel: str, needle: str) -> int | None:
    try:
        text = ctx.read_text(rel)
    except FileProblem:
        return None
    for i, line in enumerate(text.splitlines(), 1):
        if needle in line:
            return i
    return None


def _tool_lines(output: str) -> list[str]:
    return [ln.strip() for ln in output.splitlines() if ln.strip() and not ln.startswith("Warning: --config.file")]


# =============================================================================================
# Shared derived data
# =============================================================================================


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
            line = _line_in(ctx, rel, q.line_hint)
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


def _selector_findings(
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


# =============================================================================================
# Real validators
# =============================================================================================


@check("promtool-config", "promtool check config on prometheus.yml")
def promtool_config(ctx: Context) -> Iterator[Finding]:
    tool = require_tool(PROMTOOL)
    if not ctx.exists(PROM):
        yield error("file is missing", PROM)
        return
    res = run_tool([tool, "check", "config", str(ctx.root / PROM)], cwd=(ctx.root / PROM).parent)
    if res.returncode == 0:
        return
    for ln in _tool_lines(res.output):
        if ln.startswith("Checking") or ln.startswith("SUCCESS"):
            continue
        m = re.match(r"line (\d+): (.*)", ln)
        if m:
            yield error(f"promtool check config: {m.group(2)}", PROM, int(m.group(1)))
        elif "FAILED" in ln and "unmarshal errors" in ln:
            continue
        else:
            yield error(f"promtool check config: {ln.removeprefix('FAILED: ')}", PROM)


@check("dashboard-metrics", "every metric and label a dashboard queries exists in the pipeline")
def dashboard_metrics(ctx: Context) -> Iterator[Finding]:
    queries, problems = prom_queries(ctx)
    yield from problems
    m = model(ctx)
    for q in queries:
        line = _line_in(ctx, q.file, q.line_hint)
        for sel in q.selectors:
            yield from _selector_findings(m, sel, q.where, q.file, line)
        if q.label:
            pool: set[str] = set()
            for sel in q.selectors:
                if sel.name:
                    pool |= m.names().get(sel.name, set())
            if not q.selectors:
                for labels in m.names().values():
                    pool |= labels
            if pool and q.label not in pool:
                yield error(f"{q.where}: label_values lists {q.label!r}, a label its series do not have", q.file, line)
    for file, needle, message in m.problems:
        yield error(message, file, _line_in(ctx, file, needle))


@check("rule-metrics", "every metric and label a recording rule reads exists in the pipeline")
def rule_metrics(ctx: Context) -> Iterator[Finding]:
    m = model(ctx)
    for path in rule_files(ctx):
        rel = path.relative_to(ctx.root).as_posix()
        for group in ctx.mapping(rel).get("groups") or []:
            for rule in group.get("rules") or []:
                if not isinstance(rule, dict) or not rule.get("record"):
                    continue
                where = f"recording rule {rule['record']}"
                line = _line_in(ctx, rel, f"record: {rule['record']}")
                try:
                    selectors = promql.parse_selectors(str(rule.get("expr", "")))
                except promql.QueryError as exc:
                    yield error(f"{where}: {exc}", rel, line)
                    continue
                for sel in selectors:
                    yield from _selector_findings(m, sel, where, rel, line)


@check("contract-names", "the contract's documented Prometheus names are what the pipeline stores")
def contract_names(ctx: Context) -> Iterator[Finding]:
    col = ctx.yaml(COLLECTOR)
    for name, cfg in ((col.data or {}).get("exporters") or {}).items():
        if str(name).split("/")[0] == "prometheus":
            ns = (cfg or {}).get("namespace", "")
            if ns != contract.METRICS_NAMESPACE:
                yield error(
                    f"exporter {name} namespace is {ns!r}; the contract (and every query) expects "
                    f"{contract.METRICS_NAMESPACE!r}",
                    COLLECTOR,
                    col.line("exporters", name, "namespace"),
                )
    m = model(ctx)
    names = m.names()
    for spec in contract.ALL_TOKEN_COUNTERS:
        if spec.prometheus_name in names:
            continue
        origin = f"contract counter {spec.instrument}"
        produced = sorted({s.name for s in m.series if s.origin == origin})
        yield error(
            f"contract counter {spec.instrument} (unit {spec.unit}) is documented as {spec.prometheus_name}, "
            f"but the pipeline stores it as {', '.join(produced) or 'nothing'} (exporter naming + "
            f"metric_relabel_configs, NOTES §1)",
            PROM,
            _line_in(ctx, PROM, "metric_relabel_configs"),
        )


def _input_series(m: series.SeriesModel, q: promql.Query) -> list[dict[str, str]]:
    """Synthetic input for one query: open label values bent to meet its equality matchers."""
    eq_by_name: dict[str | None, dict[str, str]] = {}
    for sel in q.selectors:
        eq_by_name.setdefault(sel.name, {}).update(sel.equalities())
    out = []
    for s in m.series:
        if s.recorded:
            continue  # the rules compute it from the others
        labels = dict(s.labels)
        for key in (s.name, None):
            for label, value in eq_by_name.get(key, {}).items():
                if label in s.open_labels and label in labels:
                    labels[label] = value
        out.append({"series": series.promtool_series(labels), "values": series.values_for(s.kind)})
    # Families we do not enumerate (otelcol_*, tempo_*): one series per queried selector.
    for sel in q.selectors:
        if sel.name and m.is_open(sel.name):
            labels = {"__name__": sel.name, **sel.equalities()}
            for label, op, _ in sel.matchers:
                if op == "=~":
                    labels.setdefault(label, series.OPEN)
            out.append({"series": series.promtool_series(labels), "values": series.values_for("counter")})
    return out


def _promtool_failure(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    keep = [ln for ln in lines if not ln.startswith(("Unit Testing", "Checking", "FAILED:"))]
    text = " | ".join(keep[:6])
    return text[:600]


@check(
    "dashboard-promtool",
    "dashboard PromQL through promtool check rules + test rules on pipeline-named series",
)
def dashboard_promtool(ctx: Context) -> Iterator[Finding]:
    tool = require_tool(PROMTOOL)
    queries, _ = prom_queries(ctx)
    m = model(ctx)
    work = ctx.scratch / "dashboard"
    work.mkdir(exist_ok=True)
    for i, q in enumerate(queries):
        if not q.expr:
            continue
        line = _line_in(ctx, q.file, q.line_hint)
        rules = work / f"q{i}.rules.yml"
        rules.write_text(
            yaml.safe_dump({"groups": [{"name": f"q{i}", "rules": [{"record": f"check:q{i}", "expr": q.expr}]}]})
        )
        res = run_tool([tool, "check", "rules", rules.name], cwd=work)
        if res.returncode != 0:
            yield error(
                f"{q.where}: promtool check rules rejects the query: {_promtool_failure(res.output)}",
                q.file,
                line,
            )
            continue
        if any(sel.name and sel.name not in m.names() and not m.is_open(sel.name) for sel in q.selectors):
            continue  # already reported by dashboard-metrics; evaluating it would only repeat that
        inner = f"vector({q.expr})" if promql.is_scalar(q.expr) else f"({q.expr})"
        # Non-empty and not NaN: NaN >= -Inf is false, so a NaN-only result counts as empty.
        probe = f"(count({inner} >= -Inf) > bool 0) or vector(0)"
        test = {
            "rule_files": [str(p) for p in pricing_catalog.evaluable_rule_files(ctx, rule_files(ctx))],
            "evaluation_interval": series.SCRAPE_INTERVAL,
            "tests": [
                {
                    "interval": series.SCRAPE_INTERVAL,
                    "input_series": _input_series(m, q),
                    "promql_expr_test": [
                        {
                            "expr": probe,
                            "eval_time": series.EVAL_TIME,
                            "exp_samples": [{"labels": "{}", "value": 1}],
                        }
                    ],
                }
            ],
        }
        tfile = work / f"q{i}.test.yml"
        tfile.write_text(yaml.safe_dump(test, sort_keys=False))
        res = run_tool([tool, "test", "rules", tfile.name], cwd=work)
        if res.returncode != 0:
            if "got:" in res.output and "0E+00" in res.output.split("got:")[-1]:
                yield error(
                    f"{q.where}: returns no data (or only NaN) even on synthetic series named as the "
                    "pipeline "
                    f"names them; query: {q.expr}",
                    q.file,
                    line,
                )
            else:
                yield error(f"{q.where}: promtool test rules failed: {_promtool_failure(res.output)}", q.file, line)


def _dump(path: Path, doc: Any) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _seconds(text: str) -> int:
    """A rule's ``interval``/``for`` in whole seconds (promtool test steps); 0 when unreadable."""
    try:
        return math.ceil(parse_duration(text))
    except ValueError:
        return 0


@check("alert-rules", "alerting.yaml rules -> Prometheus rules: promtool check rules + firing test")
def alert_rules(ctx: Context) -> Iterator[Finding]:
    t = translation(ctx)
    m = model(ctx)
    doc = ctx.yaml(ALERTING)
    # Cross-file: what the rules query exists.
    for gi, group in enumerate((doc.data or {}).get("groups") or []):
        for ri, rule in enumerate(group.get("rules") or []):
            for qi, q in enumerate(rule.get("data") or []):
                expr = (q.get("model") or {}).get("expr")
                if q.get("datasourceUid") == alerting.EXPR_DATASOURCE or not isinstance(expr, str):
                    continue
                line = doc.line("groups", gi, "rules", ri, "data", qi, "model", "expr")
                try:
                    sels = promql.parse_selectors(expr)
                except promql.QueryError as exc:
                    yield error(f"rule {rule.get('uid')!r} query {q.get('refId')}: {exc}", ALERTING, line)
                    continue
                for sel in sels:
                    yield from _selector_findings(m, sel, f"alert rule {rule.get('uid')!r}", ALERTING, line)
    for item in t.unsupported:
        if item.startswith("omitted:"):
            yield error(f"rule cannot be expressed in PromQL, so it is not verified: {item}", ALERTING)
    tool = require_tool(PROMTOOL)
    work = ctx.scratch / "alerts"
    work.mkdir(exist_ok=True)
    rules_file = _dump(work / "rules.yml", t.prometheus_rules)
    res = run_tool([tool, "check", "rules", rules_file.name], cwd=work)
    if res.returncode != 0:
        yield error(f"translated rules rejected by promtool check rules: {_promtool_failure(res.output)}", ALERTING)
        return
    # Behaviour: every rule on `up` fires after `for` while its targets are down (or absent) and
    # stays silent while they are up.
    stripped = {
        "groups": [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in t.prometheus_rules["groups"]
        ]
    }
    _dump(work / "rules_noann.yml", stripped)
    for group in stripped["groups"]:
        interval = _seconds(str(group.get("interval", "1m"))) or 60
        for rule in group["rules"]:
            sels = promql.parse_selectors(rule["expr"])
            if not sels or any(s.name != "up" for s in sels):
                continue
            line = _line_in(ctx, ALERTING, f"title: {rule['alert']}")
            matching = [s for s in m.series if s.name == "up" and all(_matches(s.labels, sel) for sel in sels)]
            if not matching:
                yield error(
                    f"alert {rule['alert']!r}: its `up` selector matches no scrape job in {PROM}, "
                    "so it can never see the target it watches",
                    ALERTING,
                    line,
                )
                continue
            for_s = _seconds(str(rule.get("for", "0s")))
            late = for_s + 2 * interval
            early = max(interval, for_s - interval) if for_s > interval else None
            fire_labels = [
                {**{k: v for k, v in s.labels.items() if k != "__name__"}, **rule.get("labels", {})} for s in matching
            ]
            n = late // 15 + 4
            tests = []

            def scenario(value: int, _n: int = n, _matching: list[series.Series] = matching) -> list[dict[str, str]]:
                return [{"series": series.promtool_series(s.labels), "values": f"{value}x{_n}"} for s in _matching]

            down_tests = [
                {
                    "eval_time": f"{late}s",
                    "alertname": rule["alert"],
                    "exp_alerts": [{"exp_labels": lb} for lb in fire_labels],
                }
            ]
            if early is not None:
                down_tests.append({"eval_time": f"{early}s", "alertname": rule["alert"], "exp_alerts": []})
            tests.append({"interval": "15s", "input_series": scenario(0), "alert_rule_test": down_tests})
            tests.append(
                {
                    "interval": "15s",
                    "input_series": scenario(1),
                    "alert_rule_test": [{"eval_time": f"{late}s", "alertname": rule["alert"], "exp_alerts": []}],
                }
            )
            if "absent(" in rule["expr"]:
                absent_labels = {**sels[0].equalities(), **rule.get("labels", {})}
                tests.append(
                    {
                        "interval": "15s",
                        "input_series": [],
                        "alert_rule_test": [
                            {
                                "eval_time": f"{late}s",
                                "alertname": rule["alert"],
                                "exp_alerts": [{"exp_labels": absent_labels}],
                            }
                        ],
                    }
                )
            tfile = _dump(
                work / "alert.test.yml",
                {"rule_files": ["rules_noann.yml"], "evaluation_interval": f"{interval}s", "tests": tests},
            )
            res = run_tool([tool, "test", "rules", tfile.name], cwd=work)
            if res.returncode != 0:
                yield error(
                    f"alert {rule['alert']!r} does not behave: expected to fire after "
                    f"for={rule.get('for', '0s')} "
                    "while up==0 (or absent) and stay silent while up==1; "
                    f"promtool: {_promtool_failure(res.output)}",
                    ALERTING,
                    line,
                )


def _matches(labels: Mapping[str, str], sel: promql.Selector) -> bool:
    for label, op, value in sel.matchers:
        have = labels.get(label, "")
        ok = {
            "=": have == value,
            "!=": have != value,
            "=~": re.fullmatch(value, have) is not None,
            "!~": re.fullmatch(value, have) is None,
        }[op]
        if not ok:
            return False
    return True


@check("alert-routing", "notification policies -> Alertmanager: amtool check-config + routes test")
def alert_routing(ctx: Context) -> Iterator[Finding]:
    tool = require_tool(AMTOOL)
    t = translation(ctx)
    doc = ctx.mapping(ALERTING)
    work = ctx.scratch / "am"
    work.mkdir(exist_ok=True)
    cfg = _dump(work / "alertmanager.yml", t.alertmanager_config)
    res = run_tool([tool, "check-config", cfg.name], cwd=work)
    if res.returncode != 0:
        detail = re.findall(r"FAILED: (.*)", res.output)
        msg = "; ".join(d.strip() for d in detail) or _promtool_failure(res.output)
        hint = ""
        if "root route must not have any mute time intervals" in msg:
            hint = " (move mute_time_intervals from the root policy to every child route, NOTES §13)"
        yield error(f"amtool check-config rejects the translated notification policies: {msg}{hint}", ALERTING)
        return
    kinds: dict[str, str] = {}
    for cp in doc.get("contactPoints") or []:
        for r in cp.get("receivers") or []:
            kinds[str(cp.get("name"))] = str(r.get("type"))
    paging = sorted(n for n, k in kinds.items() if k in PAGING_TYPES)
    chat = sorted(n for n, k in kinds.items() if k in CHAT_TYPES)
    line = _line_in(ctx, ALERTING, "policies:")
    for sev, expected in ((CRITICAL, paging), (WARNING_SEVERITY, chat)):
        if not expected:
            continue
        res = run_tool(
            [
                tool,
                "config",
                "routes",
                "test",
                "--config.file",
                cfg.name,
                f"--verify.receivers={','.join(expected)}",
                f"{SEVERITY_LABEL}={sev}",
            ],
            cwd=work,
        )
        got = next((ln for ln in _tool_lines(res.output) if not ln.startswith("WARNING")), "")
        if res.returncode != 0:
            yield error(
                f"an alert with {SEVERITY_LABEL}={sev} reaches [{got}] but must reach [{','.join(expected)}] "
                "(a child route with continue: true does not make the parent's receiver fire, NOTES §12)",
                ALERTING,
                line,
            )
    # Mute timings: every child route carries every mute timing (they are not inherited, NOTES §13).
    names = [str(mt.get("name")) for mt in doc.get("muteTimes") or []]
    root = (doc.get("policies") or [{}])[0]

    def walk(node: Mapping[str, Any], path: str) -> Iterator[Finding]:
        for i, child in enumerate(node.get("routes") or []):
            cpath = f"{path}.routes[{i}]"
            missing = [n for n in names if n not in (child.get("mute_time_intervals") or [])]
            if missing:
                yield error(
                    f"policy route {cpath} (receiver {child.get('receiver', 'inherited')}) lacks "
                    "mute timing(s) "
                    f"{', '.join(missing)}: mute timings are not inherited, so its notifications go "
                    "out anyway",
                    ALERTING,
                    ctx.yaml(ALERTING).line("policies", 0, *_route_path(cpath)),
                )
            yield from walk(child, cpath)

    yield from walk(root, "policies[0]")


def _route_path(path: str) -> list[str | int]:
    out: list[str | int] = []
    for m in re.finditer(r"routes\[(\d+)\]", path):
        out += ["routes", int(m.group(1))]
    return out


@check("compose-schema", "check-jsonschema --builtin-schema vendor.compose-spec")
def compose_schema(ctx: Context) -> Iterator[Finding]:
    tool = require_tool("check-jsonschema")
    res = run_tool([tool, "--builtin-schema", "vendor.compose-spec", "-o", "text", COMPOSE], cwd=ctx.root)
    if res.returncode != 0:
        for ln in _tool_lines(res.output):
            if ln.startswith("Schema validation errors") or ln.startswith("ok"):
                continue
            yield error(f"compose-spec schema: {ln}", COMPOSE)


@check("compose-config", "docker-compose config -q with .env.example")
def compose_config(ctx: Context) -> Iterator[Finding]:
    tool = require_tool("docker-compose")
    res = run_tool(
        [tool, "-f", COMPOSE, "--env-file", proj.ENV_EXAMPLE_FILE, "config", "-q"],
        cwd=ctx.root,
        env={"COMPOSE_PROJECT_NAME": "amtpcheck"},
    )
    if res.returncode != 0:
        for ln in _tool_lines(res.output):
            yield error(f"docker-compose config: {ln}", COMPOSE)


@check("actionlint", "actionlint on .github/workflows (shellcheck on run: blocks when present)")
def actionlint(ctx: Context) -> Iterator[Finding]:
    tool = require_tool("actionlint")
    files = sorted(p.relative_to(ctx.root).as_posix() for p in (ctx.root / proj.WORKFLOWS_DIR).glob("*.y*ml"))
    if not files:
        raise Skip(f"no workflow files in {proj.WORKFLOWS_DIR}")
    res = run_tool([tool, "-no-color", "-oneline", *files], cwd=ctx.root)
    if res.returncode == 0:
        return
    for ln in _tool_lines(res.output):
        m = re.match(r"(?P<f>[^:]+):(?P<l>\d+):\d+: (?P<msg>.*)", ln)
        if m:
            yield error(f"actionlint: {m.group('msg')}", m.group("f"), int(m.group("l")))
        else:
            yield error(f"actionlint: {ln}", proj.WORKFLOWS_DIR.as_posix())


def yaml_files(ctx: Context) -> list[str]:
    rels = [COMPOSE, COLLECTOR, TEMPO, PROM]
    for sub in (proj.GRAFANA_PROVISIONING, proj.WORKFLOWS_DIR):
        rels += sorted(p.relative_to(ctx.root).as_posix() for p in (ctx.root / sub).rglob("*.y*ml"))
    return [r for r in rels if (ctx.root / r).is_file()]


@check("yamllint", "yamllint -c .yamllint.yaml on the stack's YAML")
def yamllint(ctx: Context) -> Iterator[Finding]:
    tool = require_tool("yamllint")
    args = [tool, "-f", "parsable"]
    if (ctx.root / ".yamllint.yaml").is_file():
        args += ["-c", ".yamllint.yaml"]
    res = run_tool([*args, *yaml_files(ctx)], cwd=ctx.root)
    for ln in _tool_lines(res.stdout):
        m = re.match(r"(?P<f>[^:]+):(?P<l>\d+):\d+: \[(?P<lvl>\w+)\] (?P<msg>.*)", ln)
        if m:
            make = error if m.group("lvl") == "error" else warning
            yield make(f"yamllint: {m.group('msg')}", m.group("f"), int(m.group("l")))
    if res.returncode not in (0, 1, 2):
        yield error(f"yamllint failed to run: {res.output[:300]}")


@check("shellcheck", "shellcheck infra/bootstrap.sh")
def shellcheck(ctx: Context) -> Iterator[Finding]:
    tool = require_tool("shellcheck")
    script = proj.BOOTSTRAP_SCRIPT.as_posix()
    if not ctx.exists(script):
        yield error("file is missing", script)
        return
    res = run_tool([tool, "-f", "gcc", script], cwd=ctx.root)
    for ln in _tool_lines(res.stdout):
        m = re.match(r"(?P<f>[^:]+):(?P<l>\d+):\d+: (?P<lvl>\w+): (?P<msg>.*)", ln)
        if m:
            # shellcheck fails on any finding, notes included; so do we.
            yield error(f"shellcheck {m.group('lvl')}: {m.group('msg')}", m.group("f"), int(m.group("l")))


# =============================================================================================
# Cross-file rules
# =============================================================================================


@check("compose-env", "every variable compose uses is documented in .env.example")
def compose_env(ctx: Context) -> Iterator[Finding]:
    text = ctx.read_text(COMPOSE)
    documented = ctx.env_example
    for i, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        code = line.split(" #", 1)[0]
        for var in sorted(variables_in(code)):
            if var not in documented:
                yield error(f"${{{var}}} is used here but not listed in {proj.ENV_EXAMPLE_FILE}", COMPOSE, i)
    # The OBS_* names the SDK, the embedded stack and CI read (amtp_obs.env) are the ones compose uses.
    known = {v for k, v in vars(env).items() if k.startswith("OBS_") and isinstance(v, str)}
    used = variables_in(text)
    for var in sorted(known - used):
        yield error(f"amtp_obs.env defines {var}, but {COMPOSE} never uses it (renamed or dropped?)", COMPOSE)
    for var in sorted(v for v in used - known if v.startswith("OBS_")):
        yield error(
            f"{var} is not defined in amtp_obs.env: the SDK and embedded stack cannot find it",
            COMPOSE,
            _line_in(ctx, COMPOSE, var),
        )


@check("changeme", "CHANGEME placeholders left in the deployment values")
def changeme(ctx: Context) -> Iterator[Finding]:
    rel = ctx.deployment_env_file
    if not ctx.exists(rel):
        yield error("file is missing", rel)
        return
    for i, line in enumerate(ctx.read_text(rel).splitlines(), 1):
        if line.lstrip().startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if "CHANGEME" in value:
            msg = f"{key.strip()} is still a CHANGEME placeholder: set a real value before deploying"
            yield error(msg, rel, i) if ctx.strict else warning(msg, rel, i)


def _listen_port(value: Any) -> int | None:
    return series.endpoint_port(value)


# Listen ports the binaries use when their config does not say (externally specified defaults).
OTLP_DEFAULT_PORTS = {"grpc": 4317, "http": 4318}
COLLECTOR_EXTENSION_DEFAULT_PORTS = {"health_check": 13133, "pprof": 1777, "zpages": 55679}
COLLECTOR_TELEMETRY_DEFAULT = ":8888"
TEMPO_DEFAULT_HTTP_PORT = 80
TEMPO_DEFAULT_GRPC_PORT = 9095
GRAFANA_DEFAULT_PORT = 3000
GRAFANA_PORT_VARIABLE = "GF_SERVER_HTTP_PORT"


def _protocol_ports(receivers: Mapping[str, Any]) -> Iterator[int | None]:
    for name, rcfg in receivers.items():
        if str(name).split("/")[0] != "otlp":
            continue
        for proto, pcfg in ((rcfg or {}).get("protocols") or {}).items():
            endpoint = (pcfg or {}).get("endpoint")
            yield _listen_port(endpoint) if endpoint else OTLP_DEFAULT_PORTS.get(str(proto))


def _service_ports(ctx: Context) -> dict[str, set[int]]:
    """Container ports each service listens on, per its own config (not compose)."""
    col = ctx.mapping(COLLECTOR)
    out: dict[str, set[int]] = {s: set() for s in proj.SERVICES}

    def add(svc: str, port: int | None) -> None:
        if port:
            out.setdefault(svc, set()).add(port)

    for port in _protocol_ports(col.get("receivers") or {}):
        add(proj.SERVICE_COLLECTOR, port)
    for name, ecfg in (col.get("extensions") or {}).items():
        endpoint = (ecfg or {}).get("endpoint")
        kind = str(name).split("/")[0]
        add(
            proj.SERVICE_COLLECTOR,
            _listen_port(endpoint) if endpoint else COLLECTOR_EXTENSION_DEFAULT_PORTS.get(kind),
        )
    for name, ecfg in (col.get("exporters") or {}).items():
        if str(name).split("/")[0] == "prometheus":
            add(proj.SERVICE_COLLECTOR, _listen_port((ecfg or {}).get("endpoint")))
    tel = ((col.get("service") or {}).get("telemetry") or {}).get("metrics") or {}
    add(proj.SERVICE_COLLECTOR, _listen_port(tel.get("address", COLLECTOR_TELEMETRY_DEFAULT)))
    tempo = ctx.mapping(TEMPO)
    server = tempo.get("server") or {}
    add(proj.SERVICE_TEMPO, int(server.get("http_listen_port", TEMPO_DEFAULT_HTTP_PORT)))
    add(proj.SERVICE_TEMPO, int(server.get("grpc_listen_port", TEMPO_DEFAULT_GRPC_PORT)))
    for port in _protocol_ports((tempo.get("distributor") or {}).get("receivers") or {}):
        add(proj.SERVICE_TEMPO, port)
    add(proj.SERVICE_PROMETHEUS, series.prometheus_listen_port(ctx.compose))
    graf_env = (ctx.compose["services"].get(proj.SERVICE_GRAFANA) or {}).get("environment") or {}
    graf_port = graf_env.get(GRAFANA_PORT_VARIABLE) if isinstance(graf_env, dict) else None
    add(proj.SERVICE_GRAFANA, int(graf_port) if str(graf_port or "").isdigit() else GRAFANA_DEFAULT_PORT)
    return out


@check("ports", "ports agree between compose and the service configs")
def ports(ctx: Context) -> Iterator[Finding]:
    listening = _service_ports(ctx)
    project = proj.Project(ctx.root, environ=dict(ctx.env_example))
    for svc in proj.SERVICES:
        if svc not in ctx.compose["services"]:
            yield error(f"service {svc!r} is missing", COMPOSE, 1)
            continue
        try:
            mappings = project.ports(svc)
        except ProjectError as exc:
            yield error(str(exc), COMPOSE, _line_in(ctx, COMPOSE, f"{svc}:"))
            continue
        for pm in mappings:
            if pm.container_port not in listening.get(svc, set()):
                yield error(
                    f"{svc} publishes container port {pm.container_port} ({pm.raw}) but its config "
                    "listens on "
                    f"{sorted(listening.get(svc, set()))}",
                    COMPOSE,
                    _line_in(ctx, COMPOSE, pm.raw),
                )
    # Collector endpoints that must be reachable from outside the container bind 0.0.0.0.
    col = ctx.yaml(COLLECTOR)
    for kind in ("extensions", "receivers"):
        for name, cfg in ((col.data or {}).get(kind) or {}).items():
            endpoints = [(cfg or {}).get("endpoint")] + [
                (p or {}).get("endpoint") for p in ((cfg or {}).get("protocols") or {}).values()
            ]
            for ep in endpoints:
                if isinstance(ep, str) and ep.split(":")[0] in ("localhost", "127.0.0.1"):
                    yield error(
                        f"{kind}.{name} listens on {ep}: unreachable through the Docker port mapping; use 0.0.0.0",
                        COLLECTOR,
                        col.find_line(ep),
                    )
    # Scrape targets: service:port listening per its config.
    prom = ctx.yaml(PROM)
    for t in series.scrape_targets(prom.data or {}):
        if t.host not in listening:
            yield error(
                f"job {t.job} scrapes {t.address}: no compose service named {t.host!r}",
                PROM,
                prom.find_line(t.address),
            )
        elif t.port not in listening[t.host]:
            yield error(
                f"job {t.job} scrapes {t.address}, but {t.host} listens on {sorted(listening[t.host])} per its config",
                PROM,
                prom.find_line(t.address),
            )
    # URLs in other configs.
    tempo = ctx.yaml(TEMPO)
    rws = ((((tempo.data or {}).get("metrics_generator") or {}).get("storage") or {}).get("remote_write")) or []
    for rw in rws:
        yield from _url_target(
            str((rw or {}).get("url", "")), listening, TEMPO, tempo.find_line(str((rw or {}).get("url")))
        )
    colt = ctx.mapping(COLLECTOR)
    for name, cfg in (colt.get("exporters") or {}).items():
        if str(name).split("/")[0] in ("otlp", "otlphttp") and isinstance((cfg or {}).get("endpoint"), str):
            ep = cfg["endpoint"]
            url = ep if "://" in ep else f"grpc://{ep}"
            yield from _url_target(url, listening, COLLECTOR, col.find_line(ep))
    for uid, (_, rel, line) in datasources(ctx).items():
        doc = ctx.yaml(rel)
        for ds in (doc.data or {}).get("datasources") or []:
            if ds.get("uid") == uid and ds.get("url"):
                yield from _url_target(str(ds["url"]), listening, rel, doc.find_line(str(ds["url"])) or line)


def _url_target(url: str, listening: Mapping[str, set[int]], file: str, line: int | None) -> Iterator[Finding]:
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port
    if host is None:
        yield error(f"{url!r} is not a URL with a host", file, line)
        return
    if host not in listening:
        yield error(f"{url} points at {host!r}, which is not a compose service", file, line)
    elif port is not None and port not in listening[host]:
        yield error(f"{url} points at {host}:{port}, but {host} listens on {sorted(listening[host])}", file, line)


@check("datasource-uids", "datasource UIDs used by panels, variables and alert queries exist")
def datasource_uids(ctx: Context) -> Iterator[Finding]:
    known = set(datasources(ctx)) | set(GRAFANA_BUILTIN_UIDS)
    for rel, doc in dashboards(ctx):
        for where, uid in promql.datasource_refs(doc):
            if uid not in known and not uid.startswith("$"):
                yield error(
                    f"{where} uses datasource uid {uid!r}, which is not provisioned "
                    f"(known: {', '.join(sorted(datasources(ctx)))})",
                    rel,
                    _line_in(ctx, rel, f'"uid": "{uid}"'),
                )
    if ctx.exists(ALERTING):
        doc = ctx.yaml(ALERTING)
        for gi, group in enumerate((doc.data or {}).get("groups") or []):
            for ri, rule in enumerate(group.get("rules") or []):
                for qi, q in enumerate(rule.get("data") or []):
                    uid = str(q.get("datasourceUid"))
                    if uid not in known:
                        yield error(
                            f"rule {rule.get('uid')!r} query {q.get('refId')} uses datasource uid {uid!r}, "
                            "which is not provisioned",
                            ALERTING,
                            doc.line("groups", gi, "rules", ri, "data", qi, "datasourceUid"),
                        )
    for rel in sorted({rel for _, rel, _ in datasources(ctx).values()}):
        doc = ctx.yaml(rel)
        for ref in re.findall(r'"datasourceUid": "([^"]+)"', json.dumps(doc.data)):
            if ref not in known:
                yield error(
                    f"a datasource links to datasource uid {ref!r}, which is not provisioned",
                    rel,
                    doc.find_line(ref),
                )


from amtp_obs.check import (  # noqa: E402  (registers these modules' checks after the ones above)
    accounting,  # noqa: F401  accounting rules
    facts,  # noqa: F401  config facts
    pricing_catalog,
)
