"""The deployment as a whole: compose variables documented, no placeholders left, and the ports that
compose publishes, the configs listen on, and the scrape targets and URLs point at, all agree.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any
from urllib.parse import urlparse

from amtp_obs import env
from amtp_obs import project as proj
from amtp_obs.check import series
from amtp_obs.check.framework import Context, Finding, check, error, warning
from amtp_obs.check.shared import COLLECTOR, COMPOSE, PROM, TEMPO, datasources, line_in
from amtp_obs.project import ProjectError, variables_in


@check("compose-env", "every variable compose uses is documented in .env.example")
def compose_env(ctx: Context) -> Iterator[Finding]:
    text = ctx.read_text(COMPOSE)
    documented = ctx.env_example
    for i, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("#"):
            continue
        code = line.split(" #", 1)[0]
        for var in sorted(variables_in(code)):
            if var not in documented:
                yield error(f"${{{var}}} is used here but not listed in {proj.ENV_EXAMPLE_FILE}", COMPOSE, i)
    # The OBS_* names the SDK, the embedded stack and CI read (amtp_obs.env) are the ones compose uses.
    known = {v for k, v in vars(env).items() if k.startswith("OBS_") and isinstance(v, str)}
    used = variables_in(text)
    for var in sorted(known - used):
        yield error(f"amtp_obs.env defines {var}, but {COMPOSE} never uses it (renamed or dropped?)", COMPOSE)
    for var in sorted(v for v in used - known if v.startswith("OBS_")):
        yield error(
            f"{var} is not defined in amtp_obs.env: the SDK and embedded stack cannot find it",
            COMPOSE,
            line_in(ctx, COMPOSE, var),
        )


@check("changeme", "CHANGEME placeholders left in the deployment values")
def changeme(ctx: Context) -> Iterator[Finding]:
    rel = ctx.deployment_env_file
    if not ctx.exists(rel):
        yield error("file is missing", rel)
        return
    for i, line in enumerate(ctx.read_text(rel).splitlines(), 1):
        if line.lstrip().startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        if "CHANGEME" in value:
            msg = f"{key.strip()} is still a CHANGEME placeholder: set a real value before deploying"
            yield error(msg, rel, i) if ctx.strict else warning(msg, rel, i)


def _listen_port(value: Any) -> int | None:
    return series.endpoint_port(value)


# Listen ports the binaries use when their config does not say (externally specified defaults).
OTLP_DEFAULT_PORTS = {"grpc": 4317, "http": 4318}
COLLECTOR_EXTENSION_DEFAULT_PORTS = {"health_check": 13133, "pprof": 1777, "zpages": 55679}
COLLECTOR_TELEMETRY_DEFAULT = ":8888"
TEMPO_DEFAULT_HTTP_PORT = 80
TEMPO_DEFAULT_GRPC_PORT = 9095
GRAFANA_DEFAULT_PORT = 3000
GRAFANA_PORT_VARIABLE = "GF_SERVER_HTTP_PORT"


def _protocol_ports(receivers: Mapping[str, Any]) -> Iterator[int | None]:
    for name, rcfg in receivers.items():
        if str(name).split("/")[0] != "otlp":
            continue
        for proto, pcfg in ((rcfg or {}).get("protocols") or {}).items():
            endpoint = (pcfg or {}).get("endpoint")
            yield _listen_port(endpoint) if endpoint else OTLP_DEFAULT_PORTS.get(str(proto))


def _service_ports(ctx: Context) -> dict[str, set[int]]:
    """Container ports each service listens on, per its own config (not compose)."""
    col = ctx.mapping(COLLECTOR)
    out: dict[str, set[int]] = {s: set() for s in proj.SERVICES}

    def add(svc: str, port: int | None) -> None:
        if port:
            out.setdefault(svc, set()).add(port)

    for port in _protocol_ports(col.get("receivers") or {}):
        add(proj.SERVICE_COLLECTOR, port)
    for name, ecfg in (col.get("extensions") or {}).items():
        endpoint = (ecfg or {}).get("endpoint")
        kind = str(name).split("/")[0]
        add(
            proj.SERVICE_COLLECTOR,
            _listen_port(endpoint) if endpoint else COLLECTOR_EXTENSION_DEFAULT_PORTS.get(kind),
        )
    for name, ecfg in (col.get("exporters") or {}).items():
        if str(name).split("/")[0] == "prometheus":
            add(proj.SERVICE_COLLECTOR, _listen_port((ecfg or {}).get("endpoint")))
    tel = ((col.get("service") or {}).get("telemetry") or {}).get("metrics") or {}
    add(proj.SERVICE_COLLECTOR, _listen_port(tel.get("address", COLLECTOR_TELEMETRY_DEFAULT)))
    tempo = ctx.mapping(TEMPO)
    server = tempo.get("server") or {}
    add(proj.SERVICE_TEMPO, int(server.get("http_listen_port", TEMPO_DEFAULT_HTTP_PORT)))
    add(proj.SERVICE_TEMPO, int(server.get("grpc_listen_port", TEMPO_DEFAULT_GRPC_PORT)))
    for port in _protocol_ports((tempo.get("distributor") or {}).get("receivers") or {}):
        add(proj.SERVICE_TEMPO, port)
    add(proj.SERVICE_PROMETHEUS, series.prometheus_listen_port(ctx.compose))
    graf_env = (ctx.compose["services"].get(proj.SERVICE_GRAFANA) or {}).get("environment") or {}
    graf_port = graf_env.get(GRAFANA_PORT_VARIABLE) if isinstance(graf_env, dict) else None
    add(proj.SERVICE_GRAFANA, int(graf_port) if str(graf_port or "").isdigit() else GRAFANA_DEFAULT_PORT)
    return out


@check("ports", "ports agree between compose and the service configs")
def ports(ctx: Context) -> Iterator[Finding]:
    listening = _service_ports(ctx)
    project = proj.Project(ctx.root, environ=dict(ctx.env_example))
    for svc in proj.SERVICES:
        if svc not in ctx.compose["services"]:
            yield error(f"service {svc!r} is missing", COMPOSE, 1)
            continue
        try:
            mappings = project.ports(svc)
        except ProjectError as exc:
            yield error(str(exc), COMPOSE, line_in(ctx, COMPOSE, f"{svc}:"))
            continue
        for pm in mappings:
            if pm.container_port not in listening.get(svc, set()):
                yield error(
                    f"{svc} publishes container port {pm.container_port} ({pm.raw}) but its config "
                    "listens on "
                    f"{sorted(listening.get(svc, set()))}",
                    COMPOSE,
                    line_in(ctx, COMPOSE, pm.raw),
                )
    # Collector endpoints that must be reachable from outside the container bind 0.0.0.0.
    col = ctx.yaml(COLLECTOR)
    for kind in ("extensions", "receivers"):
        for name, cfg in ((col.data or {}).get(kind) or {}).items():
            endpoints = [(cfg or {}).get("endpoint")] + [
                (p or {}).get("endpoint") for p in ((cfg or {}).get("protocols") or {}).values()
            ]
            for ep in endpoints:
                if isinstance(ep, str) and ep.split(":")[0] in ("localhost", "127.0.0.1"):
                    yield error(
                        f"{kind}.{name} listens on {ep}: unreachable through the Docker port mapping; use 0.0.0.0",
                        COLLECTOR,
                        col.find_line(ep),
                    )
    # Scrape targets: service:port listening per its config.
    prom = ctx.yaml(PROM)
    for t in series.scrape_targets(prom.data or {}):
        if t.host not in listening:
            yield error(
                f"job {t.job} scrapes {t.address}: no compose service named {t.host!r}",
                PROM,
                prom.find_line(t.address),
            )
        elif t.port not in listening[t.host]:
            yield error(
                f"job {t.job} scrapes {t.address}, but {t.host} listens on {sorted(listening[t.host])} per its config",
                PROM,
                prom.find_line(t.address),
            )
    # URLs in other configs.
    tempo = ctx.yaml(TEMPO)
    rws = ((((tempo.data or {}).get("metrics_generator") or {}).get("storage") or {}).get("remote_write")) or []
    for rw in rws:
        yield from _url_target(
            str((rw or {}).get("url", "")), listening, TEMPO, tempo.find_line(str((rw or {}).get("url")))
        )
    colt = ctx.mapping(COLLECTOR)
    for name, cfg in (colt.get("exporters") or {}).items():
        if str(name).split("/")[0] in ("otlp", "otlphttp") and isinstance((cfg or {}).get("endpoint"), str):
            ep = cfg["endpoint"]
            url = ep if "://" in ep else f"grpc://{ep}"
            yield from _url_target(url, listening, COLLECTOR, col.find_line(ep))
    for uid, (_, rel, line) in datasources(ctx).items():
        doc = ctx.yaml(rel)
        for ds in (doc.data or {}).get("datasources") or []:
            if ds.get("uid") == uid and ds.get("url"):
                yield from _url_target(str(ds["url"]), listening, rel, doc.find_line(str(ds["url"])) or line)


def _url_target(url: str, listening: Mapping[str, set[int]], file: str, line: int | None) -> Iterator[Finding]:
    parsed = urlparse(url)
    host, port = parsed.hostname, parsed.port
    if host is None:
        yield error(f"{url!r} is not a URL with a host", file, line)
        return
    if host not in listening:
        yield error(f"{url} points at {host!r}, which is not a compose service", file, line)
    elif port is not None and port not in listening[host]:
        yield error(f"{url} points at {host}:{port}, but {host} listens on {sorted(listening[host])}", file, line)
