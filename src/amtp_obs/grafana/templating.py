"""Template variables: Grafana's ``$var`` / ``${var:fmt}`` / ``[[var]]`` syntax, selection and formatting.

Prometheus (and TraceQL regex) queries receive multi-value and "All" selections as regular
expressions, exactly as Grafana 10.4 formats them (public/app/features/templating/template_srv.ts:
All -> ``allValue`` unformatted when set, else every option; the Prometheus datasource's
``interpolateQueryExpr``: one value escaped, several as ``(a|b)``), so a query written for Grafana
selects the same series here, in ``amtp-obs check`` and in ``amtp-obs verify``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

ALL_VALUE = "$__all"
"""Grafana's sentinel for the "All" option (also what URLs carry: ``var-x=$__all``)."""

_REF = re.compile(
    r"\$\{(?P<braced>\w+)(?::(?P<fmt>[^}]+))?\}"
    r"|\[\[(?P<bracket>\w+)(?::(?P<bfmt>\w+))?\]\]"
    r"|\$(?P<plain>\w+)"
)
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.+?)\s*,\s*)?(?P<label>[a-zA-Z_]\w*)\s*\)\s*$", re.S)
_LABEL_NAMES = re.compile(r"^\s*label_names\(\s*(?P<selector>.*?)\s*\)\s*$", re.S)
_METRICS = re.compile(r"^\s*metrics\(\s*(?P<regex>.*?)\s*\)\s*$", re.S)
_QUERY_RESULT = re.compile(r"^\s*query_result\(\s*(?P<expr>.+)\s*\)\s*$", re.S)
_REGEX_SPECIAL = re.compile(r"([\\^$*+?.()|{}\[\]])")


def regex_escape(value: str) -> str:
    """Escape a value for a PromQL regex matcher (Grafana's prometheusSpecialRegexEscape)."""
    return _REGEX_SPECIAL.sub(r"\\\\\1", value)


@dataclass
class Selection:
    """The current value(s) of one variable, plus the facts its formatting depends on."""

    values: list[str]
    is_all: bool = False
    multi: bool = False
    include_all: bool = False
    all_value: str | None = None
    options: list[str] = field(default_factory=list)

    def format(self, fmt: str | None, regex_context: bool = True) -> str:
        if self.is_all and self.all_value is not None and fmt in (None, "regex", "raw"):
            return self.all_value
        values = self.options if self.is_all else self.values
        if fmt == "raw":
            return ",".join(values)
        if fmt == "csv":
            return ",".join(values)
        if fmt == "pipe":
            return "|".join(values)
        if fmt == "json":
            return json.dumps(values if len(values) != 1 else values[0])
        if fmt == "doublequote":
            return ",".join(f'"{v}"' for v in values)
        if fmt == "singlequote":
            return ",".join(f"'{v}'" for v in values)
        if fmt == "glob":
            return values[0] if len(values) == 1 else "{" + ",".join(values) + "}"
        if fmt == "regex" or (regex_context and (self.multi or self.include_all)):
            escaped = [regex_escape(v) for v in values]
            if len(escaped) == 1:
                return escaped[0]
            return "(" + "|".join(escaped) + ")"
        return ",".join(values)


def interpolate(text: str, scope: Mapping[str, Selection | str]) -> str:
    """Replace every variable reference with its formatted value; unknown names stay as written."""

    def repl(m: re.Match[str]) -> str:
        name = m.group("braced") or m.group("bracket") or m.group("plain")
        fmt = m.group("fmt") or m.group("bfmt")
        value = scope.get(name)
        if value is None:
            return m.group(0)
        if isinstance(value, str):
            return value
        return value.format(fmt)

    return _REF.sub(repl, text)


def referenced(text: str) -> set[str]:
    return {m.group("braced") or m.group("bracket") or m.group("plain") for m in _REF.finditer(text)}


@dataclass(frozen=True)
class VariableQuery:
    """A Prometheus variable query, parsed into the HTTP API call that answers it."""

    kind: str  # label_values | label_names | metrics | query_result
    label: str | None = None
    selector: str | None = None
    regex: str | None = None
    expr: str | None = None


class VariableQueryError(ValueError):
    pass


def variable_query_text(variable: Mapping[str, Any]) -> str:
    query = variable.get("query")
    if isinstance(query, Mapping):
        query = query.get("query") or variable.get("definition") or ""
    return str(query or variable.get("definition") or "")


