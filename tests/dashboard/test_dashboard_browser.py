"""Headless Chromium loads the page served against the real Prometheus and a Tempo-API server.

The DOM must hold all seven provisioned panels with their values; a screenshot is kept in
``artifacts/`` (gitignored) for people and for docs/img/dashboard.png.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest
from dash_helpers import (
    COMPLETION_PER_STEP,
    PROMPT_PER_STEP,
    REPO,
    TRACE_ID,
    FakeTempo,
    Prom,
    ServerThread,
    alert_titles,
    final_tokens,
    make_settings,
)

from amtp_obs.dashboard import create_app
from amtp_obs.project import DASHBOARDS_DIR

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
UID = "llm-token-accounting"
DASHBOARD_FILE = REPO / DASHBOARDS_DIR / f"{UID}.json"
ARTIFACTS = REPO / "artifacts"


def chromium(url: str, tmp_path: Path, *args: str, budget_ms: int = 3000) -> str:
    cmd = [
        str(CHROMIUM),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium-profile'}",
        f"--virtual-time-budget={budget_ms}",
        *args,
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=90)
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


class Panels(HTMLParser):
    """Collects, per rendered panel: title, stat values, chart lines, table links, errors."""

    def __init__(self) -> None:
        super().__init__()
        self.panels: list[dict[str, object]] = []
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "section" and "panel" in cls and "row-panel" not in cls:
            self.panels.append({"title": "", "stats": [], "lines": 0, "links": [], "error": ""})
        if not self.panels:
            return
        cur = self.panels[-1]
        if "panel-title" in cls:
            self._field = "title"
        elif "stat-value" in cls:
            self._field = "stat"
        elif "panel-error" in cls:
            self._field = "error"
        elif tag == "polyline":
            cur["lines"] = int(cur["lines"]) + 1  # type: ignore[call-overload]
        elif tag == "a" and "trace-link" in cls:
            cur["links"].append(a.get("href"))  # type: ignore[attr-defined]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h3", "span", "div"):
            self._field = None

    def handle_data(self, data: str) -> None:
        if not self.panels or self._field is None:
            return
        cur = self.panels[-1]
        if self._field == "title":
            cur["title"] = str(cur["title"]) + data
        elif self._field == "stat":
            cur["stats"].append(data)  # type: ignore[attr-defined]
        elif self._field == "error":
            cur["error"] = str(cur["error"]) + data


def _alerts(base: str) -> list[dict[str, str]]:
    return httpx.get(base + "/api/alerts", timeout=10).json()["rows"]


def parse(dom: str) -> dict[str, dict[str, object]]:
    parser = Panels()
    parser.feed(dom)
    return {str(p["title"]): p for p in parser.panels}


def test_headless_chromium_shows_all_seven_panels_with_values(
    tmp_path: Path, dashboard_url: str, fake_tempo: tuple[FakeTempo, str]
) -> None:
    source = json.loads(DASHBOARD_FILE.read_text())
    expected_titles = [p["title"] for p in source["panels"]]
    alert = alert_titles()[0]
    deadline = time.monotonic() + 20
    while not any(r["name"] == alert and r["state"] == "firing" for r in _alerts(dashboard_url)):
        assert time.monotonic() < deadline, "the provisioned alert rule never fired in Prometheus"
        time.sleep(0.2)
    asked = len(fake_tempo[0].queries)
    # refresh=1s: the page's own script must re-fetch the panels within the virtual time budget.
    dom = chromium(f"{dashboard_url}/d/{UID}?refresh=1s", tmp_path, "--dump-dom", budget_ms=4000)
    panels = parse(dom)
    assert list(panels) == expected_titles
    for title, panel in panels.items():
        assert not panel["error"], f"{title}: {panel['error']}"
    prompt, completion = final_tokens(PROMPT_PER_STEP), final_tokens(COMPLETION_PER_STEP)
    assert panels["Total Tokens"]["stats"] == [str(prompt + completion)]
    assert panels["Prompt Tokens"]["stats"] == [str(prompt)]
    assert panels["Completion Tokens"]["stats"] == [str(completion)]
    assert re.fullmatch(r"\d+(\.\d+)? ms", str(panels["P95 LLM Latency"]["stats"][0]))  # type: ignore[index]
    assert re.fullmatch(r"[\d.]+ req/s", str(panels["LLM Calls / sec"]["stats"][0]))  # type: ignore[index]
    assert panels["Token Rate (per minute)"]["lines"] == 3
    assert any(str(link).startswith(f"/trace/{TRACE_ID}") for link in panels["LLM Trace Search"]["links"])  # type: ignore[attr-defined]
    assert len(fake_tempo[0].queries) >= asked + 2, "the page did not refresh itself"
    # Firing alerts are on the page too, with their state.
    rows = re.findall(r"<tr class=\"alert-row state-(\w+)\"><td>(\w+)</td><td>([^<]+)</td>", dom)
    assert ("firing", "Prometheus", alert) in rows

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard.png"
    shot.unlink(missing_ok=True)
    chromium(
        f"{dashboard_url}/d/{UID}",
        tmp_path,
        f"--screenshot={shot}",
        "--window-size=1400,1800",
        "--hide-scrollbars",
    )
    assert shot.stat().st_size > 10_000
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_headless_chromium_shows_a_broken_panel_error_beside_working_panels(
    tmp_path: Path, prometheus: Prom, fake_tempo: tuple[FakeTempo, str]
) -> None:
    doc = json.loads(DASHBOARD_FILE.read_text())
    broken = next(p for p in doc["panels"] if p["type"] == "timeseries")
    broken["targets"][0]["expr"] = "sum(rate(no_such_metric[5m]) by"
    dashboards = tmp_path / "dashboards"
    dashboards.mkdir()
    (dashboards / DASHBOARD_FILE.name).write_text(json.dumps(doc))
    with ServerThread(create_app(make_settings(prometheus.url, fake_tempo[1], dashboards))) as srv:
        panels = parse(chromium(f"{srv.url}/d/{UID}", tmp_path, "--dump-dom"))
    assert "parse error" in str(panels[broken["title"]]["error"])
    others = [p for t, p in panels.items() if t != broken["title"]]
    assert len(others) == len(doc["panels"]) - 1
    assert all(not p["error"] for p in others)
    assert panels["Prompt Tokens"]["stats"] == [str(final_tokens(PROMPT_PER_STEP))]
    assert any(
        str(link).startswith(f"/trace/{TRACE_ID}")
        for link in panels["LLM Trace Search"]["links"]  # type: ignore[attr-defined]
    )
