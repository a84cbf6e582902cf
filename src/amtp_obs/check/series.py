"""The series Prometheus will hold, derived from the stack's own config files.

Dashboards and alerts are only as good as the names they query. This module works out, from the
collector config (exporter naming, NOTES §1-2), prometheus.yml (scrape jobs, metric relabelling)
and tempo.yaml (span-metric dimensions, remote write, NOTES §4-5), which series names and labels the
pipeline really produces, and builds synthetic samples for them that ``promtool test rules`` can
evaluate the dashboard's PromQL against.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import promql_parser

from amtp_obs import contract
from amtp_obs import project as proj
from amtp_obs.collector.prometheus_naming import build_metric_name, normalize_label

SAMPLES = 41
"""Synthetic samples per series (15 s apart: 10 minutes, enough for ``[5m]`` windows)."""
SCRAPE_INTERVAL = "15s"
EVAL_TIME = "10m"

# Tempo 2.4.1 span-metrics intrinsic labels and their values (research tempo.md §2.1).
TEMPO_INTRINSICS = ("service", "span_name", "span_kind", "status_code")
TEMPO_COLLIDING = ("job", "span_name", "span_kind", "status_code", "status_message", "instance")
TEMPO_BUCKETS = (*(f"{0.002 * 2**i:g}" for i in range(14)), "+Inf")
TEMPO_GEN_INSTANCE = "__metrics_gen_instance"
SPAN_KIND_CLIENT = "SPAN_KIND_CLIENT"
SPAN_KIND_INTERNAL = "SPAN_KIND_INTERNAL"
STATUS_OK = "STATUS_CODE_OK"

# Resource attributes the OTel SDK sets on every resource (copied to labels by
# resource_to_telemetry_conversion).
SDK_RESOURCE_ATTRIBUTES = (
    "service.name",
    "telemetry.sdk.language",
    "telemetry.sdk.name",
    "telemetry.sdk.version",
)

# Series Prometheus adds for every scrape target.
SCRAPE_SERIES = (
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
    "scrape_series_added",
)

OPEN = "sample"
"""Placeholder value of a label whose values the configs do not determine (model, provider...)."""


@dataclass
class Series:
    """One synthetic series: full label set (with ``__name__``), a value kind, where it comes from."""

    labels: dict[str, str]
    kind: str  # counter | gauge | bucket:<index> | sum | count
    origin: str
    open_labels: frozenset[str] = frozenset()
    recorded: bool = False
    """Computed by a recording rule from the others (never synthetic input itself)."""

    @property
    def name(self) -> str:
        return self.labels["__name__"]


@dataclass
class SeriesModel:
    series: list[Series] = field(default_factory=list)
    open_prefixes: dict[str, str] = field(default_factory=dict)
    """Name prefix -> origin, for families whose names and labels are not enumerated (otelcol_*)."""
    problems: list[tuple[str, str, str]] = field(default_factory=list)
    """(file, needle for the line, message): things that stop a family from reaching Prometheus."""

    def names(self) -> dict[str, set[str]]:
        """Series name -> union of its label names."""
        out: dict[str, set[str]] = {}
        for s in self.series:
            out.setdefault(s.name, set()).update(k for k in s.labels if k != "__name__")
        return out

    def origin(self, name: str) -> str | None:
        for s in self.series:
            if s.name == name:
                return s.origin
        for prefix, origin in self.open_prefixes.items():
            if name.startswith(prefix):
                return origin
        return None

    def is_open(self, name: str) -> bool:
        return any(name.startswith(p) for p in self.open_prefixes) and name not in self.names()


# ---------------------------------------------------------------------------------------------
# Prometheus relabelling (metric_relabel_configs)
# ---------------------------------------------------------------------------------------------

_GO_GROUP = re.compile(r"\$(?:\$|\{(\w+)\}|(\w+))")


def _go_expand(template: str, m: re.Match[str]) -> str:
    """Go ``regexp.Expand``: ``$1``, ``${1}``, ``$name``; ``$$`` is a dollar; unknown -> empty."""

    def repl(g: re.Match[str]) -> str:
        if g.group(0) == "$$":
            return "$"
        key = g.group(1) or g.group(2)
        try:
            val = m.group(int(key)) if key.isdigit() else m.group(key)
        except IndexError:
            return ""
        return val or ""

    return _GO_GROUP.sub(repl, template)


class RelabelError(ValueError):
    pass


def apply_relabel(labels: Mapping[str, str], configs: Iterable[Mapping[str, Any]]) -> dict[str, str] | None:
    """Apply Prometheus relabel configs to one label set; None when the series is dropped.

    Implements ``replace`` (the default), ``keep``, ``drop``, ``labeldrop``, ``labelkeep`` and
    ``labelmap`` with Prometheus' defaults (``regex: (.*)`` anchored, ``separator: ;``,
    ``replacement: $1``).
    """
    cur = dict(labels)
    for cfg in configs:
        action = str(cfg.get("action", "replace")).lower()
        try:
            regex = re.compile(f"^(?:{cfg.get('regex', '(.*)')})$")
        except re.error as exc:
            raise RelabelError(f"invalid regex {cfg.get('regex')!r}: {exc}") from None
        sep = str(cfg.get("separator", ";"))
        value = sep.join(cur.get(str(s), "") for s in cfg.get("source_labels") or [])
        replacement = str(cfg.get("replacement", "$1"))
        if action == "replace":
            m = regex.match(value)
            if m is None:
                continue
            target = _go_expand(str(cfg.get("target_label", "")), m)
            res = _go_expand(replacement, m)
            if not target:
                continue
            if res:
                cur[target] = res
            else:
                cur.pop(target, None)
        elif action == "keep":
            if not regex.match(value):
                return None
        elif action == "drop":
            if regex.match(value):
                return None
        elif action == "labeldrop":
            cur = {k: v for k, v in cur.items() if not regex.match(k)}
        elif action == "labelkeep":
            cur = {k: v for k, v in cur.items() if k == "__name__" or regex.match(k)}
        elif action == "labelmap":
            for k, v in list(cur.items()):
                m = regex.match(k)
                if m:
                    cur[_go_expand(replacement, m)] = v
        else:
            raise RelabelError(f"relabel action {action!r} is not modelled by amtp-obs check")
    return cur


# ---------------------------------------------------------------------------------------------
# Scrape jobs
# ---------------------------------------------------------------------------------------------


@dataclass
class ScrapeTarget:
    job: str
    host: str
    port: int | None
    address: str
    labels: dict[str, str]
    metric_relabel: list[Mapping[str, Any]]
    honor_labels: bool
    job_index: int


def scrape_targets(prom: Mapping[str, Any]) -> list[ScrapeTarget]:
    out: list[ScrapeTarget] = []
    for ji, job in enumerate(prom.get("scrape_configs") or []):
        if not isinstance(job, dict):
            continue
        name = str(job.get("job_name", ""))
        for sc in job.get("static_configs") or []:
            for target in sc.get("targets") or []:
                host, _, port = str(target).rpartition(":")
                out.append(
                    ScrapeTarget(
                        job=name,
                        host=host or str(target),
                        port=int(port) if port.isdigit() else None,
                        address=str(target),
                        labels={str(k): str(v) for k, v in (sc.get("labels") or {}).items()},
                        metric_relabel=list(job.get("metric_relabel_configs") or []),
                        honor_labels=bool(job.get("honor_labels", False)),
                        job_index=ji,
                    )
                )
    return out


def endpoint_port(endpoint: Any) -> int | None:
    """Port of a ``host:port`` or URL endpoint string."""
    if endpoint is None:
        return None
    text = str(endpoint)
    if "://" in text:
        return urlparse(text).port
    _, _, port = text.rpartition(":")
    return int(port) if port.isdigit() else None


def _scraped(
    base: Mapping[str, str], target: ScrapeTarget, kind: str, origin: str, open_labels: Iterable[str]
) -> Series | None:
    """A series as stored after scraping ``target``: target labels, honor_labels, relabelling."""
    labels = dict(base)
    if not target.honor_labels:
        for key in ("job", "instance"):
            if key in labels:
                labels[f"exported_{key}"] = labels.pop(key)
    labels.setdefault("job", target.job)
    labels.setdefault("instance", target.address)
    for k, v in target.labels.items():
        labels.setdefault(k, v)
    final = apply_relabel(labels, target.metric_relabel)
    if final is None:
        return None
    return Series(final, kind, origin, frozenset(open_labels))


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------


def _component_type(name: str) -> str:
    return name.split("/", 1)[0]


def _metrics_pipelines(col: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    pipelines = ((col.get("service") or {}).get("pipelines")) or {}
    return [p for n, p in pipelines.items() if _component_type(str(n)) == "metrics" and isinstance(p, dict)]


def _added_attributes(col: Mapping[str, Any], pipeline: Mapping[str, Any]) -> dict[str, str]:
    """Data-point attributes the pipeline's attributes processors insert/upsert (NOTES §2)."""
    procs = col.get("processors") or {}
    out: dict[str, str] = {}
    for pname in pipeline.get("processors") or []:
        if _component_type(str(pname)) != "attributes":
            continue
        for action in (procs.get(pname) or {}).get("actions") or []:
            if action.get("action") in ("insert", "upsert") and "value" in action:
                out[str(action["key"])] = str(action["value"])
    return out


