"""Server-side HTML for the dashboard pages: values are in the page as delivered, charts are inline SVG.

Rendering on the server keeps the browser dumb (no chart library, no CDN, nothing to fetch but
our own CSS and a few lines of JS for auto-refresh), and makes every number visible to a plain
HTTP client or a headless browser's DOM.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from html import escape
from typing import Any
from urllib.parse import urlencode

from amtp_obs.dashboard.engine import AlertsView, PanelResult, Series, VariableState
from amtp_obs.dashboard.model import Dashboard
from amtp_obs.dashboard.units import format_value
from amtp_obs.grafana import templating
from amtp_obs.grafana.timerange import TimeRange
from amtp_obs.tracejson import spans_from_tempo_json

PALETTE = ("#73BF69", "#F2CC0C", "#8AB8FF", "#FF780A", "#F2495C", "#5794F2", "#B877D9", "#705DA0", "#37872D")
ROW_PX = 30
QUICK_RANGES = (
    ("now-5m", "Last 5 minutes"),
    ("now-15m", "Last 15 minutes"),
    ("now-30m", "Last 30 minutes"),
    ("now-1h", "Last 1 hour"),
    ("now-3h", "Last 3 hours"),
    ("now-6h", "Last 6 hours"),
    ("now-12h", "Last 12 hours"),
    ("now-24h", "Last 24 hours"),
    ("now-2d", "Last 2 days"),
    ("now-7d", "Last 7 days"),
)
REFRESH_CHOICES = ("", "5s", "10s", "30s", "1m", "5m", "15m", "30m", "1h")


def e(value: Any) -> str:
    return escape(str(value), quote=True)


def page(title: str, body: str, *, refresh: str | None = None, script: bool = True) -> str:
    refresh_attr = f' data-refresh="{e(refresh)}"' if refresh else ""
    js = '<script src="/public/app.js" defer></script>' if script else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<meta name=viewport content='width=device-width, initial-scale=1'><title>{e(title)}</title>"
        f'<link rel=stylesheet href="/public/app.css">{js}</head>'
        f"<body{refresh_attr}><header class=topbar><a class=brand href='/'>AMTP Observability</a>"
        "<nav><a href='/'>Dashboards</a><a href='/alerting/list'>Alerts</a></nav></header>"
        f"<main>{body}</main></body></html>"
    )


def error_page(status: int, message: str) -> str:
    return page(
        f"Error {status}",
        f"<section class='error-page'><h1>{status}</h1><p class=error-message>"
        f"{e(message)}</p><p><a href='/'>Back to the dashboard list</a></p></section>",
        script=False,
    )


def dashboard_list(dashboards: Sequence[Dashboard], errors: Sequence[str]) -> str:
    items = "".join(
        f"<li><a href='{e(d.url)}'>{e(d.title)}</a> <span class=uid>{e(d.uid)}</span>"
        + "".join(f"<span class=tag>{e(t)}</span>" for t in d.tags)
        + "</li>"
        for d in dashboards
    )
    problems = "".join(f"<li class=panel-error>{e(x)}</li>" for x in errors)
    body = f"<h1>Dashboards</h1><ul class=dash-list>{items or '<li>No dashboards are provisioned.</li>'}</ul>"
    if problems:
        body += f"<h2>Files that could not be loaded</h2><ul>{problems}</ul>"
    return page("Dashboards", body)


def _query_string(time_range: TimeRange, variables: Sequence[VariableState], refresh: str | None, **extra: str) -> str:
    params: list[tuple[str, str]] = [("from", time_range.raw_from), ("to", time_range.raw_to)]
    for v in variables:
        for value in v.selection.values:
            params.append((f"var-{v.name}", value))
    if refresh:
        params.append(("refresh", refresh))
    params.extend(extra.items())
    return urlencode(params)


def _toolbar(
    dashboard: Dashboard, time_range: TimeRange, variables: Sequence[VariableState], refresh: str | None
) -> str:
    current = (time_range.raw_from, time_range.raw_to)
    quick = "".join(
        f"<option value='{e(value)}'{' selected' if (value, 'now') == current else ''}>{e(label)}</option>"
        for value, label in QUICK_RANGES
    )
    refresh_opts = "".join(
        f"<option value='{e(r)}'{' selected' if (refresh or '') == r else ''}>{e(r or 'Off')}</option>"
        for r in REFRESH_CHOICES
    )
    var_controls = []
    for v in variables:
        if v.hide == 2 or v.type == "constant":
            continue
        label = "" if v.hide == 1 else f"<span class=var-label>{e(v.label)}</span>"
        if v.type == "textbox":
            control = f"<input name='var-{e(v.name)}' value='{e(','.join(v.selection.values))}'>"
        else:
            opts = []
            if v.include_all:
                sel = " selected" if v.selection.is_all else ""
                opts.append(f"<option value='{templating.ALL_VALUE}'{sel}>All</option>")
            for o in v.options:
                sel = " selected" if (not v.selection.is_all and o in v.selection.values) else ""
                opts.append(f"<option value='{e(o)}'{sel}>{e(o)}</option>")
            for value in v.selection.values:
                if not v.selection.is_all and value not in v.options:
                    opts.append(f"<option value='{e(value)}' selected>{e(value)}</option>")
            multiple = " multiple" if v.multi else ""
            control = f"<select name='var-{e(v.name)}' data-variable='{e(v.name)}'{multiple}>{''.join(opts)}</select>"
        err = f"<span class=var-error title='{e(v.error)}'>⚠ {e(v.error)}</span>" if v.error else ""
        var_controls.append(f"<label class=variable>{label}{control}{err}</label>")
    return (
        f"<form class=toolbar method=get action='{e(dashboard.url)}'>"
        f"<div class=variables>{''.join(var_controls)}</div>"
        "<div class=timepicker>"
        "<select class=quick-range aria-label='Quick range'>"
        f"<option value=''>Quick ranges</option>{quick}</select>"
        f"<label>From <input name=from value='{e(time_range.raw_from)}' size=12></label>"
        f"<label>To <input name=to value='{e(time_range.raw_to)}' size=12></label>"
        f"<label>Refresh <select name=refresh>{refresh_opts}</select></label>"
        "<button type=submit>Apply</button></div></form>"
        f"<p class=range-text>{e(time_range.start.strftime('%Y-%m-%d %H:%M:%S'))} to "
        f"{e(time_range.end.strftime('%Y-%m-%d %H:%M:%S'))} UTC</p>"
    )


def _nice_step(span: float, target_ticks: int = 5) -> float:
    if span <= 0 or not math.isfinite(span):
        return 1.0
    raw = span / target_ticks
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 2.5, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def _step_of(series: Sequence[Series]) -> float:
    """The query step, as the smallest spacing between samples (Prometheus returns one per step)."""
    deltas = [b[0] - a[0] for s in series for a, b in zip(s.points, s.points[1:], strict=False) if b[0] > a[0]]
    return min(deltas) if deltas else math.inf


def _runs(points: Sequence[tuple[float, float]], max_gap: float) -> list[list[tuple[float, float]]]:
    """Finite samples split where a step is missing, so a line never bridges a gap (as Grafana draws nulls)."""
    runs: list[list[tuple[float, float]]] = []
    for t, v in points:
        if not math.isfinite(v):
            runs.append([])
            continue
        if not runs or (runs[-1] and t - runs[-1][-1][0] > max_gap):
            runs.append([])
        runs[-1].append((t, v))
    return [r for r in runs if r]


def svg_chart(
    series: Sequence[Series], time_range: TimeRange, unit: str | None, decimals: int | None, height_px: int
) -> str:
    """A line chart: one polyline per series, nice y ticks in the panel's unit, time on x."""
    width, height = 1000.0, max(120.0, float(height_px))
    left, right, top, bottom = 70.0, 10.0, 10.0, 24.0
    t0, t1 = time_range.start.timestamp(), time_range.end.timestamp()
    values = [v for s in series for _, v in s.points if math.isfinite(v)]
    if not values:
        return "<div class=no-data>No data</div>"
    lo, hi = min([*values, 0.0]), max(values)
    if hi == lo:
        hi = lo + (abs(lo) or 1.0)
    step = _nice_step(hi - lo)
    lo = math.floor(lo / step) * step
    hi = math.ceil(hi / step) * step
    plot_w, plot_h = width - left - right, height - top - bottom

    def x(t: float) -> float:
        return left + (t - t0) / (t1 - t0) * plot_w

    def y(v: float) -> float:
        return top + (1 - (v - lo) / (hi - lo)) * plot_h

    parts = [f"<svg class=chart viewBox='0 0 {width:g} {height:g}' preserveAspectRatio='none' role=img>"]
    tick = lo
    while tick <= hi + step / 2:
        yy = y(tick)
        parts.append(f"<line class=gridline x1='{left}' x2='{width - right}' y1='{yy:.1f}' y2='{yy:.1f}'/>")
        parts.append(
            f"<text class=axis x='{left - 6}' y='{yy + 4:.1f}' text-anchor=end>"
            f"{e(format_value(tick, unit, decimals))}</text>"
        )
        tick += step
    tstep = _nice_time_step(t1 - t0)
    tt = math.ceil(t0 / tstep) * tstep
    while tt <= t1:
        label = datetime.fromtimestamp(tt, UTC).strftime("%H:%M" if tstep < 86400 else "%m-%d")
        parts.append(f"<text class=axis x='{x(tt):.1f}' y='{height - 6}' text-anchor=middle>{label}</text>")
        tt += tstep
    max_gap = 1.5 * _step_of(series)
    for i, s in enumerate(series):
        color = PALETTE[i % len(PALETTE)]
        for run in _runs(s.points, max_gap):
            if len(run) == 1:  # an isolated sample: a line of one point draws nothing
                (t, v) = run[0]
                parts.append(
                    f"<circle cx='{x(t):.1f}' cy='{y(v):.1f}' r=3 fill='{color}'><title>{e(s.name)}</title></circle>"
                )
                continue
            pts = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in run)
            parts.append(
                f"<polyline fill=none stroke='{color}' stroke-width=2 points='{pts}'>"
                f"<title>{e(s.name)}</title></polyline>"
            )
    parts.append("</svg>")
    legend = "".join(
        f"<span class=legend-item><i style='background:{PALETTE[i % len(PALETTE)]}'></i>{e(s.name)}"
        f" <b>{e(format_value(s.points[-1][1] if s.points else None, unit, decimals))}</b></span>"
        for i, s in enumerate(series)
    )
    return "".join(parts) + f"<div class=legend>{legend}</div>"


