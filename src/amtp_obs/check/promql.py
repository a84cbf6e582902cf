"""Dashboard queries: where they are, how Grafana rewrites them, what they select.

Grafana substitutes macros and template variables before PromQL ever sees a query; the real
parser rejects ``[$__rate_interval]``. We substitute the values a default dashboard load would
use, then parse with ``promql_parser`` (the Rust port of the Prometheus parser) and, later, run the
result through the real ``promtool``.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import promql_parser

MACROS: Mapping[str, str] = {
    "__rate_interval": "1m",
    "__interval": "15s",
    "__range": "3h",
    "__interval_ms": "15000",
    "__range_s": "10800",
    "__range_ms": "10800000",
}
"""Values of Grafana's range macros for the dashboard's default time range (now-3h) and 15 s scrapes."""

ALL_VALUE = ".*"

_VAR = re.compile(r"\$\{(?P<braced>\w+)(?::(?P<fmt>[^}]*))?\}|\$(?P<named>\w+)|\[\[(?P<old>\w+)(?::[^\]]*)?\]\]")
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


@dataclass(frozen=True)
class Selector:
    name: str | None
    matchers: tuple[tuple[str, str, str], ...]
    """(label, op, value) with op one of = != =~ !~."""

    def equalities(self) -> dict[str, str]:
        return {label: value for label, op, value in self.matchers if op == "="}


_OPS = {"MatchOp.Equal": "=", "MatchOp.NotEqual": "!=", "MatchOp.Re": "=~", "MatchOp.NotRe": "!~"}


def substitute(text: str, variables: set[str]) -> str:
    """Replace macros with their values and every dashboard variable with its All value.

    Raises :class:`QueryError` for an unknown macro or a variable the dashboard does not define.
    """

    def repl(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("named") or m.group("old")
        if name.startswith("__"):
            if name in MACROS:
                return MACROS[name]
            raise QueryError(f"unknown Grafana macro ${name}")
        if name in variables:
            return ALL_VALUE
        raise QueryError(f"uses ${name}, but the dashboard defines no variable {name!r}")

    return _VAR.sub(repl, text)


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


def dashboard_queries(doc: Mapping[str, Any], file: str, default_ds: str | None) -> Iterator[Query]:
    """Every PromQL-bearing place of a dashboard: panel targets (rows included) and query variables."""
    for var in (doc.get("templating") or {}).get("list") or []:
        if not isinstance(var, dict) or var.get("type") != "query":
            continue
        q = var.get("query")
        text = q.get("query") if isinstance(q, dict) else q
        if not isinstance(text, str) or not text.strip():
            continue
        yield Query(
            file,
            f"variable ${var.get('name')}",
            text,
            datasource_uid=_ds_uid(var.get("datasource"), default_ds),
            line_hint=f'"name": "{var.get("name")}"',
        )
    for panel in _panels(doc.get("panels") or []):
        pds = _ds_uid(panel.get("datasource"), default_ds)
        for target in panel.get("targets") or []:
            if not isinstance(target, dict):
                continue
            uid = _ds_uid(target.get("datasource"), pds)
            for key in ("expr",):
                if isinstance(target.get(key), str) and target[key].strip():
                    yield Query(
                        file,
                        f'panel "{panel.get("title")}" target {target.get("refId", "?")}',
                        target[key],
                        datasource_uid=uid,
                        line_hint=f'"title": "{panel.get("title")}"',
                    )


def panels(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(_panels(doc.get("panels") or []))


def _panels(items: list[Any]) -> Iterator[dict[str, Any]]:
    for p in items:
        if isinstance(p, dict):
            yield p
            yield from _panels(p.get("panels") or [])


def _ds_uid(ds: Any, default: str | None) -> str | None:
    if isinstance(ds, dict):
        return str(ds["uid"]) if ds.get("uid") is not None else default
    if isinstance(ds, str):
        return ds
    return default


def datasource_refs(doc: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, uid) of every datasource reference in a dashboard (panels, targets, variables)."""
    for var in (doc.get("templating") or {}).get("list") or []:
        if isinstance(var, dict) and isinstance(var.get("datasource"), dict | str):
            uid = _ds_uid(var["datasource"], None)
            if uid:
                yield f"variable ${var.get('name')}", uid
    for panel in _panels(doc.get("panels") or []):
        title = panel.get("title")
        uid = _ds_uid(panel.get("datasource"), None)
        if uid:
            yield f'panel "{title}"', uid
        for target in panel.get("targets") or []:
            if isinstance(target, dict):
                tuid = _ds_uid(target.get("datasource"), None)
                if tuid:
                    yield f'panel "{title}" target {target.get("refId", "?")}', tuid
