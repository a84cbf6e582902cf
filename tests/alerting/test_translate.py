"""Grafana alerting provisioning -> Prometheus rules + Alertmanager config, proven with promtool/amtool."""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from amtp_obs import env
from amtp_obs import project as proj
from amtp_obs.alerting import (
    FOLDER_LABEL,
    TranslationError,
    expand,
    for_override_from_env,
    interpolate_document,
    translate,
)
from amtp_obs.tools import find_tool

REPO = Path(__file__).resolve().parents[2]

SLACK_URL = "https://hooks.slack.com/services/T000/B000/XXXX"
VARS = {
    env.AMTP_SLACK_WEBHOOK_URL: SLACK_URL,
    env.AMTP_ALERT_EMAIL_ADDRESSES: "a@example.org; b@example.org",
    env.GF_SMTP_HOST: "smtp.example.org:587",
    env.GF_SMTP_FROM_ADDRESS: "grafana@example.org",
    env.GF_SMTP_STARTTLS_POLICY: "MandatoryStartTLS",
}


def query(ref: str, expr: str, *, instant: bool = True, frm: int = 300) -> dict[str, Any]:
    return {
        "refId": ref,
        "relativeTimeRange": {"from": frm, "to": 0},
        "datasourceUid": "prometheus",
        "model": {"refId": ref, "expr": expr, "instant": instant, "range": not instant},
    }


def expr_node(ref: str, model: dict[str, Any]) -> dict[str, Any]:
    return {"refId": ref, "datasourceUid": "__expr__", "model": {"refId": ref, **model}}


def doc_with(rule: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": 1,
        "contactPoints": [
            {
                "name": "chat",
                "receivers": [{"type": "slack", "settings": {"url": "${AMTP_SLACK_WEBHOOK_URL}"}}],
            }
        ],
        "policies": [{"receiver": "chat"}],
        "groups": [{"name": "g", "folder": "F", "interval": "1m", "rules": [rule]}],
    }


def base_rule(**extra: Any) -> dict[str, Any]:
    rule = {
        "uid": "r1",
        "title": "Thing Down",
        "condition": "C",
        "data": [
            query("A", 'up{job="thing"}'),
            expr_node("B", {"type": "reduce", "expression": "A", "reducer": "last"}),
            expr_node(
                "C",
                {
                    "type": "threshold",
                    "expression": "B",
                    "conditions": [{"evaluator": {"type": "lt", "params": [1]}}],
                },
            ),
        ],
        "for": "2m",
        "noDataState": "OK",
        "execErrState": "OK",
        "labels": {"severity": "critical"},
        "annotations": {"summary": "value {{ $values.B }} on {{ $labels.instance }}"},
    }
    rule.update(extra)
    return rule


def real_doc() -> dict[str, Any]:
    return yaml.safe_load((REPO / proj.ALERTING_FILE).read_text())


def test_expand_like_grafana() -> None:
    assert expand("${A}-$A-$$A-$${A}-$B", {"A": "x"}) == "x-x-$A-${A}-"


def test_annotations_are_not_interpolated() -> None:
    doc = interpolate_document(doc_with(base_rule()), VARS)
    assert doc["groups"][0]["rules"][0]["annotations"]["summary"].startswith("value {{ $values.B }}")
    assert doc["contactPoints"][0]["receivers"][0]["settings"]["url"] == SLACK_URL


def test_rule_chain_becomes_promql() -> None:
    t = translate(doc_with(base_rule()), VARS)
    (group,) = t.prometheus_rules["groups"]
    (rule,) = group["rules"]
    assert group["interval"] == "1m"
    assert rule["alert"] == "Thing Down"
    assert rule["expr"] == '(up{job="thing"}) < 1'
    assert rule["for"] == "2m"
    assert rule["labels"] == {"severity": "critical", FOLDER_LABEL: "F"}
    assert rule["annotations"]["summary"] == "value {{ $value }} on {{ $labels.instance }}"