def _collector_series(
    model: SeriesModel, col: Mapping[str, Any], targets: list[ScrapeTarget], collector_service: str
) -> None:
    exporters = col.get("exporters") or {}
    for pipeline in _metrics_pipelines(col):
        attrs = _added_attributes(col, pipeline)
        for ename in pipeline.get("exporters") or []:
            if _component_type(str(ename)) != "prometheus":
                continue
            ecfg = exporters.get(ename) or {}
            port = endpoint_port(ecfg.get("endpoint"))
            scraped_by = [t for t in targets if t.host == collector_service and t.port == port]
            if not scraped_by:
                model.problems.append(
                    (
                        proj.PROMETHEUS_CONFIG.as_posix(),
                        "scrape_configs",
                        f"no scrape job targets {collector_service}:{port}, where the collector's "
                        f"{ename} exporter serves the LLM metrics",
                    )
                )
                continue
            namespace = str(ecfg.get("namespace", ""))
            suffixes = bool(ecfg.get("add_metric_suffixes", True))
            rtt = bool((ecfg.get("resource_to_telemetry_conversion") or {}).get("enabled", False))
            resource: dict[str, str] = {}
            open_labels: set[str] = set()
            if rtt:
                for attr in SDK_RESOURCE_ATTRIBUTES:
                    resource[normalize_label(attr)] = OPEN
                    open_labels.add(normalize_label(attr))
            # The exporter turns service.name into `job` (a scrape-time collision -> exported_job).
            resource["job"] = OPEN
            point_attrs = {normalize_label(k): v for k, v in attrs.items()}

            ex = _Exported(model, scraped_by, resource, point_attrs, open_labels)
            for spec in contract.ALL_TOKEN_COUNTERS:
                name = build_metric_name(
                    spec.instrument,
                    spec.unit,
                    namespace=namespace,
                    monotonic_sum=True,
                    add_metric_suffixes=suffixes,
                )
                ex.emit(
                    name,
                    "counter",
                    contract.REQUIRED_METRIC_ATTRIBUTES,
                    f"contract counter {spec.instrument}",
                )
            mcp_attrs = (contract.MCP_TOOL, contract.MCP_CACHE_HIT)
            for hist in contract.MCP_HISTOGRAMS:
                base_name = build_metric_name(
                    hist.instrument,
                    hist.unit,
                    namespace=namespace,
                    monotonic_sum=False,
                    add_metric_suffixes=suffixes,
                )
                origin = f"MCP histogram {hist.instrument}"
                for i, le in enumerate(TEMPO_BUCKETS):
                    ex.emit(f"{base_name}_bucket", f"bucket:{i}", mcp_attrs, origin, le=le)
                ex.emit(f"{base_name}_sum", "sum", mcp_attrs, origin)
                ex.emit(f"{base_name}_count", "count", mcp_attrs, origin)

    telemetry = ((col.get("service") or {}).get("telemetry") or {}).get("metrics") or {}
    if str(telemetry.get("level", "normal")) != "none":
        port = endpoint_port(telemetry.get("address", ":8888"))
        if any(t.host == collector_service and t.port == port for t in targets):
            model.open_prefixes["otelcol_"] = f"collector self-metrics ({collector_service}:{port})"


