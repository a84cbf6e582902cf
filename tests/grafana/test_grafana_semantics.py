"""Grafana 10.4's query semantics (amtp_obs.grafana), with expected values derived by hand from its rules.

Sources (Grafana v10.4.x):
- pkg/tsdb/prometheus/models/query.go: ``calculatePrometheusInterval`` (step = max(Calculate(range,
  min, maxDataPoints), CalculateSafeInterval(range, 11000)); the minimum is the target's Min step,
  else the browser's intervalMs), ``calculateRateInterval`` (max(intervalMs + scrape, 4 x scrape),
  scrape = Min step, else the datasource's timeInterval, else 15s) and ``interpolateVariables``
  ($__interval/_ms = the step, $__range = round(range ms / 1000) + "s", $__rate_interval in Go's
  Duration.String).
- pkg/tsdb/intervalv2/intervalv2.go: ``Calculate`` (below the minimum -> the minimum, else
  roundInterval), ``roundInterval`` (``<=`` bounds), ``FormatDuration`` (largest unit, truncated).
- packages/grafana-data/src/datetime/rangeutil.ts: ``calculateInterval`` (intervalMs =
  max(roundInterval(range / resolution), lower limit)) and ``roundInterval`` (``<`` bounds).
- public/app/features/templating/template_srv.ts and the Prometheus datasource's
  ``interpolateQueryExpr``: All -> allValue unformatted, else every option; several values -> (a|b).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from amtp_obs.grafana import panels, templating
from amtp_obs.grafana.timerange import (
    TimeRange,
    TimeRangeError,
    compute_intervals,
    format_go_duration,
    macros,
    parse_time,
    round_interval_ms,
    time_interval,
)

NOW = datetime(2026, 11, 25, 14, 37, 12, tzinfo=UTC)


def _range(seconds: float) -> TimeRange:
    return TimeRange(NOW - timedelta(seconds=seconds), NOW, "from", "now")


def test_frontend_and_backend_round_a_bound_differently() -> None:
    # rangeutil.ts: 7500 < 7500 is false, so the next row (< 12500 -> 10 s); intervalv2.go: 7500 <= 7500 -> 5 s.
    assert round_interval_ms(7500) == 10000
    assert round_interval_ms(7500, backend=True) == 5000
    assert round_interval_ms(7499) == round_interval_ms(7499, backend=True) == 5000
    # Past the table's last row both answer one year.
    assert round_interval_ms(3628800000, backend=True) == 31536000000


@pytest.mark.parametrize(
    ("seconds", "points", "scrape", "min_interval", "min_step", "want"),
    [
        # 3 h / 1400 px = 7714 ms: browser rounds to 10 s, raised to the 15 s timeInterval; the
        # backend's range/points (7.7 s) is below that minimum -> 15 s. rate = max(15+15, 4*15) = 60 s.
        (10800, 1400, 15.0, None, None, ("15s", "15000", "1m0s", "60000")),
        # 24 h / 1400 = 61714 ms -> 1 m in both roundings; safe = 86400 s / 11000 = 7.85 s -> 10 s.
        # rate = max(60 + 15, 60) = 75 s.
        (86400, 1400, 15.0, None, None, ("1m", "60000", "1m15s", "75000")),
        # The embedded stack's 5 s scrape: 1 h / 700 px = 5143 ms -> 5 s; rate = max(5+5, 4*5) = 20 s.
        (3600, 700, 5.0, None, None, ("5s", "5000", "20s", "20000")),
        # The same panel on a 15 s datasource: 15 s interval, rate = 60 s.
        (3600, 700, 15.0, None, None, ("15s", "15000", "1m0s", "60000")),
        # Panel Min interval 1m: intervalMs = max(5 s, 60 s); rate = max(60 + 15, 60) = 75 s.
        (3600, 700, 15.0, 60.0, None, ("1m", "60000", "1m15s", "75000")),
        # Target Min step 30s: browser intervalMs = 15 s, backend step = 30 s (range/points below it);
        # the rate's scrape becomes the min step: max(15 + 30, 4 * 30) = 120 s.
        (3600, 700, 15.0, None, 30.0, ("30s", "30000", "2m0s", "120000")),
        # Go's quirk: 16800 s / 1400 = 12 s; browser: round -> 10 s, raised to the 11 s timeInterval;
        # backend: 12 s is not below 11 s, so it rounds 12 s -> 10 s, below the datasource minimum.
        (16800, 1400, 11.0, None, None, ("10s", "10000", "44s", "44000")),
        # 30 d with 100000 points at 1 s: browser round(25.9 s) = 30 s; safe interval
        # 2592000 s / 11000 = 235.6 s -> 5 m wins. rate = max(30 + 1, 4) = 31 s.
        (30 * 86400, 100000, 1.0, None, None, ("5m", "300000", "31s", "31000")),
    ],
)
def test_interval_macros(
    seconds: float,
    points: int,
    scrape: float,
    min_interval: float | None,
    min_step: float | None,
    want: tuple[str, str, str, str],
) -> None:
    tr = _range(seconds)
    m = macros(tr, compute_intervals(tr, points, scrape, min_interval=min_interval, min_step=min_step))
    assert (m["__interval"], m["__interval_ms"], m["__rate_interval"], m["__rate_interval_ms"]) == want


def test_range_macros_round_to_the_second() -> None:
    tr = _range(5400.6)
    m = macros(tr, compute_intervals(tr, 1000, 15.0))
    assert (m["__range"], m["__range_s"], m["__range_ms"]) == ("5401s", "5401", "5400600")
    assert m["__to"] == str(int(NOW.timestamp() * 1000))


def test_go_duration_spelling() -> None:
    assert [format_go_duration(s) for s in (0.5, 20, 75, 3600, 5400.5)] == [
        "500ms",
        "20s",
        "1m15s",
        "1h0m0s",
        "1h30m0.5s",
    ]


def test_datasource_time_interval() -> None:
    assert time_interval({"timeInterval": "5s"}) == 5.0
    assert time_interval({"timeInterval": ">30s"}) == 30.0
    assert time_interval({}) == 15.0  # Grafana's default
    assert time_interval({"timeInterval": "soon"}) == 15.0


def _var(name: str, **kw: object) -> dict[str, object]:
    return {"name": name, "type": "query", **kw}


def test_all_is_the_all_value_unformatted_or_every_option_as_a_regex() -> None:
    with_all_value = templating.select(_var("a", includeAll=True, allValue=".*"), ["x", "y"], ["$__all"])
    without = templating.select(_var("b", includeAll=True), ["x", "y.z"], ["All"])
    single = templating.select(_var("c", includeAll=True), ["only"], ["$__all"])
    scope = {"a": with_all_value, "b": without, "c": single}
    # prometheusSpecialRegexEscape writes "\\." (a backslash for PromQL's string, one for the regex).
    assert templating.interpolate('{a=~"$a", b=~"${b}", c=~"[[c]]"}', scope) == '{a=~".*", b=~"(x|y\\\\.z)", c=~"only"}'
    assert templating.interpolate("${b:csv} ${b:pipe}", scope) == "x,y.z x|y.z"


def test_selection_follows_request_then_saved_current_then_all() -> None:
    var = _var("s", includeAll=True, multi=True, current={"value": ["gone"]})
    assert templating.select(var, ["a", "b"], ["a", "b"]).values == ["a", "b"]
    assert templating.select(var, ["a", "b"]).is_all  # the saved value is no longer an option
    plain = _var("p", current={"value": "b"})
    assert templating.select(plain, ["a", "b"]).values == ["b"]
    assert templating.select(_var("q"), ["a", "b"]).values == ["a"]


def test_offline_scope_puts_every_variable_at_all_unless_asked() -> None:
    doc = {"templating": {"list": [_var("svc", includeAll=True, allValue=".*"), _var("m", includeAll=True)]}}
    scope = templating.offline_scope(doc, {"svc": ["checkout"]})
    assert scope["svc"].values == ["checkout"] and scope["m"].is_all
    assert templating.interpolate("$svc/$m", scope) == "checkout/()"  # All of no known option


def test_panel_walk_and_datasource_precedence() -> None:
    prom = {"type": "prometheus", "uid": "p"}
    doc = {
        "panels": [
            {
                "type": "stat",
                "title": "a",
                "datasource": prom,
                "targets": [{"expr": "up"}, {"expr": "x", "hide": True}],
            },
            {"type": "row", "title": "r", "collapsed": True, "panels": [{"type": "table", "title": "b"}]},
        ]
    }
    assert [p["title"] for p in panels.iter_panels(doc)] == ["a", "r", "b"]
    panel = doc["panels"][0]
    assert [t["expr"] for t in panels.visible_targets(panel)] == ["up"]
    tempo = {"type": "tempo", "uid": "t"}
    assert panels.datasource_ref(panel, {"datasource": tempo}) == tempo
    assert panels.datasource_ref(panel, {"datasource": {"uid": "-- Mixed --"}}) == prom
    assert panels.datasource_ref({}, {}) is None


def test_max_data_points_and_the_dashboard_time() -> None:
    assert panels.max_data_points({"gridPos": {"w": 24}}) == panels.PAGE_WIDTH_PX
    assert panels.max_data_points({"gridPos": {"w": 6}, "maxDataPoints": 100}) == 100
    tr = panels.dashboard_time_range({"time": {"from": "now-3h", "to": "now"}}, NOW)
    assert tr.seconds == 3 * 3600
    assert panels.dashboard_time_range({}, NOW).seconds == 6 * 3600  # Grafana's default now-6h


def test_prometheus_query_of_a_panel() -> None:
    panel = {"gridPos": {"w": 12}, "interval": "1m"}
    target = {"expr": 'sum(rate(x{s=~"$svc"}[$__rate_interval])) / $__interval_ms * ${__range_s}'}
    scope = {"svc": templating.select(_var("svc", includeAll=True, allValue=".+"), [], ["All"])}
    text, iv = panels.prometheus_query(panel, target, _range(3600), scope, 15.0)
    # Min interval 1m -> interval 60 s, rate max(60 + 15, 60) = 75 s, range 3600 s.
    assert text == 'sum(rate(x{s=~".+"}[1m15s])) / 60000 * 3600'
    assert iv.interval == 60.0


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


def _documented_rate_interval(seconds: float, scrape: float) -> float:
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
    assert iv.rate_interval == _documented_rate_interval(interval, 15.0)
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
