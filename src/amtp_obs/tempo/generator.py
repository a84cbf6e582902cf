"""The metrics generator: span metrics and service graphs, remote-written like Tempo 2.4.1.

Runs only when ``metrics_generator.storage.path`` is set AND
``overrides.defaults.metrics_generator.processors`` lists the processors (NOTES §5). Series are
cumulative and sent in full every ``registry.collection_interval``, so a failed write is simply
made good by the next one. Not reproduced: the ``__metrics_gen_instance`` label (one generator
here, so it would carry no information), ``filter_policies`` and ``dimension_mappings``.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal

import httpx
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, SERVICE_NAMESPACE

from amtp_obs import contract
from amtp_obs.tempo import remote_write
from amtp_obs.tempo.config import INTRINSIC_DEFAULTS, TempoConfig
from amtp_obs.tempo.metrics import TENANT, TempoMetrics
from amtp_obs.tempo.search import trace_id_hex

log = logging.getLogger("amtp_obs.tempo.generator")

PROCESSOR_SPAN_METRICS = "span-metrics"
PROCESSOR_SERVICE_GRAPHS = "service-graphs"

LATENCY_BASE = contract.SPANMETRICS_LATENCY_BUCKET.removesuffix("_bucket")
SG_SERVER_SECONDS = contract.SERVICE_GRAPH_REQUEST_SERVER_SECONDS
SG_CLIENT_SECONDS = contract.SERVICE_GRAPH_REQUEST_CLIENT_SECONDS
EXEMPLAR_TRACE_ID_LABEL = "traceID"
COUNTER_INSERT_OFFSET_MS = 1000
"""Tempo 2.4.1 modules/generator/registry/counter.go insertOffsetDuration: a new counter's value follows its 0."""
EMPTY_STATUS_BYTES = 2
"""A span without a Status still carries an empty one in Tempo (pdata's Span.Status is not nullable, so the
distributor's re-marshalled span has field 15 with length 0): ``span.Size()`` counts these 2 bytes."""

# Intrinsic label names a dimension must not take (it gets a ``__`` prefix instead).
_COLLIDING = ("job", "instance", "span_name", "span_kind", "status_code", "status_message")
_INVALID_LABEL_CHARS = re.compile(r"[^a-zA-Z0-9_]")

# Attributes that name the other side of an unpaired CLIENT span (Tempo's default peer attributes).
PEER_ATTRIBUTES = ("peer.service", "db.name", "db.system")
DB_NAME = "db.name"
USER_NODE = "user"
REASON_OUTSIDE_SLACK = "outside_metrics_ingestion_slack"
"""The discard reason of Tempo 2.4.1 modules/generator/instance.go reasonOutsideTimeRangeSlack."""


def sanitize_label_name(name: str) -> str:
    return _INVALID_LABEL_CHARS.sub("_", name)


def dimension_label(name: str) -> str:
    """Tempo's span-metrics rule: sanitize, then prefix ``__`` if it collides with an intrinsic label."""
    s = sanitize_label_name(name)
    return "__" + s if s in _COLLIDING else s


def format_float(v: float) -> str:
    """Go's ``strconv.FormatFloat(v, 'f', -1, 64)``, which Tempo uses for ``le``."""
    if v == float("inf"):
        return "+Inf"
    s = format(Decimal(repr(float(v))), "f")
    if "." in s:
        s = s.rstrip("0").rstrip(".")
    return s


def stringify(v: AnyValue) -> str:
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        return repr(v.double_value)
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind is None:
        return ""
    return str(getattr(v, kind))


Labels = tuple[tuple[str, str], ...]


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


@dataclass
class _Hist:
    counts: list[int]
    sum: float = 0.0
    count: int = 0
    exemplars: dict[int, tuple[str, float, int]] = field(default_factory=dict)
    updated: float = field(default_factory=time.monotonic)


