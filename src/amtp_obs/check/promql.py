"""Dashboard queries: where they are, how Grafana rewrites them, what they select.

Grafana substitutes macros and template variables before PromQL ever sees a query; the real
parser rejects ``[$__rate_interval]``. We substitute what a default dashboard load sends (the
dashboard's own time range, every variable at All; :mod:`amtp_obs.grafana`, the same code the
embedded dashboard and ``amtp-obs verify`` use), then parse with ``promql_parser`` (the Rust port
of the Prometheus parser) and, later, run the result through the real ``promtool``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import promql_parser

from amtp_obs.grafana import panels, templating
from amtp_obs.grafana.timerange import DEFAULT_TIME_INTERVAL, TimeRange

_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((?P<args>.*)\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\s*\((?P<args>.*)\)\s*$", re.S)


class QueryError(ValueError):
    """A query that cannot be made into PromQL; the message says why."""


@dataclass
class Query:
    """One PromQL query found in a dashboard or alert, with enough context to report it."""

    file: str
    where: str
    """Human location, e.g. ``panel "Total Tokens" target A``."""
    raw: str
    expr: str = ""
    """Substituted PromQL (empty until :func:`substitute` ran)."""
    label: str | None = None
    """For ``label_values(selector, label)``: the label the variable lists."""
    datasource_uid: str | None = None
    line_hint: str = ""
    selectors: list[Selector] = field(default_factory=list)
    context: Substitution | None = None
    """What Grafana substitutes into this query (set by :func:`dashboard_queries`)."""


@dataclass(frozen=True)
class Substitution:
    """A default load of the query's dashboard: its time range, variables at All, the panel's intervals."""

    time_range: TimeRange
    scope: Mapping[str, templating.Selection]
    panel: Mapping[str, Any] = field(default_factory=dict)
    target: Mapping[str, Any] = field(default_factory=dict)
    time_interval: float = DEFAULT_TIME_INTERVAL


@dataclass(frozen=True)
class Selector:
    name: str | None
    matchers: tuple[tuple[str, str, str], ...]
    """(label, op, value) with op one of = != =~ !~."""

    def equalities(self) -> dict[str, str]:
        return {label: value for label, op, value in self.matchers if op == "="}


_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def substitute(text: str, q: Query) -> str:
    """``text`` (the query or a part of it) as Grafana sends it for ``q``'s panel on a default load.

    Raises :class:`QueryError` for an unknown macro or a variable the dashboard does not define.
    """
    ctx = q.context
    if ctx is None:
        raise QueryError("no dashboard context to substitute in (not from dashboard_queries)")
    out, _ = panels.prometheus_query(ctx.panel, ctx.target, ctx.time_range, ctx.scope, ctx.time_interval, text=text)
    for name in sorted(templating.referenced(out)):
        if name.isdigit():
            continue  # $1 in label_replace() replacements is PromQL's, not Grafana's
        if name.startswith("__"):
            raise QueryError(f"unknown Grafana macro ${name}")
        raise QueryError(f"uses ${name}, but the dashboard defines no variable {name!r}")
    return out


def parse_selectors(expr: str) -> list[Selector]:
    """Metric selectors of a PromQL expression; raises :class:`QueryError` on a parse error."""
    try:
        tree = promql_parser.parse(expr)
    except ValueError as exc:
        raise QueryError(f"PromQL does not parse: {exc}") from None
    found: list[Selector] = []

    def visit(node: Any) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            matchers = []
            name = node.name or None
            for m in node.matchers.matchers:
                op = _OPS.get(str(m.op), str(m.op))
                if m.name == "__name__" and op == "=":
                    name = m.value
                    continue
                matchers.append((m.name, op, m.value))
            found.append(Selector(name, tuple(matchers)))

    promql_parser.walk(tree, visit)
    return found


def is_scalar(expr: str) -> bool:
    """True when the expression's value is a scalar (PromQL then needs ``vector()`` to count it)."""
    return _scalar(promql_parser.parse(expr))


