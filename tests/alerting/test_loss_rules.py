"""The data-loss alerts of alerting.yaml, translated to Prometheus rules, under ``promtool test rules``.

Each rule watches counters named as the pinned versions expose them (docs/alerting.md cites the
source lines). For each counter the cases are: a counter that grows fires with the expected labels;
a series born with a value (its first loss) fires although ``increase()`` cannot see it; a counter
that stays flat, or stays 0, is silent; a counter reset by a restart is silent unless it grows again.
"""

from __future__ import annotations

import copy
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

from amtp_obs import env
from amtp_obs import project as proj
from amtp_obs.alerting import FOLDER_LABEL, translate
from amtp_obs.collector import telemetry as otelcol
from amtp_obs.tempo.generator import REASON_OUTSIDE_SLACK
from amtp_obs.tempo.metrics import DISCARDED_SPANS, GENERATOR_SPANS_DISCARDED, TENANT
from amtp_obs.tools import find_tool

REPO = Path(__file__).resolve().parents[2]
GROUP = "data-loss"
VARS = {
    env.AMTP_SLACK_WEBHOOK_URL: "https://hooks.slack.com/services/T/B/X",
    env.AMTP_ALERT_EMAIL_ADDRESSES: "a@b.test",
}
CLUSTER = {"cluster": "zt-amtp"}
COLLECTOR = {
    **CLUSTER,
    "job": "otel-collector-internal",
    "instance": "otel-collector:8888",
    "service_instance_id": "7d0c",
    "service_name": "otelcol-contrib",
    "service_version": "0.100.0",
}
TEMPO = {**CLUSTER, "job": "tempo", "instance": "tempo:3200", "tenant": TENANT}
PROMETHEUS = {**CLUSTER, "job": "prometheus", "instance": "amtp-prometheus:9090"}


@dataclass
class Case:
    """One counter series (as scraped) and the labels the alert must carry when it counts a loss."""

    title: str
    name: str
    labels: dict[str, str]
    alert_labels: dict[str, str]
    severity: str = "critical"
    extra: dict[str, str] = field(default_factory=dict)


def _otel(template: str, noun: str) -> str:
    return otelcol.metric_name(template, noun)


CASES = (
    [
        Case(
            "OTel Collector Export Failed",
            _otel(otelcol.EXPORTER_SEND_FAILED, noun),
            {**COLLECTOR, "exporter": exporter},
            {**CLUSTER, "instance": COLLECTOR["instance"], "exporter": exporter, "signal": noun},
        )
        for noun, exporter in (("spans", "otlp/tempo"), ("metric_points", "prometheusremotewrite"))
    ]
    + [
        Case(
            "OTel Collector Sending Queue Full",
            _otel(otelcol.EXPORTER_ENQUEUE_FAILED, noun),
            {**COLLECTOR, "exporter": "otlp/tempo"},
            {**CLUSTER, "instance": COLLECTOR["instance"], "exporter": "otlp/tempo", "signal": noun},
        )
        for noun in ("spans", "metric_points")
    ]
    + [
        Case(
            "OTel Collector Refusing Data",
            _otel(otelcol.PROCESSOR_REFUSED, noun),
            {**COLLECTOR, "processor": "memory_limiter"},
            {**CLUSTER, "instance": COLLECTOR["instance"], "processor": "memory_limiter", "signal": noun},
            severity="warning",
        )
        for noun in ("spans", "metric_points")
    ]
    + [
        Case(
            "Trace Store Discarded Spans",
            DISCARDED_SPANS + "_total",
            {**TEMPO, "reason": reason},
            {**CLUSTER, "instance": TEMPO["instance"], "tenant": TENANT, "reason": reason},
        )
        for reason in ("rate_limited", "trace_too_large", "live_traces_exceeded")
    ]
    + [
        Case(
            "Span Metrics Missing Spans",
            GENERATOR_SPANS_DISCARDED + "_total",
            {**TEMPO, "reason": REASON_OUTSIDE_SLACK},
            {**CLUSTER, "instance": TEMPO["instance"], "tenant": TENANT, "reason": REASON_OUTSIDE_SLACK},
            severity="warning",
        ),
        Case(
            "Prometheus Rule Evaluation Failing",
            "prometheus_rule_evaluation_failures_total",
            {**PROMETHEUS, "rule_group": "/etc/prometheus/rules/accounting.rules.yml;accounting"},
            {
                **CLUSTER,
                "instance": PROMETHEUS["instance"],
                "rule_group": "/etc/prometheus/rules/accounting.rules.yml;accounting",
            },
        ),
        Case(
            "Prometheus Rejecting Remote Write",
            "prometheus_http_requests_total",
            {**PROMETHEUS, "handler": "/api/v1/write", "code": "400"},
            {**CLUSTER, "instance": PROMETHEUS["instance"], "code": "400", "reason": "request_rejected"},
        ),
        Case(
            "Prometheus Rejecting Remote Write",
            "prometheus_api_remote_write_invalid_labels_samples_total",
            PROMETHEUS,
            {**CLUSTER, "instance": PROMETHEUS["instance"], "reason": "invalid_labels"},
        ),
        Case(
            "Prometheus Scrape Limit Hit",
            "prometheus_target_scrapes_exceeded_sample_limit_total",
            PROMETHEUS,
            {**CLUSTER, "instance": PROMETHEUS["instance"], "limit": "sample_limit"},
        ),
        Case(
            "Prometheus Scrape Limit Hit",
            "prometheus_target_scrape_pool_exceeded_label_limits_total",
            PROMETHEUS,
            {**CLUSTER, "instance": PROMETHEUS["instance"], "limit": "label_limits"},
        ),
    ]
)


