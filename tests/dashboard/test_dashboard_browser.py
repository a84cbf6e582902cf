"""Headless Chromium loads the page served against the real Prometheus and the real trace store.

The DOM must hold all seven provisioned panels with their values; a screenshot is kept in
``artifacts/`` (gitignored) for people and for docs/img/dashboard.png.
"""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import httpx
import pytest
from dash_helpers import (
    COMPLETION_PER_STEP,
    PROMPT_PER_STEP,
    REPO,
    TRACE_ID,
    RecordingApp,
    ServerThread,
    alert_titles,
    final_tokens,
    make_settings,
)

from amtp_obs.dashboard import create_app
from amtp_obs.project import DASHBOARDS_DIR
from amtp_obs.tempo import TempoApp
from amtp_obs.testing.browser import chromium
from amtp_obs.testing.browser import parse_panels as parse
from amtp_obs.testing.prometheus import Prom

pytestmark = pytest.mark.needs("chromium")
UID = "llm-token-accounting"
DASHBOARD_FILE = REPO / DASHBOARDS_DIR / f"{UID}.json"
ARTIFACTS = REPO / "artifacts"


def _alerts(base: str) -> list[dict[str, str]]:
    return httpx.get(base + "/api/alerts", timeout=10).json()["rows"]


def test_headless_chromium_shows_all_seven_panels_with_values(
    tmp_path: Path, dashboard_url: str, dashboard_app: RecordingApp
) -> None:
    source = json.loads(DASHBOARD_FILE.read_text())
    expected_titles = [p["title"] for p in source["panels"]]
    alert = alert_titles()[0]
    deadline = time.monotonic() + 20
    while not any(r["name"] == alert and r["state"] == "firing" for r in _alerts(dashboard_url)):
        assert time.monotonic() < deadline, "the provisioned alert rule never fired in Prometheus"
        time.sleep(0.2)
    asked = dashboard_app.count(f"/d/{UID}", "fragment=1")  # the page's own refresh fetches
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
    assert dashboard_app.count(f"/d/{UID}", "fragment=1") >= asked + 2, "the page did not refresh itself"
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
    tmp_path: Path, prometheus: Prom, trace_store: TempoApp
) -> None:
    doc = json.loads(DASHBOARD_FILE.read_text())
    broken = next(p for p in doc["panels"] if p["type"] == "timeseries")
    broken["targets"][0]["expr"] = "sum(rate(no_such_metric[5m]) by"
    dashboards = tmp_path / "dashboards"
    dashboards.mkdir()
    (dashboards / DASHBOARD_FILE.name).write_text(json.dumps(doc))
    with ServerThread(create_app(make_settings(prometheus.url, trace_store.http_url, dashboards))) as srv:
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
