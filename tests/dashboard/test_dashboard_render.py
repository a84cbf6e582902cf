"""Pure rendering helpers: Tempo trace JSON to a span tree, timestamps, CLI registration."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime

import typer
from typer.testing import CliRunner

from amtp_obs.dashboard import cli, render
from amtp_obs.dashboard.engine import Series
from amtp_obs.grafana.timerange import TimeRange


def _b64(hex_id: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_id)).decode()


def test_flatten_trace_orders_parents_first_and_decodes_ids() -> None:
    root, child, grandchild = "00000000000000a1", "00000000000000b2", "00000000000000c3"
    span = lambda sid, parent, name, start: {  # noqa: E731 - a tiny local builder
        "spanId": _b64(sid),
        **({"parentSpanId": _b64(parent)} if parent else {}),
        "name": name,
        "startTimeUnixNano": str(start),
        "endTimeUnixNano": str(start + 10),
        "attributes": [{"key": "n", "value": {"intValue": "7"}}],
    }
    # Tempo puts each export in its own batch; children may arrive before their parent.
    doc = {
        "batches": [
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "b"}}]},
             "scopeSpans": [{"spans": [span(grandchild, child, "gc", 30)]}]},
            {"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "a"}}]},
             "scopeSpans": [{"spans": [span(child, root, "c", 20), span(root, None, "r", 10)]}]},
        ]
    }  # fmt: skip
    spans = render.flatten_trace(doc)
    assert [(s["name"], s["depth"], s["span_id"]) for s in spans] == [
        ("r", 0, root),
        ("c", 1, child),
        ("gc", 2, grandchild),
    ]
    assert spans[2]["service"] == "b" and spans[0]["attributes"] == {"n": 7}  # int64 as a number


def test_since_renders_utc() -> None:
    assert render._since("2026-11-25T15:19:47.123456789+01:00") == "2026-11-25 14:19:47 UTC"
    assert render._since("not a time") == "not a time"


def test_cli_registers_the_dashboard_command() -> None:
    app = typer.Typer()
    cli.register(app)

    @app.command()
    def other() -> None:  # a second command keeps typer in multi-command mode
        pass

    out = CliRunner().invoke(app, ["dashboard", "--help"])
    assert out.exit_code == 0
    assert "--prometheus-url" in out.output and "--alertmanager-url" in out.output


def _chart(*series: Series) -> str:
    now = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
    tr = TimeRange.parse("now-15m", "now", now)
    return render.svg_chart(list(series), tr, "short", None, 200)


T0 = datetime(2026, 11, 25, 11, 50, tzinfo=UTC).timestamp()


def test_chart_draws_a_lone_sample_as_a_dot() -> None:
    # A rate over a series that only just started has one step with a value: it must still show.
    svg = _chart(Series("total", [(T0, 31.5)]))
    assert "<circle" in svg and "<polyline" not in svg


def test_chart_breaks_lines_at_missing_steps() -> None:
    pts = [(T0 + 15 * i, float(i)) for i in (0, 1, 2, 6, 7)]  # steps 3-5 missing
    svg = _chart(Series("a", pts))
    lines = re.findall(r"points='([^']*)'", svg)
    assert [len(p.split()) for p in lines] == [3, 2]
    assert "<circle" not in svg


def test_chart_joins_a_complete_series_into_one_line() -> None:
    svg = _chart(Series("a", [(T0 + 15 * i, float(i % 3)) for i in range(20)]))
    assert len(re.findall(r"<polyline", svg)) == 1
