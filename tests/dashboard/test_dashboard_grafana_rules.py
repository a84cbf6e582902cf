"""Grafana's rules the page must reproduce: time ranges, intervals and macros, units, variables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from amtp_obs.dashboard.engine import reduce_values
from amtp_obs.dashboard.units import format_value
from amtp_obs.grafana import templating
from amtp_obs.grafana.timerange import (
    TimeRange,
    TimeRangeError,
    compute_intervals,
    format_go_duration,
    macros,
    parse_time,
)

NOW = datetime(2026, 11, 25, 14, 37, 12, tzinfo=UTC)


@pytest.mark.parametrize(
    ("expr", "expected"),
    [
        ("now", NOW),
        ("now-3h", datetime(2026, 11, 25, 11, 37, 12, tzinfo=UTC)),
        ("now-1d/d", datetime(2026, 11, 24, tzinfo=UTC)),
        ("now/h", datetime(2026, 11, 25, 14, tzinfo=UTC)),
        ("now-1h-30m", datetime(2026, 11, 25, 13, 7, 12, tzinfo=UTC)),
        ("1764000000000", datetime.fromtimestamp(1764000000, UTC)),
        ("2026-11-25T10:00:00Z", datetime(2026, 11, 25, 10, tzinfo=UTC)),
    ],
)
def test_time_expressions(expr: str, expected: datetime) -> None:
    assert parse_time(expr, NOW) == expected


@pytest.mark.parametrize(
    ("frm", "to", "message"),
    [
        ("yesterday", "now", "invalid time"),
        ("now", "now-1h", "must be before"),
        ("now-3x", "now", "invalid time"),
    ],
)
def test_bad_time_ranges_say_why(frm: str, to: str, message: str) -> None:
    with pytest.raises(TimeRangeError, match=message):
        TimeRange.parse(frm, to, NOW)


def _rate_interval(seconds: float, scrape: float) -> float:
    """Grafana's documented rule, written out independently of the implementation."""
    return max(seconds + scrape, 4 * scrape)


@pytest.mark.parametrize(
    ("frm", "points", "interval"),
    [
        ("now-3h", 1400, 15.0),  # 7.7 s rounds to 10 s, raised to the 15 s scrape interval
        ("now-24h", 1400, 60.0),  # 61.7 s rounds to 1 m
        ("now-7d", 1400, 300.0),  # 432 s rounds to 5 m
    ],
)
def test_interval_and_rate_interval(frm: str, points: int, interval: float) -> None:
    tr = TimeRange.parse(frm, "now", NOW)
    iv = compute_intervals(tr, points, scrape_interval=15.0)
    assert iv.interval == interval
    assert iv.rate_interval == _rate_interval(interval, 15.0)
    m = macros(tr, iv)
    assert m["__rate_interval"] == format_go_duration(iv.rate_interval)
    assert m["__range"] == f"{round(tr.seconds)}s"


def test_macro_spelling_matches_grafana() -> None:
    """Grafana sends $__rate_interval as a Go duration ("1m0s") and $__interval in its largest unit."""
    tr = TimeRange.parse("now-3h", "now", NOW)
    m = macros(tr, compute_intervals(tr, 1400, scrape_interval=15.0))
    assert (m["__interval"], m["__rate_interval"], m["__range"]) == ("15s", "1m0s", "10800s")
    tr = TimeRange.parse("now-24h", "now", NOW)
    m = macros(tr, compute_intervals(tr, 1400, scrape_interval=15.0))
    assert (m["__interval"], m["__rate_interval"]) == ("1m", "1m15s")


def test_step_stays_below_prometheus_point_limit() -> None:
    tr = TimeRange.parse("now-30d", "now", NOW)
    iv = compute_intervals(tr, 100000, scrape_interval=1.0)
    assert tr.seconds / iv.step <= 11000


@pytest.mark.parametrize(
    ("value", "unit", "decimals", "text"),
    [
        (630, "short", 0, "630"),
        (1_234_567, "short", None, "1.23 Mil"),
        (124.8, "ms", None, "125 ms"),
        (2500, "ms", None, "2.5 s"),
        (0.25, "s", None, "250 ms"),
        (0.26667, "reqps", None, "0.267 req/s"),
        (1500, "reqps", None, "1.5 K req/s"),
        (2048, "bytes", None, "2 KiB"),
        (0.5, "percentunit", None, "50%"),
        (3, "suffix:tok", None, "3 tok"),
        (None, "ms", None, "No data"),
        (float("nan"), "short", None, "NaN"),
    ],
)
def test_units(value: float | None, unit: str, decimals: int | None, text: str) -> None:
    assert format_value(value, unit, decimals) == text


def test_reducers() -> None:
    values = [1.0, None, 5.0, 3.0, None]
    assert reduce_values(values, "lastNotNull") == 3.0
    assert reduce_values(values, "last") is None
    assert reduce_values(values, "max") == 5.0
    assert reduce_values(values, "mean") == 3.0
    assert reduce_values([], "lastNotNull") is None


def _sel(values: list[str], **kw: object) -> templating.Selection:
    return templating.Selection(values=values, **kw)  # type: ignore[arg-type]


def test_all_uses_all_value_and_multi_values_become_a_regex() -> None:
    scope = {
        "svc": _sel(["$__all"], is_all=True, include_all=True, all_value=".*", options=["a", "b"]),
        "model": _sel(["gpt-4.1", "o3"], multi=True, options=["gpt-4.1", "o3"]),
        "plain": _sel(["x"]),
    }
    out = templating.interpolate('{s=~"$svc", m=~"${model}", p="[[plain]]", u="$unknown"}', scope)
    assert out == '{s=~".*", m=~"(gpt-4\\\\.1|o3)", p="x", u="$unknown"}'


def test_all_without_all_value_lists_every_option() -> None:
    sel = _sel(["$__all"], is_all=True, include_all=True, options=["a", "b.c"])
    assert templating.interpolate("$v", {"v": sel}) == "(a|b\\\\.c)"
    assert templating.interpolate("${v:csv}", {"v": sel}) == "a,b.c"
    assert templating.interpolate("${v:pipe}", {"v": sel}) == "a|b.c"


@pytest.mark.parametrize(
    ("text", "kind", "label", "selector"),
    [
        (
            "label_values(traces_spanmetrics_calls_total, service)",
            "label_values",
            "service",
            "traces_spanmetrics_calls_total",
        ),
        ('label_values(up{job="x"}, instance)', "label_values", "instance", 'up{job="x"}'),
        ("label_values(job)", "label_values", "job", None),
        ("label_names()", "label_names", None, None),
    ],
)
def test_variable_queries(text: str, kind: str, label: str | None, selector: str | None) -> None:
    q = templating.parse_variable_query(text)
    assert (q.kind, q.label, q.selector) == (kind, label, selector)


def test_unsupported_variable_query_is_a_clear_error() -> None:
    with pytest.raises(templating.VariableQueryError, match="expected label_values"):
        templating.parse_variable_query("sum(up)")


def test_variable_regex_filter_and_capture() -> None:
    assert templating.apply_regex(["agent-a", "agent-b", "other"], "/agent-(.*)/") == ["a", "b"]
    assert templating.sort_values(["b", "a", "c"], 2) == ["c", "b", "a"]