class Registry:
    """Cumulative counters, histograms and gauges keyed by label tuples."""

    def __init__(self, stale_seconds: float) -> None:
        self.stale_seconds = stale_seconds
        self.counters: dict[str, dict[Labels, list[float]]] = {}  # [value, updated]
        self.gauges: dict[str, dict[Labels, list[float]]] = {}
        self.histograms: dict[str, tuple[list[float], dict[Labels, _Hist]]] = {}
        self._pushed: dict[tuple[str, Labels], int] = {}
        """Counter series already sent, with their last sample's time: only the first push gets a zero."""

    def inc(self, name: str, labels: Labels, by: float = 1.0) -> None:
        fam = self.counters.setdefault(name, {})
        cell = fam.get(labels)
        if cell is None:
            fam[labels] = [by, time.monotonic()]
        else:
            cell[0] += by
            cell[1] = time.monotonic()

    def set(self, name: str, labels: Labels, value: float) -> None:
        self.gauges.setdefault(name, {})[labels] = [value, time.monotonic()]

    def observe(self, name: str, buckets: list[float], labels: Labels, value: float, trace_id: str | None) -> None:
        fam = self.histograms.get(name)
        if fam is None:
            fam = self.histograms[name] = (buckets, {})
        bounds, series = fam
        h = series.get(labels)
        if h is None:
            h = series[labels] = _Hist([0] * (len(bounds) + 1))
        idx = len(bounds)
        for i, b in enumerate(bounds):
            if value <= b:
                idx = i
                break
        h.counts[idx] += 1
        h.sum += value
        h.count += 1
        h.updated = time.monotonic()
        if trace_id:
            h.exemplars[idx] = (trace_id, value, int(time.time() * 1000))

    @property
    def active_series(self) -> int:
        n = sum(len(f) for f in self.counters.values()) + sum(len(f) for f in self.gauges.values())
        return n + sum(len(s) * (len(b) + 3) for b, s in self.histograms.values())

    def prune(self) -> None:
        cutoff = time.monotonic() - self.stale_seconds
        for fams in (self.counters, self.gauges):
            for name, fam in fams.items():
                for k in [k for k, c in fam.items() if c[1] < cutoff]:
                    del fam[k]
                    self._pushed.pop((name, k), None)  # a series that comes back starts from 0 again
        for _, series in self.histograms.values():
            for k in [k for k, h in series.items() if h.updated < cutoff]:
                del series[k]

    def collect(self, external: Labels, now_ms: int) -> list[remote_write.Series]:
        """Every series as one sample at ``now_ms``; histogram exemplars are handed out once.

        As Tempo 2.4.1's registry (modules/generator/registry/counter.go, histogram.go): a counter
        series pushed for the first time gets a 0 sample at ``now_ms`` and its value one second later
        (``insertOffsetDuration``), so ``rate()`` sees its first increments; histograms get no 0 sample.
        Exemplars carry the collection time.
        """
        out: list[remote_write.Series] = []

        for name, fam in self.gauges.items():
            for labels, cell in fam.items():
                out.append(remote_write.Series((("__name__", name), *labels, *external), cell[0], now_ms))
        for name, fam in self.counters.items():
            for labels, cell in fam.items():
                series_labels = (("__name__", name), *labels, *external)
                last = self._pushed.get((name, labels))
                if last is None:
                    out.append(remote_write.Series(series_labels, 0.0, now_ms))
                    at = now_ms + COUNTER_INSERT_OFFSET_MS
                else:
                    at = max(now_ms, last + 1)  # a sub-second interval must not go back behind the offset
                self._pushed[(name, labels)] = at
                out.append(remote_write.Series(series_labels, cell[0], at))
        for base, (bounds, series) in self.histograms.items():
            for labels, h in series.items():
                cumulative = 0
                for i, le in enumerate([*bounds, float("inf")]):
                    cumulative += h.counts[i]
                    bucket_labels = (("__name__", base + "_bucket"), *labels, *external, ("le", format_float(le)))
                    s = remote_write.Series(bucket_labels, float(cumulative), now_ms)
                    ex = h.exemplars.get(i)
                    if ex is not None:
                        s.exemplars.append((((EXEMPLAR_TRACE_ID_LABEL, ex[0]),), ex[1], now_ms))
                    out.append(s)
                h.exemplars.clear()
                for suffix, value in (("_sum", h.sum), ("_count", float(h.count))):
                    out.append(remote_write.Series((("__name__", base + suffix), *labels, *external), value, now_ms))
        return out


