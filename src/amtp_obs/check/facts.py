"""Config facts for components with no validator here (otelcol 0.100, Tempo 2.4.1, Grafana 10.4).

Each rule below is a fact from the research notes (collector.md, tempo.md, grafana.md) that the
real binary would enforce, or a trap it would not report (NOTES.md). The embedded collector's and
trace store's own config models run on the files too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from typing import Any

from amtp_obs import alerting, collector
from amtp_obs import project as proj
from amtp_obs.check.framework import Context, Finding, check, error, warning
from amtp_obs.check.shared import ALERTING, COLLECTOR, KNOWN_PANEL_TYPES, SCHEMA_VERSION, TEMPO, dashboards
from amtp_obs.grafana.panels import iter_panels
from amtp_obs.tempo import config as tempo_config

_DOLLAR_MACRO = re.compile(r"(?<!\$)\$(\{)?__")


@check("collector-facts", "collector 0.100 config: pipelines, components, limits, telemetry")
def collector_facts(ctx: Context) -> Iterator[Finding]:
    doc = ctx.yaml(COLLECTOR)
    col = doc.data or {}
    service = col.get("service") or {}
    pipelines = service.get("pipelines") or {}
    if not pipelines:
        yield error("service.pipelines is empty: the collector starts nothing", COLLECTOR, doc.line("service"))
    used: set[str] = set()
    for pname, p in pipelines.items():
        p = p or {}
        for kind in ("receivers", "processors", "exporters"):
            defined = col.get(kind) or {}
            names = [str(n) for n in p.get(kind) or []]
            if kind != "processors" and not names:
                yield error(
                    f"pipeline {pname} needs at least one {kind[:-1]}",
                    COLLECTOR,
                    doc.line("service", "pipelines", pname),
                )
            if len(set(names)) != len(names) and kind == "processors":
                yield error(
                    f"pipeline {pname} lists a processor twice",
                    COLLECTOR,
                    doc.line("service", "pipelines", pname),
                )
            for n in names:
                used.add(f"{kind}:{n}")
                if n not in defined:
                    yield error(
                        f"pipeline {pname} references {kind[:-1]} {n!r}, which is not defined under {kind}",
                        COLLECTOR,
                        doc.line("service", "pipelines", pname, kind),
                    )
        procs = [str(n) for n in p.get("processors") or []]
        if procs and "memory_limiter" in procs and procs[0] != "memory_limiter":
            yield warning(
                f"pipeline {pname}: memory_limiter should come first so refusals reach the client",
                COLLECTOR,
                doc.line("service", "pipelines", pname, "processors"),
            )
    for kind in ("receivers", "exporters"):
        for n in col.get(kind) or {}:
            if f"{kind}:{n}" not in used:
                yield warning(
                    f"{kind[:-1]} {n!r} is defined but in no pipeline: the collector never builds it",
                    COLLECTOR,
                    doc.line(kind, n),
                )
    if any(str(n).split("/")[0] == "debug" for n in col.get("exporters") or {}) and not any(
        u.startswith("exporters:debug") for u in used
    ):
        yield error(
            "the debug exporter is defined but listed in no pipeline: it prints nothing (NOTES §20)",
            COLLECTOR,
            doc.line("exporters", "debug"),
        )
    for ext in service.get("extensions") or []:
        if ext not in (col.get("extensions") or {}):
            yield error(
                f"service.extensions lists {ext!r}, which is not configured",
                COLLECTOR,
                doc.line("service", "extensions"),
            )
    for ext in col.get("extensions") or {}:
        if ext not in (service.get("extensions") or []):
            yield error(
                f"extension {ext!r} is configured but not listed in service.extensions: it never starts",
                COLLECTOR,
                doc.line("extensions", ext),
            )
    for name, cfg in (col.get("processors") or {}).items():
        cfg = cfg or {}
        kind = str(name).split("/")[0]
        if kind == "memory_limiter":
            limit, spike = cfg.get("limit_mib"), cfg.get("spike_limit_mib")
            if isinstance(limit, int) and isinstance(spike, int) and spike >= limit:
                yield error(
                    f"{name}: spike_limit_mib ({spike}) must be below limit_mib ({limit})",
                    COLLECTOR,
                    doc.line("processors", name, "spike_limit_mib"),
                )
        if kind == "batch":
            size, mx = cfg.get("send_batch_size", 8192), cfg.get("send_batch_max_size", 0)
            if isinstance(size, int) and isinstance(mx, int) and mx and mx < size:
                yield error(
                    f"{name}: send_batch_max_size ({mx}) must be 0 or >= send_batch_size ({size})",
                    COLLECTOR,
                    doc.line("processors", name, "send_batch_max_size"),
                )
    metrics = (service.get("telemetry") or {}).get("metrics") or {}
    if metrics.get("level", "normal") != "none" and not (metrics.get("address") or metrics.get("readers")):
        yield error(
            "service.telemetry.metrics needs `address` (0.100.0) to serve self-metrics on :8888",
            COLLECTOR,
            doc.line("service", "telemetry"),
        )
    if metrics.get("address") and metrics.get("readers"):
        yield error(
            "service.telemetry.metrics sets both address and readers: a double bind",
            COLLECTOR,
            doc.line("service", "telemetry", "metrics"),
        )


@check("tempo-facts", "Tempo 2.4.1 config: listen port, generator storage, new-format overrides")
def tempo_facts(ctx: Context) -> Iterator[Finding]:
    doc = ctx.yaml(TEMPO)
    t = doc.data or {}
    if not (t.get("server") or {}).get("http_listen_port"):
        yield error(
            "server.http_listen_port is not set: Tempo 2.4.1 then listens on 80, not 3200 (NOTES §5)",
            TEMPO,
            doc.line("server"),
        )
    gen = t.get("metrics_generator") or {}
    if gen and not (gen.get("storage") or {}).get("path"):
        yield error(
            "metrics_generator.storage.path is not set: the generator silently disables itself",
            TEMPO,
            doc.line("metrics_generator"),
        )
    if "enable_target_info" in ((gen.get("processor") or {}).get("span_metrics") or {}):
        yield warning(
            "enable_target_info under metrics_generator.processor is ignored by 2.4.1; set it under "
            "overrides.defaults.metrics_generator.processor.span_metrics",
            TEMPO,
            doc.line("metrics_generator", "processor", "span_metrics", "enable_target_info"),
        )
    overrides = t.get("overrides") or {}
    legacy = [k for k in overrides if k not in ("defaults", "per_tenant_override_config", "per_tenant_override_period")]
    if legacy:
        yield error(
            f"overrides uses legacy flat keys {', '.join(map(str, legacy))}: use the new "
            "overrides.defaults.* format (mixing them is a fatal parse error)",
            TEMPO,
            doc.line("overrides", legacy[0]),
        )
    mg = (overrides.get("defaults") or {}).get("metrics_generator") or {}
    if gen and not mg.get("processors"):
        yield error(
            "overrides.defaults.metrics_generator.processors is not set: no span metrics are generated",
            TEMPO,
            doc.line("overrides"),
        )
    if gen and not ((mg.get("processor") or {}).get("span_metrics") or {}).get("enable_target_info"):
        yield warning(
            "overrides.defaults.metrics_generator.processor.span_metrics.enable_target_info is not set: "
            "no traces_target_info and no job/instance labels",
            TEMPO,
            doc.line("overrides"),
        )
    dims = ((gen.get("processor") or {}).get("span_metrics") or {}).get("dimensions") or []
    for d in dims:
        if d in ("service.name", "span.name", "span.kind", "status.code"):
            yield warning(
                f"span_metrics dimension {d!r} duplicates an intrinsic label (NOTES §4)",
                TEMPO,
                doc.find_line(str(d)),
            )


@check("grafana-dashboards", "dashboards: schemaVersion 39, uid, refresh, known panel types")
def grafana_dashboards(ctx: Context) -> Iterator[Finding]:
    boards = dashboards(ctx)
    if not boards:
        yield error(f"no dashboard JSON in {proj.DASHBOARDS_DIR}", proj.DASHBOARDS_DIR.as_posix())
    uids: dict[str, str] = {}
    for rel, doc in boards:
        if doc.get("schemaVersion") != SCHEMA_VERSION:
            yield error(
                f"schemaVersion is {doc.get('schemaVersion')!r}; Grafana 10.4 uses {SCHEMA_VERSION}",
                rel,
                _find(ctx, rel, '"schemaVersion"'),
            )
        uid = doc.get("uid")
        if not uid:
            yield error("dashboard has no uid: links and the API address it by uid", rel, 1)
        elif uid in uids:
            yield error(f"dashboard uid {uid!r} is also used by {uids[uid]}", rel, _find(ctx, rel, '"uid"'))
        else:
            uids[str(uid)] = rel
        if not doc.get("refresh"):
            yield warning("dashboard has no refresh interval", rel, 1)
        if doc.get("id") not in (None,):
            yield warning(
                "dashboard id should be null in provisioned JSON (Grafana assigns it)",
                rel,
                _find(ctx, rel, '"id"'),
            )
        for p in iter_panels(doc):
            if p.get("type") not in KNOWN_PANEL_TYPES:
                yield error(
                    f"panel {p.get('title')!r} has unknown type {p.get('type')!r}",
                    rel,
                    _find(ctx, rel, f'"title": "{p.get("title")}"'),
                )


def _find(ctx: Context, rel: str, needle: str) -> int | None:
    for i, line in enumerate(ctx.read_text(rel).splitlines(), 1):
        if needle in line:
            return i
    return None


@check("grafana-datasources", "datasources: apiVersion 1, exactly one default, unique uids")
def grafana_datasources(ctx: Context) -> Iterator[Finding]:
    ds_dir = ctx.root / proj.DATASOURCES_DIR
    files = sorted([*ds_dir.glob("*.yaml"), *ds_dir.glob("*.yml")])
    if not files:
        yield error("no datasource provisioning file", proj.DATASOURCES_DIR.as_posix())
        return
    defaults: list[tuple[str, int | None]] = []
    seen: set[str] = set()
    for path in files:
        rel = path.relative_to(ctx.root).as_posix()
        doc = ctx.yaml(rel)
        data = doc.data or {}
        if data.get("apiVersion") != 1:
            yield error(f"apiVersion is {data.get('apiVersion')!r}, expected 1", rel, doc.line("apiVersion"))
        for i, ds in enumerate(data.get("datasources") or []):
            if not ds.get("uid"):
                yield error(
                    f"datasource {ds.get('name')!r} has no uid: dashboards cannot reference it stably",
                    rel,
                    doc.line("datasources", i),
                )
            elif ds["uid"] in seen:
                yield error(f"datasource uid {ds['uid']!r} is provisioned twice", rel, doc.line("datasources", i))
            seen.add(str(ds.get("uid")))
            if ds.get("isDefault"):
                defaults.append((rel, doc.line("datasources", i, "isDefault")))
    if len(defaults) != 1:
        where = defaults[1] if len(defaults) > 1 else (proj.DATASOURCES_DIR.as_posix(), None)
        yield error(f"{len(defaults)} datasources are marked isDefault; Grafana needs exactly one", *where)


@check("grafana-alerting", "alerting provisioning: root policy, names, weekdays, thresholds, time ranges")
def grafana_alerting(ctx: Context) -> Iterator[Finding]:
    doc = ctx.yaml(ALERTING)
    data = ctx.mapping(ALERTING)
    if data.get("apiVersion") != 1:
        yield error(f"apiVersion is {data.get('apiVersion')!r}, expected 1", ALERTING, doc.line("apiVersion"))
    for key in ("contactPoints", "muteTimes", "policies", "groups"):
        value = data.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(x, dict) for x in value)):
            yield error(f"{key} must be a list of mappings", ALERTING, doc.line(key))
            return
    receivers = {str(cp.get("name")) for cp in data.get("contactPoints") or []}
    mutes = {str(mt.get("name")) for mt in data.get("muteTimes") or []}
    policies = data.get("policies") or []
    if not policies:
        yield error("no notification policy tree: Grafana keeps its default policy (to nobody)", ALERTING, 1)
    for pi, root in enumerate(policies):
        if root.get("mute_time_intervals"):
            yield error(
                "the root notification policy has mute_time_intervals: Grafana and Alertmanager reject "
                "this; attach the mute timing to every child route instead (NOTES §13)",
                ALERTING,
                doc.line("policies", pi, "mute_time_intervals"),
            )
        if root.get("object_matchers") or root.get("matchers"):
            yield error(
                "the root notification policy has matchers: it must match everything",
                ALERTING,
                doc.line("policies", pi),
            )
        if not root.get("receiver"):
            yield error("the root notification policy needs a default receiver", ALERTING, doc.line("policies", pi))

        def walk(node: dict[str, Any], path: list[str | int]) -> Iterator[Finding]:
            rec = node.get("receiver")
            if rec and rec not in receivers:
                yield error(
                    f"policy uses receiver {rec!r}, which is not a contact point",
                    ALERTING,
                    doc.line(*path, "receiver"),
                )
            for mt in node.get("mute_time_intervals") or []:
                if mt not in mutes:
                    yield error(
                        f"policy uses mute timing {mt!r}, which is not defined in muteTimes",
                        ALERTING,
                        doc.line(*path, "mute_time_intervals"),
                    )
            for key in ("group_interval", "repeat_interval"):
                if str(node.get(key, "")).strip() in ("0", "0s", "0m"):
                    yield error(f"{key} cannot be 0", ALERTING, doc.line(*path, key))
            for i, child in enumerate(node.get("routes") or []):
                yield from walk(child, [*path, "routes", i])

        yield from walk(root, ["policies", pi])
    for mi, mt in enumerate(data.get("muteTimes") or []):
        for ii, ti in enumerate(mt.get("time_intervals") or []):
            for day in ti.get("weekdays") or []:
                if ":" in str(day):
                    a, b = (x.strip().lower() for x in str(day).split(":", 1))
                    order = ["sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday"]
                    if a in order and b in order and order.index(a) > order.index(b):
                        yield error(
                            f"weekday range {day!r} is invalid (start day after end day); write [{a}, {b}] as a list",
                            ALERTING,
                            doc.line("muteTimes", mi, "time_intervals", ii, "weekdays"),
                        )
            for tr in ti.get("times") or []:
                if str(tr.get("end_time")) == "23:59":
                    yield warning(
                        "end_time 23:59 is exclusive and leaves a minute unmuted; omit `times` for "
                        "whole days or use 24:00",
                        ALERTING,
                        doc.line("muteTimes", mi, "time_intervals", ii, "times"),
                    )
    for gi, group in enumerate(data.get("groups") or []):
        for ri, rule in enumerate(group.get("rules") or []):
            base = ["groups", gi, "rules", ri]
            refs = {str(q.get("refId")) for q in rule.get("data") or []}
            if rule.get("condition") not in refs:
                yield error(
                    f"rule {rule.get('uid')!r}: condition {rule.get('condition')!r} is not one of its refIds",
                    ALERTING,
                    doc.line(*base, "condition"),
                )
            for qi, q in enumerate(rule.get("data") or []):
                model = q.get("model") or {}
                rng = q.get("relativeTimeRange") or {}
                if q.get("datasourceUid") != alerting.EXPR_DATASOURCE and not int(rng.get("from", 0) or 0) > int(
                    rng.get("to", 0) or 0
                ):
                    yield error(
                        f"rule {rule.get('uid')!r} query {q.get('refId')}: relativeTimeRange from must be "
                        "greater than to for a datasource query",
                        ALERTING,
                        doc.line(*base, "data", qi, "relativeTimeRange"),
                    )
                if model.get("type") == "threshold":
                    for cond in model.get("conditions") or []:
                        et = (cond.get("evaluator") or {}).get("type")
                        if et not in ("gt", "lt", "within_range", "outside_range"):
                            yield error(
                                f"rule {rule.get('uid')!r}: threshold type {et!r} is not in Grafana 10.4 "
                                "(use gt or lt)",
                                ALERTING,
                                doc.line(*base, "data", qi, "model"),
                            )
            for key in ("keepFiringFor", "record", "notification_settings"):
                if key in rule:
                    yield error(
                        f"rule {rule.get('uid')!r}: {key} is not supported by Grafana 10.4 provisioning",
                        ALERTING,
                        doc.line(*base, key),
                    )


@check("provisioning-dollar", "literal $__ in Grafana provisioning YAML is written $$__")
def provisioning_dollar(ctx: Context) -> Iterator[Finding]:
    root = ctx.root / proj.GRAFANA_PROVISIONING
    for path in sorted([*root.rglob("*.yaml"), *root.rglob("*.yml")]):
        rel = path.relative_to(ctx.root).as_posix()
        in_annotations = False
        indent = -1
        for i, line in enumerate(path.read_text().splitlines(), 1):
            stripped = line.lstrip()
            cur = len(line) - len(stripped)
            if stripped.startswith("annotations:"):
                in_annotations, indent = True, cur
                continue
            if in_annotations and stripped and cur <= indent:
                in_annotations = False
            if stripped.startswith("#") or in_annotations:
                continue
            if _DOLLAR_MACRO.search(line.split(" #", 1)[0]):
                yield error(
                    "Grafana expands $VAR in provisioning files, so this $__ macro becomes empty: write $$__ "
                    "(NOTES §14)",
                    rel,
                    i,
                )


_EMBEDDED_MODELS: list[tuple[Callable[[Any], list[str]], str, str]] = [
    (collector.validate_config, COLLECTOR, "embedded collector config model"),
    (tempo_config.validate_config, TEMPO, "embedded trace store config model"),
]


@check("embedded-models", "the embedded collector / trace store config models accept the files")
def embedded_models(ctx: Context) -> Iterator[Finding]:
    for validate, rel, what in _EMBEDDED_MODELS:
        try:
            problems = validate(ctx.mapping(rel))
        except Exception as exc:
            yield error(f"{what} crashed on this file: {type(exc).__name__}: {exc}", rel)
            continue
        for p in problems or []:
            yield error(f"{what}: {p}", rel)


# Where each image reads its config when the command does not say (externally specified defaults).
_CONFIG_FLAGS: list[tuple[str, str, str, str]] = [
    (proj.SERVICE_COLLECTOR, r"--config[= ](\S+)", "/etc/otelcol-contrib/config.yaml", COLLECTOR),
    (proj.SERVICE_TEMPO, r"-config\.file[= ](\S+)", "", TEMPO),
    (
        proj.SERVICE_PROMETHEUS,
        r"--config\.file[= ](\S+)",
        "/etc/prometheus/prometheus.yml",
        proj.PROMETHEUS_CONFIG.as_posix(),
    ),
]
GRAFANA_PROVISIONING_PATH = "/etc/grafana/provisioning"


def _host_path(ctx: Context, service: dict[str, Any], container_path: str) -> str | None:
    """The checkout-relative host path bind-mounted at ``container_path`` (longest mount prefix)."""
    best: tuple[int, str] | None = None
    for vol in service.get("volumes") or []:
        if not isinstance(vol, str) or ":" not in vol:
            continue
        src, dst = vol.split(":")[:2]
        if not src.startswith((".", "/")):
            continue  # a named volume
        if container_path == dst or container_path.startswith(dst.rstrip("/") + "/"):
            rest = container_path[len(dst.rstrip("/")) :].lstrip("/")
            host = (ctx.root / src / rest).resolve()
            try:
                rel = host.relative_to(ctx.root).as_posix()
            except ValueError:
                rel = str(host)
            if best is None or len(dst) > best[0]:
                best = (len(dst), rel)
    return best[1] if best else None


@check("config-mounts", "each container reads the config file this checkout validates")
def config_mounts(ctx: Context) -> Iterator[Finding]:
    services = ctx.compose["services"]
    for name, flag, default, expected in _CONFIG_FLAGS:
        svc = services.get(name)
        if not isinstance(svc, dict):
            continue
        command = svc.get("command") or []
        text = " ".join(command) if isinstance(command, list) else str(command)
        m = re.search(flag, text)
        path = m.group(1) if m else default
        line = _find(ctx, proj.COMPOSE_FILE, f"{name}:")
        if not path:
            yield error(
                f"{name} is started without a config file flag: it ignores {expected}",
                proj.COMPOSE_FILE,
                line,
            )
            continue
        host = _host_path(ctx, svc, path)
        if host != expected:
            source = f"mounted from {host}" if host else "not mounted from the checkout"
            yield error(
                f"{name} reads {path}, which is {source}; expected {expected}",
                proj.COMPOSE_FILE,
                line,
            )
    grafana = services.get(proj.SERVICE_GRAFANA)
    if not isinstance(grafana, dict):
        return
    line = _find(ctx, proj.COMPOSE_FILE, f"{proj.SERVICE_GRAFANA}:")
    host = _host_path(ctx, grafana, GRAFANA_PROVISIONING_PATH)
    if host != proj.GRAFANA_PROVISIONING.as_posix():
        yield error(
            f"grafana's {GRAFANA_PROVISIONING_PATH} is not mounted from {proj.GRAFANA_PROVISIONING}",
            proj.COMPOSE_FILE,
            line,
        )
        return
    prov_dir = ctx.root / proj.DASHBOARDS_DIR
    for path in sorted([*prov_dir.glob("*.yaml"), *prov_dir.glob("*.yml")]):
        rel = path.relative_to(ctx.root).as_posix()
        doc = ctx.yaml(rel)
        for i, provider in enumerate((doc.data or {}).get("providers") or []):
            target = str(((provider or {}).get("options") or {}).get("path", ""))
            hp = _host_path(ctx, grafana, target)
            if hp is None or not list((ctx.root / hp).glob("*.json")):
                yield error(
                    f"dashboard provider {provider.get('name')!r} loads {target}, which holds no dashboard "
                    "JSON from this checkout",
                    rel,
                    doc.line("providers", i, "options", "path"),
                )
