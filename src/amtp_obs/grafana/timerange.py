"""Grafana's time model: relative ranges (``now-3h``), intervals and the ``$__*`` macros.

The dashboard JSON is the one Grafana reads in production, so its ``time``, ``refresh`` and the
macros in its queries must mean here what they mean there (Grafana 10.4, Prometheus datasource).
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

_UNIT_SECONDS = {
    "ms": 0.001,
    "s": 1,
    "m": 60,
    "h": 3600,
    "d": 86400,
    "w": 7 * 86400,
    "M": 30 * 86400,
    "y": 365 * 86400,
}
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)(ms|s|m|h|d|w|M|y)$")
_RELATIVE = re.compile(r"^now(?P<ops>(?:[+-]\d+(?:ms|s|m|h|d|w|M|y))*)(?:/(?P<round>[smhdwMy]))?$")
_OP = re.compile(r"([+-])(\d+)(ms|s|m|h|d|w|M|y)")


class TimeRangeError(ValueError):
    """A time expression or range the user gave cannot be understood; the message says why."""


def parse_duration(text: str) -> float:
    """``15s``, ``1m``, ``1.5h`` -> seconds (Grafana interval syntax)."""
    m = _DURATION.match(text.strip())
    if not m:
        raise TimeRangeError(f"invalid duration {text!r}: expected a number and a unit (ms, s, m, h, d, w, M, y)")
    return float(m.group(1)) * _UNIT_SECONDS[m.group(2)]


def format_duration(seconds: float) -> str:
    """Seconds -> Grafana's short form (``15s``, ``1m``, ``2h``, ``500ms``), the largest exact unit."""
    ms = round(seconds * 1000)
    if ms <= 0:
        return "0s"
    for unit, factor in (
        ("y", 365 * 86400_000),
        ("w", 7 * 86400_000),
        ("d", 86400_000),
        ("h", 3600_000),
        ("m", 60_000),
        ("s", 1000),
    ):
        if ms % factor == 0:
            return f"{ms // factor}{unit}"
    return f"{ms}ms"


def format_interval(seconds: float) -> str:
    """Grafana's ``gtime.FormatInterval`` (used for ``$__interval``): the largest unit, truncated."""
    ms = round(seconds * 1000)
    for unit, factor in (
        ("y", 365 * 86400_000),
        ("d", 86400_000),
        ("h", 3600_000),
        ("m", 60_000),
        ("s", 1000),
    ):
        if ms >= factor:
            return f"{ms // factor}{unit}"
    return f"{max(ms, 1)}ms"


def format_go_duration(seconds: float) -> str:
    """Go's ``time.Duration.String`` (Grafana writes ``$__rate_interval`` this way: ``1m0s``, ``1m15s``)."""
    ms = round(seconds * 1000)
    if ms == 0:
        return "0s"
    if ms < 1000:
        return f"{ms}ms"
    hours, rest = divmod(ms, 3600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    out = f"{minutes}m{secs}s" if hours or minutes else f"{secs}s"
    return f"{hours}h{out}" if hours else out


def _round_down(dt: datetime, unit: str) -> datetime:
    if unit == "s":
        return dt.replace(microsecond=0)
    if unit == "m":
        return dt.replace(second=0, microsecond=0)
    if unit == "h":
        return dt.replace(minute=0, second=0, microsecond=0)
    day = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "d":
        return day
    if unit == "w":
        return day - timedelta(days=day.weekday())
    if unit == "M":
        return day.replace(day=1)
    return day.replace(month=1, day=1)


def parse_time(text: str, now: datetime) -> datetime:
    """One end of a Grafana time range: ``now``, ``now-3h``, ``now-1d/d``, epoch ms or ISO 8601."""
    raw = text.strip()
    if not raw:
        raise TimeRangeError("empty time expression")
    m = _RELATIVE.match(raw)
    if m:
        dt = now
        for sign, amount, unit in _OP.findall(m.group("ops") or ""):
            delta = timedelta(seconds=int(amount) * _UNIT_SECONDS[unit])
            dt = dt + delta if sign == "+" else dt - delta
        if m.group("round"):
            dt = _round_down(dt, m.group("round"))
        return dt
    if raw.isdigit():
        return datetime.fromtimestamp(int(raw) / 1000, UTC)
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        raise TimeRangeError(
            f"invalid time {text!r}: use now, now-<n><unit> (e.g. now-3h), epoch milliseconds or ISO 8601"
        ) from None
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)


@dataclass(frozen=True)
class TimeRange:
    """A resolved range plus the raw expressions, which links and the picker keep."""

    start: datetime
    end: datetime
    raw_from: str
    raw_to: str

    @classmethod
    def parse(cls, raw_from: str, raw_to: str, now: datetime | None = None) -> TimeRange:
        now = now or datetime.now(UTC)
        start, end = parse_time(raw_from, now), parse_time(raw_to, now)
        if start >= end:
            raise TimeRangeError(f"invalid time range: from ({raw_from}) must be before to ({raw_to})")
        return cls(start, end, raw_from, raw_to)

    @property
    def seconds(self) -> float:
        return (self.end - self.start).total_seconds()


