"""Running a dashboard: resolve its template variables, then each panel's queries, against real backends.

Everything a panel shows is computed here as plain data (:class:`PanelResult`), so the HTML page,
the JSON API and the tests all see the same numbers. A panel's failure is caught and kept in
its result; it never affects the other panels.
"""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import yaml

from amtp_obs.alerting.runtime import labels_match, muted_by
from amtp_obs.dashboard.backends import AlertmanagerClient, BackendError, PrometheusClient, TempoClient
from amtp_obs.dashboard.model import Dashboard
from amtp_obs.dashboard.units import format_value
from amtp_obs.grafana import panels, templating
from amtp_obs.grafana.datasources import Datasource
from amtp_obs.grafana.timerange import TimeRange, TimeRangeError

PANEL_TIMEOUT = 15.0
DEFAULT_TRACE_LIMIT = 20
STAT_TYPES = frozenset({"stat", "gauge", "bargauge", "singlestat"})
SERIES_TYPES = frozenset({"timeseries", "graph", "barchart", "trend"})
ALERT_LIST = "alertlist"
ALERT_LIST_COLUMNS = ["Alert", "State", "Since", "Labels", "Summary"]
ALERT_LIST_MAX_ITEMS = 20
"""Grafana 10.4's alert list default ``maxItems``."""
_GRAFANA_MATCHER = re.compile(r'\b([\w.-]+)(=~|!=|!~|=(?="?\w))"?([^"\n,]*)"?')
"""Grafana's ``parseMatchers`` (alerting/unified/utils/alertmanager.ts): ``{a="x", b=~"y.*"}`` or ``a=x, b!=y``."""
_SORT_STATE = {"firing": 0, "pending": 1}


def parse_label_filter(text: str) -> list[tuple[str, str, str]]:
    """The alert list panel's ``alertInstanceLabelFilter`` as (label, op, value) matchers."""
    return [(m.group(1), m.group(2), m.group(3)) for m in _GRAFANA_MATCHER.finditer(text)]


class PanelError(Exception):
    """Why a panel could not be drawn, in words for the user."""


@dataclass
class VariableState:
    name: str
    label: str
    type: str
    hide: int
    options: list[str]
    selection: templating.Selection
    include_all: bool
    multi: bool
    error: str | None = None


@dataclass
class StatValue:
    name: str
    value: float | None
    text: str
    color: str | None = None


@dataclass
class Series:
    name: str
    points: list[tuple[float, float]]


@dataclass
class Table:
    columns: list[str]
    rows: list[list[Any]]
    links: list[str | None] = field(default_factory=list)
    """Per row: where the row's first cell links to (the trace view for trace results)."""


@dataclass
class PanelResult:
    id: Any
    type: str
    title: str
    grid: Mapping[str, int]
    unit: str | None = None
    decimals: int | None = None
    stats: list[StatValue] = field(default_factory=list)
    series: list[Series] = field(default_factory=list)
    table: Table | None = None
    text: str | None = None
    queries: list[str] = field(default_factory=list)
    error: str | None = None
    notices: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "title": self.title,
            "gridPos": dict(self.grid),
            "unit": self.unit,
            "stats": [s.__dict__ for s in self.stats],
            "series": [{"name": s.name, "points": s.points} for s in self.series],
            "table": None if self.table is None else self.table.__dict__,
            "text": self.text,
            "queries": self.queries,
            "error": self.error,
            "notices": self.notices,
        }


@dataclass
class AlertRow:
    source: str
    name: str
    state: str
    labels: dict[str, str]
    since: str | None
    detail: str


@dataclass
class AlertsView:
    rows: list[AlertRow]
    errors: list[str]
    notes: list[str] = field(default_factory=list)


# Grafana's named palette colours used by threshold steps.
_COLORS = {
    "green": "#73BF69",
    "red": "#F2495C",
    "yellow": "#FADE2A",
    "orange": "#FF9830",
    "blue": "#5794F2",
    "purple": "#B877D9",
    "text": "#d8d9da",
    "dark-red": "#C4162A",
    "semi-dark-red": "#E02F44",
    "dark-green": "#37872D",
    "semi-dark-green": "#56A64B",
    "super-light-green": "#C8F2C2",
}


