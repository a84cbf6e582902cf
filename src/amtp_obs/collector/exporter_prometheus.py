"""The ``prometheus`` exporter: a pull endpoint rendering OTLP metrics as collector-contrib 0.100.0 does.

Names come from :mod:`prometheus_naming` (unit and ``_total`` suffixes, namespace), labels from
``normalize_label``; ``job``/``instance`` from ``service.namespace/service.name`` and
``service.instance.id``; ``resource_to_telemetry_conversion`` copies every resource attribute onto
every point, overwriting same-key point attributes. Cumulative series keep their last value;
monotonic delta sums (and delta histograms) are accumulated; non-monotonic delta sums and
exponential histograms are dropped, as in 0.100.0. Series not updated within
``metric_expiration`` disappear. Two point attributes that normalise to one label name are
joined with ``;`` (sorted by original key).
"""

from __future__ import annotations

import base64
import json
import logging
import math
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Self

from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.metrics.v1 import metrics_pb2
from pydantic import Field, model_validator

from amtp_obs.collector.component import (
    EXPORTER,
    Component,
    ComponentID,
    Factory,
    Host,
    StrictModel,
)
from amtp_obs.collector.config import Duration, HTTPServerConfig, http_server_unsupported
from amtp_obs.collector.expfmt import CONTENT_TYPE, Labels, format_float, render_family
from amtp_obs.collector.prometheus_naming import build_metric_name, clean_up_string, normalize_label
from amtp_obs.collector.signals import METRICS, Signal
from amtp_obs.httpserver import HttpServer

log = logging.getLogger(__name__)

CUMULATIVE = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA
NO_RECORDED_VALUE = metrics_pb2.DATA_POINT_FLAGS_NO_RECORDED_VALUE_MASK

ATTR_SERVICE_NAME = "service.name"
ATTR_SERVICE_NAMESPACE = "service.namespace"
ATTR_SERVICE_INSTANCE_ID = "service.instance.id"
"""OpenTelemetry resource semantic-convention keys the exporter reads for job/instance."""


class ResourceToTelemetryConfig(StrictModel):
    enabled: bool = False


class PrometheusExporterConfig(HTTPServerConfig):
    namespace: str = ""
    const_labels: dict[str, str] = Field(default_factory=dict)
    send_timestamps: bool = False
    metric_expiration: Duration = 300.0
    resource_to_telemetry_conversion: ResourceToTelemetryConfig = Field(default_factory=ResourceToTelemetryConfig)
    enable_open_metrics: bool = False
    add_metric_suffixes: bool = True

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.endpoint:
            raise ValueError("expecting a non-blank address to run the Prometheus metrics handler")
        return self


