"""`amtp-obs check` on the real files (clean) and on broken copies (each fails for its own reason)."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from amtp_obs import project as proj
from amtp_obs.check.framework import Severity, iter_findings
from amtp_obs.check.runner import run_checks
from amtp_obs.tools import find_tool

REPO = Path(__file__).resolve().parents[2]
ALERTING = proj.ALERTING_FILE.as_posix()
PROM = proj.PROMETHEUS_CONFIG.as_posix()
DASHBOARD = (proj.DASHBOARDS_DIR / "llm-token-accounting.json").as_posix()
DATASOURCES = (proj.DATASOURCES_DIR / "datasources.yaml").as_posix()

needs_promtool = pytest.mark.needs("promtool")
needs_amtool = pytest.mark.needs("amtool")


def errors(root: Path, *only: str, strict: bool = False) -> list[str]:
    outcomes = run_checks(root, strict=strict, only=list(only))
    for o in outcomes:
        assert o.skipped is None, f"{o.spec.name} skipped: {o.skipped}"
    return [f.render() for f in iter_findings(outcomes) if f.severity is Severity.ERROR]


def test_real_repository_is_clean_via_cli() -> None:
    """The acceptance run: the CLI as a subprocess on the checkout, exit 0, table printed."""
    cp = subprocess.run(
        [sys.executable, "-m", "amtp_obs.cli", "check", "--project-dir", str(REPO)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "amtp-obs check" in cp.stdout
    assert "dashboard-promtool" in cp.stdout and "alert-routing" in cp.stdout
    assert "0 error(s)" in cp.stdout


def test_strict_turns_changeme_into_errors(stack_copy: Path) -> None:
    found = errors(stack_copy, "changeme", strict=True)
    assert any("AMTP_SLACK_WEBHOOK_URL is still a CHANGEME placeholder" in e for e in found)
    # Without --strict they are warnings only.
    assert errors(stack_copy, "changeme") == []


def test_env_file_wins_over_example(stack_copy: Path) -> None:
    values = proj.parse_env_file(stack_copy / proj.ENV_EXAMPLE_FILE)
    (stack_copy / proj.ENV_FILE).write_text(
        "".join(f"{k}={v.replace('CHANGEME', 'real')}\n" for k, v in values.items())
    )
    assert errors(stack_copy, "changeme", strict=True) == []


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    for args in (["--only", "no-such-check", "--project-dir", str(REPO)], ["--project-dir", str(tmp_path)]):
        cp = subprocess.run(
            [sys.executable, "-m", "amtp_obs.cli", "check", *args], capture_output=True, text=True, timeout=60
        )
        assert cp.returncode == 2, cp.stdout + cp.stderr


def test_broken_copy_exits_1_via_cli(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(proj.COMPOSE_FILE, "${OBS_GRAFANA_PORT:-3000}:3000", "${OBS_GRAFANA_PUBLIC_PORT:-3000}:3000")
    cp = subprocess.run(
        [
            sys.executable,
            "-m",
            "amtp_obs.cli",
            "check",
            "--project-dir",
            str(stack_copy),
            "--only",
            "compose-env",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cp.returncode == 1
    assert f"{proj.COMPOSE_FILE}:" in cp.stdout and "OBS_GRAFANA_PUBLIC_PORT" in cp.stdout


# --- the five required broken copies -----------------------------------------------------------


def test_panel_querying_unknown_metric(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(DASHBOARD, "sum_over_time(llm:total_tokens:increment{", "sum_over_time(llm:total_token:increment{")
    found = errors(stack_copy, "dashboard-metrics")
    assert any(
        DASHBOARD in e and 'panel "Total Tokens"' in e and "llm:total_token:increment, which nothing" in e
        for e in found
    ), found


def test_mute_timing_on_root_policy(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(
        ALERTING,
        "    repeat_interval: 4h\n",
        "    repeat_interval: 4h\n    mute_time_intervals: [weekend-maintenance]\n",
    )
    found = errors(stack_copy, "grafana-alerting")
    assert any("root notification policy has mute_time_intervals" in e and f"{ALERTING}:" in e for e in found)
    if find_tool("amtool"):
        routed = errors(stack_copy, "alert-routing")
        assert any("root route must not have any mute time intervals" in e for e in routed), routed


def test_obs_variable_missing_from_env_example(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(proj.ENV_EXAMPLE_FILE, "OBS_TEMPO_GRPC_PORT=9095\n", "")
    found = errors(stack_copy, "compose-env")
    assert found and all("OBS_TEMPO_GRPC_PORT" in e for e in found)
    assert f"{proj.COMPOSE_FILE}:" in found[0] and "not listed in .env.example" in found[0]


@needs_amtool
def test_critical_route_reaching_only_email(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(ALERTING, "        continue: true\n", "        continue: false\n")
    found = errors(stack_copy, "alert-routing")
    assert any("severity=critical reaches [email-llm-alerts] but must reach" in e for e in found), found
    assert not any("severity=warning" in e for e in found)


@needs_promtool
def test_unknown_key_in_prometheus_yml(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(PROM, "    metrics_path: /metrics", "    metrics_pth: /metrics")
    found = errors(stack_copy, "promtool-config")
    assert any(f"{PROM}:" in e and "field metrics_pth not found" in e for e in found), found


# --- more rules ---------------------------------------------------------------------------------


def test_relabel_rule_removed_breaks_total_tokens(stack_copy: Path) -> None:
    """NOTES §1: without the rename, llm_total_tokens_total is gone (the exporter writes llm_tokens_total)."""
    path = stack_copy / PROM
    doc = yaml.safe_load(path.read_text())
    for job in doc["scrape_configs"]:
        job.pop("metric_relabel_configs", None)
    path.write_text(yaml.safe_dump(doc))
    found = errors(stack_copy, "rule-metrics")
    assert any(
        "llm_total_tokens_total, which nothing" in e and "llm_tokens_total" in e and "accounting.rules.yml" in e
        for e in found
    ), found


def test_label_that_does_not_exist(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(DASHBOARD, "(llm:prompt_tokens:increment{service_name=~", "(llm:prompt_tokens:increment{service=~")
    found = errors(stack_copy, "dashboard-metrics")
    assert any("label 'service' does not exist on llm:prompt_tokens:increment" in e for e in found), found


@needs_promtool
def test_query_that_selects_nothing(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    """A span name no instrumentation emits: the query parses but returns nothing on pipeline data."""
    edit(DASHBOARD, 'span_name=\\"llm.completion\\"', 'span_name=\\"llm.completions\\"')
    found = errors(stack_copy, "dashboard-promtool")
    assert any("returns no data" in e and "llm.completions" in e for e in found), found


@needs_promtool
def test_unparsable_promql(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(DASHBOARD, "(llm:completion_tokens:increment{", "(llm:completion_tokens:increment{{")
    found = errors(stack_copy, "dashboard-metrics")
    assert any("PromQL does not parse" in e for e in found), found


def test_undefined_dashboard_variable(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(
        DASHBOARD,
        'llm:prompt_tokens:increment{service_name=~\\"$service_name\\"}',
        'llm:prompt_tokens:increment{service_name=~\\"$svc\\"}',
    )
    found = errors(stack_copy, "dashboard-metrics")
    assert any("defines no variable 'svc'" in e for e in found), found


@needs_promtool
def test_alert_on_a_job_nobody_scrapes(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(ALERTING, 'up{job="otel-collector-internal"}', 'up{job="otel-collector-internl"}')
    found = errors(stack_copy, "alert-rules")
    assert any("matches no scrape job" in e for e in found), found


@needs_promtool
def test_alert_that_never_fires(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    """Threshold flipped to gt: up==0 no longer fires, which the promtool test proves."""
    edit(ALERTING, "                    type: lt", "                    type: gt")
    found = errors(stack_copy, "alert-rules")
    assert any("does not behave" in e for e in found), found


def test_weekday_range_and_unknown_receiver(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(ALERTING, "weekdays: [saturday, sunday]", "weekdays: ['saturday:sunday']")
    edit(ALERTING, "      - receiver: slack-llm-alerts\n", "      - receiver: slack-llm-alert\n")
    found = errors(stack_copy, "grafana-alerting")
    assert any("weekday range 'saturday:sunday' is invalid" in e for e in found), found
    assert any("receiver 'slack-llm-alert', which is not a contact point" in e for e in found), found


def test_unescaped_macro_in_provisioning(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(DATASOURCES, "{$$__tags,", "{$__tags,")
    found = errors(stack_copy, "provisioning-dollar")
    assert any(DATASOURCES in e and "write $$__" in e for e in found), found


def test_port_disagreement(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(proj.TEMPO_CONFIG.as_posix(), "http_listen_port: 3200", "http_listen_port: 3201")
    found = errors(stack_copy, "ports")
    assert any("tempo publishes container port 3200" in e for e in found), found
    assert any("http://tempo:3200" in e for e in found), found


def test_unknown_datasource_uid(stack_copy: Path) -> None:
    path = stack_copy / DASHBOARD
    doc = json.loads(path.read_text())
    doc["panels"][0]["datasource"]["uid"] = "prometheus-old"
    path.write_text(json.dumps(doc, indent=2))
    found = errors(stack_copy, "datasource-uids")
    assert any("uid 'prometheus-old', which is not provisioned" in e for e in found), found


def test_collector_facts(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(proj.COLLECTOR_CONFIG.as_posix(), "exporters: [prometheus, debug]", "exporters: [prometheus]")
    edit(proj.COLLECTOR_CONFIG.as_posix(), "exporters: [otlp/tempo, debug]", "exporters: [otlp/tempo]")
    edit(proj.COLLECTOR_CONFIG.as_posix(), "spike_limit_mib: 128", "spike_limit_mib: 600")
    found = errors(stack_copy, "collector-facts")
    assert any("debug exporter is defined but listed in no pipeline" in e for e in found), found
    assert any("spike_limit_mib (600) must be below limit_mib (512)" in e for e in found), found


def test_tempo_generator_without_storage_path(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(proj.TEMPO_CONFIG.as_posix(), "path: /var/tempo/generator/wal", "wal_dir: /var/tempo/generator/wal")
    found = errors(stack_copy, "tempo-facts")
    assert any("metrics_generator.storage.path is not set" in e for e in found), found
    # ...and the dashboard's span-metric panels lose their data source.
    assert any("traces_spanmetrics" in e for e in errors(stack_copy, "dashboard-metrics"))


# --- the external validators, each on a broken copy ---------------------------------------------


@pytest.mark.needs("check-jsonschema")
def test_compose_schema(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(proj.COMPOSE_FILE, "condition: service_healthy", "condition: service_happy")
    found = errors(stack_copy, "compose-schema")
    assert found and all(e.startswith(f"{proj.COMPOSE_FILE}: error: compose-spec schema") for e in found)
    assert any("service_happy" in e for e in found), found


@pytest.mark.needs("docker-compose")
def test_compose_config(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(proj.COMPOSE_FILE, "      amtp-prometheus:\n        condition", "      amtp-prom:\n        condition")
    found = errors(stack_copy, "compose-config")
    assert any("amtp-prom" in e and "undefined" in e for e in found), found


@pytest.mark.needs("actionlint")
def test_actionlint(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(".github/workflows/ci-cd.yml", "needs: healthcheck", "needs: health-check")
    found = errors(stack_copy, "actionlint")
    assert any(e.startswith(".github/workflows/ci-cd.yml:") and "health-check" in e for e in found), found


@pytest.mark.needs("yamllint")
def test_yamllint_duplicate_key(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(PROM, "  scrape_interval: 15s\n", "  scrape_interval: 15s\n  scrape_interval: 30s\n")
    found = errors(stack_copy, "yamllint")
    assert any(e.startswith(f"{PROM}:") and 'duplication of key "scrape_interval"' in e for e in found), found


@pytest.mark.needs("shellcheck")
def test_shellcheck(stack_copy: Path) -> None:
    script = stack_copy / proj.BOOTSTRAP_SCRIPT
    script.write_text(script.read_text() + "\nrm -rf $UNQUOTED_DIR/cache\n")
    found = errors(stack_copy, "shellcheck")
    assert any(e.startswith(f"{proj.BOOTSTRAP_SCRIPT.as_posix()}:") and "quote" in e.lower() for e in found), found


def test_obs_variable_renamed_everywhere_still_caught(stack_copy: Path) -> None:
    """Renaming an OBS_* variable consistently in compose and .env.example breaks every env.py reader."""
    for rel in (proj.COMPOSE_FILE, proj.ENV_EXAMPLE_FILE):
        path = stack_copy / rel
        path.write_text(path.read_text().replace("OBS_TEMPO_GRPC_PORT", "OBS_TEMPO_GRPC"))
    found = errors(stack_copy, "compose-env")
    assert any("amtp_obs.env defines OBS_TEMPO_GRPC_PORT" in e for e in found), found
    assert any("OBS_TEMPO_GRPC is not defined in amtp_obs.env" in e for e in found), found


def test_missing_file_is_one_clear_error(stack_copy: Path) -> None:
    (stack_copy / proj.TEMPO_CONFIG).unlink()
    found = errors(stack_copy, "tempo-facts")
    assert found == [f"{proj.TEMPO_CONFIG.as_posix()}: error: file is missing"]


def test_invalid_yaml_reports_line(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(proj.COLLECTOR_CONFIG.as_posix(), "  batch:\n", "  batch: [\n")
    found = errors(stack_copy, "collector-facts")
    assert len(found) == 1 and "invalid YAML" in found[0]
    assert found[0].startswith(f"{proj.COLLECTOR_CONFIG.as_posix()}:")


def test_embedded_config_models_report_unknown_keys(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    edit(proj.TEMPO_CONFIG.as_posix(), "  log_level: info\n", "  log_level: info\n  log_levle: debug\n")
    outcomes = run_checks(stack_copy, only=["embedded-models"])
    assert outcomes[0].skipped is None, outcomes[0].skipped  # both embedded config models ship with the package
    found = [f.render() for f in iter_findings(outcomes)]
    assert any(e.startswith(proj.TEMPO_CONFIG.as_posix()) and "log_levle" in e for e in found), found


def test_contract_names(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    assert errors(stack_copy, "contract-names") == []
    edit(PROM, "replacement: llm_total_tokens_total", "replacement: llm_total_tokens")
    found = errors(stack_copy, "contract-names")
    assert any(
        "documented as llm_total_tokens_total, but the pipeline stores it as llm_total_tokens" in e for e in found
    ), found
    edit(proj.COLLECTOR_CONFIG.as_posix(), "namespace: llm", "namespace: genai")
    assert any("namespace is 'genai'" in e for e in errors(stack_copy, "contract-names"))


def test_malformed_alerting_file_is_reported_not_crashed(stack_copy: Path) -> None:
    (stack_copy / ALERTING).write_text("apiVersion: 1\npolicies: {}\ngroups: x\n")
    outcomes = run_checks(stack_copy, only=["grafana-alerting", "alert-routing", "alert-rules"])
    rendered = [f.render() for f in iter_findings(outcomes)]
    assert rendered and not any("crashed" in r for r in rendered)
    assert any(r.startswith(f"{ALERTING}:2: error: policies must be a list of mappings") for r in rendered), rendered


def test_missing_validator_is_skipped_with_reason(tmp_path: Path) -> None:
    """With an empty PATH the system validators are gone: the table says so and the run still passes."""
    cp = subprocess.run(
        [
            sys.executable,
            "-m",
            "amtp_obs.cli",
            "check",
            "--project-dir",
            str(REPO),
            "--only",
            "compose-config",
            "--only",
            "shellcheck",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        env={"PATH": str(tmp_path), "COLUMNS": "200"},
    )
    assert cp.returncode == 0, cp.stdout + cp.stderr
    assert "docker-compose not on PATH" in cp.stdout and "shellcheck not on PATH" in cp.stdout
    assert cp.stdout.count("skipped") >= 2


def test_config_mounts(stack_copy: Path, edit: Callable[[str, str, str], None]) -> None:
    assert errors(stack_copy, "config-mounts") == []
    edit(proj.COMPOSE_FILE, "-config.file=/etc/tempo/tempo.yaml", "-config.file=/etc/tempo/tempo-local.yaml")
    edit(
        DASHBOARD.replace("llm-token-accounting.json", "dashboards.yaml"),
        "path: /etc/grafana/provisioning/dashboards",
        "path: /var/lib/grafana/dashboards",
    )
    found = errors(stack_copy, "config-mounts")
    assert any(
        "tempo reads /etc/tempo/tempo-local.yaml" in e and "expected infra/observability/tempo.yaml" in e for e in found
    ), found
    assert any("loads /var/lib/grafana/dashboards, which holds no dashboard JSON" in e for e in found), found
