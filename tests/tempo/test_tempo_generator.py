"""Span metrics and service graphs remote-written into the real ``prometheus`` binary, queried back."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from threading import Thread
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from prometheus_client.parser import text_string_to_metric_families
from tempo_helpers import Exporter, new_id, request, span, tempo_doc, wait_until

from amtp_obs import contract
from amtp_obs.net import free_port
from amtp_obs.shutdown import terminate
from amtp_obs.tempo import TempoApp, remote_write
from amtp_obs.tempo.config import load_config
from amtp_obs.tempo.generator import MetricsGenerator, dimension_label, format_float
from amtp_obs.tempo.metrics import TempoMetrics
from amtp_obs.tools import find_tool

PROMETHEUS = find_tool("prometheus")
needs_prometheus = pytest.mark.needs("prometheus")


class Prometheus:
    def __init__(self, tmp: Path, port: int | None = None) -> None:
        self.port = port or free_port()
        tmp.mkdir(parents=True, exist_ok=True)
        cfg = tmp / "prometheus.yml"
        cfg.write_text("global:\n  scrape_interval: 15s\nscrape_configs: []\n")
        assert PROMETHEUS is not None
        self.proc = subprocess.Popen(
            [
                PROMETHEUS,
                f"--config.file={cfg}",
                f"--storage.tsdb.path={tmp / 'prom-data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-remote-write-receiver",
                "--enable-feature=exemplar-storage",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.url = f"http://127.0.0.1:{self.port}"

        def ready() -> bool:
            try:
                return httpx.get(f"{self.url}/-/ready", timeout=1).status_code == 200
            except httpx.HTTPError:
                return False

        if not wait_until(ready, timeout=30):
            self.stop()
            raise AssertionError("prometheus did not become ready")

    def query(self, promql: str) -> list[dict[str, Any]]:
        resp = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=5)
        resp.raise_for_status()
        return resp.json()["data"]["result"]

    def value(self, promql: str) -> float | None:
        result = self.query(promql)
        return float(result[0]["value"][1]) if len(result) == 1 else None

    def stop(self) -> None:
        terminate(self.proc)


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Prometheus]:
    p = Prometheus(tmp_path)
    yield p
    p.stop()


def generator_doc(state: Path, url: str, **extra: Any) -> dict[str, Any]:
    return tempo_doc(
        state,
        metrics_generator={
            "registry": {"collection_interval": "300ms", "external_labels": {"source": "tempo"}},
            "storage": {
                "path": str(state / "generator"),
                "remote_write": [{"url": url, "send_exemplars": True}],
            },
            "processor": {
                "span_metrics": {"dimensions": list(contract.SPANMETRICS_DIMENSIONS)},
                "service_graphs": {"wait": "200ms"},
            },
        },
        overrides={
            "defaults": {
                "metrics_generator": {
                    "processors": ["service-graphs", "span-metrics"],
                    "processor": {"span_metrics": {"enable_target_info": True}},
                }
            }
        },
        **extra,
    )


LLM_RESOURCE = {"service.namespace": "amtp", "service.instance.id": "inst-1", "deployment.environment": "dev"}


def _llm_spans() -> list[Span]:
    attrs = {contract.LLM_MODEL: "gpt-4o", contract.LLM_PROVIDER: "openai", contract.GEN_AI_SYSTEM: "openai"}
    return [
        span(
            new_id(16),
            contract.SPAN_LLM_COMPLETION,
            kind=Span.SPAN_KIND_CLIENT,
            duration_ms=120,
            status=Status.STATUS_CODE_OK,
            attrs=attrs,
        ),
        span(
            new_id(16),
            contract.SPAN_LLM_COMPLETION,
            kind=Span.SPAN_KIND_CLIENT,
            duration_ms=900,
            status=Status.STATUS_CODE_OK,
            attrs=attrs,
        ),
        span(new_id(16), contract.SPAN_LLM_RESPONSE_PARSE, duration_ms=1),
    ]


@needs_prometheus
def test_span_metrics_reach_prometheus(
    start_tempo: Callable[..., TempoApp], tmp_path: Path, prometheus: Prometheus
) -> None:
    app = start_tempo(generator_doc(tmp_path, f"{prometheus.url}/api/v1/write"))
    spans = _llm_spans()
    with Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(request("svc-llm", spans, resource=LLM_RESOURCE))[0] == grpc.StatusCode.OK

    calls = f'{contract.SPANMETRICS_CALLS}{{span_name="{contract.SPAN_LLM_COMPLETION}", llm_model="gpt-4o"}}'
    assert wait_until(lambda: prometheus.value(calls) == 2.0, timeout=15), prometheus.query(calls)
    (series,) = prometheus.query(calls)
    labels = series["metric"]
    assert labels == {
        "__name__": contract.SPANMETRICS_CALLS,
        "service": "svc-llm",
        "span_name": contract.SPAN_LLM_COMPLETION,
        "span_kind": "SPAN_KIND_CLIENT",
        "status_code": "STATUS_CODE_OK",
        "llm_model": "gpt-4o",
        "llm_provider": "openai",
        "gen_ai_system": "openai",
        "job": "amtp/svc-llm",
        "instance": "inst-1",
        "source": "tempo",
    }
    bucket = contract.SPANMETRICS_LATENCY_BUCKET
    sel = f'span_name="{contract.SPAN_LLM_COMPLETION}"'
    assert prometheus.value(f'{bucket}{{{sel}, le="0.064"}}') == 0.0
    assert prometheus.value(f'{bucket}{{{sel}, le="0.128"}}') == 1.0
    assert prometheus.value(f'{bucket}{{{sel}, le="1.024"}}') == 2.0
    assert prometheus.value(f'{bucket}{{{sel}, le="+Inf"}}') == 2.0
    les = {r["metric"]["le"] for r in prometheus.query(f"{bucket}{{{sel}}}")}
    assert les == {format_float(0.002 * 2**i) for i in range(14)} | {"+Inf"}
    assert "16.384" in les
    total = prometheus.value(f"{contract.SPANMETRICS_LATENCY_SUM}{{{sel}}}")
    assert total is not None and abs(total - 1.02) < 1e-6
    assert prometheus.value(f"{contract.SPANMETRICS_LATENCY_COUNT}{{{sel}}}") == 2.0
    # New counter series start from a 0 sample (Tempo 2.4.1 registry/counter.go), so the very first
    # calls show in rate()/increase(); histograms do not (registry/histogram.go): their rate needs a
    # later push with new observations.
    first = prometheus.value(f"increase({calls}[10m])")
    assert first is not None and first > 0, prometheus.query(f"{calls}[10m]")
    zeros = prometheus.query(f"{calls}[10m]")[0]["values"]
    assert float(zeros[0][1]) == 0.0 and float(zeros[1][0]) - float(zeros[0][0]) == 1.0
    assert prometheus.query(f'{bucket}{{{sel}, le="+Inf"}}[10m]')[0]["values"][0][1] == "2"
    p95_query = f"histogram_quantile(0.95, sum by (le) (rate({bucket}{{{sel}}}[10m])))"

    def p95() -> float | None:
        v = prometheus.value(p95_query)
        return None if v is None or v != v else v

    assert p95() is None
    more = _llm_spans()
    with Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(request("svc-llm", more, resource=LLM_RESOURCE))[0] == grpc.StatusCode.OK
    assert wait_until(lambda: p95() is not None, timeout=15)
    assert 0.128 < (p95() or 0) <= 1.024
    size = prometheus.value(f"{contract.SPANMETRICS_SIZE}{{{sel}}}")
    assert size == float(spans[0].ByteSize() + spans[1].ByteSize()) * 2  # two exports by now
    # A span without the LLM attributes simply lacks those labels.
    (parse,) = prometheus.query(f'{contract.SPANMETRICS_CALLS}{{span_name="{contract.SPAN_LLM_RESPONSE_PARSE}"}}')
    assert "llm_model" not in parse["metric"] and parse["metric"]["span_kind"] == "SPAN_KIND_INTERNAL"
    (info,) = prometheus.query(contract.TARGET_INFO)
    assert info["metric"]["deployment_environment"] == "dev"
    assert info["metric"]["job"] == "amtp/svc-llm" and "service_name" not in info["metric"]

    def exemplar_ids() -> set[str]:
        now = time.time()
        resp = httpx.get(
            f"{prometheus.url}/api/v1/query_exemplars",
            params={"query": f"{bucket}{{{sel}}}", "start": now - 600, "end": now + 60},
        ).json()["data"]
        return {e["labels"]["traceID"] for group in resp for e in group["exemplars"]}

    want = {s.trace_id.hex().lstrip("0") for s in (*spans[:2], *more[:2])}
    assert wait_until(lambda: exemplar_ids() == want, timeout=10), exemplar_ids()


@needs_prometheus
def test_service_graphs_reach_prometheus(
    start_tempo: Callable[..., TempoApp], tmp_path: Path, prometheus: Prometheus
) -> None:
    app = start_tempo(generator_doc(tmp_path, f"{prometheus.url}/api/v1/write"))
    tid, client_id = new_id(16), new_id(8)
    client = span(tid, "GET /b", span_id=client_id, kind=Span.SPAN_KIND_CLIENT, duration_ms=50)
    server = span(
        tid,
        "GET /b",
        parent=client_id,
        kind=Span.SPAN_KIND_SERVER,
        duration_ms=40,
        status=Status.STATUS_CODE_ERROR,
    )
    entry = span(new_id(16), "GET /", kind=Span.SPAN_KIND_SERVER, duration_ms=30)
    with Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(request("svc-a", [client]))[0] == grpc.StatusCode.OK
        assert ex.export(request("svc-b", [server, entry]))[0] == grpc.StatusCode.OK
    edge = f'{contract.SERVICE_GRAPH_REQUEST_TOTAL}{{client="svc-a", server="svc-b"}}'
    assert wait_until(lambda: prometheus.value(edge) == 1.0, timeout=15)
    failed = f'{contract.SERVICE_GRAPH_REQUEST_FAILED_TOTAL}{{client="svc-a", server="svc-b"}}'
    assert prometheus.value(failed) == 1.0
    server_hist = f'{contract.SERVICE_GRAPH_REQUEST_SERVER_SECONDS}_bucket{{client="svc-a", le="0.1"}}'
    assert prometheus.value(server_hist) == 1.0
    user = f'{contract.SERVICE_GRAPH_REQUEST_TOTAL}{{client="user", server="svc-b"}}'
    assert wait_until(lambda: prometheus.value(user) == 1.0, timeout=15)
    assert prometheus.query(user)[0]["metric"]["connection_type"] == "virtual_node"


def test_generator_stays_off_without_overrides(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    """2.4.1: storage.path alone enables nothing; the processors must be listed in overrides.

    A store with the overrides runs beside it as the control: once the control has pushed three
    times, the store without them has had as long and as much data, and must have pushed nothing.
    """
    hits: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            hits.append(self.path)
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    Thread(target=server.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        doc = generator_doc(tmp_path / "off", f"{base}/off/api/v1/write")
        doc["overrides"] = {"defaults": {}}
        off = start_tempo(doc)
        assert not off.generator.enabled
        on = start_tempo(generator_doc(tmp_path / "on", f"{base}/on/api/v1/write"))
        assert on.generator.enabled
        for app in (off, on):
            with Exporter(app.otlp_grpc_endpoint) as ex:
                assert ex.export(request("svc", _llm_spans()))[0] == grpc.StatusCode.OK
        assert wait_until(lambda: hits.count("/on/api/v1/write") >= 3, timeout=15), hits
        assert set(hits) == {"/on/api/v1/write"}, hits
        # The store without the overrides took the spans all the same.
        metrics = text_string_to_metric_families(httpx.get(f"{off.http_url}/metrics", timeout=5).text)
        received = {s.name: s.value for f in metrics for s in f.samples}
        assert received["tempo_distributor_spans_received_total"] == len(_llm_spans())
    finally:
        server.shutdown()
        server.server_close()


@needs_prometheus
def test_failed_writes_are_counted_then_made_good(start_tempo: Callable[..., TempoApp], tmp_path: Path) -> None:
    port = free_port()  # nothing listens here yet
    app = start_tempo(generator_doc(tmp_path, f"http://127.0.0.1:{port}/api/v1/write"))
    with Exporter(app.otlp_grpc_endpoint) as ex:
        assert ex.export(request("svc-llm", _llm_spans()))[0] == grpc.StatusCode.OK

    def failures() -> bool:
        text = httpx.get(f"{app.http_url}/metrics").text
        return 'tempo_metrics_generator_remote_write_requests_total{result="failure"' in text

    assert wait_until(failures, timeout=10)
    prom = Prometheus(tmp_path / "late", port=port)
    try:
        calls = f'{contract.SPANMETRICS_CALLS}{{span_name="{contract.SPAN_LLM_COMPLETION}"}}'
        assert wait_until(lambda: prom.value(calls) == 2.0, timeout=15)
    finally:
        prom.stop()


# --------------------------------------------------------------------------------------------
# naming rules and the wire format, without servers
# --------------------------------------------------------------------------------------------


def test_dimension_labels_follow_tempo_rules() -> None:
    assert [dimension_label(d) for d in contract.SPANMETRICS_DIMENSIONS] == [
        "llm_model",
        "llm_provider",
        "gen_ai_system",
    ]
    assert dimension_label("service.name") == "service_name"  # no clash with the intrinsic `service`
    assert dimension_label("span.name") == "__span_name"
    assert dimension_label("status.code") == "__status_code"
    assert dimension_label("http/route-x") == "http_route_x"


def test_le_formatting_matches_go() -> None:
    assert [format_float(0.002 * 2**i) for i in (0, 3, 9, 13)] == ["0.002", "0.016", "1.024", "16.384"]
    assert format_float(1.0) == "1" and format_float(0.00001) == "0.00001" and format_float(float("inf")) == "+Inf"


def test_remote_write_round_trip() -> None:
    series = [
        remote_write.Series((("__name__", "m"), ("b", "2"), ("a", "1")), 3.5, 1000, [((("traceID", "abc"),), 0.1, 999)])
    ]
    body = remote_write.encode(series)
    req = remote_write.decode(body)
    (ts,) = req.timeseries
    assert [(lb.name, lb.value) for lb in ts.labels] == [("__name__", "m"), ("a", "1"), ("b", "2")]
    assert (ts.samples[0].value, ts.samples[0].timestamp) == (3.5, 1000)
    assert ts.exemplars[0].labels[0].value == "abc"
    assert remote_write.decode(remote_write.encode(series, send_exemplars=False)).timeseries[0].exemplars == []


def test_target_info_only_from_overrides(tmp_path: Path) -> None:
    """Reproduces 2.4.1 bug #2834: enable_target_info in the base processor config is ignored."""
    doc = generator_doc(tmp_path, "http://127.0.0.1:9/api/v1/write")
    doc["overrides"]["defaults"]["metrics_generator"]["processor"] = {}
    doc["metrics_generator"]["processor"]["span_metrics"]["enable_target_info"] = True
    gen = MetricsGenerator(load_config(doc), TempoMetrics())
    gen.consume(request("svc-llm", _llm_spans(), resource=LLM_RESOURCE))
    names = {dict(s.labels)["__name__"] for s in gen.collect()}
    assert contract.TARGET_INFO not in names and contract.SPANMETRICS_CALLS in names
    assert all("job" not in dict(s.labels) for s in gen.collect())
