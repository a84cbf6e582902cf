"""Attributes actions, signal splitting and merging, on real protobuf messages."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.common.v1.common_pb2 import KeyValue

from amtp_obs.collector.component import ComponentID
from amtp_obs.collector.processors import ActionConfig, AttributesConfig, AttributesProcessor, compile_action
from amtp_obs.collector.signals import METRICS, TRACES, Signal
from amtp_obs.testing.otlp_sink import attributes, to_key_values


def kvs(d: dict[str, Any]) -> Any:
    span = trace_service_pb2.ExportTraceServiceRequest().resource_spans.add().scope_spans.add().spans.add()
    span.attributes.extend(to_key_values(d))
    return span.attributes


def apply(action: dict[str, Any], d: dict[str, Any]) -> dict[str, Any]:
    attrs = kvs(d)
    compile_action(ActionConfig(**action))(attrs)
    return attributes(attrs)


def test_actions() -> None:
    base = {"a": "1", "n": 5}
    assert apply({"key": "a", "value": "x", "action": "insert"}, base) == base
    assert apply({"key": "b", "value": 2, "action": "insert"}, base) == {**base, "b": 2}
    assert apply({"key": "b", "value": "x", "action": "update"}, base) == base
    assert apply({"key": "a", "value": True, "action": "update"}, base) == {"a": True, "n": 5}
    assert apply({"key": "a", "value": 1.5, "action": "upsert"}, base) == {"a": 1.5, "n": 5}
    assert apply({"key": "c", "from_attribute": "n", "action": "upsert"}, base) == {**base, "c": 5}
    assert apply({"key": "c", "from_attribute": "missing", "action": "upsert"}, base) == base
    assert apply({"key": "a", "action": "delete"}, base) == {"n": 5}
    assert apply({"pattern": "^[an]$", "action": "delete"}, base) == {}
    hashed = apply({"key": "a", "action": "hash"}, base)
    assert hashed["a"] == hashlib.sha1(b"1").hexdigest()


async def test_attributes_processor_touches_data_points() -> None:
    class Capture:
        req: Any = None

        async def consume(self, signal: Signal, req: Any) -> None:
            self.req = req

    proc = AttributesProcessor(
        ComponentID("attributes", "x"),
        AttributesConfig(actions=[ActionConfig(key="pipeline.source", value="zt", action="insert")]),
    )
    proc.next = cap = Capture()
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    m1 = sm.metrics.add(name="c")
    m1.sum.data_points.add(as_int=1)
    m1.sum.data_points.add(as_int=2)
    sm.metrics.add(name="h").histogram.data_points.add(count=1)
    await proc.consume(METRICS, req)
    points = [
        dp
        for m in cap.req.resource_metrics[0].scope_metrics[0].metrics
        for dp in getattr(m, m.WhichOneof("data")).data_points
    ]
    assert len(points) == 3
    assert all(attributes(dp.attributes) == {"pipeline.source": "zt"} for dp in points)


def _spans(counts: list[int]) -> Any:
    req = trace_service_pb2.ExportTraceServiceRequest()
    for r, n in enumerate(counts):
        rs = req.resource_spans.add()
        rs.resource.attributes.append(KeyValue(key="r", value={"int_value": r}))
        ss = rs.scope_spans.add()
        ss.scope.name = f"scope{r}"
        for i in range(n):
            ss.spans.add(name=f"{r}-{i}")
    return req


@pytest.mark.parametrize(("counts", "limit"), [([7], 3), ([2, 5, 1], 3), ([4, 4], 4), ([1], 0)])
def test_split_keeps_every_span_with_its_resource_and_scope(counts: list[int], limit: int) -> None:
    req = _spans(counts)
    chunks = TRACES.split(req, limit)
    assert sum(TRACES.count(c) for c in chunks) == sum(counts)
    if limit:
        assert all(0 < TRACES.count(c) <= limit for c in chunks)
        assert all(TRACES.count(c) == limit for c in chunks[:-1])
    seen = []
    for c in chunks:
        for rs in c.resource_spans:
            r = rs.resource.attributes[0].value.int_value
            for ss in rs.scope_spans:
                assert ss.scope.name == f"scope{r}"
                seen += [s.name for s in ss.spans]
                assert all(s.name.startswith(f"{r}-") for s in ss.spans)
    assert seen == [f"{r}-{i}" for r, n in enumerate(counts) for i in range(n)]


def test_merge_and_metric_split() -> None:
    merged = TRACES.merge([_spans([2]), _spans([3])])
    assert TRACES.count(merged) == 5 and len(merged.resource_spans) == 2
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    sm = req.resource_metrics.add().scope_metrics.add()
    m = sm.metrics.add(name="c", unit="1")
    m.sum.is_monotonic = True
    for i in range(5):
        m.sum.data_points.add(as_int=i)
    chunks = METRICS.split(req, 2)
    assert [METRICS.count(c) for c in chunks] == [2, 2, 1]
    for c in chunks:
        (metric,) = c.resource_metrics[0].scope_metrics[0].metrics
        assert metric.name == "c" and metric.sum.is_monotonic
    assert [dp.as_int for c in chunks for dp in c.resource_metrics[0].scope_metrics[0].metrics[0].sum.data_points] == [
        0,
        1,
        2,
        3,
        4,
    ]


async def test_debug_exporter_verbosity(caplog: pytest.LogCaptureFixture) -> None:
    import logging

    from amtp_obs.collector.exporter_debug import DebugExporter, DebugExporterConfig

    caplog.set_level(logging.INFO, logger="amtp_obs.collector.debug")
    req = _spans([2, 1])
    await DebugExporter(ComponentID("debug"), DebugExporterConfig(verbosity="basic")).consume(TRACES, req)
    assert [r.getMessage().split("\t")[0] for r in caplog.records] == ["TracesExporter #resource spans: 2 #spans: 3"]
    caplog.clear()
    await DebugExporter(ComponentID("debug"), DebugExporterConfig(verbosity="normal")).consume(TRACES, req)
    assert sum(r.getMessage().startswith(("0-", "1-")) for r in caplog.records) == 3
    caplog.clear()
    await DebugExporter(ComponentID("debug"), DebugExporterConfig(verbosity="detailed")).consume(TRACES, req)
    assert 'name: "1-0"' in caplog.text
