"""The dashboard app over HTTP, against the real Prometheus and a Tempo-API server (see conftest)."""

from __future__ import annotations

import copy
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from dash_helpers import (
    CACHE_READ_PER_STEP,
    CALLS_PER_STEP,
    COMPLETION_PER_STEP,
    GROW_STEPS,
    P95_MS,
    PROMPT_PER_STEP,
    REPO,
    SERVICES,
    STEP_S,
    TRACE_ID,
    ServerThread,
    final_tokens,
    free_port,
    make_settings,
)

from amtp_obs import contract
from amtp_obs.dashboard import create_app
from amtp_obs.project import ALERTING_FILE, DASHBOARDS_DIR
from amtp_obs.tempo import TempoApp
from amtp_obs.testing.poll import eventually
from amtp_obs.testing.prometheus import Prom

UID = "llm-token-accounting"
DASHBOARD_FILE = REPO / DASHBOARDS_DIR / f"{UID}.json"


def data(base: str, **params: Any) -> dict[str, Any]:
    resp = httpx.get(f"{base}/api/amtp/dashboards/{UID}/data", params=params, timeout=30)
    assert resp.status_code == 200, resp.text
    return resp.json()


def panels_by_title(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {p["title"]: p for p in doc["panels"]}


def stat(panel: dict[str, Any]) -> float:
    assert panel["error"] is None, panel["error"]
    (value,) = panel["stats"]
    return float(value["value"])


def test_every_provisioned_panel_has_its_value(dashboard_url: str) -> None:
    doc = data(dashboard_url)
    source = json.loads(DASHBOARD_FILE.read_text())
    assert [p["title"] for p in doc["panels"]] == [p["title"] for p in source["panels"]]
    p = panels_by_title(doc)
    prompt, completion = final_tokens(PROMPT_PER_STEP), final_tokens(COMPLETION_PER_STEP)
    assert stat(p["Prompt Tokens"]) == prompt
    assert stat(p["Completion Tokens"]) == completion
    assert stat(p["Total Tokens"]) == prompt + completion
    # Ground truth kept by the synthetic workload: every token panel equals it.
    assert stat(p["Cache Hit Ratio"]) == pytest.approx(final_tokens(CACHE_READ_PER_STEP) / prompt, rel=1e-12)
    by_service = dict(
        zip(
            *[
                [s["name"] for s in p["Tokens by Service"]["stats"]],
                [s["value"] for s in p["Tokens by Service"]["stats"]],
            ],
            strict=True,
        )
    )
    assert by_service == {
        s: final_tokens(PROMPT_PER_STEP, (s,)) + final_tokens(COMPLETION_PER_STEP, (s,)) for s in SERVICES
    }
    assert [(s["name"], s["value"]) for s in p["Tokens by Model"]["stats"]] == [("gpt-4o", prompt + completion)]
    assert p["Total Tokens"]["stats"][0]["text"] == str(prompt + completion)
    assert stat(p["P95 LLM Latency"]) == pytest.approx(P95_MS, rel=1e-6)
    assert p["P95 LLM Latency"]["stats"][0]["text"].endswith(" ms")
    assert stat(p["LLM Calls / sec"]) == pytest.approx(len(SERVICES) * CALLS_PER_STEP / STEP_S, rel=1e-6)
    assert p["LLM Calls / sec"]["stats"][0]["text"].endswith(" req/s")

    series = p["Token Rate (per minute)"]["series"]
    assert [s["name"] for s in series] == ["prompt", "completion", "total"]
    assert all(len(s["points"]) >= 8 for s in series)  # 10 minutes of data in 1-minute steps
    # Each 1-minute step holds exactly four 15 s increments: while the counters grow, 4 x per step.
    growing = final_tokens(PROMPT_PER_STEP) / GROW_STEPS * 60 / STEP_S
    assert max(v for _, v in series[0]["points"]) == pytest.approx(growing, rel=1e-9)
    # The steps tile the range, so the chart adds up to the stat, token for token.
    assert sum(v for _, v in series[0]["points"]) == pytest.approx(prompt, rel=1e-9)
    assert sum(v for _, v in series[2]["points"]) == pytest.approx(prompt + completion, rel=1e-9)

    table = p["LLM Trace Search"]["table"]
    assert table["columns"][:4] == ["Trace ID", "Start time", "Service", "Name"]
    assert table["rows"][0][0] == TRACE_ID and table["rows"][0][3] == contract.SPAN_LLM_COMPLETION
    assert table["links"][0] == f"/trace/{TRACE_ID}"


def test_template_variables_come_from_label_values_and_filter_the_panels(dashboard_url: str) -> None:
    doc = data(dashboard_url)
    variables = {v["name"]: v for v in doc["variables"]}
    assert variables["service_name"]["options"] == sorted(SERVICES)
    assert variables["service_name"]["all"] is True
    assert variables["span_name"]["options"] == [contract.SPAN_LLM_COMPLETION]

    one = SERVICES[0]
    doc = data(dashboard_url, **{"var-service_name": one})
    p = panels_by_title(doc)
    assert stat(p["Prompt Tokens"]) == final_tokens(PROMPT_PER_STEP, (one,))
    source = {q["title"]: q for q in json.loads(DASHBOARD_FILE.read_text())["panels"]}
    start, end = (datetime.fromisoformat(doc["time"][k]) for k in ("start", "end"))
    range_s = f"{round((end - start).total_seconds())}s"
    expected = [
        t["expr"].replace("$service_name", one).replace("$__range", range_s) for t in source["Prompt Tokens"]["targets"]
    ]
    assert p["Prompt Tokens"]["queries"] == expected
    assert stat(p["LLM Calls / sec"]) == pytest.approx(CALLS_PER_STEP / STEP_S, rel=1e-6)
    # The TraceQL query received the selection too: the trace store finds the trace for its own
    # service, and nothing for the other one.
    assert [row[0] for row in p["LLM Trace Search"]["table"]["rows"]] == [TRACE_ID]
    other = panels_by_title(data(dashboard_url, **{"var-service_name": SERVICES[1]}))["LLM Trace Search"]
    assert other["error"] is None and other["table"]["rows"] == []


def test_interval_follows_grafanas_rule(dashboard_url: str) -> None:
    """$__interval: range / 1400 px rounded to Grafana's nice steps, at least the panel's 1m minimum.

    3 h: 7.7 s -> 10 s, raised to the 1m minimum; 7 d: 432 s -> 5m (nice-interval table).
    """
    p = panels_by_title(data(dashboard_url))
    assert all("[1m]" in q and q.endswith("/ 60000") for q in p["Token Rate (per minute)"]["queries"])
    p = panels_by_title(data(dashboard_url, **{"from": "now-7d", "to": "now"}))
    assert all("[5m]" in q and q.endswith("/ 300000") for q in p["Token Rate (per minute)"]["queries"])


def test_pages_use_grafanas_urls(dashboard_url: str) -> None:
    home = httpx.get(dashboard_url + "/", timeout=10)
    assert home.status_code == 200 and f"/d/{UID}/" in home.text
    for path in (f"/d/{UID}", f"/d/{UID}/llm-token-accounting"):
        page = httpx.get(dashboard_url + path, timeout=30)
        assert page.status_code == 200
        assert page.text.count("class=panel ") == len(json.loads(DASHBOARD_FILE.read_text())["panels"])
        assert 'data-refresh="30s"' in page.text  # the dashboard's own refresh interval
        assert "value='now-3h'" in page.text  # and its default time range in the picker
    api = httpx.get(f"{dashboard_url}/api/dashboards/uid/{UID}", timeout=10).json()
    assert api["dashboard"]["uid"] == UID and api["meta"]["provisioned"] is True
    assert httpx.get(dashboard_url + "/api/health", timeout=5).json()["database"] == "ok"
    assert httpx.get(dashboard_url + "/public/app.js", timeout=5).status_code == 200


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/d/no-such-dashboard", 404, "not found"),
        ("/api/dashboards/uid/no-such-dashboard", 404, "not found"),
        (f"/d/{UID}?from=yesterday", 400, "invalid time"),
        (f"/d/{UID}?from=now&to=now-1h", 400, "must be before"),
        (f"/d/{UID}?refresh=often", 400, "invalid refresh"),
        (f"/api/amtp/dashboards/{UID}/data?from=garbage", 400, "invalid time"),
        ("/trace/not-hex", 400, "hex"),
        ("/trace/0123456789abcdef0123456789abcdef", 404, "not found"),
        ("/api/datasources/proxy/uid/prometheus/-/quit", 403, "only forwards"),
        ("/api/datasources/proxy/uid/nope/api/v1/query", 404, "not provisioned"),
    ],
)
def test_bad_input_gets_a_clear_4xx(dashboard_url: str, path: str, status: int, message: str) -> None:
    resp = httpx.get(dashboard_url + path, timeout=30)
    assert resp.status_code == status
    assert message in resp.text
    assert "Traceback" not in resp.text
    if path.startswith("/api/"):
        assert message in resp.json()["message"]