# Grafana's interval rounding: an upper bound in ms -> the "nice" interval. The frontend
# (packages/grafana-data/src/datetime/rangeutil.ts, roundInterval) compares with ``<``; the backend
# (pkg/tsdb/intervalv2/intervalv2.go, roundInterval) with ``<=`` (except its last row).
_NICE_INTERVALS_MS: tuple[tuple[int, int], ...] = (
    (10, 1),
    (15, 10),
    (35, 20),
    (75, 50),
    (150, 100),
    (350, 200),
    (750, 500),
    (1500, 1000),
    (3500, 2000),
    (7500, 5000),
    (12500, 10000),
    (17500, 15000),
    (25000, 20000),
    (45000, 30000),
    (90000, 60000),
    (210000, 120000),
    (450000, 300000),
    (750000, 600000),
    (1050000, 900000),
    (1500000, 1200000),
    (2700000, 1800000),
    (5400000, 3600000),
    (9000000, 7200000),
    (16200000, 10800000),
    (32400000, 21600000),
    (86400000, 43200000),
    (604800000, 86400000),
    (1814400000, 604800000),
    (3628800000, 2592000000),
)
# intervalv2.go has one more row (<= 48 h -> 24 h) whose answer equals the next row's: omitted.


def round_interval_ms(ms: float, *, backend: bool = False) -> int:
    """Grafana's roundInterval: the frontend's (``backend=False``) or the Go backend's rounding."""
    last = len(_NICE_INTERVALS_MS) - 1
    for i, (bound, nice) in enumerate(_NICE_INTERVALS_MS):
        if ms < bound or (backend and i != last and ms == bound):
            return nice
    return 31536000000


DEFAULT_TIME_INTERVAL = 15.0
"""Grafana's Prometheus datasource without ``jsonData.timeInterval`` assumes a 15 s scrape interval."""
SAFE_RESOLUTION = 11000
"""Prometheus refuses more points per series; Grafana's backend widens the step to stay near it."""


def time_interval(json_data: Mapping[str, Any] | None) -> float:
    """A datasource's ``jsonData.timeInterval`` in seconds (its scrape interval), 15 s when unset or bad."""
    raw = (json_data or {}).get("timeInterval")
    if not raw:
        return DEFAULT_TIME_INTERVAL
    try:
        return parse_duration(str(raw).lstrip("<>"))
    except TimeRangeError:
        return DEFAULT_TIME_INTERVAL


@dataclass(frozen=True)
class Intervals:
    """The intervals one Prometheus query of a panel gets (seconds).

    ``query_interval`` is what the browser computes and sends as ``intervalMs``; ``interval`` is the
    backend's final step, which is also what ``$__interval`` becomes; ``rate_interval`` is
    ``$__rate_interval``; ``step`` is what the embedded dashboard sends as the range-query step.
    """

    query_interval: float
    interval: float
    rate_interval: float
    step: float


def compute_intervals(
    time_range: TimeRange,
    max_data_points: int,
    scrape_interval: float = DEFAULT_TIME_INTERVAL,
    min_interval: float | None = None,
    min_step: float | None = None,
) -> Intervals:
    """Grafana 10.4's rules for one Prometheus target.

    ``scrape_interval`` is the datasource's ``jsonData.timeInterval``; ``min_interval`` the panel's
    "Min interval" (``interval``); ``min_step`` the target's "Min step" (its ``interval``).

    1. Browser (rangeutil.ts ``calculateInterval``): intervalMs = max(round(range / max data points),
       min interval, else the datasource's timeInterval).
    2. Backend (pkg/tsdb/prometheus/models/query.go ``calculatePrometheusInterval`` with
       intervalv2.go ``Calculate``/``CalculateSafeInterval``): minimum = min step, else intervalMs;
       step = minimum if range / points is below it, else round(range / points); at least
       round(range / 11000). ``$__interval`` and ``$__interval_ms`` are this step.
    3. ``$__rate_interval`` (query.go ``calculateRateInterval``) = max(intervalMs + scrape, 4 x scrape),
       scrape = min step, else the datasource's timeInterval.
    """
    range_ms = time_range.seconds * 1000
    points = max(1, int(max_data_points))
    low_ms = (min_interval if min_interval is not None else scrape_interval) * 1000
    query_ms = max(round_interval_ms(range_ms / points), low_ms)
    minimum_ms = min_step * 1000 if min_step is not None else query_ms
    raw_ms = range_ms / points
    calculated_ms = minimum_ms if raw_ms < minimum_ms else round_interval_ms(raw_ms, backend=True)
    safe_ms = round_interval_ms(range_ms / SAFE_RESOLUTION, backend=True)
    step_ms = max(calculated_ms, safe_ms)
    scrape = min_step if min_step is not None else scrape_interval
    rate = max(query_ms / 1000 + scrape, 4 * scrape)
    interval = step_ms / 1000
    # Grafana can round the step below range / 11000 (e.g. 16.4 s -> 15 s); Prometheus then refuses
    # the range query, so the embedded dashboard's own range queries never go below that bound.
    step = max(interval, math.ceil(time_range.seconds / SAFE_RESOLUTION))
    return Intervals(query_ms / 1000, interval, rate, step)


def macros(time_range: TimeRange, intervals: Intervals) -> dict[str, str]:
    """The built-in variables Grafana substitutes before a Prometheus query is sent (query.go
    ``interpolateVariables``; ``$__from``/``$__to`` from the frontend's time range)."""
    range_ms = round(time_range.seconds * 1000)
    range_s = round(range_ms / 1000)
    return {
        "__interval": format_interval(intervals.interval),
        "__interval_ms": str(round(intervals.interval * 1000)),
        "__rate_interval": format_go_duration(intervals.rate_interval),
        "__rate_interval_ms": str(round(intervals.rate_interval * 1000)),
        "__range": f"{range_s}s",
        "__range_s": str(range_s),
        "__range_ms": str(range_ms),
        "__from": str(round(time_range.start.timestamp() * 1000)),
        "__to": str(round(time_range.end.timestamp() * 1000)),
    }
