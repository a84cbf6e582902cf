"""The alerting runtime's files, Prometheus wiring and Alertmanager semantics (no network delivery here)."""

from __future__ import annotations

import stat
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from amtp_obs import env
from amtp_obs.alerting import runtime
from amtp_obs.net import free_port
from amtp_obs.project import ALERTING_FILE, Project

REPO = Path(__file__).resolve().parents[2]
VARIABLES = {
    env.AMTP_SLACK_WEBHOOK_URL: "http://127.0.0.1:9/slack",
    env.AMTP_ALERT_EMAIL_ADDRESSES: "oncall@example.test;lead@example.test",
    env.GF_SMTP_HOST: "127.0.0.1:2525",
    env.GF_SMTP_FROM_ADDRESS: "alerts@example.test",
    env.GF_SMTP_STARTTLS_POLICY: "NoStartTLS",
}


@pytest.fixture
def files(tmp_path: Path) -> runtime.AlertingFiles:
    return runtime.prepare(Project(REPO, {}), tmp_path, variables=VARIABLES)


def test_prepare_writes_rules_and_config_from_the_provisioning(files: runtime.AlertingFiles) -> None:
    source = yaml.safe_load((REPO / ALERTING_FILE).read_text())
    rules = yaml.safe_load(files.rules_file.read_text())
    titles = {r["title"] for g in source["groups"] for r in g["rules"]}
    assert {r["alert"] for g in rules["groups"] for r in g["rules"]} == titles
    am = yaml.safe_load(files.alertmanager_config.read_text())
    slack = next(r for r in am["receivers"] if r.get("slack_configs"))
    assert slack["slack_configs"][0]["api_url"] == VARIABLES[env.AMTP_SLACK_WEBHOOK_URL]
    email = next(r for r in am["receivers"] if r.get("email_configs"))["email_configs"][0]
    assert email["smarthost"] == VARIABLES[env.GF_SMTP_HOST]
    assert email["from"] == VARIABLES[env.GF_SMTP_FROM_ADDRESS]
    assert "oncall@example.test" in email["to"] and "lead@example.test" in email["to"]
    # The webhook URL is a credential: the file is readable by its owner only.
    assert stat.S_IMODE(files.alertmanager_config.stat().st_mode) == 0o600


def test_for_override_comes_from_the_documented_variable(tmp_path: Path) -> None:
    files = runtime.prepare(Project(REPO, {}), tmp_path, variables={**VARIABLES, env.AMTP_OBS_ALERT_FOR: "3s"})
    rules = yaml.safe_load(files.rules_file.read_text())
    assert {r["for"] for g in rules["groups"] for r in g["rules"]} == {"3s"}


def test_unsupported_constructs_are_reported_not_dropped(tmp_path: Path) -> None:
    doc = yaml.safe_load((REPO / ALERTING_FILE).read_text())
    doc["contactPoints"].append(
        {
            "orgId": 1,
            "name": "pager",
            "receivers": [{"uid": "p", "type": "pagerduty", "settings": {"integrationKey": "x"}}],
        }
    )
    copy = tmp_path / "alerting.yaml"
    copy.write_text(yaml.safe_dump(doc))
    files = runtime.prepare(Project(REPO, {}), tmp_path / "state", alerting_file=copy, variables=VARIABLES)
    printed: list[str] = []
    runtime.report_unsupported(files, printed.append)
    assert any("pagerduty" in line and line.startswith("warning: alerting:") for line in printed)


def test_broken_source_gives_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "alerting.yaml"
    bad.write_text("apiVersion: 1\npolicies: [\n")
    with pytest.raises(runtime.AlertingRuntimeError, match="invalid YAML"):
        runtime.prepare(Project(REPO, {}), tmp_path, alerting_file=bad, variables=VARIABLES)