def test_no_data_alerting_adds_absent_and_override() -> None:
    t = translate(doc_with(base_rule(noDataState="Alerting")), VARS, for_override="10s")
    rule = t.prometheus_rules["groups"][0]["rules"][0]
    assert rule["expr"] == '(up{job="thing"}) < 1 or absent(up{job="thing"})'
    assert rule["for"] == "10s"


def test_range_query_reduce_and_math_and_ranges() -> None:
    rule = base_rule(
        data=[
            query("A", "rate(x_total[1m])", instant=False, frm=600),
            expr_node("B", {"type": "reduce", "expression": "A", "reducer": "mean"}),
            # Grafana expands $VAR in the model too: a math reference is written $$B in the file.
            expr_node("D", {"type": "math", "expression": "$$B * 100"}),
            expr_node(
                "C",
                {
                    "type": "threshold",
                    "expression": "D",
                    "conditions": [{"evaluator": {"type": "within_range", "params": [1, 5]}}],
                },
            ),
        ]
    )
    t = translate(doc_with(rule), VARS)
    expr = t.prometheus_rules["groups"][0]["rules"][0]["expr"]
    assert expr == "(((avg_over_time((rate(x_total[1m]))[600s:])) * 100) > 1) < 5"


def test_untranslatable_rule_is_listed_not_dropped_silently() -> None:
    rule = base_rule(data=[query("A", "up"), expr_node("C", {"type": "classic_conditions", "conditions": []})])
    t = translate(doc_with(rule), VARS)
    assert t.prometheus_rules["groups"][0]["rules"] == []
    assert any("omitted" in u and "classic_conditions" in u for u in t.unsupported)


def test_paused_and_nodata_states_listed() -> None:
    t = translate(doc_with(base_rule(isPaused=True)), VARS)
    assert t.prometheus_rules["groups"][0]["rules"] == []
    assert any("paused" in u for u in t.unsupported)
    t = translate(doc_with(base_rule(noDataState="NoData", execErrState="Error")), VARS)
    assert any("NoData" in u for u in t.unsupported) and any("execErrState Error" in u for u in t.unsupported)
    # One line for all rules in that state, naming each.
    doc = doc_with(base_rule(execErrState="Error"))
    doc["groups"][0]["rules"].append(base_rule(uid="r2", title="Other", execErrState="Error"))
    notes = [u for u in translate(doc, VARS).unsupported if "execErrState" in u]
    assert len(notes) == 1 and notes[0].endswith("rule(s) r1, r2")


@pytest.mark.parametrize(
    "bad",
    [
        lambda d: d["groups"][0]["rules"][0].update(condition="Z"),
        lambda d: d.update(apiVersion=2),
        lambda d: d.update(policies=[]),
    ],
)
def test_bad_documents_raise_clear_errors(bad: Any) -> None:
    doc = doc_with(base_rule())
    bad(doc)
    try:
        t = translate(doc, VARS)
    except TranslationError as exc:
        assert str(exc)
    else:
        assert any("Z" in u for u in t.unsupported)


def test_bad_for_override() -> None:
    with pytest.raises(TranslationError, match="not a Prometheus duration"):
        translate(doc_with(base_rule()), VARS, for_override="two minutes")
    assert for_override_from_env({env.AMTP_OBS_ALERT_FOR: "15s"}) == "15s"
    assert for_override_from_env({}) is None
    with pytest.raises(TranslationError, match=env.AMTP_OBS_ALERT_FOR):
        for_override_from_env({env.AMTP_OBS_ALERT_FOR: "soon"})


def test_real_file_contact_points_and_mute_timings() -> None:
    t = translate(real_doc(), VARS)
    am = t.alertmanager_config
    receivers = {r["name"]: r for r in am["receivers"]}
    slack = receivers["slack-llm-alerts"]["slack_configs"][0]
    assert slack["api_url"] == SLACK_URL and slack["channel"] == "#llm-alerts"
    (email,) = receivers["email-llm-alerts"]["email_configs"]  # singleEmail: one mail to all
    assert email["to"] == "a@example.org, b@example.org"
    assert email["smarthost"] == "smtp.example.org:587" and email["from"] == "grafana@example.org"
    assert email["require_tls"] is True
    (interval,) = am["time_intervals"]
    assert interval["time_intervals"] == [{"weekdays": ["saturday", "sunday"]}]
    assert "mute_time_intervals" not in am["route"]
    assert all(r["mute_time_intervals"] == [interval["name"]] for r in am["route"]["routes"])


