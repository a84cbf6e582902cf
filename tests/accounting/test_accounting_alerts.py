"""The accounting alerts of alerting.yaml, translated as the embedded stack runs them, under promtool."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from amtp_obs import contract, env
from amtp_obs import project as proj
from amtp_obs.accounting import rules
from amtp_obs.alerting import FOLDER_LABEL, translate

REPO = Path(__file__).resolve().parents[2]
VARS = {
    env.AMTP_SLACK_WEBHOOK_URL: "https://hooks.slack.com/services/T000/B000/XXXX",
    env.AMTP_ALERT_EMAIL_ADDRESSES: "a@example.org",
}
GROUP = "llm-accounting"
FOLDER = next(
    g["folder"] for g in yaml.safe_load((REPO / proj.ALERTING_FILE).read_text())["groups"] if g["name"] == GROUP
)


def _rules(tmp_path: Path) -> dict[str, str]:
    doc = yaml.safe_load((REPO / proj.ALERTING_FILE).read_text())
    translated = translate(doc, VARS).prometheus_rules
    groups = [g for g in translated["groups"] if g["name"].endswith(GROUP)]
    assert groups, [g["name"] for g in translated["groups"]]
    for g in groups:
        for r in g["rules"]:
            r.pop("annotations", None)
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": groups}))
    return {r["grafana_uid"] if "grafana_uid" in r else r["alert"]: r["alert"] for g in groups for r in g["rules"]}


def _promtool(tmp_path: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    tool = shutil.which("promtool")
    assert tool, "promtool is required"
    (tmp_path / "t.yml").write_text(
        yaml.safe_dump({"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests})
    )
    return subprocess.run([tool, "test", "rules", "t.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=30)


@pytest.mark.needs("promtool")
def test_missed_accounting_step_fires_and_a_healthy_group_does_not(tmp_path: Path) -> None:
    alerts = _rules(tmp_path)
    name = next(a for a in alerts.values() if "Missed" in a)
    group = f"/etc/prometheus/rules/accounting.rules.yml;{rules.GROUP}"  # Prometheus' "<file>;<group>"
    missed = (
        'prometheus_rule_group_iterations_missed_total{cluster="zt-amtp",instance="p:9090",job="prometheus",'
        f'rule_group="{group}"}}'
    )
    other = missed.replace(rules.GROUP, "some-other-group")
    labels = {
        "cluster": "zt-amtp",
        "rule_group": group,
        "severity": "critical",
        FOLDER_LABEL: FOLDER,
    }
    res = _promtool(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": [
                    {"series": missed, "values": "0 0 0 0 1 1 1 1 1 1 1 1"},
                    {"series": other, "values": "0+1x12"},
                ],
                "alert_rule_test": [
                    {"eval_time": "3m", "alertname": name, "exp_alerts": []},
                    {"eval_time": "5m", "alertname": name, "exp_alerts": [{"exp_labels": labels}]},
                ],
            }
        ],
    )
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.needs("promtool")
def test_label_overflow_fires_per_service_and_not_for_normal_models(tmp_path: Path) -> None:
    alerts = _rules(tmp_path)
    name = next(a for a in alerts.values() if "Overflow" in a)
    base = 'cluster="zt-amtp",job="otel-collector",llm_provider="openai",service_instance_id="i1"'
    total, prompt = contract.TOTAL_TOKENS.prometheus_name, contract.PROMPT_TOKENS.prometheus_name
    series = [
        {"series": f'{total}{{{base},service_name="ok",llm_model="gpt-4o"}}', "values": "5x10"},
        {
            "series": f'{total}{{{base},service_name="noisy",llm_model="{contract.LLM_MODEL_OVERFLOW}"}}',
            "values": "_x3 5x6",
        },
        {
            "series": f'{prompt}{{{base},service_name="sdkcap",otel_metric_overflow="true"}}',
            "values": "_x3 2x6",
        },
    ]
    fired = [
        {
            "exp_labels": {
                "cluster": "zt-amtp",
                "service_name": "noisy",
                "limit": "model names per process",
                "severity": "warning",
                FOLDER_LABEL: FOLDER,
            }
        },
        {
            "exp_labels": {
                "cluster": "zt-amtp",
                "service_name": "sdkcap",
                "limit": "OpenTelemetry cardinality limit",
                "severity": "warning",
                FOLDER_LABEL: FOLDER,
            }
        },
    ]
    res = _promtool(
        tmp_path,
        [
            {
                "interval": "1m",
                "input_series": series,
                "alert_rule_test": [
                    {"eval_time": "2m", "alertname": name, "exp_alerts": []},
                    {"eval_time": "5m", "alertname": name, "exp_alerts": fired},
                ],
            }
        ],
    )
    assert res.returncode == 0, res.stdout + res.stderr