def color_of(name: str | None) -> str | None:
    if not name:
        return None
    return _COLORS.get(name, name if re.fullmatch(r"#[0-9a-fA-F]{3,8}|rgba?\([^)]*\)", name) else None)


def _threshold_color(value: float | None, field_config: Mapping[str, Any]) -> str | None:
    steps = ((field_config.get("thresholds") or {}).get("steps")) or []
    chosen = None
    for step in steps:
        limit = step.get("value")
        if limit is None or (value is not None and value >= float(limit)):
            chosen = step.get("color")
    return color_of(chosen)


def reduce_values(values: Sequence[float | None], calc: str) -> float | None:
    """Grafana's standard reducers (``reduceOptions.calcs``) over one series."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    if calc == "last":
        return values[-1] if values else None
    if calc == "first":
        return values[0] if values else None
    if calc == "count":
        return float(len(values))
    if not present:
        return None
    match calc:
        case "lastNotNull" | "":
            return present[-1]
        case "firstNotNull":
            return present[0]
        case "mean":
            return sum(present) / len(present)
        case "max":
            return max(present)
        case "min":
            return min(present)
        case "sum":
            return sum(present)
        case "range":
            return max(present) - min(present)
        case "delta":
            return present[-1] - present[0]
        case "diff":
            return present[-1] - present[0]
        case "median":
            s = sorted(present)
            mid = len(s) // 2
            return s[mid] if len(s) % 2 else (s[mid - 1] + s[mid]) / 2
    raise PanelError(f"unsupported reducer {calc!r}")


def _series_name(metric: Mapping[str, str], legend: str | None, expr: str) -> str:
    if legend and legend != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), legend)
    labels = {k: v for k, v in metric.items() if k != "__name__"}
    name = metric.get("__name__", "")
    if not labels:
        return name or expr
    return name + "{" + ", ".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"


def _float(raw: Any) -> float | None:
    try:
        return float(raw)
    except (TypeError, ValueError):
        return None


def _fallback_trace_query(target: Mapping[str, Any]) -> str:
    """``traceqlSearch`` targets keep filters instead of text; build the TraceQL they stand for."""
    parts: list[str] = []
    for flt in target.get("filters") or []:
        tag, op, value = flt.get("tag"), flt.get("operator") or "=", flt.get("value")
        if not tag or value in (None, "", []):
            continue
        scope = flt.get("scope") or "unscoped"
        ident = tag if scope == "intrinsic" else (f".{tag}" if scope == "unscoped" else f"{scope}.{tag}")
        values = value if isinstance(value, list) else [value]
        if flt.get("valueType") in ("string", None):
            joined = "|".join(str(v) for v in values)
            literal = '"' + joined.replace('"', '\\"') + '"'
            if len(values) > 1 and op == "=":
                op = "=~"
        else:
            literal = str(values[0])
        parts.append(f"{ident} {op} {literal}")
    return "{" + (" " + " && ".join(parts) + " " if parts else "") + "}"


class Engine:
    """Binds the provisioned datasources to live backend clients and evaluates dashboards."""

    def __init__(
        self,
        datasources: list[Datasource],
        client: httpx.AsyncClient,
        *,
        url_overrides: Mapping[str, str] | None = None,
        alertmanager_url: str | None = None,
    ) -> None:
        self.datasources = datasources
        self.client = client
        self.url_overrides = dict(url_overrides or {})
        self.alertmanager = AlertmanagerClient(alertmanager_url, client) if alertmanager_url else None

    # -- datasources ---------------------------------------------------------------------------

    def datasource(self, ref: Any, *, want_type: str | None = None) -> Datasource:
        """Resolve a panel/target datasource reference ({type, uid}, a name, or nothing = default)."""
        uid = name = None
        dtype = want_type
        if isinstance(ref, Mapping):
            uid, dtype = ref.get("uid"), ref.get("type") or want_type
        elif isinstance(ref, str):
            name = ref
        if isinstance(uid, str) and uid.startswith("$"):
            uid = None
        for ds in self.datasources:
            if (uid and ds.uid == uid) or (name and name in (ds.name, ds.uid)):
                return ds
        if uid or name:
            raise PanelError(f"datasource {uid or name!r} is not provisioned")
        candidates = [ds for ds in self.datasources if dtype is None or ds.type == dtype]
        for ds in candidates:
            if ds.is_default:
                return ds
        if candidates and dtype is not None:
            return candidates[0]
        if dtype and dtype in self.url_overrides:
            return Datasource(dtype, dtype, dtype, self.url_overrides[dtype], json_data={})
        raise PanelError("no default datasource is provisioned")

    def url_of(self, ds: Datasource) -> str:
        url = self.url_overrides.get(ds.uid) or self.url_overrides.get(ds.type) or ds.url
        if not url:
            raise PanelError(f"datasource {ds.uid!r} has no URL")
        return url

    def prometheus(self, ds: Datasource) -> PrometheusClient:
        return PrometheusClient(self.url_of(ds), self.client)

    def tempo(self, ds: Datasource) -> TempoClient:
        return TempoClient(self.url_of(ds), self.client)

    def default_tempo(self) -> TempoClient:
        return self.tempo(self.datasource(None, want_type="tempo"))

    def default_prometheus(self) -> PrometheusClient:
        return self.prometheus(self.datasource(None, want_type="prometheus"))

    # -- variables -----------------------------------------------------------------------------

    async def resolve_variables(
        self, dashboard: Dashboard, requested: Mapping[str, list[str]], time_range: TimeRange
    ) -> list[VariableState]:
        """Each variable in order (later ones may use earlier ones), with the URL's or default choice."""
        states: list[VariableState] = []
        scope: dict[str, templating.Selection | str] = {}
        for var in (dashboard.doc.get("templating") or {}).get("list") or []:
            if not isinstance(var, Mapping) or not var.get("name"):
                continue
            name = str(var["name"])
            vtype = str(var.get("type") or "query")
            include_all, multi = bool(var.get("includeAll")), bool(var.get("multi"))
            options: list[str] = []
            error = None
            try:
                options = await self._options(var, vtype, scope, time_range)
            except (PanelError, BackendError, templating.VariableQueryError) as exc:
                error = str(exc)
            selection = templating.select(var, options, requested.get(name))
            scope[name] = selection
            states.append(
                VariableState(
                    name=name,
                    label=str(var.get("label") or name),
                    type=vtype,
                    hide=int(var.get("hide") or 0),
                    options=options,
                    selection=selection,
                    include_all=include_all,
                    multi=multi,
                    error=error,
                )
            )
        return states

    async def _options(
        self, var: Mapping[str, Any], vtype: str, scope: Mapping[str, Any], time_range: TimeRange
    ) -> list[str]:
        if vtype in ("custom", "interval", "constant", "textbox"):
            return templating.static_options(var)
        if vtype == "datasource":
            return [ds.name for ds in self.datasources if ds.type == var.get("query")]
        if vtype != "query":
            raise PanelError(f"variable type {vtype!r} is not supported by the embedded dashboard")
        ds = self.datasource(var.get("datasource"), want_type="prometheus")
        if ds.type != "prometheus":
            raise PanelError(f"query variables on {ds.type} datasources are not supported here (use Prometheus)")
        text = templating.interpolate(templating.variable_query_text(var), scope)
        query = templating.parse_variable_query(text)
        prom = self.prometheus(ds)
        if query.kind == "label_values":
            assert query.label is not None
            values = await prom.label_values(query.label, query.selector, time_range.start, time_range.end)
        elif query.kind == "label_names":
            values = await prom.label_names(query.selector, time_range.start, time_range.end)
        elif query.kind == "metrics":
            names = await prom.label_values("__name__", None, time_range.start, time_range.end)
            try:
                rx = re.compile(query.regex or ".*")
            except re.error as exc:
                raise templating.VariableQueryError(f"invalid metrics() regex: {exc}") from None
            values = [n for n in names if rx.search(n)]
        else:
            data = await prom.instant(query.expr or "", time_range.end)
            values = []
            for item in data.get("result") or []:
                metric = item.get("metric") or {}
                label = metric.get("__name__", "") + (
                    "{" + ",".join(f'{k}="{v}"' for k, v in metric.items() if k != "__name__") + "}"
                )
                values.append(f"{label} {item.get('value', [0, ''])[1]} {int(float(item.get('value', [0])[0]) * 1000)}")
        values = templating.apply_regex(values, var.get("regex"))
        return templating.sort_values(values, var.get("sort"))

    # -- panels --------------------------------------------------------------------------------

    async def run_panels(
        self, dashboard: Dashboard, variables: list[VariableState], time_range: TimeRange
    ) -> list[PanelResult]:
        scope = {v.name: v.selection for v in variables}
        items = panels.iter_panels(dashboard.doc)
        return list(await asyncio.gather(*(self.run_panel(p, scope, time_range) for p in items)))

    async def run_panel(
        self, panel: Mapping[str, Any], scope: Mapping[str, templating.Selection], time_range: TimeRange
    ) -> PanelResult:
        defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
        decimals = defaults.get("decimals")
        result = PanelResult(
            id=panel.get("id"),
            type=str(panel.get("type") or "unknown"),
            title=templating.interpolate(str(panel.get("title") or ""), scope),
            grid=dict(panel.get("gridPos") or {"h": 8, "w": 12, "x": 0, "y": 0}),
            unit=defaults.get("unit"),
            decimals=int(decimals) if isinstance(decimals, int | float) else None,
        )
        if panel.get("repeat"):
            result.notices.append(f"repeating by ${panel['repeat']} is not supported here: shown once")
        try:
            await asyncio.wait_for(self._fill(panel, result, scope, time_range), PANEL_TIMEOUT)
        except (PanelError, BackendError, TimeRangeError, templating.VariableQueryError) as exc:
            result.error = str(exc)
        except TimeoutError:
            result.error = f"query timed out after {PANEL_TIMEOUT:g} s"
        except Exception as exc:
            result.error = f"internal error while running this panel: {exc!r}"
        return result

    async def _fill(
        self,
        panel: Mapping[str, Any],
        result: PanelResult,
        scope: Mapping[str, templating.Selection],
        time_range: TimeRange,
    ) -> None:
        ptype = result.type
        if ptype == "row":
            return
        if ptype == "text":
            options = panel.get("options") or {}
            result.text = templating.interpolate(str(options.get("content") or panel.get("content") or ""), scope)
            return
        if ptype == ALERT_LIST:
            await self._alert_list(panel, result, scope)
            return
        if ptype not in STAT_TYPES | SERIES_TYPES | {"table"}:
            raise PanelError(f"panel type {ptype!r} is not supported by the embedded dashboard")
        targets = panels.visible_targets(panel)
        if not targets:
            raise PanelError("this panel has no queries")
        panel_ds = self.datasource(panel.get("datasource")) if panel.get("datasource") else None
        for target in targets:
            ref = target.get("datasource")
            if isinstance(ref, Mapping) and ref.get("uid") in panels.PSEUDO_DATASOURCES:
                ref = None
            ds = self.datasource(ref) if ref else (panel_ds or self.datasource(None))
            if ds.type == "prometheus":
                await self._prometheus_target(panel, target, ds, result, scope, time_range)
            elif ds.type == "tempo":
                await self._tempo_target(target, ds, result, scope, time_range)
            else:
                raise PanelError(f"datasource type {ds.type!r} is not supported by the embedded dashboard")

    async def _prometheus_target(
        self,
        panel: Mapping[str, Any],
        target: Mapping[str, Any],
        ds: Datasource,
        result: PanelResult,
        scope: Mapping[str, templating.Selection],
        time_range: TimeRange,
    ) -> None:
        raw = str(target.get("expr") or "").strip()
        if not raw:
            raise PanelError(f"query {target.get('refId', '?')} has no expression")
        expr, iv = panels.prometheus_query(panel, target, time_range, scope, ds.scrape_interval, text=raw)
        result.queries.append(expr)
        prom = self.prometheus(ds)
        legend = target.get("legendFormat")
        instant = bool(target.get("instant")) and not target.get("range")
        if result.type in SERIES_TYPES and not instant:
            data = await self._range(prom, expr, time_range, iv.step)
            for item in data.get("result") or []:
                points = [(float(t), v) for t, raw_v in item.get("values") or [] if (v := _float(raw_v)) is not None]
                result.series.append(Series(_series_name(item.get("metric") or {}, legend, expr), points))
            return
        calcs = ((panel.get("options") or {}).get("reduceOptions") or {}).get("calcs") or ["lastNotNull"]
        calc = str(calcs[0])
        if instant or result.type == "table":
            data = await prom.instant(expr, time_range.end)
            if data.get("resultType") == "scalar":
                rows = [({}, _float(data["result"][1]))]
            else:
                rows = [
                    (item.get("metric") or {}, _float((item.get("value") or [0, None])[1]))
                    for item in data.get("result") or []
                ]
        else:
            data = await self._range(prom, expr, time_range, iv.step)
            rows = [
                (
                    item.get("metric") or {},
                    reduce_values([_float(v) for _, v in item.get("values") or []], calc),
                )
                for item in data.get("result") or []
            ]
        if result.type == "table":
            labels = sorted({k for metric, _ in rows for k in metric})
            if result.table is None:
                result.table = Table(columns=[*labels, "Value"], rows=[])
            for metric, value in rows:
                result.table.rows.append(
                    [*(metric.get(k, "") for k in labels), format_value(value, result.unit, result.decimals)]
                )
            return
        defaults = (panel.get("fieldConfig") or {}).get("defaults") or {}
        if not rows:
            result.stats.append(StatValue(_series_name({}, legend, expr), None, "No data"))
        for metric, value in rows:
            result.stats.append(
                StatValue(
                    _series_name(metric, legend, expr),
                    value,
                    format_value(value, result.unit, result.decimals),
                    _threshold_color(value, defaults),
                )
            )

    @staticmethod
    async def _range(prom: PrometheusClient, expr: str, time_range: TimeRange, step: float) -> dict[str, Any]:
        start = math.floor(time_range.start.timestamp() / step) * step
        end = math.floor(time_range.end.timestamp() / step) * step
        return await prom.range(expr, start, max(end, start + step), step)

    async def _tempo_target(
        self,
        target: Mapping[str, Any],
        ds: Datasource,
        result: PanelResult,
        scope: Mapping[str, templating.Selection],
        time_range: TimeRange,
    ) -> None:
        qtype = str(target.get("queryType") or "traceql")
        if qtype == "traceqlSearch":
            raw = _fallback_trace_query(target)
        elif qtype == "traceql":
            raw = str(target.get("query") or "").strip()
        else:
            raise PanelError(f"Tempo query type {qtype!r} is not supported here; use traceql or traceqlSearch")
        query = templating.interpolate(raw, scope)
        if re.fullmatch(r"[0-9a-fA-F]{1,32}", query):
            result.table = Table(["Trace ID"], [[query]], [f"/trace/{query}"])
            return
        result.queries.append(query)
        limit = int(target.get("limit") or DEFAULT_TRACE_LIMIT)
        body = await self.tempo(ds).search(query, limit, time_range.start, time_range.end, target.get("spss"))
        table = Table(["Trace ID", "Start time", "Service", "Name", "Duration"], [], [])
        for trace in body.get("traces") or []:
            trace_id = str(trace.get("traceID") or "").rjust(32, "0")
            start_ns = int(trace.get("startTimeUnixNano") or 0)
            started = datetime.fromtimestamp(start_ns / 1e9, UTC).strftime("%Y-%m-%d %H:%M:%S") if start_ns else ""
            duration = trace.get("durationMs")
            table.rows.append(
                [
                    trace_id,
                    started,
                    str(trace.get("rootServiceName") or "<root span not yet received>"),
                    str(trace.get("rootTraceName") or ""),
                    format_value(float(duration), "ms") if duration is not None else "<1 ms",
                ]
            )
            table.links.append(f"/trace/{trace_id}")
        result.table = table

    # -- alerts --------------------------------------------------------------------------------

    async def _alert_list(
        self, panel: Mapping[str, Any], result: PanelResult, scope: Mapping[str, templating.Selection]
    ) -> None:
        """Grafana's alert list panel (unified alerting): the alert instances the rules hold, here
        Prometheus' pending and firing alerts, filtered and sorted by the panel's options."""
        opts = panel.get("options") or {}
        label_filter = templating.interpolate(str(opts.get("alertInstanceLabelFilter") or ""), scope)
        matchers = parse_label_filter(label_filter)
        name_filter = str(opts.get("alertName") or "").lower()
        states = {s for s in _SORT_STATE if (opts.get("stateFilter") or {}).get(s)} or set(_SORT_STATE)
        result.queries.append(
            "alerts"
            + (f" {label_filter}" if label_filter else "")
            + f" in state {', '.join(sorted(states))}"
            + (f" named like {name_filter!r}" if name_filter else "")
        )
        rows = []
        for a in await self.default_prometheus().alerts():
            labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
            name, state = labels.get("alertname", "?"), str(a.get("state"))
            if state not in states or name_filter not in name.lower() or not labels_match(matchers, labels):
                continue
            rows.append((name, state, str(a.get("activeAt") or ""), labels, a))
        order = int(opts.get("sortOrder") or 1)
        if order in (4, 5):  # time ascending / descending
            rows.sort(key=lambda r: r[2], reverse=order == 5)
        elif order == 3:  # importance: firing before pending, then by name
            rows.sort(key=lambda r: (_SORT_STATE.get(r[1], 9), r[0]))
        else:
            rows.sort(key=lambda r: r[0], reverse=order == 2)
        limit = int(opts.get("maxItems") or ALERT_LIST_MAX_ITEMS)
        result.table = Table(
            list(ALERT_LIST_COLUMNS),
            [
                [
                    name,
                    state,
                    since,
                    ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k != "alertname"),
                    str((a.get("annotations") or {}).get("summary") or ""),
                ]
                for name, state, since, labels, a in rows[:limit]
            ],
        )

    async def _alertmanager_config(self) -> dict[str, Any] | None:
        """The running config, to evaluate mute time intervals (Alertmanager 0.25 does not report them)."""
        assert self.alertmanager is not None
        original = ((await self.alertmanager.status()).get("config") or {}).get("original")
        try:
            doc = yaml.safe_load(original) if original else None
        except yaml.YAMLError:
            return None
        return doc if isinstance(doc, dict) else None

    async def alerts(self) -> AlertsView:
        """Rule states from Prometheus and notification states from Alertmanager, side by side."""
        rows: list[AlertRow] = []
        errors: list[str] = []
        notes: list[str] = []

        async def from_prometheus() -> None:
            try:
                prom = self.default_prometheus()
                for a in await prom.alerts():
                    labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
                    rows.append(
                        AlertRow(
                            "Prometheus",
                            labels.get("alertname", "?"),
                            str(a.get("state")),
                            labels,
                            a.get("activeAt"),
                            str((a.get("annotations") or {}).get("summary") or ""),
                        )
                    )
            except (PanelError, BackendError) as exc:
                errors.append(str(exc))

        async def from_alertmanager() -> None:
            if self.alertmanager is None:
                notes.append("no Alertmanager is configured: notification states are not shown")
                return
            try:
                config = await self._alertmanager_config()
                now = datetime.now(UTC)
                for a in await self.alertmanager.alerts():
                    labels = {str(k): str(v) for k, v in (a.get("labels") or {}).items()}
                    status = a.get("status") or {}
                    state = str(status.get("state") or "unknown")
                    why = []
                    if status.get("silencedBy"):
                        why.append("silenced by " + ", ".join(status["silencedBy"]))
                    if status.get("inhibitedBy"):
                        why.append("inhibited by " + ", ".join(status["inhibitedBy"]))
                    muted = list(status.get("mutedBy") or [])
                    if not muted and state == "active" and config:
                        try:
                            muted = muted_by(config, labels, now)
                        except ValueError as exc:
                            why.append(f"mute timings cannot be evaluated: {exc}")
                    if muted:
                        state = "muted"
                        why.append("muted by time interval " + ", ".join(muted))
                    receivers = ", ".join(r.get("name", "") for r in a.get("receivers") or [])
                    if receivers:
                        why.append("receivers: " + receivers)
                    rows.append(
                        AlertRow(
                            "Alertmanager",
                            labels.get("alertname", "?"),
                            state,
                            labels,
                            a.get("startsAt"),
                            "; ".join(why),
                        )
                    )
            except BackendError as exc:
                errors.append(str(exc))

        await asyncio.gather(from_prometheus(), from_alertmanager())
        rows.sort(key=lambda r: (r.source, r.name))
        return AlertsView(rows, errors, notes)