def _nice_time_step(span: float) -> float:
    for s in (10, 30, 60, 300, 600, 900, 1800, 3600, 7200, 10800, 21600, 43200, 86400, 604800):
        if span / s <= 8:
            return float(s)
    return 2592000.0


def _color_style(color: str | None) -> str:
    return f" style='color:{e(color)}'" if color else ""


def panel_html(p: PanelResult, time_range: TimeRange, back_query: str) -> str:
    g = p.grid
    style = (
        f"grid-column:{int(g.get('x', 0)) + 1} / span {max(1, int(g.get('w', 12)))};"
        f"grid-row:{int(g.get('y', 0)) + 1} / span {max(1, int(g.get('h', 8)))}"
    )
    if p.type == "row":
        return f"<section class='panel row-panel' style='{style}'><h2>{e(p.title)}</h2></section>"
    body = ""
    if p.error:
        body = f"<div class=panel-error role=alert><b>Query error</b><br>{e(p.error)}</div>"
    elif p.type in ("stat", "gauge", "bargauge", "singlestat"):
        body = (
            "<div class=stat-values>"
            + "".join(
                "<div class=stat><span class=stat-value "
                f"data-value='{'' if s.value is None else e(repr(s.value))}'"
                f"{_color_style(s.color)}>{e(s.text)}</span>"
                + (f"<span class=stat-name>{e(s.name)}</span>" if len(p.stats) > 1 else "")
                + "</div>"
                for s in p.stats
            )
            + "</div>"
        )
    elif p.series or p.type in ("timeseries", "graph", "barchart", "trend"):
        body = svg_chart(p.series, time_range, p.unit, p.decimals, int(g.get("h", 8)) * ROW_PX - 70)
    elif p.table is not None:
        head = "".join(f"<th>{e(c)}</th>" for c in p.table.columns)
        rows = []
        for i, row in enumerate(p.table.rows):
            cells = []
            for j, cell in enumerate(row):
                link = p.table.links[i] if j == 0 and i < len(p.table.links) else None
                text = e(cell)
                cells.append(
                    f"<td><a class=trace-link href='{e(link)}?{e(back_query)}'>{text}</a></td>"
                    if link
                    else f"<td>{text}</td>"
                )
            rows.append("<tr>" + "".join(cells) + "</tr>")
        body = (
            f"<table class=data-table><thead><tr>{head}</tr></thead><tbody>{''.join(rows)}</tbody></table>"
            if rows
            else "<div class=no-data>No data</div>"
        )
    elif p.text is not None:
        body = f"<div class=text-panel>{e(p.text)}</div>"
    notices = "".join(f"<div class=notice>{e(n)}</div>" for n in p.notices)
    queries = "".join(f"<code>{e(q)}</code>" for q in p.queries)
    return (
        f"<section class=panel data-panel-id='{e(p.id)}' data-panel-type='{e(p.type)}' style='{style}'>"
        f"<h3 class=panel-title>{e(p.title)}</h3><div class=panel-body>{body}{notices}</div>"
        f"<details class=panel-queries><summary>Query</summary>{queries}</details></section>"
    )


