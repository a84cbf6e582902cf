"""Trace by id and the small endpoints, fed by the plain OpenTelemetry SDK OTLP gRPC exporter."""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import httpx
import pytest
from google.protobuf import json_format
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import StatusCode
from tempo_helpers import Exporter, new_id, request, span, tempo_doc

from amtp_obs import contract
from amtp_obs.net import bound_sockets
from amtp_obs.tempo import TempoApp


@pytest.fixture
def provider(tempo: TempoApp) -> Iterator[TracerProvider]:
    tp = TracerProvider(resource=Resource.create({"service.name": "svc-a"}))
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=tempo.otlp_grpc_endpoint, insecure=True)))
    yield tp
    tp.shutdown()


def _emit(tp: TracerProvider) -> tuple[str, str, str]:
    """An llm.completion root with an llm.inference child; returns (trace hex, root hex, child hex)."""
    tracer = tp.get_tracer("tests")
    with (
        tracer.start_as_current_span(
            contract.SPAN_LLM_COMPLETION,
            attributes={contract.LLM_MODEL: "gpt-4o", contract.LLM_TOKENS_PROMPT: 128},
        ) as root,
        tracer.start_as_current_span(contract.SPAN_LLM_INFERENCE) as child,
    ):
        child.set_status(StatusCode.ERROR)
    ctx = root.get_span_context()
    return (
        format(ctx.trace_id, "032x"),
        format(ctx.span_id, "016x"),
        format(child.get_span_context().span_id, "016x"),
    )


