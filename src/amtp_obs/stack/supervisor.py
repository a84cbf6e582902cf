"""Plan, start, stop and inspect the embedded stack: one local process per Compose service.

``plan()`` only writes into the state dir (rendered configs, volume directories) and decides ports
and argv, so tests can check it without starting anything; ``spawn()``, ``running()`` and
``stop_all()`` act on the processes recorded there.
"""

from __future__ import annotations

import functools
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from amtp_obs import env
from amtp_obs.project import (
    COLLECTOR_CONFIG,
    DATASOURCES_DIR,
    PROMETHEUS_CONFIG,
    SERVICE_COLLECTOR,
    SERVICE_GRAFANA,
    SERVICE_PROMETHEUS,
    SERVICE_TEMPO,
    TEMPO_CONFIG,
    Project,
    ProjectError,
)
from amtp_obs.stack import cadence
from amtp_obs.stack.addresses import LOOPBACK, AddressResolver
from amtp_obs.stack.render import (
    PathMapper,
    Renderer,
    prometheus_argv,
    render_collector,
    render_prometheus_config,
    render_tempo,
)
from amtp_obs.stack.state import (
    Layout,
    ProcessRecord,
    process_cmdline,
    process_start_time,
    records,
    stop_record,
)

ALERTMANAGER = "alertmanager"
"""Our process standing in for Grafana's built-in Alertmanager (not a Compose service)."""
ALERTMANAGER_CONTAINER_PORT = 9093
"""Alertmanager's default port; never published, so it resolves to a free loopback port."""
READY_TIMEOUT_S = {
    SERVICE_COLLECTOR: 30.0,
    SERVICE_TEMPO: 60.0,
    SERVICE_PROMETHEUS: 30.0,
    SERVICE_GRAFANA: 30.0,
}
DEFAULT_READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


class StackError(Exception):
    """The stack cannot be planned, started or stopped; the message says why and what to do."""


@dataclass
class ServicePlan:
    """How one Compose service runs locally (or why it does not)."""

    name: str
    argv: list[str] = field(default_factory=list)
    config_path: Path | None = None
    ready_url: str | None = None
    urls: list[tuple[str, str]] = field(default_factory=list)
    """(what, URL) pairs shown in the table at the end of ``up`` and by ``status``."""
    depends_on: list[str] = field(default_factory=list)
    embedded: bool = True
    notes: list[str] = field(default_factory=list)


@dataclass
class StackPlan:
    project: Project
    layout: Layout
    resolver: AddressResolver
    services: list[ServicePlan]
    """In start order (Compose ``depends_on``), including the not-embedded ones."""

    def embedded(self) -> list[ServicePlan]:
        return [s for s in self.services if s.embedded]

    def get(self, name: str) -> ServicePlan:
        for s in self.services:
            if s.name == name:
                return s
        raise KeyError(name)


def depends_on(spec: dict[str, Any]) -> list[str]:
    deps = spec.get("depends_on") or []
    return list(deps) if isinstance(deps, dict | list) else []


def start_order(compose: dict[str, Any]) -> list[str]:
    """Services ordered so each comes after what it ``depends_on`` (ties keep Compose order)."""
    services: dict[str, Any] = compose["services"]
    order: list[str] = []
    visiting: set[str] = set()

    def visit(name: str, chain: tuple[str, ...]) -> None:
        if name in order:
            return
        if name in visiting:
            raise StackError(f"depends_on cycle: {' -> '.join((*chain, name))}")
        if name not in services:
            raise StackError(f"service {chain[-1]} depends on undefined service {name}")
        visiting.add(name)
        for dep in depends_on(services[name] or {}):
            visit(dep, (*chain, name))
        visiting.discard(name)
        order.append(name)

    for name in services:
        visit(name, ())
    return order


