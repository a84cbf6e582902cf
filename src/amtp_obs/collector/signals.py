"""The three OTLP signals as data: request types, item counting, merging and splitting.

Everything stays on protobuf messages (no dict conversion): merging ``extend``s the resource
lists in C, counting walks only the scope level, splitting copies resource/scope once per chunk.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@dataclass(frozen=True)
class Signal:
    name: str
    request_cls: Any
    response_cls: Any
    resource_field: str
    scope_field: str
    item_field: str
    item_noun: str
    """Self-metric noun: ``otelcol_receiver_accepted_<noun>``."""

    def __str__(self) -> str:
        return self.name

    def resources(self, req: Any) -> Any:
        return getattr(req, self.resource_field)

    def count(self, req: Any) -> int:
        """Spans, metric data points or log records in a request."""
        scope_field, item_field = self.scope_field, self.item_field
        if self is METRICS:
            n = 0
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        if kind is not None:
                            n += len(getattr(m, kind).data_points)
            return n
        return sum(
            len(getattr(s, item_field)) for r in getattr(req, self.resource_field) for s in getattr(r, scope_field)
        )

    def attribute_lists(self, req: Any) -> Iterator[Any]:
        """Every record-level attribute list: span, data point or log record attributes."""
        if self is METRICS:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        if kind is not None:
                            for dp in getattr(m, kind).data_points:
                                yield dp.attributes
            return
        for r in getattr(req, self.resource_field):
            for s in getattr(r, self.scope_field):
                for item in getattr(s, self.item_field):
                    yield item.attributes

    def merge(self, reqs: list[Any]) -> Any:
        if len(reqs) == 1:
            return reqs[0]
        out = self.request_cls()
        dst = getattr(out, self.resource_field)
        for r in reqs:
            dst.extend(getattr(r, self.resource_field))
        return out

    def split(self, req: Any, max_items: int) -> list[Any]:
        """Chunks of at most ``max_items`` items each (0 = no limit), preserving resource and scope."""
        if max_items <= 0 or self.count(req) <= max_items:
            return [req]
        if self is METRICS:
            return _split_metrics(req, max_items)
        out: list[Any] = []
        cur, cur_n, cur_rs = self.request_cls(), 0, None
        for rs in getattr(req, self.resource_field):
            cur_rs = None
            for ss in getattr(rs, self.scope_field):
                items = getattr(ss, self.item_field)
                start, n = 0, len(items)
                while start < n:
                    if cur_n == max_items:
                        out.append(cur)
                        cur, cur_n, cur_rs = self.request_cls(), 0, None
                    take = min(n - start, max_items - cur_n)
                    if cur_rs is None:
                        cur_rs = getattr(cur, self.resource_field).add()
                        cur_rs.resource.CopyFrom(rs.resource)
                        cur_rs.schema_url = rs.schema_url
                    new_ss = getattr(cur_rs, self.scope_field).add()
                    new_ss.scope.CopyFrom(ss.scope)
                    new_ss.schema_url = ss.schema_url
                    getattr(new_ss, self.item_field).extend(items[start : start + take])
                    start += take
                    cur_n += take
        if cur_n:
            out.append(cur)
        return out


def _split_metrics(req: Any, max_items: int) -> list[Any]:
    out: list[Any] = []
    cur = metrics_service_pb2.ExportMetricsServiceRequest()
    cur_n = 0
    for rm in req.resource_metrics:
        cur_rm = None
        for sm in rm.scope_metrics:
            cur_sm = None
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                if kind is None:
                    continue
                points = getattr(m, kind).data_points
                start, n = 0, len(points)
                while start < n:
                    if cur_n == max_items:
                        out.append(cur)
                        cur, cur_n = metrics_service_pb2.ExportMetricsServiceRequest(), 0
                        cur_rm = cur_sm = None
                    take = min(n - start, max_items - cur_n)
                    if cur_rm is None:
                        cur_rm = cur.resource_metrics.add()
                        cur_rm.resource.CopyFrom(rm.resource)
                        cur_rm.schema_url = rm.schema_url
                        cur_sm = None
                    if cur_sm is None:
                        cur_sm = cur_rm.scope_metrics.add()
                        cur_sm.scope.CopyFrom(sm.scope)
                        cur_sm.schema_url = sm.schema_url
                    new_m = cur_sm.metrics.add()
                    new_m.CopyFrom(m)
                    dst = getattr(new_m, kind).data_points
                    del dst[:]
                    dst.extend(points[start : start + take])
                    start += take
                    cur_n += take
    if cur_n:
        out.append(cur)
    return out


TRACES = Signal(
    "traces",
    trace_service_pb2.ExportTraceServiceRequest,
    trace_service_pb2.ExportTraceServiceResponse,
    "resource_spans",
    "scope_spans",
    "spans",
    "spans",
)
METRICS = Signal(
    "metrics",
    metrics_service_pb2.ExportMetricsServiceRequest,
    metrics_service_pb2.ExportMetricsServiceResponse,
    "resource_metrics",
    "scope_metrics",
    "metrics",
    "metric_points",
)
LOGS = Signal(
    "logs",
    logs_service_pb2.ExportLogsServiceRequest,
    logs_service_pb2.ExportLogsServiceResponse,
    "resource_logs",
    "scope_logs",
    "log_records",
    "log_records",
)
SIGNALS: dict[str, Signal] = {s.name: s for s in (TRACES, METRICS, LOGS)}