def _since(stamp: str | None) -> str:
    """RFC 3339 from Prometheus/Alertmanager (nanosecond digits included) -> ``YYYY-MM-DD HH:MM:SS UTC``."""
    if not stamp:
        return ""
    try:
        dt = datetime.fromisoformat(re.sub(r"\.\d+", "", stamp).replace("Z", "+00:00"))
    except ValueError:
        return stamp
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return dt.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def alerts_html(view: AlertsView) -> str:
    rows = "".join(
        f"<tr class='alert-row state-{e(r.state)}'><td>{e(r.source)}</td><td>{e(r.name)}</td>"
        f"<td><span class='badge state-{e(r.state)}'>{e(r.state)}</span></td><td>{e(_since(r.since))}</td>"
        f"<td>{e(', '.join(f'{k}={v}' for k, v in sorted(r.labels.items()) if k != 'alertname'))}</td>"
        f"<td>{e(r.detail)}</td></tr>"
        for r in view.rows
    )
    errors = "".join(f"<div class=alerts-error role=alert>{e(x)}</div>" for x in view.errors)
    errors += "".join(f"<div class=notice>{e(x)}</div>" for x in view.notes)
    table = (
        "<table class=data-table><thead><tr><th>Source</th><th>Alert</th><th>State</th><th>Since</th>"
        f"<th>Labels</th><th>Detail</th></tr></thead><tbody>{rows}</tbody></table>"
        if rows
        else "<div class=no-data>No alerts are pending, firing or suppressed.</div>"
    )
    return f"<section class=alerts id=alerts><h2>Alerts</h2>{errors}{table}</section>"


