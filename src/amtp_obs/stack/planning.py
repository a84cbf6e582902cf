"""Plan the embedded stack: one local process per Compose service, its config rendered, its argv.

``plan()`` only writes into the state dir (rendered configs, volume directories) and decides ports
and argv, so tests can check it without starting anything; :mod:`amtp_obs.stack.supervisor` runs
what it planned. Each embedded service has a planner in :data:`PLANNERS`, all with the same inputs
(:class:`PlanContext`); alerting is planned first, since Prometheus' config and the dashboard's
alert view both need its address.
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amtp_obs import env
from amtp_obs.alerting.runtime import (
    AlertingRuntimeError,
    add_alerting,
    alertmanager_command,
    find_alertmanager,
    prepare,
)
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
from amtp_obs.stack.state import Layout
from amtp_obs.tools import find_tool

ALERTMANAGER = "alertmanager"
"""Our process standing in for Grafana's built-in Alertmanager (not a Compose service)."""
ALERTMANAGER_CONTAINER_PORT = 9093
"""Alertmanager's default port; never published, so it resolves to a free loopback port."""


class StackError(Exception):
    """The stack cannot be planned, started or stopped; the message says why and what to do."""


EXPORTER_URL = "Collector Prometheus exporter"
"""The name of the collector's Prometheus exporter page among a service's URLs (``down`` reads it)."""


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


@dataclass
class Alerting:
    """The embedded Alertmanager, and what Prometheus and the dashboard need to reach it."""

    service: ServicePlan
    url: str
    """Alertmanager's base URL (the dashboard reads alert states there)."""
    target: str
    """``host:port`` for Prometheus' ``alerting.alertmanagers``."""
    rule_files: list[Path]


@dataclass
class PlanContext:
    """What every service's planner reads: the project, the state dir, addresses, and alerting."""

    project: Project
    layout: Layout
    resolver: AddressResolver
    alerting: Alerting | None = None
    alerting_notes: list[str] = field(default_factory=list)
    """Why alerting is not (fully) embedded: shown under Prometheus, which evaluates the rules."""


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


def _plan_collector(ctx: PlanContext, name: str) -> ServicePlan:
    project, layout, resolver = ctx.project, ctx.layout, ctx.resolver
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
            plan.urls.append((EXPORTER_URL, _url(addr, "/metrics")))
    telemetry = ((rendered.get("service") or {}).get("telemetry") or {}).get("metrics") or {}
    if addr := _hostport(telemetry.get("address")):
        plan.urls.append(("Collector self-metrics", _url(addr, "/metrics")))
    return plan


def _plan_tempo(ctx: PlanContext, name: str) -> ServicePlan:
    project, layout, resolver = ctx.project, ctx.layout, ctx.resolver
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


def _plan_prometheus(ctx: PlanContext, name: str) -> ServicePlan:
    project, layout, resolver = ctx.project, ctx.layout, ctx.resolver
    binary = find_tool("prometheus")
    if binary is None:
        raise StackError("the `prometheus` binary is not on PATH (Debian: apt-get install prometheus; or `make setup`)")
    doc = project.load_yaml(PROMETHEUS_CONFIG)
    if not isinstance(doc, dict):
        raise ProjectError(f"{PROMETHEUS_CONFIG}: expected a mapping")
    interval = cadence.interval_from(project.variables)
    rendered = cadence.apply_prometheus(render_prometheus_config(doc, resolver, layout.root, name), interval)
    rendered = cadence.apply_rule_files(rendered, interval, layout.config / name / "rules")
    if ctx.alerting is not None:
        rendered = add_alerting(rendered, rule_files=ctx.alerting.rule_files, alertmanagers=[ctx.alerting.target])
    path = _dump(layout.config / name / "prometheus.yml", rendered)
    flags = prometheus_flags(binary)
    args = prometheus_argv(binary, project.service(name), resolver, layout.root, name, path, lambda f: f in flags)
    plan = ServicePlan(name, args.argv, path, f"http://{LOOPBACK}:{args.listen_port}/-/ready")
    plan.urls.append(("Prometheus", f"http://{LOOPBACK}:{args.listen_port}"))
    plan.notes.extend(ctx.alerting_notes)
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