def test_single_email_false_sends_one_mail_per_address() -> None:
    doc = real_doc()
    for cp in doc["contactPoints"]:
        for r in cp["receivers"]:
            if r["type"] == "email":
                r["settings"]["singleEmail"] = False
    receivers = {r["name"]: r for r in translate(doc, VARS).alertmanager_config["receivers"]}
    assert [c["to"] for c in receivers["email-llm-alerts"]["email_configs"]] == [
        "a@example.org",
        "b@example.org",
    ]


def _amtool(tmp_path: Path, cfg: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
    tool = find_tool("amtool")
    assert tool
    path = tmp_path / "am.yml"
    path.write_text(yaml.safe_dump(cfg))
    return subprocess.run(
        [tool, *args, str(path)] if args[0] == "check-config" else [tool, *args],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=tmp_path,
    )


@pytest.mark.needs("amtool")
def test_real_file_routes_with_amtool(tmp_path: Path) -> None:
    cfg = translate(real_doc(), VARS).alertmanager_config
    assert _amtool(tmp_path, cfg, "check-config").returncode == 0
    crit = _amtool(tmp_path, cfg, "config", "routes", "test", "--config.file", "am.yml", "severity=critical")
    assert crit.stdout.strip() == "email-llm-alerts,slack-llm-alerts"
    warn = _amtool(tmp_path, cfg, "config", "routes", "test", "--config.file", "am.yml", "severity=warning")
    assert warn.stdout.strip() == "slack-llm-alerts"


@pytest.mark.needs("amtool")
def test_empty_slack_url_is_caught_by_amtool(tmp_path: Path) -> None:
    cfg = translate(real_doc(), {**VARS, env.AMTP_SLACK_WEBHOOK_URL: ""}).alertmanager_config
    res = _amtool(tmp_path, cfg, "check-config")
    assert res.returncode != 0 and "slack" in (res.stdout + res.stderr).lower()


@pytest.mark.needs("promtool")
def test_real_rule_fires_after_for_with_promtool(tmp_path: Path) -> None:
    rules = copy.deepcopy(translate(real_doc(), VARS, for_override="1m").prometheus_rules)
    for g in rules["groups"]:
        for r in g["rules"]:
            r.pop("annotations", None)
    (rule,) = rules["groups"][0]["rules"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    series = 'up{job="otel-collector-internal",instance="otel-collector:8888"}'
    labels = {"job": "otel-collector-internal", "instance": "otel-collector:8888", **rule["labels"]}
    test = {
        "rule_files": ["rules.yml"],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "15s",
                "input_series": [{"series": series, "values": "0x40"}],
                "alert_rule_test": [
                    {"eval_time": "30s", "alertname": rule["alert"], "exp_alerts": []},
                    {"eval_time": "3m", "alertname": rule["alert"], "exp_alerts": [{"exp_labels": labels}]},
                ],
            },
            {
                "interval": "15s",
                "input_series": [{"series": series, "values": "1x40"}],
                "alert_rule_test": [{"eval_time": "5m", "alertname": rule["alert"], "exp_alerts": []}],
            },
        ],
    }
    (tmp_path / "t.yml").write_text(yaml.safe_dump(test))
    tool = find_tool("promtool")
    assert tool
    res = subprocess.run([tool, "test", "rules", "t.yml"], capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"apiVersion": 1, "policies": {}, "groups": []}, "policies must be a list of mappings"),
        (
            {
                "apiVersion": 1,
                "policies": [{"receiver": "x"}],
                "contactPoints": [{"name": "x", "receivers": "oops"}],
            },
            "wrong shape",
        ),
    ],
)
def test_wrong_shapes_are_translation_errors(doc: dict[str, Any], message: str) -> None:
    with pytest.raises(TranslationError, match=message):
        translate(doc, VARS)