# --------------------------------------------------------------------------------------------
# processors
# --------------------------------------------------------------------------------------------


@dataclass
class _Edge:
    created: float
    client_service: str | None = None
    server_service: str | None = None
    client_latency: float = 0.0
    server_latency: float = 0.0
    failed: bool = False
    connection_type: str = ""
    server_is_root: bool = False
    peer: str | None = None
    dims: dict[str, str] = field(default_factory=dict)
    trace_id: str = ""


class MetricsGenerator:
    """Consumes accepted exports; pushes the registry to every remote_write URL each interval."""

    def __init__(self, cfg: TempoConfig, metrics: TempoMetrics, interval: float | None = None) -> None:
        self.cfg = cfg
        self.metrics = metrics
        self.processors = cfg.processors
        self.sm = cfg.span_metrics()
        self.sg = cfg.service_graphs()
        self.interval = interval if interval is not None else cfg.collection_interval
        self.registry = Registry(cfg.metrics_generator.registry.stale_duration)
        self.external: Labels = tuple(cfg.metrics_generator.registry.external_labels.items())
        self.remote_writes = cfg.metrics_generator.storage.remote_write
        intrinsics = {**INTRINSIC_DEFAULTS, **self.sm.intrinsic_dimensions}
        self.intrinsic = intrinsics
        self.dims = [(d, dimension_label(d)) for d in self.sm.dimensions]
        self.sg_dims = [(d, sanitize_label_name(d)) for d in self.sg.dimensions]
        self.edges: dict[tuple[bytes, bytes], _Edge] = {}
        self._task: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self.last_push_ok: dict[str, bool] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.processors)

    # -- consume ---------------------------------------------------------------------------

    def consume(self, req: ExportTraceServiceRequest) -> None:
        span_metrics = PROCESSOR_SPAN_METRICS in self.processors
        graphs = PROCESSOR_SERVICE_GRAPHS in self.processors
        now = time.monotonic()
        # Tempo's preprocessSpans: a span whose end is further than the slack from now (either way)
        # feeds no processor and is counted as discarded; the store keeps it all the same.
        slack_ns = int(self.cfg.metrics_ingestion_slack * 1e9)
        wall = time.time_ns()
        oldest, newest = wall - slack_ns, wall + slack_ns
        n = expired = 0
        for rs in req.resource_spans:
            res = {kv.key: kv.value for kv in rs.resource.attributes}
            service = stringify(res[SERVICE_NAME]) if SERVICE_NAME in res else ""
            target: Labels = ()
            if span_metrics and self.sm.enable_target_info:
                target = self._target_info(res, service)
            for ss in rs.scope_spans:
                for span in ss.spans:
                    n += 1
                    if not oldest <= span.end_time_unix_nano <= newest:
                        expired += 1
                        continue
                    sattrs = {kv.key: kv.value for kv in span.attributes} if (self.dims or graphs) else {}
                    if span_metrics:
                        self._span_metrics(span, service, res, sattrs, target)
                    if graphs:
                        self._service_graph(span, service, res, sattrs, now)
        if n:
            self.metrics.generator_spans.labels(TENANT).inc(n)
        # Every push, 0 included, as Tempo 2.4.1's instance.updatePushMetrics: the series exists from the first push.
        self.metrics.generator_spans_discarded.labels(TENANT, REASON_OUTSIDE_SLACK).inc(expired)
        if graphs:
            self.expire(now)

    def _target_info(self, res: dict[str, AnyValue], service: str) -> Labels:
        ns = stringify(res[SERVICE_NAMESPACE]) if SERVICE_NAMESPACE in res else ""
        job = f"{ns}/{service}" if ns else service
        instance = stringify(res[SERVICE_INSTANCE_ID]) if SERVICE_INSTANCE_ID in res else ""
        excluded = {
            SERVICE_NAME,
            SERVICE_NAMESPACE,
            SERVICE_INSTANCE_ID,
            *self.sm.target_info_excluded_dimensions,
        }
        info = [(sanitize_label_name(k), stringify(v)) for k, v in res.items() if k not in excluded]
        info = [(k, v) for k, v in info if v]
        ident = tuple((k, v) for k, v in (("job", job), ("instance", instance)) if v)
        if info and ident:
            self.registry.set(contract.TARGET_INFO, tuple(sorted(info)) + ident, 1.0)
        return ident

    def _span_metrics(
        self, span: Span, service: str, res: dict[str, AnyValue], sattrs: dict[str, AnyValue], target: Labels
    ) -> None:
        labels: list[tuple[str, str]] = []
        intr = self.intrinsic
        if intr["service"] and service:
            labels.append(("service", service))
        if intr["span_name"]:
            labels.append(("span_name", span.name))
        if intr["span_kind"]:
            labels.append(("span_kind", Span.SpanKind.Name(span.kind)))
        if intr["status_code"]:
            labels.append(("status_code", Status.StatusCode.Name(span.status.code)))
        if intr["status_message"] and span.status.message:
            labels.append(("status_message", span.status.message))
        for attr, label in self.dims:
            v = res.get(attr)
            if v is None:
                v = sattrs.get(attr)
            if v is not None:
                text = stringify(v)
                if text:
                    labels.append((label, text))
        key = (*labels, *target)
        latency = max(0, span.end_time_unix_nano - span.start_time_unix_nano) / 1e9
        reg = self.registry
        reg.inc(contract.SPANMETRICS_CALLS, key)
        size = span.ByteSize() + (0 if span.HasField("status") else EMPTY_STATUS_BYTES)
        reg.inc(contract.SPANMETRICS_SIZE, key, float(size))
        reg.observe(LATENCY_BASE, self.sm.histogram_buckets, key, latency, trace_id_hex(span.trace_id))

    def _service_graph(
        self, span: Span, service: str, res: dict[str, AnyValue], sattrs: dict[str, AnyValue], now: float
    ) -> None:
        kind = span.kind
        latency = max(0, span.end_time_unix_nano - span.start_time_unix_nano) / 1e9
        failed = span.status.code == Status.STATUS_CODE_ERROR
        if kind in (Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_PRODUCER):
            if kind == Span.SPAN_KIND_CLIENT and DB_NAME in sattrs:
                e = _Edge(now, service, stringify(sattrs[DB_NAME]), latency, latency, failed, "database")
                e.trace_id = trace_id_hex(span.trace_id)
                self._dims(e, res, sattrs, "client")
                self._emit(e)
                return
            key = (span.trace_id, span.span_id)
            e = self.edges.get(key)
            if e is None:
                if len(self.edges) >= self.sg.max_items:
                    return
                e = self.edges[key] = _Edge(now)
            e.client_service, e.client_latency = service, latency
            e.trace_id = trace_id_hex(span.trace_id)
            e.failed = e.failed or failed
            if kind == Span.SPAN_KIND_PRODUCER:
                e.connection_type = "messaging_system"
            for attr in self.sg.peer_attributes or PEER_ATTRIBUTES:
                if attr in sattrs:
                    e.peer = stringify(sattrs[attr])
                    break
            self._dims(e, res, sattrs, "client")
        elif kind in (Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CONSUMER):
            root = not span.parent_span_id
            key = (span.trace_id, span.parent_span_id if not root else b"root:" + span.span_id)
            e = self.edges.get(key)
            if e is None:
                if len(self.edges) >= self.sg.max_items:
                    return
                e = self.edges[key] = _Edge(now)
            e.server_service, e.server_latency, e.server_is_root = service, latency, root
            e.trace_id = trace_id_hex(span.trace_id)
            e.failed = e.failed or failed
            if kind == Span.SPAN_KIND_CONSUMER:
                e.connection_type = "messaging_system"
            self._dims(e, res, sattrs, "server")
        else:
            return
        if e.client_service is not None and e.server_service is not None:
            del self.edges[key]
            self._emit(e)

    def _dims(self, e: _Edge, res: dict[str, AnyValue], sattrs: dict[str, AnyValue], side: str) -> None:
        for attr, label in self.sg_dims:
            v = res.get(attr)
            if v is None:
                v = sattrs.get(attr)
            if v is None:
                continue
            text = stringify(v)
            if text:
                e.dims[f"{side}_{label}" if self.sg.enable_client_server_prefix else label] = text

    def expire(self, now: float | None = None) -> None:
        """Edges older than ``wait`` are counted as expired (every one, as servicegraphs.go onExpire does);
        a root SERVER span then becomes ``client="user"``, a CLIENT span with a peer attribute a virtual
        server. The missing side's latency stays 0 s: Tempo never sets it."""
        now = time.monotonic() if now is None else now
        cutoff = now - self.sg.wait
        for key in [k for k, e in self.edges.items() if e.created <= cutoff]:
            e = self.edges.pop(key)
            self.metrics.service_graph_expired_edges.labels(TENANT).inc()
            if e.server_service is not None and e.client_service is None and e.server_is_root:
                e.client_service = USER_NODE
                e.connection_type = "virtual_node"
                self._emit(e)
            elif e.client_service is not None and e.server_service is None and e.peer:
                e.server_service = e.peer
                e.connection_type = "virtual_node"
                self._emit(e)

    def _emit(self, e: _Edge) -> None:
        labels: list[tuple[str, str]] = [
            ("client", e.client_service or ""),
            ("server", e.server_service or ""),
        ]
        if e.connection_type:
            labels.append(("connection_type", e.connection_type))
        labels.extend(sorted(e.dims.items()))
        key = tuple(labels)
        reg = self.registry
        reg.inc(contract.SERVICE_GRAPH_REQUEST_TOTAL, key)
        if e.failed:
            reg.inc(contract.SERVICE_GRAPH_REQUEST_FAILED_TOTAL, key)
        # servicegraphs.go onComplete: ObserveWithExemplar(..., e.TraceID, ...) on both histograms
        reg.observe(SG_SERVER_SECONDS, self.sg.histogram_buckets, key, e.server_latency, e.trace_id or None)
        reg.observe(SG_CLIENT_SECONDS, self.sg.histogram_buckets, key, e.client_latency, e.trace_id or None)

    # -- push ------------------------------------------------------------------------------

    def collect(self, now_ms: int | None = None) -> list[remote_write.Series]:
        if PROCESSOR_SERVICE_GRAPHS in self.processors:
            self.expire()
        self.registry.prune()
        self.metrics.generator_active_series.labels(TENANT).set(self.registry.active_series)
        return self.registry.collect(self.external, now_ms if now_ms is not None else int(time.time() * 1000))

    async def push_once(self) -> bool:
        """One collection sent to every remote_write URL; True when all accepted it."""
        series = self.collect()
        if not series or not self.remote_writes:
            return True
        if self._client is None:
            self._client = httpx.AsyncClient()
        ok = True
        for rw in self.remote_writes:
            body = remote_write.encode(series, send_exemplars=rw.send_exemplars)
            try:
                resp = await self._client.post(
                    rw.url,
                    content=body,
                    headers={**remote_write.HEADERS, **rw.headers},
                    timeout=min(rw.remote_timeout, max(self.interval, 1.0) * 5),
                )
                good = resp.status_code < 300
                if not good:
                    log.warning("remote write to %s: HTTP %d %s", rw.url, resp.status_code, resp.text[:200])
            except httpx.HTTPError as exc:
                good = False
                log.warning("remote write to %s failed: %s", rw.url, exc)
            self.metrics.remote_write_requests.labels(rw.url, "success" if good else "failure").inc()
            if good:
                self.metrics.remote_write_samples.labels(rw.url).inc(len(series))
            self.last_push_ok[rw.url] = good
            ok = ok and good
        return ok

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.push_once()
            except Exception:
                log.exception("metrics generator push failed")

    def start(self) -> None:
        if self.enabled and self._task is None:
            self._task = asyncio.create_task(self._run(), name="tempo-metrics-generator")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None
        if self._client is not None:
            await self._client.aclose()
            self._client = None


def series_names(series: Iterable[remote_write.Series]) -> set[str]:
    return {dict(s.labels)["__name__"] for s in series}