def _spans(doc: dict) -> list[dict]:
    return [s for b in doc["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]


def test_sdk_trace_comes_back_as_tempo_json(provider: TracerProvider, http: httpx.Client) -> None:
    trace_hex, root_hex, child_hex = _emit(provider)
    resp = http.get(f"/api/traces/{trace_hex}")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/json")
    doc = resp.json()
    assert set(doc) == {"batches"}
    # SimpleSpanProcessor exports each span on its own: one batch per export, as Tempo keeps them.
    assert len(doc["batches"]) == 2
    spans = {s["name"]: s for s in _spans(doc)}
    root, child = spans[contract.SPAN_LLM_COMPLETION], spans[contract.SPAN_LLM_INFERENCE]
    assert base64.b64decode(root["traceId"]).hex() == trace_hex
    assert base64.b64decode(root["spanId"]).hex() == root_hex
    assert base64.b64decode(child["parentSpanId"]).hex() == root_hex
    assert base64.b64decode(child["spanId"]).hex() == child_hex
    assert "parentSpanId" not in root
    assert root["kind"] == "SPAN_KIND_INTERNAL"
    assert isinstance(root["startTimeUnixNano"], str) and int(root["endTimeUnixNano"]) > int(root["startTimeUnixNano"])
    attrs = {a["key"]: a["value"] for a in root["attributes"]}
    assert attrs[contract.LLM_MODEL] == {"stringValue": "gpt-4o"}
    assert attrs[contract.LLM_TOKENS_PROMPT] == {"intValue": "128"}
    assert "status" not in root or root["status"] == {}
    assert child["status"] == {"code": "STATUS_CODE_ERROR"}
    resource = {a["key"]: a["value"] for a in doc["batches"][0]["resource"]["attributes"]}
    assert resource["service.name"] == {"stringValue": "svc-a"}


def test_protobuf_on_accept(provider: TracerProvider, http: httpx.Client) -> None:
    trace_hex, _, _ = _emit(provider)
    resp = http.get(f"/api/traces/{trace_hex}", headers={"Accept": "application/protobuf"})
    assert resp.status_code == 200
    assert resp.headers["content-type"] == "application/protobuf"
    td = TracesData()
    td.ParseFromString(resp.content)
    names = sorted(s.name for rs in td.resource_spans for ss in rs.scope_spans for s in ss.spans)
    assert names == sorted([contract.SPAN_LLM_COMPLETION, contract.SPAN_LLM_INFERENCE])
    assert {s.trace_id.hex() for rs in td.resource_spans for ss in rs.scope_spans for s in ss.spans} == {trace_hex}


def test_short_ids_are_left_padded(tempo: TempoApp, exporter: Exporter, http: httpx.Client) -> None:
    tid = bytes(10) + new_id(6)
    assert exporter.export(request("svc", [span(tid, "short")]))[0] == grpc.StatusCode.OK
    stripped = tid.hex().lstrip("0")
    assert len(stripped) < 32
    resp = http.get(f"/api/traces/{stripped}")
    assert resp.status_code == 200
    assert _spans(resp.json())[0]["name"] == "short"
    assert http.get(f"/api/traces/{tid.hex().upper()}").status_code == 200


def test_batches_split_by_trace(exporter: Exporter, http: httpx.Client) -> None:
    """One export holding two traces: each trace gets only its own spans, resource kept."""
    t1, t2 = new_id(16), new_id(16)
    req = request(
        "svc-split",
        [span(t1, "a1"), span(t2, "b1"), span(t1, "a2")],
        resource={"deployment.environment": "t"},
    )
    assert exporter.export(req)[0] == grpc.StatusCode.OK
    doc1, doc2 = http.get(f"/api/traces/{t1.hex()}").json(), http.get(f"/api/traces/{t2.hex()}").json()
    assert sorted(s["name"] for s in _spans(doc1)) == ["a1", "a2"]
    assert [s["name"] for s in _spans(doc2)] == ["b1"]
    res = {a["key"] for a in doc2["batches"][0]["resource"]["attributes"]}
    assert res == {"service.name", "deployment.environment"}
    assert doc2["batches"][0]["scopeSpans"][0]["scope"] == {"name": "tests"}


@pytest.mark.parametrize(
    ("trace_id", "message"),
    [
        ("xyz", "trace IDs can only contain hex characters: invalid character 'x' at position 1"),
        ("12g4", "trace IDs can only contain hex characters: invalid character 'g' at position 3"),
        ("1" * 33, "trace IDs can't be larger than 128 bits"),
    ],
)
def test_bad_trace_ids_are_400(http: httpx.Client, trace_id: str, message: str) -> None:
    resp = http.get(f"/api/traces/{trace_id}")
    assert resp.status_code == 400
    assert resp.text == message


def test_unknown_trace_is_404(http: httpx.Client) -> None:
    resp = http.get(f"/api/traces/{new_id(16).hex()}")
    assert resp.status_code == 404
    assert resp.text == "trace not found"


def test_start_end_window(exporter: Exporter, http: httpx.Client) -> None:
    tid = new_id(16)
    exporter.export(request("svc", [span(tid, "windowed", start_ns=1_700_000_000 * 10**9)]))
    assert (
        http.get(f"/api/traces/{tid.hex()}", params={"start": 1_699_999_000, "end": 1_700_001_000}).status_code == 200
    )
    # Tempo 2.4.1 answers a trace its ingesters hold whatever the window (pkg/api/http.go ValidateAndSanitizeRequest)
    missed = http.get(f"/api/traces/{tid.hex()}", params={"start": 1_800_000_000, "end": 1_800_001_000})
    assert missed.status_code == 200 and missed.json()["batches"]
    assert http.get(f"/api/traces/{tid.hex()}", params={"start": 1_800_000_000}).status_code == 200
    bad = http.get(f"/api/traces/{tid.hex()}", params={"start": 10, "end": 5})
    assert bad.status_code == 400 and "start must be before end" in bad.text
    assert http.get(f"/api/traces/{tid.hex()}", params={"start": "soon"}).status_code == 400


def test_small_endpoints(http: httpx.Client) -> None:
    assert http.get("/ready").text == "ready"
    assert http.get("/api/echo").text == "echo"
    info = http.get("/api/status/buildinfo")
    assert info.headers["content-type"].startswith("application/json")
    assert info.json()["version"] == "2.4.1-amtp"
    assert http.get("/api/v2/traces/00").status_code == 404  # does not exist in 2.4.1
    assert http.get("/no/such/route").status_code == 404
    assert http.post("/api/echo").status_code == 405


def test_own_metrics(provider: TracerProvider, http: httpx.Client) -> None:
    _emit(provider)
    text = http.get("/metrics").text
    line = next(x for x in text.splitlines() if x.startswith("tempo_distributor_spans_received_total{"))
    assert float(line.rsplit(" ", 1)[1]) == 2.0
    assert "tempo_ingester_live_traces" in text
    assert "traces_spanmetrics" not in text  # span metrics leave only by remote write


def test_malformed_export_is_invalid_argument(exporter: Exporter, http: httpx.Client) -> None:
    code, msg = exporter.export(b"\x0a\xff\xff\xff")
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "cannot decode" in msg
    code, msg = exporter.export(request("svc", [span(b"\x01" * 8, "short-id")]))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert "trace ids must be 128 bit" in msg
    assert http.get("/ready").status_code == 200


def test_otlp_http_receiver(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    doc = tempo_doc(tmp_path)
    doc["distributor"]["receivers"]["otlp"]["protocols"]["http"] = {"endpoint": "127.0.0.1:0"}
    app = start_tempo(doc)
    assert app.otlp_http_port
    url = f"http://127.0.0.1:{app.otlp_http_port}/v1/traces"
    t1, t2 = new_id(16), new_id(16)
    pb = request("svc-http", [span(t1, "over-http-protobuf")]).SerializeToString()
    assert httpx.post(url, content=pb, headers={"Content-Type": "application/x-protobuf"}).status_code == 200
    as_json = json_format.MessageToJson(request("svc-http", [span(t2, "over-http-json")]))
    assert httpx.post(url, content=as_json, headers={"Content-Type": "application/json"}).status_code == 200
    for tid, name in ((t1, "over-http-protobuf"), (t2, "over-http-json")):
        doc_ = httpx.get(f"{app.http_url}/api/traces/{tid.hex()}").json()
        assert [s["name"] for s in _spans(doc_)] == [name]
    bad = httpx.post(url, content=b"\xff\xff", headers={"Content-Type": "application/x-protobuf"})
    assert bad.status_code == 400 and "cannot decode" in bad.text
    assert httpx.post(url, content=b"{", headers={"Content-Type": "application/json"}).status_code == 400
    assert httpx.post(url, content=b"x", headers={"Content-Type": "text/plain"}).status_code == 415


def test_host_less_endpoints_listen_on_loopback_only(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    """An empty listen address and ``:port`` receivers bind 127.0.0.1 (one rule: amtp_obs.net.split_endpoint).

    Before, the OTLP/gRPC receiver bound every interface here while OTLP/HTTP bound loopback.
    """
    doc = tempo_doc(tmp_path)
    doc["server"]["http_listen_address"] = ""
    doc["distributor"]["receivers"]["otlp"]["protocols"] = {"grpc": {"endpoint": ":0"}, "http": {"endpoint": ":0"}}
    app = start_tempo(doc)
    ports = {app.http_port, app.grpc_port, app.otlp_grpc_port, app.otlp_http_port}
    mine = [s for s in bound_sockets([os.getpid()]) if s.port in ports]
    assert {s.port for s in mine} == ports and len(ports) == 4
    assert all(s.loopback for s in mine), mine
    with Exporter(app.otlp_grpc_endpoint) as exporter:
        assert exporter.export(request("svc", [span(new_id(16), "reachable")]))[0] == grpc.StatusCode.OK
