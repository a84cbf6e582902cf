"""Spans through the project's traces pipeline: gRPC (OTel SDK), HTTP protobuf (gzip), HTTP JSON."""

from __future__ import annotations

import asyncio
import gzip
import json

import httpx
from collector_support import find_id, project_config, sink_span_count, wait_until
from google.rpc import status_pb2
from grpc import Compression
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HTTPSpanExporter
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor

from amtp_obs import contract
from amtp_obs.collector import Collector
from amtp_obs.testing.otlp_sink import OtlpSink, to_key_values


def _expected_actions() -> dict[str, tuple[str, str]]:
    """key -> (action, value) of the project's attributes processor, read from the YAML."""
    doc = project_config()
    proc = doc["processors"][find_id(doc, "processors", "attributes")]
    return {a["key"]: (a["action"], a["value"]) for a in proc["actions"]}


def _emit_with_sdk(exporter: object, preset: dict[str, str]) -> str:
    tp = TracerProvider(resource=Resource.create({"service.name": "collector-test"}))
    tp.add_span_processor(SimpleSpanProcessor(exporter))  # type: ignore[arg-type]
    with tp.get_tracer("test").start_as_current_span(contract.SPAN_LLM_COMPLETION) as span:
        span.set_attribute(contract.LLM_MODEL, "gpt-4o")
        for k, v in preset.items():
            span.set_attribute(k, v)
        trace_id = format(span.get_span_context().trace_id, "032x")
    tp.shutdown()
    return trace_id


def _check_actions(attrs: dict[str, object], preset: dict[str, str]) -> None:
    for key, (action, value) in _expected_actions().items():
        if action == "insert":
            assert attrs[key] == preset.get(key, value)
        elif action in ("upsert", "update"):
            if action == "upsert" or key in preset:
                assert attrs[key] == value
        else:
            raise AssertionError(f"test does not know action {action}")


async def test_grpc_spans_get_project_attributes(collector: Collector, sink: OtlpSink) -> None:
    host, port = collector.listen_address("otlp", "grpc")
    actions = _expected_actions()
    upserted = next(k for k, (a, _) in actions.items() if a == "upsert")
    # The SDK set a different value for the upserted key: the processor must overwrite it.
    preset = {upserted: "not-" + actions[upserted][1]}
    exporter = OTLPSpanExporter(endpoint=f"{host}:{port}", insecure=True, compression=Compression.Gzip)
    trace_id = await asyncio.to_thread(_emit_with_sdk, exporter, preset)
    assert await wait_until(lambda: sink_span_count(sink) >= 1)
    (span,) = sink.spans()
    assert span.trace_id == trace_id
    assert span.name == contract.SPAN_LLM_COMPLETION
    assert span.resource["service.name"] == "collector-test"
    assert span.attributes[contract.LLM_MODEL] == "gpt-4o"
    _check_actions(span.attributes, preset)


async def test_insert_keeps_an_existing_value(collector: Collector, sink: OtlpSink) -> None:
    inserted = next(k for k, (a, _) in _expected_actions().items() if a == "insert")
    preset = {inserted: "set-by-the-agent"}
    _, port = collector.listen_address("otlp", "http")
    exporter = HTTPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces")
    await asyncio.to_thread(_emit_with_sdk, exporter, preset)
    assert await wait_until(lambda: sink_span_count(sink) >= 1)
    (span,) = sink.spans()
    assert span.attributes[inserted] == "set-by-the-agent"
    _check_actions(span.attributes, preset)


def _request(n: int, trace_id: bytes = bytes(range(16))) -> trace_service_pb2.ExportTraceServiceRequest:
    req = trace_service_pb2.ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(to_key_values({"service.name": "raw"}))
    ss = rs.scope_spans.add()
    ss.scope.name = "raw"
    for i in range(n):
        s = ss.spans.add(name=f"span-{i}", trace_id=trace_id, span_id=(i + 1).to_bytes(8, "big"))
        s.start_time_unix_nano, s.end_time_unix_nano = 1_000, 2_000
    return req


async def test_http_protobuf_gzip(collector: Collector, sink: OtlpSink) -> None:
    body = gzip.compress(_request(3).SerializeToString())
    async with httpx.AsyncClient() as client:
        r = await client.post(
            collector.url("otlp", "http", "/v1/traces"),
            content=body,
            headers={"Content-Type": "application/x-protobuf", "Content-Encoding": "gzip"},
        )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/x-protobuf"
    trace_service_pb2.ExportTraceServiceResponse.FromString(r.content)  # a valid response message
    assert await wait_until(lambda: sink_span_count(sink) >= 3)
    assert sorted(s.name for s in sink.spans()) == ["span-0", "span-1", "span-2"]
    assert all("pipeline.source" in s.attributes for s in sink.spans())