@pytest.mark.needs("amtool")
def test_generated_alertmanager_config_passes_amtool(files: runtime.AlertingFiles) -> None:
    out = subprocess.run(
        ["amtool", "check-config", str(files.alertmanager_config)], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.needs("promtool")
def test_prometheus_config_with_alerting_passes_promtool(files: runtime.AlertingFiles, tmp_path: Path) -> None:
    base = Project(REPO, {}).load_yaml("infra/observability/prometheus.yml")
    cfg = runtime.add_alerting(base, rule_files=[files.rules_file], alertmanagers=["127.0.0.1:9093"])
    assert base.get("alerting") is None  # the input is not modified
    assert cfg["rule_files"] == [*(base.get("rule_files") or []), str(files.rules_file)]  # kept, then ours
    assert cfg["alerting"]["alertmanagers"] == [{"static_configs": [{"targets": ["127.0.0.1:9093"]}]}]
    path = tmp_path / "prometheus.yml"
    path.write_text(yaml.safe_dump(cfg))
    out = subprocess.run(["promtool", "check", "config", str(path)], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0, out.stdout + out.stderr
    n_rules = sum(len(g["rules"]) for g in files.rules["groups"])
    assert n_rules == sum(len(g["rules"]) for g in yaml.safe_load((REPO / ALERTING_FILE).read_text())["groups"])
    assert f"{n_rules} rules found" in out.stdout + out.stderr


def test_add_alerting_keeps_existing_rule_files_without_duplicates() -> None:
    cfg = runtime.add_alerting({"rule_files": ["a.yml"]}, rule_files=["a.yml", "b.yml"], alertmanagers=["h:1"])
    assert cfg["rule_files"] == ["a.yml", "b.yml"]


def test_alertmanager_command_disables_clustering_and_binds_loopback(files: runtime.AlertingFiles) -> None:
    argv = runtime.alertmanager_command(files, 9999, binary="/bin/am")
    assert argv[0] == "/bin/am"
    assert "--web.listen-address=127.0.0.1:9999" in argv
    assert "--cluster.listen-address=" in argv
    assert f"--config.file={files.alertmanager_config}" in argv


def test_missing_binary_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(runtime.AlertingRuntimeError, match="prometheus-alertmanager"):
        runtime.find_alertmanager()


# -- time intervals --------------------------------------------------------------------------------


def test_weekend_timing_covers_all_of_saturday_and_sunday_and_nothing_else(
    files: runtime.AlertingFiles,
) -> None:
    """Every minute of one week, evaluated with Alertmanager's rules on the translated config."""
    config = files.config
    names = {ti["name"] for ti in config["time_intervals"]}
    source = yaml.safe_load((REPO / ALERTING_FILE).read_text())
    (weekend,) = [m["name"] for m in source["muteTimes"]]
    assert weekend in names
    monday = datetime(2026, 11, 23, tzinfo=UTC)
    assert monday.weekday() == 0
    muted_days: dict[int, int] = {}
    for minute in range(7 * 24 * 60):
        at = monday + timedelta(minutes=minute)
        if runtime.named_interval_active(config, weekend, at):
            muted_days[at.weekday()] = muted_days.get(at.weekday(), 0) + 1
    assert muted_days == {5: 24 * 60, 6: 24 * 60}


def test_every_child_route_carries_the_weekend_mute(files: runtime.AlertingFiles) -> None:
    sunday_noon = datetime(2026, 11, 29, 12, tzinfo=UTC)
    wednesday = datetime(2026, 11, 25, 12, tzinfo=UTC)
    for severity in ("critical", "warning"):
        labels = {"alertname": "x", "severity": severity}
        assert runtime.muted_by(files.config, labels, sunday_noon), severity
        assert runtime.muted_by(files.config, labels, wednesday) == []


def test_critical_alerts_reach_email_and_slack(files: runtime.AlertingFiles) -> None:
    critical = [r["receiver"] for r in runtime.matching_routes(files.config["route"], {"severity": "critical"})]
    warning = [r["receiver"] for r in runtime.matching_routes(files.config["route"], {"severity": "warning"})]
    assert critical == ["email-llm-alerts", "slack-llm-alerts"]
    assert warning == ["slack-llm-alerts"]


@pytest.mark.parametrize(
    ("interval", "at", "expected"),
    [
        (
            {"times": [{"start_time": "09:00", "end_time": "17:00"}]},
            datetime(2026, 1, 5, 16, 59, tzinfo=UTC),
            True,
        ),
        (
            {"times": [{"start_time": "09:00", "end_time": "17:00"}]},
            datetime(2026, 1, 5, 17, 0, tzinfo=UTC),
            False,
        ),
        (
            {"times": [{"start_time": "00:00", "end_time": "24:00"}]},
            datetime(2026, 1, 5, 23, 59, tzinfo=UTC),
            True,
        ),
        (
            {"times": [{"start_time": "00:00", "end_time": "23:59"}]},
            datetime(2026, 1, 5, 23, 59, tzinfo=UTC),
            False,
        ),
        ({"weekdays": ["monday:friday"]}, datetime(2026, 1, 9, tzinfo=UTC), True),  # a Friday
        ({"weekdays": ["monday:friday"]}, datetime(2026, 1, 10, tzinfo=UTC), False),  # a Saturday
        ({"days_of_month": ["-1"]}, datetime(2026, 2, 28, tzinfo=UTC), True),
        ({"days_of_month": ["-1"]}, datetime(2026, 2, 27, tzinfo=UTC), False),
        ({"months": ["december"], "years": ["2026:2027"]}, datetime(2027, 12, 1, tzinfo=UTC), True),
        ({"months": ["1:3"]}, datetime(2026, 4, 1, tzinfo=UTC), False),
        # Friday 23:30 UTC is already Saturday 00:30 in Berlin.
        (
            {"weekdays": ["saturday"], "location": "Europe/Berlin"},
            datetime(2026, 1, 9, 23, 30, tzinfo=UTC),
            True,
        ),
        ({"weekdays": ["saturday"]}, datetime(2026, 1, 9, 23, 59, tzinfo=UTC), False),
    ],
)
def test_time_interval_semantics(interval: dict, at: datetime, expected: bool) -> None:
    assert runtime.time_interval_active(interval, at) is expected


def test_unknown_time_interval_name_is_an_error(files: runtime.AlertingFiles) -> None:
    with pytest.raises(ValueError, match="not defined"):
        runtime.named_interval_active(files.config, "nope", datetime.now(UTC))


needs_alertmanager = pytest.mark.needs("alertmanager")


@needs_alertmanager
def test_start_from_project_runs_the_real_alertmanager_on_the_translated_config(tmp_path: Path) -> None:
    import httpx

    printed: list[str] = []
    am = runtime.start_from_project(Project(REPO, VARIABLES), tmp_path, free_port(), printed.append)
    try:
        status = httpx.get(am.url + "/api/v2/status", timeout=5).json()
        running = yaml.safe_load(status["config"]["original"])
        assert {r["name"] for r in running["receivers"]} == {"slack-llm-alerts", "email-llm-alerts"}
        assert status["cluster"]["status"] == "disabled"
    finally:
        am.stop()
    assert am.proc is not None and am.proc.returncode is not None
    assert all(line.startswith("warning: alerting:") for line in printed)


@needs_alertmanager
def test_a_config_alertmanager_rejects_is_a_clear_error_with_its_log(files: runtime.AlertingFiles) -> None:
    files.alertmanager_config.write_text("route:\n  receiver: nobody\nreceivers: []\n")
    proc = runtime.AlertmanagerProcess(files, free_port(), files.storage_dir / "am.log")
    with pytest.raises(runtime.AlertingRuntimeError, match="did not become ready") as err:
        proc.start(timeout=10)
    assert "nobody" in str(err.value)


@pytest.mark.needs("amtool")
def test_undelivered_mode_keeps_routes_and_drops_every_integration(tmp_path: Path) -> None:
    """Without Slack/e-mail settings `up` still evaluates and routes alerts, and sends nothing."""
    project = Project.discover(Path(__file__).parent, environ={})
    with pytest.raises(runtime.AlertingRuntimeError, match="no addresses"):
        runtime.prepare(project, tmp_path / "a", variables={})
    files = runtime.prepare(project, tmp_path / "b", variables={}, deliver=False)
    receivers = yaml.safe_load(files.alertmanager_config.read_text())["receivers"]
    assert {r["name"] for r in receivers} == {"slack-llm-alerts", "email-llm-alerts"}
    assert all(set(r) == {"name"} for r in receivers)
    routed = subprocess.run(
        [
            "amtool",
            "config",
            "routes",
            "test",
            f"--config.file={files.alertmanager_config}",
            "--verify.receivers=email-llm-alerts,slack-llm-alerts",
            "severity=critical",
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert routed.returncode == 0, routed.stdout + routed.stderr