def value_as_string(v: AnyValue) -> str:
    """pdata ``Value.AsString``."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        return v.string_value
    if kind == "bool_value":
        return "true" if v.bool_value else "false"
    if kind == "int_value":
        return str(v.int_value)
    if kind == "double_value":
        d = v.double_value  # Go strconv.FormatFloat(d, 'f', -1, 64): shortest digits, no exponent
        if math.isinf(d) or math.isnan(d):
            return {math.inf: "+Inf", -math.inf: "-Inf"}.get(d, "NaN")
        text = format(Decimal(repr(d)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    if kind == "array_value":
        return json.dumps([_plain(x) for x in v.array_value.values], separators=(",", ":"))
    if kind == "kvlist_value":
        return json.dumps({kv.key: _plain(kv.value) for kv in v.kvlist_value.values}, separators=(",", ":"))
    return ""


def _plain(v: AnyValue) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_plain(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: _plain(kv.value) for kv in v.kvlist_value.values}
    if kind == "bytes_value":
        return base64.b64encode(v.bytes_value).decode()
    return getattr(v, kind)


@dataclass
class _Series:
    name: str
    mtype: str
    help: str
    labels: Labels
    value: float = 0.0
    bounds: tuple[float, ...] = ()
    bucket_counts: list[int] = field(default_factory=list)
    sum: float = 0.0
    count: int = 0
    quantiles: list[tuple[float, float]] = field(default_factory=list)
    ts_ns: int = 0
    updated: float = 0.0


class PrometheusExporter(Component):
    kind = EXPORTER

    def __init__(self, cid: ComponentID, config: PrometheusExporterConfig) -> None:
        super().__init__(cid, config)
        self.series: dict[tuple[str, Labels], _Series] = {}
        self.types: dict[str, str] = {}
        self._server: HttpServer | None = None
        self._warned: set[str] = set()

    async def start(self, host: Host) -> None:
        self._server = HttpServer(self._app, self.config.endpoint, self.label)
        host.add_listener(str(self.id), "http", await self._server.start())

    async def shutdown(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    # -- accumulation ------------------------------------------------------------------------
    async def consume(self, signal: Signal, req: Any) -> None:
        if signal is not METRICS:
            return
        self.accumulate(req)

    def accumulate(self, req: Any) -> None:
        cfg: PrometheusExporterConfig = self.config
        now = time.monotonic()
        for rm in req.resource_metrics:
            res = {kv.key: value_as_string(kv.value) for kv in rm.resource.attributes}
            base: dict[str, str] = {}
            if cfg.resource_to_telemetry_conversion.enabled:
                base = res
            job = res.get(ATTR_SERVICE_NAME, "")
            if job and res.get(ATTR_SERVICE_NAMESPACE):
                job = f"{res[ATTR_SERVICE_NAMESPACE]}/{job}"
            instance = res.get(ATTR_SERVICE_INSTANCE_ID, "")
            extra: list[tuple[str, str]] = []
            if job:
                extra.append(("job", job))
            if instance:
                extra.append(("instance", instance))
            extra += list(cfg.const_labels.items())
            if job and instance:
                self._target_info(res, extra, now)
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    self._metric(m, base, extra, now)

    def _labels(self, attrs: Any, base: dict[str, str], extra: list[tuple[str, str]]) -> Labels:
        merged = {kv.key: value_as_string(kv.value) for kv in attrs}
        merged.update(base)
        out: dict[str, str] = {}
        for key in sorted(merged):
            name = normalize_label(key)
            out[name] = f"{out[name]};{merged[key]}" if name in out else merged[key]
        for k, v in extra:
            out[k] = v
        return tuple(sorted(out.items()))

    def _target_info(self, res: dict[str, str], extra: list[tuple[str, str]], now: float) -> None:
        skip = {ATTR_SERVICE_NAME, ATTR_SERVICE_NAMESPACE, ATTR_SERVICE_INSTANCE_ID}
        labels: dict[str, str] = {normalize_label(k): v for k, v in sorted(res.items()) if k not in skip}
        labels.update(extra)
        ns = clean_up_string(self.config.namespace)
        name = f"{ns}_target_info" if ns else "target_info"
        key = (name, tuple(sorted(labels.items())))
        self._put(key, "gauge", "Target metadata", now).value = 1.0

    def _put(self, key: tuple[str, Labels], mtype: str, help_text: str, now: float) -> _Series:
        s = self.series.get(key)
        if s is None:
            s = self.series[key] = _Series(key[0], mtype, help_text, key[1])
        s.updated = now
        return s

    def _metric(self, m: Any, base: dict[str, str], extra: list[tuple[str, str]], now: float) -> None:
        cfg: PrometheusExporterConfig = self.config
        kind = m.WhichOneof("data")
        if kind == "sum":
            data = m.sum
            if data.aggregation_temporality not in (CUMULATIVE, DELTA):
                return
            if data.aggregation_temporality == DELTA and not data.is_monotonic:
                return
            mtype = "counter" if data.is_monotonic else "gauge"
        elif kind == "gauge":
            data, mtype = m.gauge, "gauge"
        elif kind == "histogram":
            data, mtype = m.histogram, "histogram"
            if data.aggregation_temporality not in (CUMULATIVE, DELTA):
                return
        elif kind == "summary":
            data, mtype = m.summary, "summary"
        else:
            if m.name not in self._warned:
                self._warned.add(m.name)
                log.warning(
                    "%s: metric %r of type %s is not supported by the prometheus exporter",
                    self.label,
                    m.name,
                    kind,
                )
            return
        name = build_metric_name(
            m.name,
            m.unit,
            namespace=cfg.namespace,
            monotonic_sum=(kind == "sum" and m.sum.is_monotonic),
            gauge=(kind == "gauge"),
            add_metric_suffixes=cfg.add_metric_suffixes,
        )
        known = self.types.setdefault(name, mtype)
        if known != mtype:
            if name not in self._warned:
                self._warned.add(name)
                log.warning("%s: %r is already a %s; dropping its %s points", self.label, name, known, mtype)
            return
        delta = getattr(data, "aggregation_temporality", CUMULATIVE) == DELTA
        for dp in data.data_points:
            if dp.flags & NO_RECORDED_VALUE:
                continue
            key = (name, self._labels(dp.attributes, base, extra))
            prev = self.series.get(key)
            if prev is not None and not delta and dp.time_unix_nano < prev.ts_ns:
                continue  # out of order: keep the newer point
            s = self._put(key, mtype, m.description, now)
            if mtype in ("counter", "gauge"):
                v = float(dp.as_int) if dp.WhichOneof("value") == "as_int" else dp.as_double
                s.value = s.value + v if (delta and prev is not None) else v
            elif mtype == "histogram":
                bounds = tuple(dp.explicit_bounds)
                counts = list(dp.bucket_counts) or [0] * (len(bounds) + 1)
                total = dp.sum if dp.HasField("sum") else 0.0
                if delta and prev is not None and prev.bounds == bounds:
                    s.bucket_counts = [a + b for a, b in zip(prev.bucket_counts, counts, strict=False)]
                    s.sum += total
                    s.count += dp.count
                else:
                    s.bounds, s.bucket_counts, s.sum, s.count = bounds, counts, total, dp.count
            else:
                s.quantiles = [(q.quantile, q.value) for q in dp.quantile_values]
                s.sum, s.count = dp.sum, dp.count
            s.ts_ns = max(s.ts_ns, dp.time_unix_nano)

    # -- exposition ----------------------------------------------------------------------------
    def expire(self) -> None:
        limit = time.monotonic() - self.config.metric_expiration
        for key in [k for k, s in self.series.items() if s.updated < limit]:
            del self.series[key]
        live = {k[0] for k in self.series}
        for name in [n for n in self.types if n not in live]:
            del self.types[name]

    def render(self) -> str:
        self.expire()
        families: dict[str, list[_Series]] = {}
        for s in self.series.values():
            families.setdefault(s.name, []).append(s)
        ts_on = self.config.send_timestamps
        out = []
        for name in sorted(families):
            group = sorted(families[name], key=lambda s: s.labels)
            first = group[0]
            samples: list[tuple[str, Labels, float, int | None]] = []
            for s in group:
                ts = s.ts_ns // 1_000_000 if ts_on and s.ts_ns else None
                if s.mtype in ("counter", "gauge"):
                    samples.append((name, s.labels, s.value, ts))
                elif s.mtype == "histogram":
                    running = 0
                    for bound, c in zip(s.bounds, s.bucket_counts, strict=False):
                        running += c
                        labels = tuple(sorted((*s.labels, ("le", format_float(bound)))))
                        samples.append((f"{name}_bucket", labels, float(running), ts))
                    samples.append((f"{name}_bucket", tuple(sorted((*s.labels, ("le", "+Inf")))), float(s.count), ts))
                    samples.append((f"{name}_sum", s.labels, s.sum, ts))
                    samples.append((f"{name}_count", s.labels, float(s.count), ts))
                else:
                    for q, v in s.quantiles:
                        labels = tuple(sorted((*s.labels, ("quantile", format_float(q)))))
                        samples.append((name, labels, v, ts))
                    samples.append((f"{name}_sum", s.labels, s.sum, ts))
                    samples.append((f"{name}_count", s.labels, float(s.count), ts))
            out.append(render_family(name, first.mtype, first.help, samples))
        return "".join(out)

    async def _app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != "/metrics":
            status, body, ctype = 404, b"404 page not found\n", "text/plain; charset=utf-8"
        elif scope["method"] not in ("GET", "HEAD"):
            status, body, ctype = 405, b"405 method not allowed, supported: [GET]\n", "text/plain"
        else:
            status, body, ctype = 200, self.render().encode(), CONTENT_TYPE
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body if scope["method"] != "HEAD" else b""})


FACTORY = Factory(
    EXPORTER,
    "prometheus",
    PrometheusExporterConfig,
    lambda cid, cfg: PrometheusExporter(cid, cfg),
    signals=("metrics",),
    unsupported=lambda cfg: http_server_unsupported(cfg, "prometheus"),
)
"""The ``prometheus`` exporter (listed in amtp_obs.collector.components)."""