def loss_rules() -> dict[str, Any]:
    doc = yaml.safe_load((REPO / proj.ALERTING_FILE).read_text())
    rules = translate(doc, VARS).prometheus_rules
    (group,) = [g for g in rules["groups"] if g["name"] == GROUP]
    return group


def _series(labels: dict[str, str], name: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    return f"{name}{{{inner}}}"


def test_every_loss_rule_is_exercised_and_routed_by_severity() -> None:
    group = loss_rules()
    titles = {r["alert"] for r in group["rules"]}
    assert titles == {c.title for c in CASES}
    for rule in group["rules"]:
        case = next(c for c in CASES if c.title == rule["alert"])
        assert rule["labels"]["severity"] == case.severity
        assert rule["labels"]["cluster"] == CLUSTER["cluster"]
        assert rule.get("for") == "0s"
    # Alerts group by cluster in the policy tree and the dashboard's alert list filters on it.
    assert all("cluster" in c.alert_labels for c in CASES)


@pytest.mark.needs("promtool")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name + ":" + ",".join(f"{v}" for v in c.alert_labels.values()))
def test_loss_rule_with_promtool(case: Case, tmp_path: Path) -> None:
    group = copy.deepcopy(loss_rules())
    for r in group["rules"]:
        r.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [group]}))
    series = _series(case.labels, case.name)
    rule = next(r for r in group["rules"] if r["alert"] == case.title)
    fired = {**case.alert_labels, "severity": case.severity, FOLDER_LABEL: rule["labels"][FOLDER_LABEL]}

    def alert(at: str, firing: bool) -> dict[str, Any]:
        return {"eval_time": at, "alertname": case.title, "exp_alerts": [{"exp_labels": fired}] if firing else []}

    tests = [
        # 0 for 5 minutes, then 12 lost: fires at once (for: 0s); silent again 5 minutes after the last loss.
        {"input_series": [{"series": series, "values": "0x20 12x40"}], "alert_rule_test": [
            alert("4m", False), alert("6m", True), alert("9m", True), alert("12m", False)]},
        # Born at its first loss (the series did not exist before): increase() sees nothing, the rule does.
        {"input_series": [{"series": series, "values": "_x20 7x40"}], "alert_rule_test": [
            alert("4m", False), alert("6m", True), alert("9m", True), alert("12m", False)]},
        # A counter that never moves, at 0 or at an old value, is silent.
        {"input_series": [{"series": series, "values": "0x60"}], "alert_rule_test": [alert("12m", False)]},
        {"input_series": [{"series": series, "values": "30x60"}], "alert_rule_test": [
            alert("3m", True), alert("12m", False)]},
        # A restart resets the counter: silent; a loss after the restart fires.
        {"input_series": [{"series": series, "values": "30x20 0x20 4x20"}], "alert_rule_test": [
            alert("9m", False), alert("11m", True)]},
    ]  # fmt: skip
    doc = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [{"interval": "15s", **t} for t in tests]}
    (tmp_path / "t.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    tool = find_tool("promtool")
    assert tool
    res = subprocess.run([tool, "test", "rules", "t.yml"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.needs("promtool")
def test_translated_loss_rules_and_annotations_pass_promtool_check(tmp_path: Path) -> None:
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [loss_rules()]}))
    tool = find_tool("promtool")
    assert tool
    res = subprocess.run(
        [tool, "check", "rules", "rules.yml"], capture_output=True, text=True, timeout=60, cwd=tmp_path
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.needs("promtool")
def test_span_metrics_filtered_on_purpose_is_not_a_loss(tmp_path: Path) -> None:
    """Tempo counts spans a span_metrics filter policy excludes under the same counter
    (reason span_metrics_filtered, modules/generator/instance.go): configured, not lost."""
    group = copy.deepcopy(loss_rules())
    for r in group["rules"]:
        r.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": [group]}))
    series = _series({**TEMPO, "reason": "span_metrics_filtered"}, GENERATOR_SPANS_DISCARDED + "_total")
    test = {
        "interval": "15s",
        "input_series": [{"series": series, "values": "_x20 0+5x40"}],
        "alert_rule_test": [
            {"eval_time": t, "alertname": "Span Metrics Missing Spans", "exp_alerts": []} for t in ("6m", "9m")
        ],
    }
    doc = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": [test]}
    (tmp_path / "t.yml").write_text(yaml.safe_dump(doc, sort_keys=False))
    tool = find_tool("promtool")
    assert tool
    res = subprocess.run([tool, "test", "rules", "t.yml"], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr
