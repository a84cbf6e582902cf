"""The panel/target walk and the final query text of a target, as Grafana 10.4 builds it.

The embedded dashboard, ``amtp-obs check`` and ``amtp-obs verify`` all ask this module which
queries a dashboard holds and what string reaches Prometheus for a panel, a time range and a
variable selection, so the three cannot disagree about a query.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from amtp_obs.grafana import templating
from amtp_obs.grafana.timerange import (
    DEFAULT_TIME_INTERVAL,
    Intervals,
    TimeRange,
    TimeRangeError,
    compute_intervals,
    macros,
    parse_duration,
)

PAGE_WIDTH_PX = 1400
"""Grafana sizes a panel's max data points from its pixel width; we assume a page this wide."""
GRID_COLUMNS = 24
DEFAULT_TIME = ("now-6h", "now")
"""Grafana's time range for a dashboard JSON without ``time``."""
PSEUDO_DATASOURCES = ("-- Mixed --", "-- Dashboard --")


def iter_panels(doc: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Panels in page order; rows become header panels, collapsed rows' children are included."""
    out: list[dict[str, Any]] = []

    def walk(items: Any) -> None:
        for panel in items or []:
            if isinstance(panel, dict):
                out.append(panel)
                walk(panel.get("panels"))

    walk(doc.get("panels"))
    return out


def visible_targets(panel: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """The panel's queries Grafana runs (hidden ones are skipped)."""
    return [t for t in panel.get("targets") or [] if isinstance(t, Mapping) and not t.get("hide")]


def datasource_ref(panel: Mapping[str, Any], target: Mapping[str, Any] | None = None) -> Any:
    """The datasource a target runs on: its own, else the panel's; ``None`` means the default one."""
    ref = (target or {}).get("datasource")
    if isinstance(ref, Mapping) and ref.get("uid") in PSEUDO_DATASOURCES:
        ref = None
    return ref or panel.get("datasource") or None


def datasource_type(ref: Any) -> str | None:
    """The ``type`` a ``{type, uid}`` reference names (provisioned dashboards always carry it)."""
    return str(ref["type"]) if isinstance(ref, Mapping) and ref.get("type") else None


def datasource_uid(ref: Any, default: str | None = None) -> str | None:
    if isinstance(ref, Mapping):
        return str(ref["uid"]) if ref.get("uid") is not None else default
    if isinstance(ref, str):
        return ref
    return default


def max_data_points(panel: Mapping[str, Any]) -> int:
    """The panel's ``maxDataPoints``, else its width in pixels (Grafana's default resolution)."""
    if panel.get("maxDataPoints"):
        return max(1, int(panel["maxDataPoints"]))
    width = int((panel.get("gridPos") or {}).get("w") or 12)
    return max(1, round(PAGE_WIDTH_PX * width / GRID_COLUMNS))


def _duration(raw: Any) -> float | None:
    """A Min interval / Min step value in seconds; empty or a variable means none."""
    if raw in (None, "") or str(raw).startswith("$"):
        return None
    text = str(raw).lstrip("<>")
    return parse_duration(text + "s" if text.isdigit() else text)


def intervals(
    panel: Mapping[str, Any],
    target: Mapping[str, Any],
    time_range: TimeRange,
    time_interval: float = DEFAULT_TIME_INTERVAL,
) -> Intervals:
    """``$__interval``/``$__rate_interval``/step of one Prometheus target (``time_interval`` is the
    datasource's scrape interval, ``jsonData.timeInterval``)."""
    return compute_intervals(
        time_range,
        max_data_points(panel),
        time_interval,
        min_interval=_duration(panel.get("interval")),
        min_step=_duration(target.get("interval")),
    )


def prometheus_query(
    panel: Mapping[str, Any],
    target: Mapping[str, Any],
    time_range: TimeRange,
    scope: Mapping[str, templating.Selection | str],
    time_interval: float = DEFAULT_TIME_INTERVAL,
    *,
    text: str | None = None,
) -> tuple[str, Intervals]:
    """The PromQL Grafana sends for ``target`` of ``panel`` (``text`` replaces the target's ``expr``,
    e.g. a variable query), and the intervals it was built with."""
    raw = str(target.get("expr") or "") if text is None else text
    iv = intervals(panel, target, time_range, time_interval)
    return templating.interpolate(raw, {**scope, **macros(time_range, iv)}), iv


def dashboard_time_range(doc: Mapping[str, Any], now: datetime | None = None) -> TimeRange:
    """The dashboard's own default time range (its ``time``), as Grafana opens it."""
    raw = doc.get("time")
    time: Mapping[str, Any] = raw if isinstance(raw, Mapping) else {}
    try:
        return TimeRange.parse(str(time.get("from") or DEFAULT_TIME[0]), str(time.get("to") or DEFAULT_TIME[1]), now)
    except TimeRangeError:
        return TimeRange.parse(*DEFAULT_TIME, now)