def test_trace_view_shows_the_span_tree_with_attributes(dashboard_url: str) -> None:
    resp = httpx.get(f"{dashboard_url}/trace/{TRACE_ID}", params={"dashboard": UID}, timeout=10)
    assert resp.status_code == 200
    html = resp.text
    names = re.findall(r"<b>([^<]+)</b></span><span class=span-bar-track>", html)
    assert names == [
        contract.SPAN_LLM_COMPLETION,
        contract.SPAN_LLM_INFERENCE,
        contract.SPAN_LLM_RESPONSE_PARSE,
    ]
    assert "padding-left:16px" in html  # children are indented under the root
    assert f"<th>{contract.LLM_MODEL}</th><td>gpt-4o</td>" in html
    assert f"/d/{UID}?" in html  # a way back to the dashboard


def test_trace_search_rows_link_to_the_trace_view(dashboard_url: str) -> None:
    page = httpx.get(f"{dashboard_url}/d/{UID}", timeout=30).text
    link = re.search(r"href='(/trace/[0-9a-f]{32})\?[^']*'", page)
    assert link is not None
    assert httpx.get(dashboard_url + link.group(1), timeout=10).status_code == 200


def test_datasource_proxy_reaches_prometheus_and_tempo(dashboard_url: str) -> None:
    prom = httpx.get(
        f"{dashboard_url}/api/datasources/proxy/uid/prometheus/api/v1/query",
        params={"query": f"count({contract.PROMPT_TOKENS.prometheus_name})"},
        timeout=10,
    ).json()
    assert prom["status"] == "success"
    assert float(prom["data"]["result"][0]["value"][1]) == len(SERVICES)
    echo = httpx.get(f"{dashboard_url}/api/datasources/proxy/uid/tempo/api/echo", timeout=10)
    assert echo.text == "echo"
    posted = httpx.post(
        f"{dashboard_url}/api/datasources/proxy/uid/prometheus/api/v1/query", data={"query": "vector(7)"}, timeout=10
    ).json()
    assert posted["data"]["result"][0]["value"][1] == "7"
    write = httpx.post(f"{dashboard_url}/api/datasources/proxy/uid/prometheus/api/v1/write", content=b"x", timeout=10)
    assert write.status_code == 403


