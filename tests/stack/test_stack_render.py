"""Rendering: the copies differ from the project's configs only in addresses and paths."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from amtp_obs import collector, env
from amtp_obs.project import (
    ALERTING_FILE,
    COLLECTOR_CONFIG,
    PROMETHEUS_CONFIG,
    SERVICE_COLLECTOR,
    SERVICE_GRAFANA,
    SERVICE_PROMETHEUS,
    SERVICE_TEMPO,
    TEMPO_CONFIG,
    Project,
)
from amtp_obs.stack.addresses import AddressResolver
from amtp_obs.stack.planning import StackError, plan, start_order
from amtp_obs.stack.render import (
    PathMapper,
    prometheus_argv,
    render_collector,
    render_prometheus_config,
    render_tempo,
)
from amtp_obs.stack.state import Layout
from amtp_obs.tempo import config as tempo_config

REPO = Path(__file__).resolve().parents[2]
ADDRESS = re.compile(r"^(http://)?127\.0\.0\.1:\d+(/\S*)?$")


def leaves(node: Any, path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    if isinstance(node, dict):
        return {k: v for key, val in node.items() for k, v in leaves(val, (*path, str(key))).items()}
    if isinstance(node, list):
        return {k: v for i, val in enumerate(node) for k, v in leaves(val, (*path, str(i))).items()}
    return {path: node}


def changed(before: Any, after: Any) -> dict[tuple[str, ...], tuple[Any, Any]]:
    a, b = leaves(before), leaves(after)
    return {k: (a.get(k), b.get(k)) for k in a.keys() | b.keys() if a.get(k) != b.get(k)}


def get(doc: Any, *path: str | int) -> Any:
    for p in path:
        doc = doc[p]
    return doc


def test_collector_only_addresses_change(project: Project, ports: dict[str, int], tmp_path: Path) -> None:
    r = AddressResolver(project)
    doc = project.load_yaml(COLLECTOR_CONFIG)
    out = render_collector(doc, r, tmp_path, SERVICE_COLLECTOR)
    diff = changed(doc, out)
    assert diff, "nothing was rewritten"
    for path, (old, new) in diff.items():
        assert isinstance(old, str) and ":" in old, path
        assert ADDRESS.match(new), (path, new)
    assert (
        get(out, "receivers", "otlp", "protocols", "grpc", "endpoint") == f"127.0.0.1:{ports[env.OBS_OTEL_GRPC_PORT]}"
    )
    assert (
        get(out, "receivers", "otlp", "protocols", "http", "endpoint") == f"127.0.0.1:{ports[env.OBS_OTEL_HTTP_PORT]}"
    )
    assert get(out, "extensions", "health_check", "endpoint") == f"127.0.0.1:{ports[env.OBS_OTEL_HEALTH_PORT]}"
    assert get(out, "extensions", "health_check", "path") == get(doc, "extensions", "health_check", "path")
    assert get(out, "extensions", "zpages", "endpoint") == f"127.0.0.1:{ports[env.OBS_OTEL_ZPAGES_PORT]}"
    assert get(out, "extensions", "pprof", "endpoint") == f"127.0.0.1:{ports[env.OBS_OTEL_PPROF_PORT]}"
    assert get(out, "service", "telemetry", "metrics", "address") == f"127.0.0.1:{ports[env.OBS_OTEL_METRICS_PORT]}"
    # The exporter to tempo:4317 points at the port Tempo's OTLP receiver will listen on.
    assert get(out, "exporters", "otlp/tempo", "endpoint") == f"127.0.0.1:{r.port(SERVICE_TEMPO, 4317)}"
    assert get(out, "exporters", "prometheus", "endpoint") == f"127.0.0.1:{r.internal['otel-collector:8889']}"


def test_tempo_ports_paths_and_remote_write(project: Project, ports: dict[str, int], tmp_path: Path) -> None:
    r = AddressResolver(project)
    doc = project.load_yaml(TEMPO_CONFIG)
    out = render_tempo(doc, r, tmp_path, SERVICE_TEMPO)
    server = out["server"]
    assert server["http_listen_port"] == ports[env.OBS_TEMPO_HTTP_PORT]
    assert server["grpc_listen_port"] == ports[env.OBS_TEMPO_GRPC_PORT]
    assert server["http_listen_address"] == server["grpc_listen_address"] == "127.0.0.1"
    otlp = get(out, "distributor", "receivers", "otlp", "protocols", "grpc", "endpoint")
    assert otlp == f"127.0.0.1:{r.port(SERVICE_TEMPO, 4317)}"
    url = get(out, "metrics_generator", "storage", "remote_write", 0, "url")
    assert url == f"http://127.0.0.1:{ports[env.OBS_PROMETHEUS_PORT]}/api/v1/write"
    # Every path lands in the tempo_data volume under the state dir, keeping its place inside it.
    for key in (
        ("storage", "trace", "wal", "path"),
        ("storage", "trace", "local", "path"),
        ("metrics_generator", "storage", "path"),
    ):
        original, new = get(doc, *key), get(out, *key)
        assert new == str(tmp_path / "volumes" / "tempo_data" / original.removeprefix("/var/tempo/")), key
    allowed = {"server", "distributor", "metrics_generator", "storage"}
    for path in changed(doc, out):
        assert path[0] in allowed, path
    assert out["overrides"] == doc["overrides"] and out["compactor"] == doc["compactor"]


def test_prometheus_config_keeps_jobs_and_labels(project: Project, ports: dict[str, int], tmp_path: Path) -> None:
    r = AddressResolver(project)
    doc = project.load_yaml(PROMETHEUS_CONFIG)
    out = render_prometheus_config(doc, r, tmp_path, SERVICE_PROMETHEUS)
    for path, (_old, new) in changed(doc, out).items():
        if path[0] == "rule_files":
            # Compose mounts infra/observability/rules at the container path the file names.
            assert new == str(project.path("infra/observability/rules") / "*.yml"), new
            continue
        assert "targets" in path and ADDRESS.match(new), path
    targets = {j["job_name"]: j["static_configs"][0]["targets"][0] for j in out["scrape_configs"]}
    assert targets["otel-collector"] == f"127.0.0.1:{r.internal['otel-collector:8889']}"
    assert targets["otel-collector-internal"] == f"127.0.0.1:{ports[env.OBS_OTEL_METRICS_PORT]}"
    assert targets["tempo"] == f"127.0.0.1:{ports[env.OBS_TEMPO_HTTP_PORT]}"
    # Prometheus scrapes itself (the data-loss alerts read its own counters) where it listens.
    assert targets["prometheus"] == f"127.0.0.1:{ports[env.OBS_PROMETHEUS_PORT]}"


@pytest.mark.needs("promtool")
def test_rendered_prometheus_config_passes_promtool(project: Project, tmp_path: Path) -> None:
    stack = plan(project, Layout(tmp_path))
    cfg = stack.get(SERVICE_PROMETHEUS).config_path
    assert cfg is not None
    res = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


def test_prometheus_argv_rewrites_paths_and_drops_unknown_flags(
    project: Project, ports: dict[str, int], tmp_path: Path
) -> None:
    r = AddressResolver(project)
    spec = {
        "command": [
            "--config.file=/etc/prometheus/prometheus.yml",
            "--storage.tsdb.path=/prometheus",
            "--storage.tsdb.retention.time=15d",
            "--web.enable-lifecycle",
            "--brand-new-flag=1",
        ],
        "volumes": ["prometheus_data:/prometheus"],
    }
    project.compose["services"]["x-prom"] = spec
    try:
        args = prometheus_argv(
            "prometheus", spec, r, tmp_path, "x-prom", tmp_path / "p.yml", lambda f: f != "brand-new-flag"
        )
    finally:
        del project.compose["services"]["x-prom"]
    assert args.argv[0] == "prometheus"
    assert f"--config.file={tmp_path / 'p.yml'}" in args.argv
    assert f"--storage.tsdb.path={tmp_path / 'volumes' / 'prometheus_data'}" in args.argv
    assert "--storage.tsdb.retention.time=15d" in args.argv and "--web.enable-lifecycle" in args.argv
    assert args.dropped == ["--brand-new-flag=1"]
    assert args.argv[-1].startswith("--web.listen-address=127.0.0.1:")


@pytest.mark.needs("prometheus")
def test_real_prometheus_command_keeps_compose_flags(project: Project, ports: dict[str, int], tmp_path: Path) -> None:
    stack = plan(project, Layout(tmp_path))
    sp = stack.get(SERVICE_PROMETHEUS)
    compose_flags = [
        f
        for f in project.service(SERVICE_PROMETHEUS)["command"]
        if not f.startswith(("--config.file", "--storage.tsdb.path"))
    ]
    for flag in compose_flags:
        assert flag in sp.argv or any(flag in n for n in sp.notes), flag
    assert f"--web.listen-address=127.0.0.1:{ports[env.OBS_PROMETHEUS_PORT]}" in sp.argv
    assert sp.ready_url == f"http://127.0.0.1:{ports[env.OBS_PROMETHEUS_PORT]}/-/ready"


def test_path_mapper_follows_volumes(tmp_path: Path) -> None:
    compose = {
        "services": {
            "svc": {
                "volumes": [
                    "data:/var/lib/app",
                    "./conf:/etc/app:ro",
                    {"type": "volume", "source": "wal", "target": "/var/lib/app/wal"},
                ]
            }
        }
    }
    m = PathMapper.for_service(compose, tmp_path / "repo", tmp_path / "state", "svc")
    assert m.map("/var/lib/app/blocks") == tmp_path / "state" / "volumes" / "data" / "blocks"
    assert m.map("/var/lib/app/wal/x") == tmp_path / "state" / "volumes" / "wal" / "x"  # longest target wins
    assert m.map("/etc/app/rules.yml") == (tmp_path / "repo" / "conf").resolve() / "rules.yml"
    assert m.map("/tmp/elsewhere") == tmp_path / "state" / "fs" / "svc" / "tmp" / "elsewhere"
    assert m.mounted("/var/lib/app") and not m.mounted("/metrics")


def test_start_order_follows_depends_on(project: Project) -> None:
    order = start_order(project.compose)
    assert order.index(SERVICE_TEMPO) < order.index(SERVICE_COLLECTOR)
    assert order.index(SERVICE_PROMETHEUS) < order.index(SERVICE_GRAFANA)
    with pytest.raises(StackError, match="cycle"):
        start_order({"services": {"a": {"depends_on": ["b"]}, "b": {"depends_on": {"a": {}}}}})
    with pytest.raises(StackError, match="undefined service nosuch"):
        start_order({"services": {"a": {"depends_on": ["nosuch"]}}})


def test_plan_embeds_every_service(project: Project, ports: dict[str, int], tmp_path: Path) -> None:
    stack = plan(project, Layout(tmp_path), with_alerting=False)
    assert {s.name for s in stack.embedded()} == {
        SERVICE_COLLECTOR,
        SERVICE_TEMPO,
        SERVICE_PROMETHEUS,
        SERVICE_GRAFANA,
    }
    assert (tmp_path / "volumes" / "tempo_data").is_dir() and (tmp_path / "volumes" / "prometheus_data").is_dir()
    grafana = stack.get(SERVICE_GRAFANA)
    # The dashboard reaches the datasources' URLs (amtp-prometheus:9090, tempo:3200) as resolved.
    argv = " ".join(grafana.argv)
    assert f"--port {ports[env.OBS_GRAFANA_PORT]}" in argv
    assert f"--prometheus-url http://127.0.0.1:{ports[env.OBS_PROMETHEUS_PORT]}" in argv
    assert f"--tempo-url http://127.0.0.1:{ports[env.OBS_TEMPO_HTTP_PORT]}" in argv
    assert grafana.depends_on == [SERVICE_TEMPO, SERVICE_PROMETHEUS]


def test_alerting_without_its_variables_routes_but_does_not_deliver(project: Project, tmp_path: Path) -> None:
    stack = plan(project, Layout(tmp_path))  # no Slack URL / e-mail addresses in this environment
    assert "alertmanager" in {s.name for s in stack.services}
    notes = stack.get(SERVICE_PROMETHEUS).notes
    assert any("not delivered" in n and env.AMTP_SLACK_WEBHOOK_URL in n for n in notes), notes
    am_config = yaml.safe_load(stack.get("alertmanager").config_path.read_text())
    assert all(set(r) == {"name"} for r in am_config["receivers"])


@pytest.mark.needs("promtool")
def test_alerting_adds_alertmanager_and_rules(ports: dict[str, int], tmp_path: Path) -> None:
    environ = {k: str(v) for k, v in ports.items()}
    environ[env.AMTP_SLACK_WEBHOOK_URL] = "http://127.0.0.1:9/slack"  # discard port: never delivered
    environ[env.AMTP_ALERT_EMAIL_ADDRESSES] = "ops@example.invalid"
    stack = plan(Project(REPO, environ), Layout(tmp_path))
    names = [s.name for s in stack.services]
    assert names.index("alertmanager") < names.index(SERVICE_PROMETHEUS)
    am = stack.get("alertmanager")
    assert am.ready_url and am.ready_url.startswith("http://127.0.0.1:")
    cfg_path = stack.get(SERVICE_PROMETHEUS).config_path
    assert cfg_path is not None
    cfg = yaml.safe_load(cfg_path.read_text())
    am_port = am.ready_url.split(":")[2].split("/")[0]
    assert cfg["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"] == [f"127.0.0.1:{am_port}"]
    res = subprocess.run(["promtool", "check", "config", str(cfg_path)], capture_output=True, text=True, timeout=30)
    n_rules = sum(len(g["rules"]) for g in Project(REPO, environ).load_yaml(ALERTING_FILE)["groups"])
    assert res.returncode == 0 and f"{n_rules} rules found" in res.stdout, res.stdout + res.stderr
    assert f"--alertmanager-url http://127.0.0.1:{am_port}" in " ".join(stack.get(SERVICE_GRAFANA).argv)


def test_rendered_configs_pass_the_components_own_validation(project: Project, tmp_path: Path) -> None:
    """The collector and the trace store accept the copies exactly as they accept the originals."""
    stack = plan(project, Layout(tmp_path))
    for name, module in ((SERVICE_COLLECTOR, collector), (SERVICE_TEMPO, tempo_config)):
        path = stack.get(name).config_path
        assert path is not None
        assert module.validate_config(yaml.safe_load(path.read_text())) == [], name