@dataclass
class _Exported:
    """Emits series of the collector's prometheus exporter as each scrape target stores them."""

    model: SeriesModel
    targets: list[ScrapeTarget]
    resource: Mapping[str, str]
    point_attrs: Mapping[str, str]
    open_labels: set[str]

    def emit(self, name: str, kind: str, attrs: Iterable[str], origin: str, le: str | None = None) -> None:
        names = {normalize_label(a) for a in attrs}
        base = {"__name__": name, **self.resource, **dict.fromkeys(names, OPEN), **self.point_attrs}
        if le is not None:
            base["le"] = le
        for target in self.targets:
            s = _scraped(base, target, kind, origin, self.open_labels | names | {"exported_job"})
            if s is not None:
                self.model.series.append(s)


def sanitize_tempo_label(name: str) -> str:
    """Tempo's ``SanitizeLabelName`` plus its collision rule (``__`` prefix), research tempo.md §2.1."""
    label = re.sub(r"[^a-zA-Z0-9_]", "_", name)
    return f"__{label}" if label in TEMPO_COLLIDING else label


def _tempo_series(
    model: SeriesModel,
    tempo: Mapping[str, Any],
    prom_service: str,
    prom_ports: set[int],
    remote_write_enabled: bool,
) -> None:
    gen = tempo.get("metrics_generator") or {}
    storage = gen.get("storage") or {}
    overrides = ((tempo.get("overrides") or {}).get("defaults") or {}).get("metrics_generator") or {}
    processors = [str(p) for p in overrides.get("processors") or []]
    tempo_file = proj.TEMPO_CONFIG.as_posix()
    if not storage.get("path"):
        model.problems.append(
            (
                tempo_file,
                "metrics_generator",
                "metrics_generator.storage.path is not set: Tempo 2.4.1 "
                "disables the generator, so no traces_spanmetrics_* series exist (NOTES §5)",
            )
        )
        return
    if not processors:
        model.problems.append(
            (
                tempo_file,
                "overrides",
                "overrides.defaults.metrics_generator.processors is empty: no span "
                "metrics or service graphs are generated (NOTES §5)",
            )
        )
        return
    writes = [rw for rw in storage.get("remote_write") or [] if isinstance(rw, dict)]
    reaches = False
    for rw in writes:
        url = urlparse(str(rw.get("url", "")))
        if url.hostname == prom_service and url.port in prom_ports and url.path == "/api/v1/write":
            reaches = True
    if not reaches:
        model.problems.append(
            (
                tempo_file,
                "remote_write",
                f"no metrics_generator remote_write url points at "
                f"http://{prom_service}:<port>/api/v1/write: span metrics never reach Prometheus",
            )
        )
        return
    if not remote_write_enabled:
        model.problems.append(
            (
                proj.COMPOSE_FILE,
                prom_service,
                f"{prom_service} runs without "
                "--web.enable-remote-write-receiver: Tempo's span metrics are rejected (404)",
            )
        )
        return
    registry = gen.get("registry") or {}
    external = {str(k): str(v) for k, v in (registry.get("external_labels") or {}).items()}
    span_cfg = (gen.get("processor") or {}).get("span_metrics") or {}
    dims = [sanitize_tempo_label(str(d)) for d in span_cfg.get("dimensions") or []]
    target_info = bool(((overrides.get("processor") or {}).get("span_metrics") or {}).get("enable_target_info"))
    common = {**external, TEMPO_GEN_INSTANCE: OPEN}
    if target_info:
        common.update({"job": OPEN, "instance": OPEN})
    spans = [(n, True) for n in contract.LLM_SPAN_NAMES] + [(n, False) for n in contract.MCP_SPAN_NAMES]
    if "span-metrics" in processors:
        for span_name, is_llm in spans:
            labels = {
                **common,
                "service": OPEN if is_llm else contract.MCP_SERVICE_NAME,
                "span_name": span_name,
                "span_kind": SPAN_KIND_CLIENT if span_name == contract.SPAN_LLM_COMPLETION else SPAN_KIND_INTERNAL,
                "status_code": STATUS_OK,
            }
            # Tempo drops a dimension whose attribute the span lacks (MCP spans carry no llm.*).
            contract_dims = {sanitize_tempo_label(a) for a in contract.SPANMETRICS_DIMENSIONS}
            open_labels = {"service", "job", "instance", TEMPO_GEN_INSTANCE}
            for d in dims:
                if is_llm or d not in contract_dims:
                    labels[d] = OPEN
                    open_labels.add(d)
            origin = "Tempo span metrics (remote write)"
            fo = frozenset(open_labels)
            model.series.append(Series({"__name__": contract.SPANMETRICS_CALLS, **labels}, "counter", origin, fo))
            model.series.append(Series({"__name__": contract.SPANMETRICS_SIZE, **labels}, "counter", origin, fo))
            for i, le in enumerate(TEMPO_BUCKETS):
                model.series.append(
                    Series(
                        {"__name__": contract.SPANMETRICS_LATENCY_BUCKET, **labels, "le": le},
                        f"bucket:{i}",
                        origin,
                        fo,
                    )
                )
            model.series.append(Series({"__name__": contract.SPANMETRICS_LATENCY_SUM, **labels}, "sum", origin, fo))
            model.series.append(Series({"__name__": contract.SPANMETRICS_LATENCY_COUNT, **labels}, "count", origin, fo))
        if target_info:
            ti = {**common, **{normalize_label(a): OPEN for a in SDK_RESOURCE_ATTRIBUTES[1:]}}
            model.series.append(
                Series({"__name__": contract.TARGET_INFO, **ti}, "gauge", "Tempo target info", frozenset(ti))
            )
    if "service-graphs" in processors:
        labels = {**common, "client": OPEN, "server": OPEN, "connection_type": OPEN}
        fo = frozenset(labels)
        origin = "Tempo service graphs (remote write)"
        for name in (contract.SERVICE_GRAPH_REQUEST_TOTAL, contract.SERVICE_GRAPH_REQUEST_FAILED_TOTAL):
            model.series.append(Series({"__name__": name, **labels}, "counter", origin, fo))
        for base in (
            contract.SERVICE_GRAPH_REQUEST_SERVER_SECONDS,
            contract.SERVICE_GRAPH_REQUEST_CLIENT_SECONDS,
        ):
            for i, le in enumerate(TEMPO_BUCKETS):
                model.series.append(
                    Series({"__name__": f"{base}_bucket", **labels, "le": le}, f"bucket:{i}", origin, fo)
                )
            model.series.append(Series({"__name__": f"{base}_sum", **labels}, "sum", origin, fo))
            model.series.append(Series({"__name__": f"{base}_count", **labels}, "count", origin, fo))


