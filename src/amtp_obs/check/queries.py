"""Dashboards against the pipeline: every metric and label they query exists, the contract's names are
what is stored, every query parses and returns data on pipeline-named series, datasource UIDs resolve.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import yaml

from amtp_obs import contract
from amtp_obs.check import pricing_catalog, promql, series
from amtp_obs.check.framework import Context, Finding, check, error, require_tool, run_tool
from amtp_obs.check.shared import (
    ALERTING,
    COLLECTOR,
    GRAFANA_BUILTIN_UIDS,
    PROM,
    PROMTOOL,
    dashboards,
    datasources,
    line_in,
    model,
    prom_queries,
    promtool_failure,
    rule_files,
    selector_findings,
)


@check("dashboard-metrics", "every metric and label a dashboard queries exists in the pipeline")
def dashboard_metrics(ctx: Context) -> Iterator[Finding]:
    queries, problems = prom_queries(ctx)
    yield from problems
    m = model(ctx)
    for q in queries:
        line = line_in(ctx, q.file, q.line_hint)
        for sel in q.selectors:
            yield from selector_findings(m, sel, q.where, q.file, line)
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
        yield error(message, file, line_in(ctx, file, needle))


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
                line = line_in(ctx, rel, f"record: {rule['record']}")
                try:
                    selectors = promql.parse_selectors(str(rule.get("expr", "")))
                except promql.QueryError as exc:
                    yield error(f"{where}: {exc}", rel, line)
                    continue
                for sel in selectors:
                    yield from selector_findings(m, sel, where, rel, line)


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
            line_in(ctx, PROM, "metric_relabel_configs"),
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
        line = line_in(ctx, q.file, q.line_hint)
        rules = work / f"q{i}.rules.yml"
        rules.write_text(
            yaml.safe_dump({"groups": [{"name": f"q{i}", "rules": [{"record": f"check:q{i}", "expr": q.expr}]}]})
        )
        res = run_tool([tool, "check", "rules", rules.name], cwd=work)
        if res.returncode != 0:
            yield error(
                f"{q.where}: promtool check rules rejects the query: {promtool_failure(res.output)}",
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
                yield error(f"{q.where}: promtool test rules failed: {promtool_failure(res.output)}", q.file, line)


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
                    line_in(ctx, rel, f'"uid": "{uid}"'),
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
