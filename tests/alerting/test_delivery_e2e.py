"""Alert delivery end to end with the real binaries.

Prometheus scrapes a collector self-metrics target under the job name prometheus.yml gives it; the
target goes away; the rule translated from alerting.yaml fires; the real Alertmanager delivers the
Slack payload to a local webhook and the critical route's e-mail to a local SMTP server. A mute
timing covering "now" (added to a copy of alerting.yaml) holds both notifications back, and the
dashboard shows the alert as muted.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from aiosmtpd.controller import Controller
from starlette.testclient import TestClient

from amtp_obs import env
from amtp_obs.alerting import runtime
from amtp_obs.check.promql import parse_selectors
from amtp_obs.dashboard import DashboardSettings, create_app
from amtp_obs.net import free_port
from amtp_obs.project import ALERTING_FILE, DASHBOARDS_DIR, DATASOURCES_DIR, PROMETHEUS_CONFIG, Project
from amtp_obs.shutdown import terminate
from amtp_obs.testing.poll import eventually

pytestmark = pytest.mark.needs("prometheus", "alertmanager")

REPO = Path(__file__).resolve().parents[2]
FAST = "1s"
MUTED_LOG_LINE = "Notifications not sent, route is within mute time"
"""Alertmanager 0.25's debug line for a notification its TimeMuteStage held back."""
ALWAYS = {"times": [{"start_time": "00:00", "end_time": "24:00"}]}
"""A time interval covering every minute of every day: active whenever the test runs."""


def wait_for(what: str, predicate: Callable[[], Any], timeout: float = 30.0) -> Any:
    return eventually(predicate, timeout, 0.2) or pytest.fail(f"timed out after {timeout:g} s waiting for {what}")