def test_a_broken_query_shows_its_error_and_the_rest_still_works(
    tmp_path: Path, prometheus: Prom, trace_store: TempoApp
) -> None:
    doc = json.loads(DASHBOARD_FILE.read_text())
    broken = next(p for p in doc["panels"] if p["title"] == "Prompt Tokens")
    broken["targets"][0]["expr"] = "sum(rate(" + contract.PROMPT_TOKENS.prometheus_name + "[5m]"
    traces = next(p for p in doc["panels"] if p["type"] == "table")
    traces["targets"][0]["query"] = "not traceql"
    (tmp_path / DASHBOARD_FILE.name).write_text(json.dumps(doc))
    with ServerThread(create_app(make_settings(prometheus.url, trace_store.http_url, tmp_path))) as srv:
        p = panels_by_title(data(srv.url))
        page = httpx.get(f"{srv.url}/d/{UID}", timeout=30)
    assert "parse error" in p["Prompt Tokens"]["error"]
    assert "invalid TraceQL" in p["LLM Trace Search"]["error"]
    assert stat(p["Completion Tokens"]) == final_tokens(COMPLETION_PER_STEP)
    assert page.status_code == 200
    assert page.text.count("class=panel-error") == 2


def test_unreachable_backends_show_errors_in_every_panel_not_a_crash(tmp_path: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    with ServerThread(create_app(make_settings(dead, dead))) as srv:
        doc = data(srv.url)
        page = httpx.get(f"{srv.url}/d/{UID}", timeout=30)
    assert page.status_code == 200
    assert all(p["error"] and "unreachable" in p["error"] for p in doc["panels"])
    assert all(v["error"] and "unreachable" in v["error"] for v in doc["variables"])


def test_cli_serves_the_dashboard(tmp_path: Path, prometheus: Prom, trace_store: TempoApp) -> None:
    """``python -m amtp_obs.dashboard`` as the embedded stack starts it."""
    import subprocess
    import sys
    import time

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "amtp_obs.dashboard", "--project-dir", str(REPO), "--port", str(port),
         "--prometheus-url", prometheus.url, "--tempo-url", trace_store.http_url],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.1)
        assert stat(panels_by_title(data(f"http://127.0.0.1:{port}"))["Prompt Tokens"]) > 0
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0