def grid_html(panels: Sequence[PanelResult], time_range: TimeRange, back_query: str) -> str:
    return "<div class=grid id=grid>" + "".join(panel_html(p, time_range, back_query) for p in panels) + "</div>"


def dashboard_page(
    dashboard: Dashboard,
    time_range: TimeRange,
    variables: Sequence[VariableState],
    panels: Sequence[PanelResult],
    alerts: AlertsView,
    refresh: str | None,
) -> str:
    back = _query_string(time_range, variables, refresh, dashboard=dashboard.uid)
    fragment = f"/d/{dashboard.uid}?{_query_string(time_range, variables, refresh, fragment='1')}"
    body = (
        f"<div class=dash-header><h1>{e(dashboard.title)}</h1></div>"
        + _toolbar(dashboard, time_range, variables, refresh)
        + f"<div id=live data-fragment='{e(fragment)}'>"
        + grid_html(panels, time_range, back)
        + alerts_html(alerts)
        + "</div>"
    )
    return page(dashboard.title, body, refresh=refresh)


def fragment(
    dashboard: Dashboard,
    time_range: TimeRange,
    variables: Sequence[VariableState],
    panels: Sequence[PanelResult],
    alerts: AlertsView,
    refresh: str | None,
) -> str:
    back = _query_string(time_range, variables, refresh, dashboard=dashboard.uid)
    return grid_html(panels, time_range, back) + alerts_html(alerts)