def _plan_grafana(ctx: PlanContext, name: str) -> ServicePlan:
    """Grafana's role locally: the dashboard app rendering the provisioned dashboards."""
    project, layout, resolver = ctx.project, ctx.layout, ctx.resolver
    alertmanager_url = ctx.alerting.url if ctx.alerting else None
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


def plan_alerting(ctx: PlanContext) -> tuple[Alerting | None, list[str]]:
    """Grafana's alert rules on Prometheus + the real Alertmanager (route-only when Slack/e-mail are unset).

    Returns the Alertmanager to run (None when it cannot be) and notes for Prometheus' row.
    """
    project, layout, resolver = ctx.project, ctx.layout, ctx.resolver
    notes: list[str] = []
    try:
        binary = find_alertmanager()
    except (AlertingRuntimeError, ProjectError) as exc:
        return None, [f"alerting not embedded: {exc}"]
    try:
        files = prepare(project, layout.root)
    except (AlertingRuntimeError, ProjectError) as exc:
        needed = (env.AMTP_SLACK_WEBHOOK_URL, env.AMTP_ALERT_EMAIL_ADDRESSES)
        undelivered = [v for v in needed if not project.variables.get(v)]
        if not undelivered:
            return None, [f"alerting not embedded: {exc}"]
        try:
            files = prepare(project, layout.root, deliver=False)
        except (AlertingRuntimeError, ProjectError) as exc2:
            return None, [f"alerting not embedded: {exc2}"]
        notes.append(
            f"alerts are evaluated and routed but not delivered: set {' and '.join(undelivered)} "
            "(environment or .env) to send them"
        )
    port = resolver.listen(ALERTMANAGER, ALERTMANAGER_CONTAINER_PORT)
    url = f"http://{LOOPBACK}:{port}"
    service = ServicePlan(
        ALERTMANAGER,
        alertmanager_command(files, port, host=LOOPBACK, binary=binary),
        files.alertmanager_config,
        f"{url}/-/ready",
    )
    service.urls.append(("Alertmanager", url))
    service.notes.extend(f"alerting: {item}" for item in files.unsupported)
    return Alerting(service, url, f"{LOOPBACK}:{port}", [files.rules_file]), notes


PLANNERS: dict[str, Callable[[PlanContext, str], ServicePlan]] = {
    SERVICE_COLLECTOR: _plan_collector,
    SERVICE_TEMPO: _plan_tempo,
    SERVICE_PROMETHEUS: _plan_prometheus,
    SERVICE_GRAFANA: _plan_grafana,
}
"""Compose service name -> how it runs locally; other Compose services are not embedded."""


def plan(project: Project, layout: Layout, *, with_alerting: bool = True) -> StackPlan:
    """Resolve addresses, render every config into the state dir and decide each service's argv."""
    layout.create()
    resolver = AddressResolver.load(project, layout.ports_file)
    resolver.refresh_internal()
    ctx = PlanContext(project, layout, resolver)
    if with_alerting:
        ctx.alerting, ctx.alerting_notes = plan_alerting(ctx)
    services: list[ServicePlan] = []
    for name in start_order(project.compose):
        planner = PLANNERS.get(name)
        sp = (
            planner(ctx, name) if planner else ServicePlan(name, embedded=False, notes=["this service is not embedded"])
        )
        sp.depends_on = depends_on(project.service(name) or {})
        if name == SERVICE_PROMETHEUS and ctx.alerting is not None:
            services.append(ctx.alerting.service)  # Prometheus notifies it: it starts first
        services.append(sp)
    # Named-volume directories exist up front, as Docker would create them.
    for sp in services:
        if sp.embedded:
            mapper = PathMapper.for_service(project.compose, project.root, layout.root, sp.name)
            for src, _target in mapper.volumes:
                if not src.startswith((".", "/", "~")):
                    (layout.root / "volumes" / src).mkdir(parents=True, exist_ok=True)
    return StackPlan(project, layout, resolver, services)