async def test_http_json_hex_ids(collector: Collector, sink: OtlpSink) -> None:
    trace_id, span_id, parent = "5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "eee19b7ec3c1b173"
    doc = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-client"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "manual"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "parentSpanId": parent,
                                "name": "json-span",
                                "kind": 3,
                                "startTimeUnixNano": "1544712660000000000",
                                "endTimeUnixNano": "1544712661000000000",
                                "attributes": [{"key": "n", "value": {"intValue": "7"}}],
                                "unknownFutureField": True,
                            }
                        ],
                    }
                ],
            }
        ]
    }
    async with httpx.AsyncClient() as client:
        r = await client.post(collector.url("otlp", "http", "/v1/traces"), json=doc)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/json"
    assert isinstance(json.loads(r.text), dict)
    assert await wait_until(lambda: sink_span_count(sink) >= 1)
    (span,) = sink.spans()
    assert (span.trace_id, span.span_id, span.parent_span_id) == (trace_id, span_id, parent)
    assert span.kind == 3 and span.attributes["n"] == 7
    assert span.resource["service.name"] == "json-client"


async def test_bad_requests_are_refused_and_the_collector_keeps_serving(collector: Collector, sink: OtlpSink) -> None:
    url = collector.url("otlp", "http", "/v1/traces")
    pb = {"Content-Type": "application/x-protobuf"}
    async with httpx.AsyncClient() as client:
        r = await client.post(url, content=b"\xff\xff\xff not protobuf", headers=pb)
        assert r.status_code == 400
        status = status_pb2.Status.FromString(r.content)
        assert "protobuf" in status.message

        r = await client.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
        assert r.status_code == 400
        assert "invalid JSON" in r.json()["message"]

        bad_id = {"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz", "name": "x"}]}]}]}
        r = await client.post(url, json=bad_id)
        assert r.status_code == 400 and "traceId" in r.json()["message"]

        r = await client.post(url, content=b"x", headers={"Content-Type": "text/plain"})
        assert r.status_code == 415
        assert "application/x-protobuf" in r.text

        r = await client.get(url)
        assert r.status_code == 405

        r = await client.post(collector.url("otlp", "http", "/v1/nothing"), content=b"", headers=pb)
        assert r.status_code == 404

        r = await client.post(url, content=b"x", headers={**pb, "Content-Encoding": "br"})
        assert r.status_code == 400 and "Content-Encoding" in status_pb2.Status.FromString(r.content).message

        r = await client.post(url, content=b"not gzip", headers={**pb, "Content-Encoding": "gzip"})
        assert r.status_code == 400

        big = b"\x00" * (20 * 1024 * 1024 + 1)
        r = await client.post(url, content=big, headers=pb)
        assert r.status_code == 413
        assert "too large" in status_pb2.Status.FromString(r.content).message

        # A gzip bomb: small on the wire, over the limit once decompressed.
        r = await client.post(url, content=gzip.compress(big), headers={**pb, "Content-Encoding": "gzip"})
        assert r.status_code == 413

        r = await client.post(url, content=_request(1).SerializeToString(), headers=pb)
        assert r.status_code == 200
    assert await wait_until(lambda: sink_span_count(sink) >= 1)
    assert sink_span_count(sink) == 1


async def test_cors_preflight_honours_allowed_origins(collector: Collector) -> None:
    url = collector.url("otlp", "http", "/v1/traces")
    async with httpx.AsyncClient() as client:
        ok = await client.options(
            url, headers={"Origin": "http://agent.example", "Access-Control-Request-Method": "POST"}
        )
        bad = await client.options(
            url, headers={"Origin": "ftp://agent.example", "Access-Control-Request-Method": "POST"}
        )
    assert ok.headers.get("access-control-allow-origin") == "http://agent.example"
    assert "access-control-allow-origin" not in bad.headers


async def test_logs_are_accepted_without_a_logs_pipeline(collector: Collector) -> None:
    from opentelemetry.proto.collector.logs.v1 import logs_service_pb2

    req = logs_service_pb2.ExportLogsServiceRequest()
    req.resource_logs.add().scope_logs.add().log_records.add().body.string_value = "hello"
    async with httpx.AsyncClient() as client:
        r = await client.post(
            collector.url("otlp", "http", "/v1/logs"),
            content=req.SerializeToString(),
            headers={"Content-Type": "application/x-protobuf"},
        )
    assert r.status_code == 200
    logs_service_pb2.ExportLogsServiceResponse.FromString(r.content)


async def test_metrics_over_http_json(collector: Collector) -> None:
    doc = {
        "resourceMetrics": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "json-agent"}}]},
                "scopeMetrics": [
                    {
                        "metrics": [
                            {
                                "name": contract.PROMPT_TOKENS.instrument,
                                "unit": contract.PROMPT_TOKENS.unit,
                                "sum": {
                                    "aggregationTemporality": 2,
                                    "isMonotonic": True,
                                    "dataPoints": [
                                        {
                                            "asInt": "42",
                                            "timeUnixNano": "1544712660000000000",
                                            "exemplars": [
                                                {"asInt": "1", "traceId": "5b8efff798038103d269b633813fc60c"}
                                            ],
                                        }
                                    ],
                                },
                            }
                        ]
                    }
                ],
            }
        ]
    }
    async with httpx.AsyncClient() as client:
        r = await client.post(collector.url("otlp", "http", "/v1/metrics"), json=doc)
        assert r.status_code == 200, r.text
        for _ in range(100):
            text = (await client.get(collector.url("prometheus", path="/metrics"))).text
            if contract.PROMPT_TOKENS.prometheus_name in text:
                break
            await asyncio.sleep(0.05)
    line = next(x for x in text.splitlines() if x.startswith(contract.PROMPT_TOKENS.prometheus_name + "{"))
    assert 'service_name="json-agent"' in line and line.endswith(" 42")
