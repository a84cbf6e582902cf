"""The whole read path with the embedded trace store (amtp_obs.tempo) instead of a stand-in.

A trace goes in through the plain OpenTelemetry SDK over OTLP gRPC; the store's metrics generator
remote-writes span metrics to the real Prometheus; the dashboard finds the trace with the panel's
TraceQL, shows its waterfall, and offers the span names from the span metrics as variable values.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from dash_helpers import ServerThread, make_settings, run_trace_store

from amtp_obs import contract
from amtp_obs.dashboard import create_app
from amtp_obs.testing.prometheus import run_prometheus

UID = "llm-token-accounting"
SERVICE = "agent-gamma"


def _send_trace(endpoint: str) -> str:
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    tracer = provider.get_tracer("test")
    attrs = {contract.LLM_MODEL: "gpt-4o", contract.LLM_PROVIDER: "openai", contract.GEN_AI_SYSTEM: "openai"}
    with tracer.start_as_current_span(contract.SPAN_LLM_COMPLETION, attributes=attrs) as root:
        with tracer.start_as_current_span(contract.SPAN_LLM_INFERENCE):
            pass
        with tracer.start_as_current_span(contract.SPAN_LLM_RESPONSE_PARSE):
            pass
        trace_id = format(root.get_span_context().trace_id, "032x")
    provider.shutdown()
    return trace_id


def test_dashboard_reads_traces_and_span_metrics_from_the_embedded_store(tmp_path: Path) -> None:
    with (
        run_prometheus(tmp_path / "prom") as prom,
        run_trace_store(tmp_path / "tempo", prom.url, collection_interval=0.5) as tempo,
    ):
        trace_id = _send_trace(tempo.otlp_grpc_endpoint)
        deadline = time.monotonic() + 20
        query = f'{contract.SPANMETRICS_CALLS}{{service="{SERVICE}"}}'
        while not httpx.get(f"{prom.url}/api/v1/query", params={"query": query}).json()["data"]["result"]:
            assert time.monotonic() < deadline, "span metrics never reached Prometheus"
            time.sleep(0.2)
        with ServerThread(create_app(make_settings(prom.url, tempo.http_url))) as srv:
            doc = httpx.get(f"{srv.url}/api/amtp/dashboards/{UID}/data", timeout=30).json()
            trace_page = httpx.get(f"{srv.url}/trace/{trace_id}", timeout=10)
    variables = {v["name"]: v for v in doc["variables"]}
    assert variables["service_name"]["options"] == [SERVICE]
    assert contract.SPAN_LLM_COMPLETION in variables["span_name"]["options"]
    panels = {p["title"]: p for p in doc["panels"]}
    search = panels["LLM Trace Search"]
    assert search["error"] is None
    assert [row[0] for row in search["table"]["rows"]] == [trace_id]
    assert search["table"]["rows"][0][2] == SERVICE
    assert panels["LLM Calls / sec"]["error"] is None
    assert trace_page.status_code == 200
    for name in contract.LLM_SPAN_NAMES:
        assert f"<b>{name}</b>" in trace_page.text
    assert f"<th>{contract.LLM_MODEL}</th><td>gpt-4o</td>" in trace_page.text