def _scalar(node: Any) -> bool:
    if isinstance(node, promql_parser.NumberLiteral):
        return True
    if isinstance(node, promql_parser.ParenExpr | promql_parser.UnaryExpr):
        return _scalar(node.expr)
    if isinstance(node, promql_parser.BinaryExpr):
        return _scalar(node.lhs) and _scalar(node.rhs)
    if isinstance(node, promql_parser.Call):
        return node.func.name in ("scalar", "time", "pi")
    return False


def unwrap_query_result(text: str) -> str:
    """``query_result(expr)`` (a Grafana variable function) -> ``expr``; other text unchanged."""
    m = _QUERY_RESULT.match(text)
    return m.group("args") if m else text


def split_label_values(text: str) -> tuple[str, str | None] | None:
    """``label_values(sel, label)`` -> (sel, label); ``label_values(label)`` -> ("", label)."""
    m = _LABEL_VALUES.match(text)
    if m is None:
        return None
    args = m.group("args")
    depth = 0
    for i in range(len(args) - 1, -1, -1):
        ch = args[i]
        if ch in ")}]":
            depth += 1
        elif ch in "({[":
            depth -= 1
        elif ch == "," and depth == 0:
            return args[:i].strip(), args[i + 1 :].strip()
    return "", args.strip()


def dashboard_queries(
    doc: Mapping[str, Any],
    file: str,
    default_ds: str | None,
    time_intervals: Mapping[str, float] | None = None,
    now: datetime | None = None,
) -> Iterator[Query]:
    """Every PromQL-bearing place of a dashboard: panel targets (rows included) and query variables.

    ``time_intervals`` maps a datasource uid to its ``jsonData.timeInterval`` (seconds).
    """
    time_range = panels.dashboard_time_range(doc, now)
    scope = templating.offline_scope(doc)
    intervals = time_intervals or {}

    def context(uid: str | None, panel: Mapping[str, Any], target: Mapping[str, Any]) -> Substitution:
        interval = intervals.get(uid or "", DEFAULT_TIME_INTERVAL)
        return Substitution(time_range, scope, panel, target, interval)

    for var in templating.variables(doc):
        if var.get("type") != "query":
            continue
        q = var.get("query")
        text = q.get("query") if isinstance(q, dict) else q
        if not isinstance(text, str) or not text.strip():
            continue
        uid = panels.datasource_uid(var.get("datasource"), default_ds)
        yield Query(
            file,
            f"variable ${var.get('name')}",
            text,
            datasource_uid=uid,
            line_hint=f'"name": "{var.get("name")}"',
            context=context(uid, {}, {}),
        )
    for panel in panels.iter_panels(doc):
        pds = panels.datasource_uid(panel.get("datasource"), default_ds)
        for target in panel.get("targets") or []:
            if not isinstance(target, dict):
                continue
            uid = panels.datasource_uid(target.get("datasource"), pds)
            if isinstance(target.get("expr"), str) and target["expr"].strip():
                yield Query(
                    file,
                    f'panel "{panel.get("title")}" target {target.get("refId", "?")}',
                    target["expr"],
                    datasource_uid=uid,
                    line_hint=f'"title": "{panel.get("title")}"',
                    context=context(uid, panel, target),
                )


def datasource_refs(doc: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, uid) of every datasource reference in a dashboard (panels, targets, variables)."""
    for var in (doc.get("templating") or {}).get("list") or []:
        if isinstance(var, dict) and isinstance(var.get("datasource"), dict | str):
            uid = panels.datasource_uid(var["datasource"], None)
            if uid:
                yield f"variable ${var.get('name')}", uid
    for panel in panels.iter_panels(doc):
        title = panel.get("title")
        uid = panels.datasource_uid(panel.get("datasource"), None)
        if uid:
            yield f'panel "{title}"', uid
        for target in panel.get("targets") or []:
            if isinstance(target, dict):
                tuid = panels.datasource_uid(target.get("datasource"), None)
                if tuid:
                    yield f'panel "{title}" target {target.get("refId", "?")}', tuid