def parse_variable_query(text: str) -> VariableQuery:
    """Grafana's Prometheus variable functions: label_values, label_names, metrics, query_result."""
    if m := _LABEL_VALUES.match(text):
        return VariableQuery("label_values", label=m.group("label"), selector=m.group("selector"))
    if m := _LABEL_NAMES.match(text):
        return VariableQuery("label_names", selector=m.group("selector") or None)
    if m := _METRICS.match(text):
        return VariableQuery("metrics", regex=m.group("regex") or ".*")
    if m := _QUERY_RESULT.match(text):
        return VariableQuery("query_result", expr=m.group("expr"))
    raise VariableQueryError(
        f"unsupported variable query {text!r}: expected label_values(), label_names(), metrics() or query_result()"
    )


def apply_regex(values: list[str], regex: str | None) -> list[str]:
    """A variable's ``regex`` filter (``/pattern/``); a capture group selects the shown value."""
    if not regex:
        return values
    pattern = regex[1:-1] if len(regex) >= 2 and regex.startswith("/") and regex.endswith("/") else regex
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise VariableQueryError(f"invalid variable regex {regex!r}: {exc}") from None
    out: list[str] = []
    for value in values:
        m = compiled.search(value)
        if not m:
            continue
        picked = m.group("value") if "value" in compiled.groupindex else (m.group(1) if compiled.groups else value)
        if picked is not None and picked not in out:
            out.append(picked)
    return out


def sort_values(values: list[str], sort: int | None) -> list[str]:
    """Grafana's variable ``sort``: 1/2 alphabetical, 3/4 numerical, 5/6 case-insensitive."""
    if not sort:
        return values

    def num(v: str) -> float:
        m = re.search(r"-?\d+(?:\.\d+)?", v)
        return float(m.group(0)) if m else float("inf")

    if sort in (1, 2):
        out = sorted(values)
    elif sort in (3, 4):
        out = sorted(values, key=num)
    elif sort in (5, 6):
        out = sorted(values, key=str.lower)
    else:
        return values
    return out if sort % 2 else list(reversed(out))


def select(
    var: Mapping[str, Any],
    options: list[str],
    requested: list[str] | None = None,
) -> Selection:
    """A variable's value: the requested one (URL ``var-x=...``; ``$__all``/``All`` picks All), else
    the dashboard's saved ``current`` when it is still an option, else All when offered, else the
    first option (Grafana's variable initialisation)."""
    vtype = str(var.get("type") or "query")
    include_all, multi = bool(var.get("includeAll")), bool(var.get("multi"))
    base: dict[str, Any] = dict(
        multi=multi, include_all=include_all, all_value=var.get("allValue") or None, options=options
    )
    if vtype == "constant":
        return Selection(values=options[:1], **base)
    if requested:
        if include_all and any(v in (ALL_VALUE, "All") for v in requested):
            return Selection(values=[ALL_VALUE], is_all=True, **base)
        picked = requested if multi else requested[:1]
        return Selection(values=list(picked), **base)
    current = (var.get("current") or {}).get("value")
    current_list = current if isinstance(current, list) else ([current] if current not in (None, "") else [])
    if current_list and include_all and ALL_VALUE in current_list:
        return Selection(values=[ALL_VALUE], is_all=True, **base)
    if current_list and (vtype == "textbox" or all(v in options for v in current_list)):
        return Selection(values=[str(v) for v in current_list], **base)
    if include_all:
        return Selection(values=[ALL_VALUE], is_all=True, **base)
    return Selection(values=options[:1], **base)


def variables(doc: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The dashboard's template variables that have a name, in order."""
    return [v for v in (doc.get("templating") or {}).get("list") or [] if isinstance(v, Mapping) and v.get("name")]


def static_options(var: Mapping[str, Any]) -> list[str]:
    """The options known without asking a datasource: custom/constant values, else the options the
    dashboard JSON saved (what Grafana shows before its first refresh)."""
    vtype = str(var.get("type") or "query")
    if vtype in ("custom", "interval"):
        return [v.strip() for v in re.split(r"(?<!\\),", str(var.get("query") or "")) if v.strip()]
    if vtype in ("constant", "textbox"):
        return [str(var.get("query") or "")]
    return [
        str(o["value"])
        for o in var.get("options") or []
        if isinstance(o, Mapping) and o.get("value") not in (None, ALL_VALUE)
    ]


def offline_scope(doc: Mapping[str, Any], requested: Mapping[str, list[str]] | None = None) -> dict[str, Selection]:
    """Every variable resolved without a datasource: the requested values, else All where offered
    (the dashboard's ``current`` is ignored: a check must not depend on what was saved last)."""
    requested = requested or {}
    scope: dict[str, Selection] = {}
    for var in variables(doc):
        name = str(var["name"])
        options = static_options(var)
        want = requested.get(name) or ([ALL_VALUE] if var.get("includeAll") else None)
        scope[name] = select(var, options, want)
    return scope