def test_cli_reports_a_port_in_use(prometheus: Prom) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        out = subprocess.run(
            [sys.executable, "-m", "amtp_obs.dashboard", "--project-dir", str(REPO),
             "--port", str(busy.getsockname()[1]), "--prometheus-url", prometheus.url],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
    assert out.returncode == 1
    assert "OBS_GRAFANA_PORT" in out.stderr and "Traceback" not in out.stderr


def test_broken_dashboard_files_are_listed_with_the_reason(tmp_path: Path) -> None:
    from starlette.testclient import TestClient

    good = json.loads(DASHBOARD_FILE.read_text())
    (tmp_path / "a-good.json").write_text(json.dumps(good))
    (tmp_path / "b-same-uid.json").write_text(json.dumps({**good, "title": "Copy"}))
    (tmp_path / "c-broken.json").write_text("{ not json")
    dead = f"http://127.0.0.1:{free_port()}"
    with TestClient(create_app(make_settings(dead, dead, tmp_path))) as client:
        home = client.get("/").text
        search = client.get("/api/search").json()
        datasources = client.get("/api/datasources").json()
    assert [d["uid"] for d in search] == [UID]
    assert "c-broken.json: not valid JSON" in home
    assert f"b-same-uid.json: uid &#x27;{UID}&#x27; is already used by a-good.json" in home
    assert {d["type"] for d in datasources} == {"prometheus", "tempo"}


def _alert_list(doc: dict[str, Any]) -> dict[str, Any]:
    (panel,) = [p for p in doc["panels"] if p["type"] == "alertlist"]
    assert panel["error"] is None, panel["error"]
    return panel


def test_alert_list_panel_shows_the_stacks_alerts_by_its_filter(
    tmp_path: Path, dashboard_url: str, prometheus: Prom, trace_store: TempoApp
) -> None:
    """The provisioned alert list (label filter cluster=zt-amtp) lists the firing collector-down alert
    (no collector runs here); another label filter, a name filter or a state filter leaves it out."""
    source = json.loads(DASHBOARD_FILE.read_text())
    (spec,) = [p for p in source["panels"] if p["type"] == "alertlist"]
    alerting = yaml.safe_load((REPO / ALERTING_FILE).read_text())
    down = alerting["groups"][0]["rules"][0]
    assert f'{{cluster="{down["labels"]["cluster"]}"}}' == spec["options"]["alertInstanceLabelFilter"]

    def rows() -> list[list[Any]]:
        return _alert_list(data(dashboard_url))["table"]["rows"]

    assert eventually(lambda: any(r[0] == down["title"] and r[1] == "firing" for r in rows()), 20, 0.2), rows()
    panel = _alert_list(data(dashboard_url))
    assert panel["table"]["columns"] == ["Alert", "State", "Since", "Labels", "Summary"]
    (row,) = [r for r in panel["table"]["rows"] if r[0] == down["title"]]
    assert f"severity={down['labels']['severity']}" in row[3] and row[4] == down["annotations"]["summary"]

    for change in (
        {"alertInstanceLabelFilter": '{cluster="elsewhere"}'},
        {"alertInstanceLabelFilter": '{cluster=~"zt-.*", severity!="critical"}'},
        {"alertName": "no such alert"},
        {"stateFilter": {"firing": False, "pending": True}},
    ):
        doc = copy.deepcopy(source)
        next(p for p in doc["panels"] if p["type"] == "alertlist")["options"].update(change)
        (tmp_path / DASHBOARD_FILE.name).write_text(json.dumps(doc))
        with ServerThread(create_app(make_settings(prometheus.url, trace_store.http_url, tmp_path))) as srv:
            assert [r[0] for r in _alert_list(data(srv.url))["table"]["rows"]] == [], change