def _recorded_series(model: SeriesModel, rule_docs: Iterable[tuple[str, Mapping[str, Any]]]) -> None:
    """Series written by recording rules: the record name with the labels its outer ``by`` keeps."""
    for rel, doc in rule_docs:
        for group in (doc or {}).get("groups") or []:
            for rule in group.get("rules") or []:
                name = rule.get("record") if isinstance(rule, dict) else None
                if not name:
                    continue
                try:
                    tree = promql_parser.parse(str(rule.get("expr", "")))
                except ValueError:
                    continue  # promtool check rules reports it
                keep: list[str] = []
                modifier = tree.modifier if isinstance(tree, promql_parser.AggregateExpr) else None
                if modifier is not None and str(modifier).startswith("by"):
                    keep = list(modifier.labels)
                labels = {"__name__": str(name), **{k: OPEN for k in keep}, **(rule.get("labels") or {})}
                model.series.append(Series(labels, "gauge", f"recording rule in {rel}", frozenset(keep), recorded=True))


def build_model(
    prom: Mapping[str, Any],
    col: Mapping[str, Any],
    tempo: Mapping[str, Any],
    compose: Mapping[str, Any],
    rule_docs: Iterable[tuple[str, Mapping[str, Any]]] = (),
) -> SeriesModel:
    """Every series the configured pipeline stores in Prometheus (with synthetic label values)."""
    model = SeriesModel()
    targets = scrape_targets(prom)
    for t in targets:
        for name in SCRAPE_SERIES:
            labels = {"__name__": name, "job": t.job, "instance": t.address, **t.labels}
            kind = "up" if name == "up" else "gauge"
            model.series.append(Series(labels, kind, f"Prometheus scrape of job {t.job}"))
    _collector_series(model, col, targets, proj.SERVICE_COLLECTOR)
    prom_svc = (compose.get("services") or {}).get(proj.SERVICE_PROMETHEUS) or {}
    command = " ".join(str(c) for c in (prom_svc.get("command") or []))
    prom_ports = {prometheus_listen_port(compose)}
    _tempo_series(model, tempo, proj.SERVICE_PROMETHEUS, prom_ports, "--web.enable-remote-write-receiver" in command)
    if any(t.host == proj.SERVICE_PROMETHEUS and t.port in prom_ports for t in targets):
        model.open_prefixes["prometheus_"] = f"Prometheus' own metrics ({proj.SERVICE_PROMETHEUS} scrapes itself)"
    tempo_port = endpoint_port(f":{((tempo.get('server') or {}).get('http_listen_port', 80))}")
    if any(t.host == proj.SERVICE_TEMPO and t.port == tempo_port for t in targets):
        for prefix in ("tempo_", "tempodb_", "go_", "process_"):
            model.open_prefixes[prefix] = f"Tempo's own metrics ({proj.SERVICE_TEMPO}:{tempo_port})"
    _recorded_series(model, rule_docs)
    return model