@functools.cache
def prometheus_flags(binary: str) -> frozenset[str]:
    """Flag names the local Prometheus accepts (from ``--help-long``), to drop newer ones."""
    try:
        out = subprocess.run([binary, "--help-long"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise StackError(f"cannot run {binary} --help-long: {exc}") from None
    return frozenset(re.findall(r"^\s+--(?:\[no-\])?([a-z0-9][a-z0-9.-]*)", out.stdout + out.stderr, re.M))


def _dump(path: Path, doc: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        "# Rendered by `amtp-obs up`: only addresses and paths differ from the project file.\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    return path


def _url(addr: str, path: str = "") -> str:
    return f"http://{addr}{path}"


def _hostport(value: Any) -> str | None:
    return value if isinstance(value, str) and value.startswith(LOOPBACK + ":") else None


def _plan_collector(project: Project, layout: Layout, resolver: AddressResolver, name: str) -> ServicePlan:
    doc = project.load_yaml(COLLECTOR_CONFIG)
    if not isinstance(doc, dict):
        raise ProjectError(f"{COLLECTOR_CONFIG}: expected a mapping")
    rendered = render_collector(doc, resolver, layout.root, name)
    path = _dump(layout.config / name / "config.yaml", rendered)
    plan = ServicePlan(name, [sys.executable, "-m", "amtp_obs.collector", "--config", str(path)], path)
    exts = rendered.get("extensions") or {}
    enabled = set((rendered.get("service") or {}).get("extensions") or [])
    otlp = ((rendered.get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    if grpc := _hostport((otlp.get("grpc") or {}).get("endpoint")):
        plan.urls.append(("OTLP gRPC", grpc))
    if http := _hostport((otlp.get("http") or {}).get("endpoint")):
        plan.urls.append(("OTLP HTTP", _url(http, "/v1/traces")))
    for ext_id, ext in exts.items():
        if ext_id not in enabled or not isinstance(ext, dict) or not (addr := _hostport(ext.get("endpoint"))):
            continue
        kind = ext_id.split("/")[0]
        if kind == "health_check":
            url = _url(addr, ext.get("path") or "/")
            plan.ready_url = plan.ready_url or url
            plan.urls.append(("Collector health", url))
        elif kind == "zpages":
            plan.urls.append(("Collector zpages", _url(addr, "/debug/servicez")))
        elif kind == "pprof":
            plan.urls.append(("Collector pprof", _url(addr, "/debug/pprof/")))
    for exp_id, exp in (rendered.get("exporters") or {}).items():
        if exp_id.split("/")[0] == "prometheus" and isinstance(exp, dict) and (addr := _hostport(exp.get("endpoint"))):
            plan.urls.append(("Collector Prometheus exporter", _url(addr, "/metrics")))
    telemetry = ((rendered.get("service") or {}).get("telemetry") or {}).get("metrics") or {}
    if addr := _hostport(telemetry.get("address")):
        plan.urls.append(("Collector self-metrics", _url(addr, "/metrics")))
    return plan


def _plan_tempo(project: Project, layout: Layout, resolver: AddressResolver, name: str) -> ServicePlan:
    doc = project.load_yaml(TEMPO_CONFIG)
    if not isinstance(doc, dict):
        raise ProjectError(f"{TEMPO_CONFIG}: expected a mapping")
    interval = cadence.interval_from(project.variables)
    rendered = cadence.apply_tempo(render_tempo(doc, resolver, layout.root, name), interval)
    path = _dump(layout.config / name / "tempo.yaml", rendered)
    http = f"{LOOPBACK}:{rendered['server']['http_listen_port']}"
    plan = ServicePlan(
        name, [sys.executable, "-m", "amtp_obs.tempo", "--config", str(path)], path, _url(http, "/ready")
    )
    if line := cadence.tempo_note(doc, interval):
        plan.notes.append(line)
    plan.urls.append(("Tempo API", _url(http, "/api/search")))
    plan.urls.append(("Tempo gRPC", f"{LOOPBACK}:{rendered['server']['grpc_listen_port']}"))
    otlp = (((rendered.get("distributor") or {}).get("receivers") or {}).get("otlp") or {}).get("protocols") or {}
    if grpc := _hostport((otlp.get("grpc") or {}).get("endpoint")):
        plan.urls.append(("Tempo OTLP gRPC (internal)", grpc))
    return plan


def _plan_prometheus(project: Project, layout: Layout, resolver: AddressResolver, name: str) -> ServicePlan:
    binary = shutil.which("prometheus")
    if binary is None:
        raise StackError("the `prometheus` binary is not on PATH (Debian: apt-get install prometheus; or `make setup`)")
    doc = project.load_yaml(PROMETHEUS_CONFIG)
    if not isinstance(doc, dict):
        raise ProjectError(f"{PROMETHEUS_CONFIG}: expected a mapping")
    interval = cadence.interval_from(project.variables)
    rendered = cadence.apply_prometheus(render_prometheus_config(doc, resolver, layout.root, name), interval)
    rendered = cadence.apply_rule_files(rendered, interval, layout.config / name / "rules")
    path = _dump(layout.config / name / "prometheus.yml", rendered)
    flags = prometheus_flags(binary)
    args = prometheus_argv(binary, project.service(name), resolver, layout.root, name, path, lambda f: f in flags)
    plan = ServicePlan(name, args.argv, path, f"http://{LOOPBACK}:{args.listen_port}/-/ready")
    plan.urls.append(("Prometheus", f"http://{LOOPBACK}:{args.listen_port}"))
    plan.notes.extend(f"dropped flag {f!r}: the local prometheus does not accept it" for f in args.dropped)
    if line := cadence.prometheus_note(doc, interval):
        plan.notes.append(line)
    # Storage directories named by flags must exist (Prometheus creates the last level only).
    for arg in args.argv:
        if arg.startswith("--storage.tsdb.path="):
            Path(arg.split("=", 1)[1]).mkdir(parents=True, exist_ok=True)
    return plan


def datasource_urls(project: Project, renderer: Renderer) -> dict[str, str]:
    """Datasource type -> URL from the Grafana provisioning, with its address resolved."""
    urls: dict[str, str] = {}
    for path in sorted(project.path(DATASOURCES_DIR).glob("*.y*ml")):
        doc = project.load_yaml(path.relative_to(project.root)) or {}
        for ds in doc.get("datasources") or []:
            if isinstance(ds, dict) and isinstance(ds.get("url"), str) and ds.get("type") not in urls:
                urls[str(ds.get("type"))] = renderer.address(ds["url"])
    return urls


def _plan_grafana(
    project: Project, layout: Layout, resolver: AddressResolver, name: str, alertmanager_url: str | None
) -> ServicePlan:
    """Grafana's role locally: the dashboard app rendering the provisioned dashboards."""
    mapper = PathMapper.for_service(project.compose, project.root, layout.root, name)
    urls = datasource_urls(project, Renderer(resolver, name, mapper))
    # Grafana's port inside its container is the one Compose publishes as OBS_GRAFANA_PORT.
    port = resolver.listen(name, project.port_variable(env.OBS_GRAFANA_PORT).container_port)
    argv = [sys.executable, "-m", "amtp_obs.dashboard", "--host", LOOPBACK, "--port", str(port)]
    argv += ["--project-dir", str(project.root)]
    for ds_type, flag in (("prometheus", "--prometheus-url"), ("tempo", "--tempo-url")):
        if ds_type in urls:
            argv += [flag, urls[ds_type]]
    if alertmanager_url:
        argv += ["--alertmanager-url", alertmanager_url]
    base = f"http://{LOOPBACK}:{port}"
    plan = ServicePlan(name, argv, None, f"{base}/api/health")
    for uid, title in _dashboards(project):
        plan.urls.append((f"Dashboard {title!r}", f"{base}/d/{uid}"))
    plan.urls.append(("Dashboards", f"{base}/"))
    if alertmanager_url:
        plan.urls.append(("Alerts", f"{base}/alerting/list"))
    return plan


def _dashboards(project: Project) -> list[tuple[str, str]]:
    """(uid, title) of each provisioned dashboard, for the URL table."""
    out = []
    for path in project.dashboards():
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # the dashboard app reports a broken file itself
        if isinstance(doc, dict) and doc.get("uid"):
            out.append((str(doc["uid"]), str(doc.get("title", doc["uid"]))))
    return out


def _plan_alerting(
    project: Project, layout: Layout, resolver: AddressResolver, prometheus: ServicePlan
) -> ServicePlan | None:
    """Grafana's alert rules on Prometheus + the real Alertmanager (route-only when Slack/e-mail are unset)."""
    from amtp_obs.alerting.runtime import (
        AlertingRuntimeError,
        add_alerting,
        alertmanager_command,
        find_alertmanager,
        prepare,
    )

    try:
        binary = find_alertmanager()
    except (AlertingRuntimeError, ProjectError) as exc:
        prometheus.notes.append(f"alerting not embedded: {exc}")
        return None
    try:
        files = prepare(project, layout.root)
    except (AlertingRuntimeError, ProjectError) as exc:
        needed = (env.AMTP_SLACK_WEBHOOK_URL, env.AMTP_ALERT_EMAIL_ADDRESSES)
        undelivered = [v for v in needed if not project.variables.get(v)]
        if not undelivered:
            prometheus.notes.append(f"alerting not embedded: {exc}")
            return None
        try:
            files = prepare(project, layout.root, deliver=False)
        except (AlertingRuntimeError, ProjectError) as exc2:
            prometheus.notes.append(f"alerting not embedded: {exc2}")
            return None
        prometheus.notes.append(
            f"alerts are evaluated and routed but not delivered: set {' and '.join(undelivered)} "
            "(environment or .env) to send them"
        )
    port = resolver.listen(ALERTMANAGER, ALERTMANAGER_CONTAINER_PORT)
    assert prometheus.config_path is not None
    cfg = yaml.safe_load(prometheus.config_path.read_text())
    _dump(
        prometheus.config_path,
        add_alerting(cfg, rule_files=[files.rules_file], alertmanagers=[f"{LOOPBACK}:{port}"]),
    )
    plan = ServicePlan(
        ALERTMANAGER,
        alertmanager_command(files, port, host=LOOPBACK, binary=binary),
        files.alertmanager_config,
        f"http://{LOOPBACK}:{port}/-/ready",
    )
    plan.urls.append(("Alertmanager", f"http://{LOOPBACK}:{port}"))
    plan.notes.extend(f"alerting: {item}" for item in files.unsupported)
    return plan


PLANNERS: dict[str, Callable[[Project, Layout, AddressResolver, str], ServicePlan]] = {
    SERVICE_COLLECTOR: _plan_collector,
    SERVICE_TEMPO: _plan_tempo,
    SERVICE_PROMETHEUS: _plan_prometheus,
}
"""Compose service name -> how it runs locally (Grafana: :func:`_plan_grafana`)."""


def plan(project: Project, layout: Layout, *, with_alerting: bool = True) -> StackPlan:
    """Resolve addresses, render every config into the state dir and decide each service's argv."""
    layout.create()
    resolver = AddressResolver.load(project, layout.ports_file)
    resolver.refresh_internal()
    services: list[ServicePlan] = []
    alertmanager: ServicePlan | None = None
    for name in start_order(project.compose):
        spec = project.service(name) or {}
        planner = PLANNERS.get(name)
        if name == SERVICE_GRAFANA:
            am_url = alertmanager.urls[0][1] if alertmanager else None
            sp = _plan_grafana(project, layout, resolver, name, am_url)
        elif planner is None:
            sp = ServicePlan(name, embedded=False, notes=["this service is not embedded"])
        else:
            sp = planner(project, layout, resolver, name)
        sp.depends_on = depends_on(spec)
        services.append(sp)
        if name == SERVICE_PROMETHEUS and with_alerting:
            alertmanager = _plan_alerting(project, layout, resolver, sp)
            if alertmanager is not None:
                services.insert(len(services) - 1, alertmanager)
    # Named-volume directories exist up front, as Docker would create them.
    for sp in services:
        if sp.embedded:
            mapper = PathMapper.for_service(project.compose, project.root, layout.root, sp.name)
            for src, _target in mapper.volumes:
                if not src.startswith((".", "/", "~")):
                    (layout.root / "volumes" / src).mkdir(parents=True, exist_ok=True)
    return StackPlan(project, layout, resolver, services)


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------


def running(layout: Layout) -> dict[str, ProcessRecord]:
    """Recorded services whose process is still the one ``up`` started."""
    return {r.service: r for r in records(layout) if r.matches()}


def spawn(sp: ServicePlan, layout: Layout, environ: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start one service in its own session (process group), output appended to its log."""
    log_path = layout.log(sp.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n==> {time.strftime('%Y-%m-%dT%H:%M:%S')} amtp-obs up: {' '.join(sp.argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            sp.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(layout.root),
            env=environ,
        )
    ProcessRecord(
        sp.name,
        proc.pid,
        process_start_time(proc.pid),
        process_cmdline(proc.pid) or list(sp.argv),
        time.time(),
        str(log_path),
    ).save(layout)
    return proc


def probe(url: str, timeout: float = 1.0) -> tuple[bool, str]:
    """(ready, detail) for one readiness URL: ready means HTTP 200."""
    try:
        r = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    return r.status_code == 200, f"HTTP {r.status_code}"


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def stop_all(layout: Layout, order: Iterable[str] | None = None, timeout: float = STOP_TIMEOUT_S) -> dict[str, str]:
    """Stop recorded services (reverse start order when known) and forget them."""
    recs = {r.service: r for r in records(layout)}
    names = [n for n in (order or []) if n in recs] or sorted(recs, key=lambda n: recs[n].started_at)
    result: dict[str, str] = {}
    for name in reversed(names):
        result[name] = stop_record(recs[name], timeout)
        layout.pid_file(name).unlink(missing_ok=True)
    for name in set(recs) - set(names):
        result[name] = stop_record(recs[name], timeout)
        layout.pid_file(name).unlink(missing_ok=True)
    return result


def child_env(project: Project) -> dict[str, str]:
    """The services see the same variables Compose would give them, plus ours."""
    environ = dict(os.environ)
    for k, v in project.variables.items():
        environ.setdefault(k, v)
    return environ