class _Recorder(ThreadingHTTPServer):
    """A local HTTP server that records every request body; GET /metrics serves a tiny exposition."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                body = b"# TYPE otelcol_process_uptime counter\notelcol_process_uptime_total 1\n"
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self) -> None:
                recorder.bodies.append(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                self.send_response(200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

        super().__init__(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.serve_forever, daemon=True)
        self.thread.start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"

    def stop(self) -> None:
        self.shutdown()
        self.server_close()


@dataclass
class _Mailbox:
    messages: list[Any] = field(default_factory=list)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.messages.append((list(envelope.rcpt_tos), message_from_bytes(envelope.original_content)))
        return "250 Message accepted for delivery"


@dataclass
class Stack:
    prometheus: str
    alertmanager: str
    slack: _Recorder
    mailbox: _Mailbox
    target: _Recorder
    alertname: str
    email_to: str
    am_files: runtime.AlertingFiles
    am_log: Path

    def muted_notifications(self) -> int:
        """Notifications Alertmanager held back because a route was within a mute time (its debug log)."""
        return self.am_log.read_text(errors="replace").count(MUTED_LOG_LINE)


def _fast_copy(tmp_path: Path, extra_mute: dict[str, Any] | None) -> Path:
    """alerting.yaml with short group timings and only ``extra_mute`` (if any) on the child routes.

    The project's own mute timings stay defined but unreferenced, so whether a notification goes out
    does not depend on the day the test runs (the weekend mute would silence the control case).
    """
    doc = yaml.safe_load((REPO / ALERTING_FILE).read_text())
    root = doc["policies"][0]
    for route in [root, *root.get("routes", [])]:
        route["group_wait"], route["group_interval"] = "0s" if route is not root else FAST, FAST
        route.pop("mute_time_intervals", None)
    for group in doc["groups"]:
        group["interval"] = FAST
    if extra_mute is not None:
        doc["muteTimes"].append(extra_mute)
        for route in root.get("routes", []):
            route["mute_time_intervals"] = [extra_mute["name"]]
    path = tmp_path / "alerting.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


@pytest.fixture
def stack_factory(tmp_path: Path) -> Iterator[Callable[[dict[str, Any] | None], Stack]]:
    cleanups: list[Callable[[], None]] = []

    def start(extra_mute: dict[str, Any] | None) -> Stack:
        slack, target = _Recorder(), _Recorder()
        cleanups.extend([slack.stop])
        mailbox = _Mailbox()
        smtp = Controller(mailbox, hostname="127.0.0.1", port=free_port())
        smtp.start()
        cleanups.append(smtp.stop)
        email_to = "llm-oncall@example.test"
        variables = {
            env.AMTP_SLACK_WEBHOOK_URL: f"http://{slack.address}/services/T000/B000/XXXX",
            env.AMTP_ALERT_EMAIL_ADDRESSES: email_to,
            env.GF_SMTP_HOST: f"127.0.0.1:{smtp.port}",
            env.GF_SMTP_FROM_ADDRESS: "grafana-alerts@example.test",
            env.GF_SMTP_STARTTLS_POLICY: "NoStartTLS",
            env.AMTP_OBS_ALERT_FOR: "2s",
        }
        state = tmp_path / "state"
        files = runtime.prepare(
            Project(REPO, {}), state, alerting_file=_fast_copy(tmp_path, extra_mute), variables=variables
        )
        am = runtime.AlertmanagerProcess(files, free_port(), state / "alertmanager.log", log_level="debug").start()
        cleanups.append(am.stop)

        # The real prometheus.yml's jobs that the rules query, pointed at our target, scraped every second.
        rules_text = files.rules_file.read_text()
        base = Project(REPO, {}).load_yaml(PROMETHEUS_CONFIG)
        jobs = [j for j in base["scrape_configs"] if f'job="{j["job_name"]}"' in rules_text]
        assert jobs, "no scrape job of prometheus.yml is queried by the alert rules"
        for job in jobs:
            for sc in job["static_configs"]:
                sc["targets"] = [target.address]
        base["scrape_configs"] = jobs
        base["global"].update(scrape_interval=FAST, evaluation_interval=FAST)
        # Rules are loaded only once the target is scraped: Prometheus starts scraping about 5 s after
        # start (service discovery is throttled), and absent(up) must not fire in that gap.
        (state / "prometheus.yml").write_text(yaml.safe_dump(base))
        port = free_port()
        log = (state / "prometheus.log").open("wb")
        proc = subprocess.Popen(
            [
                shutil.which("prometheus") or "prometheus",
                f"--config.file={state / 'prometheus.yml'}",
                f"--storage.tsdb.path={state / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{port}",
                "--web.enable-lifecycle",
                "--rules.alert.resend-delay=1s",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )

        def stop_prom() -> None:
            terminate(proc)
            log.close()

        cleanups.append(stop_prom)
        prom = f"http://127.0.0.1:{port}"
        wait_for("Prometheus ready", lambda: _ok(prom + "/-/ready"))
        wait_for("the target to be scraped (up == 1)", lambda: _up(prom) == [1.0])
        cfg = runtime.add_alerting(base, rule_files=[files.rules_file], alertmanagers=[f"127.0.0.1:{am.port}"])
        (state / "prometheus.yml").write_text(yaml.safe_dump(cfg))
        assert httpx.post(prom + "/-/reload", timeout=10).status_code == 200
        wait_for("the rules to load", lambda: httpx.get(prom + "/api/v1/rules", timeout=2).json()["data"]["groups"])
        # Prometheus discovers Alertmanager a few seconds after the reload; with a 1 s resend delay a
        # firing alert reaches it as soon as it is known, so nothing waits for that here.
        rules = yaml.safe_load(rules_text)
        # The collector-down rule: the one on `up` (the data-loss rules watch counters, not targets).
        (rule,) = [
            r for g in rules["groups"] for r in g["rules"] if "up" in {s.name for s in parse_selectors(r["expr"])}
        ]
        return Stack(prom, am.url, slack, mailbox, target, rule["alert"], email_to, files, am.log_path)

    yield start
    for stop in reversed(cleanups):
        stop()


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=1).status_code == 200
    except httpx.HTTPError:
        return False


def _up(prom: str) -> list[float]:
    body = httpx.get(prom + "/api/v1/query", params={"query": "up"}, timeout=2).json()
    return [float(r["value"][1]) for r in body["data"]["result"]]


def _firing(prom: str, alertname: str) -> bool:
    alerts = httpx.get(prom + "/api/v1/alerts", timeout=2).json()["data"]["alerts"]
    return any(a["labels"].get("alertname") == alertname and a["state"] == "firing" for a in alerts)


def _am_alerts(am: str, alertname: str) -> list[dict[str, Any]]:
    alerts = httpx.get(am + "/api/v2/alerts", timeout=2).json()
    return [a for a in alerts if a["labels"].get("alertname") == alertname]


def _collector_goes_down(stack: Stack) -> None:
    wait_for("the target to be scraped (up == 1)", lambda: _up(stack.prometheus) == [1.0])
    assert not _firing(stack.prometheus, stack.alertname)
    stack.target.stop()
    wait_for("the alert to fire in Prometheus", lambda: _firing(stack.prometheus, stack.alertname))
    wait_for("Alertmanager to receive the alert", lambda: _am_alerts(stack.alertmanager, stack.alertname))


def test_collector_down_fires_and_is_delivered_to_slack_and_email(
    stack_factory: Callable[..., Stack],
) -> None:
    stack = stack_factory(None)
    _collector_goes_down(stack)

    wait_for("the Slack webhook call", lambda: stack.slack.bodies, timeout=20)
    payload = json.loads(stack.slack.bodies[0])
    assert payload["channel"] == "#llm-alerts"
    text = json.dumps(payload)
    assert "FIRING" in text and stack.alertname in text

    wait_for("the e-mail", lambda: stack.mailbox.messages, timeout=20)
    rcpts, msg = stack.mailbox.messages[0]
    assert rcpts == [stack.email_to]
    assert msg["From"] == "grafana-alerts@example.test"
    assert stack.alertname in msg["Subject"]
    assert "FIRING" in msg["Subject"]

    (alert,) = _am_alerts(stack.alertmanager, stack.alertname)
    assert alert["status"]["state"] == "active"
    assert {r["name"] for r in alert["receivers"]} == {"email-llm-alerts", "slack-llm-alerts"}
    assert alert["labels"]["severity"] == "critical"

    rows, page = _dashboard_alerts(stack)
    assert rows["Prometheus"]["state"] == "firing"
    assert rows["Alertmanager"]["state"] == "active"
    assert "email-llm-alerts" in rows["Alertmanager"]["detail"]
    assert re.search(r"badge state-firing'>firing<", page)

    # A silence (made through Alertmanager's own API) shows as suppressed, naming the silence.
    now = datetime.now(UTC)
    silence = httpx.post(
        stack.alertmanager + "/api/v2/silences",
        json={
            "matchers": [{"name": "alertname", "value": stack.alertname, "isRegex": False, "isEqual": True}],
            "startsAt": now.isoformat(),
            "endsAt": (now + timedelta(hours=1)).isoformat(),
            "createdBy": "test",
            "comment": "maintenance",
        },
        timeout=5,
    )
    assert silence.status_code == 200, silence.text
    silence_id = silence.json()["silenceID"]
    wait_for(
        "the silence to apply",
        lambda: _am_alerts(stack.alertmanager, stack.alertname)[0]["status"]["state"] == "suppressed",
    )
    rows, page = _dashboard_alerts(stack)
    assert rows["Alertmanager"]["state"] == "suppressed"
    assert silence_id in rows["Alertmanager"]["detail"]
    assert re.search(r"badge state-suppressed'>suppressed<", page)


def test_mute_timing_covering_now_holds_notifications_back(stack_factory: Callable[..., Stack]) -> None:
    mute = {"orgId": 1, "name": "test-mute", "time_intervals": [ALWAYS]}
    stack = stack_factory(mute)
    _collector_goes_down(stack)
    # Positive evidence: Alertmanager itself says it held the notifications back for the mute time,
    # on both child routes (e-mail and Slack), at least twice each (group_interval is 1 s here).
    wait_for("Alertmanager to hold notifications back for the mute time", lambda: stack.muted_notifications() >= 4)
    assert stack.slack.bodies == []
    assert stack.mailbox.messages == []
    (alert,) = _am_alerts(stack.alertmanager, stack.alertname)
    # Alertmanager 0.25 keeps a time-muted alert "active" with no mutedBy field; later versions add it.
    assert alert["status"]["state"] in ("active", "suppressed")
    # Our evaluation of the running config agrees, at a fixed instant (the interval covers any).
    fixed = datetime(2026, 1, 7, 12, 30, tzinfo=UTC)
    assert runtime.muted_by(stack.am_files.config, alert["labels"], fixed) == ["test-mute"]

    # The dashboard evaluates the running config's mute timings, so the alert shows as muted there.
    rows, page = _dashboard_alerts(stack)
    assert rows["Prometheus"]["state"] == "firing"
    assert rows["Alertmanager"]["state"] == "muted"
    assert "test-mute" in rows["Alertmanager"]["detail"]
    assert re.search(r"badge state-muted'>muted<", page)


def _dashboard_alerts(stack: Stack) -> tuple[dict[str, dict[str, Any]], str]:
    settings = DashboardSettings(
        dashboards_dir=REPO / DASHBOARDS_DIR,
        datasources_dir=REPO / DATASOURCES_DIR,
        prometheus_url=stack.prometheus,
        alertmanager_url=stack.alertmanager,
    )
    with TestClient(create_app(settings)) as client:
        rows = client.get("/api/alerts").json()["rows"]
        page = client.get("/alerting/list").text
    return {r["source"]: r for r in rows if r["name"] == stack.alertname}, page