PROMETHEUS_DEFAULT_PORT = 9090


def prometheus_listen_port(compose: Mapping[str, Any]) -> int:
    """The container port Prometheus listens on: ``--web.listen-address`` in compose, else 9090."""
    svc = (compose.get("services") or {}).get(proj.SERVICE_PROMETHEUS) or {}
    command = " ".join(str(c) for c in (svc.get("command") or []))
    m = re.search(r"--web\.listen-address=\S*:(\d+)", command)
    return int(m.group(1)) if m else PROMETHEUS_DEFAULT_PORT


def values_for(kind: str) -> str:
    """promtool ``values`` notation for a series kind (counters grow, buckets grow with ``le``)."""
    if kind == "up":
        return f"1x{SAMPLES - 1}"
    if kind == "gauge":
        return f"1x{SAMPLES - 1}"
    if kind == "counter" or kind == "count":
        return f"0+{len(TEMPO_BUCKETS)}x{SAMPLES - 1}"
    if kind == "sum":
        return f"0+3x{SAMPLES - 1}"
    if kind.startswith("bucket:"):
        return f"0+{int(kind.split(':')[1]) + 1}x{SAMPLES - 1}"
    raise ValueError(kind)


def promtool_series(labels: Mapping[str, str]) -> str:
    name = labels["__name__"]
    inner = ",".join(f'{k}="{_esc(v)}"' for k, v in sorted(labels.items()) if k != "__name__")
    return f"{name}{{{inner}}}"


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"')