def alerts_page(view: AlertsView) -> str:
    return page("Alerts", alerts_html(view), refresh="30s")


# -- trace view ------------------------------------------------------------------------------------


def flatten_trace(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Tempo's ``{"batches": [...]}`` (or OTLP ``resourceSpans``) -> spans, parents first, with depth."""
    spans: list[dict[str, Any]] = [
        {
            "span_id": s.span_id,
            "parent_id": s.parent_span_id,
            "name": s.name,
            "kind": s.kind_name,
            "start": s.start_ns,
            "end": s.end_ns,
            "status": s.status_name,
            "status_message": s.status_message,
            "attributes": s.attributes,
            "events": [{"name": name, "attributes": attrs} for name, attrs in s.events],
            "resource": s.resource,
            "service": s.resource.get("service.name", ""),
        }
        for s in spans_from_tempo_json(dict(doc))
    ]
    by_id = {s["span_id"]: s for s in spans}
    children: dict[str, list[dict[str, Any]]] = {}
    roots = []
    for s in sorted(spans, key=lambda s: s["start"]):
        if s["parent_id"] and s["parent_id"] in by_id:
            children.setdefault(s["parent_id"], []).append(s)
        else:
            roots.append(s)
    ordered: list[dict[str, Any]] = []

    def walk(span: dict[str, Any], depth: int) -> None:
        span["depth"] = depth
        ordered.append(span)
        for child in children.get(span["span_id"], []):
            walk(child, depth + 1)

    for root in roots:
        walk(root, 0)
    return ordered


def trace_page(trace_id: str, spans: Sequence[Mapping[str, Any]], back_url: str | None) -> str:
    if not spans:
        return page(
            f"Trace {trace_id}",
            f"<h1>Trace {e(trace_id)}</h1><div class=no-data>The trace has no spans.</div>",
        )
    t0 = min(s["start"] for s in spans)
    t1 = max(s["end"] for s in spans) or t0 + 1
    total = max(1, t1 - t0)
    rows = []
    for s in spans:
        left = (s["start"] - t0) / total * 100
        width = max(0.3, (s["end"] - s["start"]) / total * 100)
        dur_ms = (s["end"] - s["start"]) / 1e6
        error = " span-error" if s["status"] == "STATUS_CODE_ERROR" else ""
        attrs = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in sorted(s["attributes"].items()))
        res = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in sorted(s["resource"].items()))
        events = "".join(f"<li>{e(ev['name'])} {e(ev['attributes'])}</li>" for ev in s["events"])
        rows.append(
            f"<details class='span{error}' data-span-id='{e(s['span_id'])}'{' open' if s['depth'] == 0 else ''}>"
            "<summary>"
            f"<span class=span-name style='padding-left:{s['depth'] * 16}px'>{e(s['service'])} "
            f"<b>{e(s['name'])}</b></span>"
            "<span class=span-bar-track>"
            f"<span class=span-bar style='left:{left:.2f}%;width:{width:.2f}%'></span></span>"
            f"<span class=span-duration>{e(format_value(dur_ms, 'ms'))}</span></summary>"
            f"<div class=span-detail><p>Span {e(s['span_id'])} · {e(s['kind'])} · {e(s['status'])}"
            f"{(' · ' + e(s['status_message'])) if s['status_message'] else ''}</p>"
            f"<h4>Attributes</h4><table class=attrs>{attrs}</table>"
            f"<h4>Resource</h4><table class=attrs>{res}</table>"
            + (f"<h4>Events</h4><ul>{events}</ul>" if events else "")
            + "</div></details>"
        )
    back = f"<a href='{e(back_url)}'>&larr; Back to the dashboard</a>" if back_url else ""
    head = (
        f"<h1>Trace {e(trace_id)}</h1><p>{back} {len(spans)} spans, "
        f"{e(format_value(total / 1e6, 'ms'))}, started "
        f"{e(datetime.fromtimestamp(t0 / 1e9, UTC).strftime('%Y-%m-%d %H:%M:%S'))} UTC</p>"
    )
    return page(f"Trace {trace_id}", head + "<div class=waterfall>" + "".join(rows) + "</div>", script=False)
