"""Each data-loss alert fires when its loss really happens on the embedded components.

The collector and the trace store run as real processes (bench/harness.py), Prometheus is the real
binary with the project's prometheus.yml (targets moved to the processes' ports, 1 s scrapes) and
the data-loss rules of alerting.yaml translated as the embedded stack translates them (groups
evaluated every second, ``for`` 0 s as written). Each test causes one kind of loss and waits for the
alert in Prometheus' ``/api/v1/alerts`` with the labels that name the loss.
"""

from __future__ import annotations

import contextlib
import copy
import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
import yaml
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import ExportMetricsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.metrics.v1.metrics_pb2 import Gauge, Metric, NumberDataPoint, ResourceMetrics, ScopeMetrics
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from starlette.testclient import TestClient

import harness
from amtp_obs import env
from amtp_obs import project as proj
from amtp_obs.alerting import runtime
from amtp_obs.check import series as check_series
from amtp_obs.collector.telemetry import EXPORTER_SEND_FAILED, metric_name
from amtp_obs.dashboard import DashboardSettings, create_app
from amtp_obs.dashboard.engine import ALERT_LIST
from amtp_obs.net import free_port
from amtp_obs.stack.render import compose_command
from amtp_obs.tempo import remote_write
from amtp_obs.tempo.generator import REASON_OUTSIDE_SLACK
from amtp_obs.tempo.metrics import REASON_TRACE_TOO_LARGE
from amtp_obs.testing.poll import eventually
from conftest import start

pytestmark = pytest.mark.needs("prometheus")

LOSS_GROUP = "data-loss"
FAST = "1s"
ALERT_TIMEOUT = 40.0
"""Prometheus discovers its targets about 5 s after start, then scrapes and evaluates every second."""
EXPORTER_LOST_METRICS = "otlp/lost-metrics"


# ---------------------------------------------------------------------------------------------
# Prometheus with the project's scrape jobs and the translated data-loss rules
# ---------------------------------------------------------------------------------------------


@dataclass
class Prom:
    url: str
    proc: harness.Proc

    def alerts(self, title: str) -> list[dict[str, str]]:
        body = httpx.get(self.url + "/api/v1/alerts", timeout=5).json()
        return [
            a["labels"] for a in body["data"]["alerts"] if a["labels"]["alertname"] == title and a["state"] == "firing"
        ]

    def wait_firing(self, title: str, **labels: str) -> dict[str, str]:
        def match() -> dict[str, str] | None:
            return next((a for a in self.alerts(title) if labels.items() <= a.items()), None)

        found = eventually(match, ALERT_TIMEOUT, 0.25, ignore=(httpx.HTTPError,))
        if not found:
            pytest.fail(f"{title!r} with {labels} did not fire within {ALERT_TIMEOUT:g} s; firing: {self.alerts(title)}"
                        f"\nprometheus log:\n{self.proc.log_tail()}")  # fmt: skip
        # ... and the dashboard's alert list shows it (its label filter lets the stack's alerts through).
        assert any(r[1] == "firing" for r in self.on_dashboard(title)), (
            f"{title!r} is not on the dashboard's alert list"
        )
        return found

    def on_dashboard(self, title: str) -> list[list[Any]]:
        """Rows of the provisioned dashboards' alert list panels naming ``title`` (the embedded
        dashboard app on this Prometheus, with each panel's own filter)."""
        project = harness.project()
        settings = DashboardSettings.from_project(project, prometheus_url=self.url)
        found = []
        with TestClient(create_app(settings)) as client:
            for path in project.dashboards():
                uid = json.loads(path.read_text())["uid"]
                doc = client.get(f"/api/amtp/dashboards/{uid}/data").json()
                for panel in doc["panels"]:
                    if panel["type"] == ALERT_LIST:
                        assert panel["error"] is None, panel["error"]
                        found += [r for r in panel["table"]["rows"] if r[0] == title]
        return found

    def loss_rules(self) -> list[dict[str, Any]]:
        groups = httpx.get(self.url + "/api/v1/rules", timeout=5).json()["data"]["groups"]
        return [r for g in groups if g["name"] == LOSS_GROUP for r in g["rules"]]


def _loss_rules_file(work: Path) -> Path:
    """alerting.yaml's rules translated as the embedded stack does, every group evaluated each second."""
    project = harness.project()
    doc = yaml.safe_load(project.path(proj.ALERTING_FILE).read_text())
    for group in doc["groups"]:
        group["interval"] = FAST
    copy_path = work / "alerting.yaml"
    copy_path.write_text(yaml.safe_dump(doc, sort_keys=False))
    variables = {
        env.AMTP_SLACK_WEBHOOK_URL: "http://127.0.0.1:9/unused",
        env.AMTP_ALERT_EMAIL_ADDRESSES: "x@example.test",
    }
    files = runtime.prepare(project, work / "state", alerting_file=copy_path, variables=variables, deliver=False)
    return files.rules_file


# Where a test's processes listen, by role; prometheus.yml's targets are mapped onto them.
SELF_METRICS, EXPORTER_METRICS, TEMPO_HTTP, PROMETHEUS = "collector-self", "collector-exporter", "tempo", "prometheus"


def _roles() -> dict[str, str]:
    """Compose-side ``service:port`` of each scrape target in prometheus.yml -> its role here."""
    project = harness.project()
    col = project.load_yaml(proj.COLLECTOR_CONFIG)
    tempo = project.load_yaml(proj.TEMPO_CONFIG)
    telemetry = check_series.endpoint_port(col["service"]["telemetry"]["metrics"]["address"])
    exporter = check_series.endpoint_port(col["exporters"][harness.EXPORTER_PROMETHEUS]["endpoint"])
    return {
        f"{proj.SERVICE_COLLECTOR}:{telemetry}": SELF_METRICS,
        f"{proj.SERVICE_COLLECTOR}:{exporter}": EXPORTER_METRICS,
        f"{proj.SERVICE_TEMPO}:{tempo['server']['http_listen_port']}": TEMPO_HTTP,
        f"{proj.SERVICE_PROMETHEUS}:{check_series.prometheus_listen_port(project.compose)}": PROMETHEUS,
    }


def prometheus_config(
    ports: dict[str, int], rules: list[Path], limits: dict[str, dict[str, int]] | None = None
) -> dict[str, Any]:
    """prometheus.yml, each job whose target runs here moved to it (others left out), scraped every
    second; ``limits`` adds scrape limits per job name."""
    doc = copy.deepcopy(harness.project().load_yaml(proj.PROMETHEUS_CONFIG))
    doc["global"].update(scrape_interval=FAST, evaluation_interval=FAST)
    roles = _roles()
    jobs = []
    for job in doc["scrape_configs"]:
        static = []
        for sc in job.get("static_configs") or []:
            targets = [f"{harness.LOOPBACK}:{ports[roles[t]]}" for t in sc["targets"] if roles.get(t) in ports]
            if targets:
                static.append({**sc, "targets": targets})
        if static:
            jobs.append({**job, "static_configs": static, **(limits or {}).get(job["job_name"], {})})
    doc["scrape_configs"] = jobs
    doc["rule_files"] = [str(r) for r in rules]
    return doc


@contextlib.contextmanager
def running_prometheus(
    work: Path,
    procs: list[harness.Proc],
    targets: dict[str, int],
    *,
    extra_rules: list[Path] | None = None,
    limits: dict[str, dict[str, int]] | None = None,
) -> Iterator[Prom]:
    """The real Prometheus with compose's flags (remote-write receiver on), loss rules loaded."""
    work.mkdir(parents=True, exist_ok=True)
    port = free_port()
    cfg = prometheus_config({**targets, PROMETHEUS: port}, [_loss_rules_file(work), *(extra_rules or [])], limits)
    config_path = harness.write_yaml(work / "prometheus.yml", cfg)
    flags = [
        f
        for f in compose_command(harness.project().service(proj.SERVICE_PROMETHEUS) or {})
        if f.startswith("--")
        and f.split("=")[0] not in ("--config.file", "--storage.tsdb.path", "--web.listen-address")
    ]
    url = f"http://{harness.LOOPBACK}:{port}"
    proc = harness.Proc(
        "prometheus",
        [
            shutil.which("prometheus") or "prometheus",
            f"--config.file={config_path}",
            f"--storage.tsdb.path={work / 'data'}",
            f"--web.listen-address={harness.LOOPBACK}:{port}",
            *flags,
        ],
        work / "prometheus.log",
        url + "/-/ready",
    )
    start(procs, proc)
    prom = Prom(url, proc)
    # Every data-loss rule loads and evaluates without error on this Prometheus (2.42 here, 2.52 in production).
    doc = yaml.safe_load(harness.project().path(proj.ALERTING_FILE).read_text())
    (group,) = [g for g in doc["groups"] if g["name"] == LOSS_GROUP]
    titles = {r["title"] for r in group["rules"]}

    def healthy() -> bool:
        rules = prom.loss_rules()
        return {r["name"] for r in rules} == titles and all(r.get("health") == "ok" for r in rules)

    assert eventually(healthy, 20, 0.25), f"data-loss rules not loaded or unhealthy: {prom.loss_rules()}"
    yield prom


# ---------------------------------------------------------------------------------------------
# Traffic
# ---------------------------------------------------------------------------------------------


def collector_targets(cports: harness.CollectorPorts) -> dict[str, int]:
    return {SELF_METRICS: cports.self_metrics, EXPORTER_METRICS: cports.prometheus}


def _send_spans(target: str, n_requests: int, spans: int, seed: int) -> None:
    deadline = time.monotonic() + 15
    with grpc.insecure_channel(target) as ch:
        for i in range(n_requests):
            body = harness.build_request(seed + i, 0, spans, 1)[0].SerializeToString()
            assert harness.grpc_export_retrying(ch, body, deadline).acked


def _metrics_request(points: int) -> bytes:
    now = time.time_ns()
    dps = [
        NumberDataPoint(
            time_unix_nano=now,
            as_double=float(i),
            attributes=[KeyValue(key="i", value=AnyValue(int_value=i))],
        )
        for i in range(points)
    ]
    return ExportMetricsServiceRequest(
        resource_metrics=[
            ResourceMetrics(
                resource=Resource(attributes=[KeyValue(key="service.name", value=AnyValue(string_value="loss"))]),
                scope_metrics=[
                    ScopeMetrics(metrics=[Metric(name="loss_probe", unit="1", gauge=Gauge(data_points=dps))])
                ],
            )
        ]
    ).SerializeToString()


def _post_metrics(http_url: str, body: bytes) -> int:
    r = httpx.post(
        f"{http_url}/v1/metrics", content=body, headers={"content-type": "application/x-protobuf"}, timeout=10
    )
    return r.status_code


# ---------------------------------------------------------------------------------------------
# The losses
# ---------------------------------------------------------------------------------------------


def test_store_down_fires_export_failed_and_queue_full(procs: list[harness.Proc], tmp_path: Path) -> None:
    """Nothing listens where the collector exports; a one-batch queue overflows, the batch in flight
    runs out of retries. The same for a metrics pipeline with a pushing exporter."""
    cports = harness.CollectorPorts()
    dead = f"{harness.LOOPBACK}:{free_port()}"  # nobody listens here
    retry = {"initial_interval": "100ms", "max_interval": "200ms", "max_elapsed_time": "1s"}
    queue = {"num_consumers": 1, "queue_size": 1}
    doc = harness.collector_config(cports, dead, retry=retry, queue=queue)
    doc["processors"]["batch"].update(send_batch_size=8, send_batch_max_size=8, timeout="100ms")
    doc["exporters"][EXPORTER_LOST_METRICS] = copy.deepcopy(doc["exporters"][harness.EXPORTER_TEMPO])
    doc["service"]["pipelines"]["metrics"]["exporters"].append(EXPORTER_LOST_METRICS)
    coll = start(procs, harness.collector_proc_from(tmp_path, cports, doc))
    with running_prometheus(tmp_path / "prom", procs, collector_targets(cports)) as prom:
        _send_spans(cports.grpc_target, 4, 16, seed=7)  # 8 batches of 8 spans into a one-batch queue
        for _ in range(4):
            assert _post_metrics(cports.http_url, _metrics_request(16)) == 200
        for noun in ("spans", "metric_points"):
            exporter = harness.EXPORTER_TEMPO if noun == "spans" else EXPORTER_LOST_METRICS
            prom.wait_firing("OTel Collector Export Failed", exporter=exporter, signal=noun, severity="critical")
            prom.wait_firing("OTel Collector Sending Queue Full", exporter=exporter, signal=noun)
    assert coll.alive()


def test_memory_limiter_refusal_fires(procs: list[harness.Proc], tmp_path: Path) -> None:
    """A collector whose memory limit is below what it already uses refuses every export (OTLP 503 /
    UNAVAILABLE), spans and metric points alike; the clients here do not retry for long, so it is lost."""
    cports = harness.CollectorPorts()
    # A few MiB: any collector process is over it from the limiter's first check on.
    doc = harness.collector_config(
        cports, f"{harness.LOOPBACK}:{free_port()}", memory_limit_mib=4, spike_limit_mib=1, check_interval="100ms"
    )
    coll = start(procs, harness.collector_proc_from(tmp_path, cports, doc))
    with running_prometheus(tmp_path / "prom", procs, collector_targets(cports)) as prom:
        body = harness.build_request(11, 0, 4, 1)[0].SerializeToString()
        with grpc.insecure_channel(cports.grpc_target) as ch:
            outcome = harness.grpc_export_retrying(ch, body, time.monotonic() + 2, backoff=0.2)
        assert not outcome.acked and set(outcome.refusals) == {"UNAVAILABLE"}, outcome
        assert _post_metrics(cports.http_url, _metrics_request(4)) == 503
        for noun in ("spans", "metric_points"):
            prom.wait_firing(
                "OTel Collector Refusing Data",
                processor=harness.PROCESSOR_MEMORY_LIMITER,
                signal=noun,
                severity="warning",
            )
    assert coll.alive()


def test_trace_store_discard_fires(procs: list[harness.Proc], tmp_path: Path) -> None:
    """A trace larger than the store's max_bytes_per_trace is discarded (trace_too_large) while the
    collector's export succeeds, as with Tempo 2.4.1: the alert is the only sign of the loss."""
    tports, cports = harness.TempoPorts(), harness.CollectorPorts()
    tdoc = harness.tempo_config(tmp_path / "tempo", tports)
    limit = 2000
    tdoc["overrides"]["defaults"].setdefault("global", {})["max_bytes_per_trace"] = limit
    start(procs, harness.tempo_proc_from(tmp_path / "tempo", tports, tdoc))
    start(procs, harness.collector_proc(tmp_path / "collector", cports, tports.otlp_target))
    with running_prometheus(tmp_path / "prom", procs, {**collector_targets(cports), TEMPO_HTTP: tports.http}) as prom:
        big, (big_id,) = harness.build_request(21, 0, 40, 40)  # one trace of 40 spans, well over the limit
        small, (small_id,) = harness.build_request(22, 0, 2, 2)
        assert big.ByteSize() > limit > small.ByteSize()
        with grpc.insecure_channel(cports.grpc_target) as ch:
            for req in (big, small):
                assert harness.grpc_export_retrying(ch, req.SerializeToString(), time.monotonic() + 10).acked
        prom.wait_firing("Trace Store Discarded Spans", reason=REASON_TRACE_TOO_LARGE, severity="critical")
        with httpx.Client(timeout=5) as client:
            assert harness.wait_until(lambda: len(harness.stored_span_ids(client, tports.api, small_id)) == 2, 10)
            assert harness.stored_span_ids(client, tports.api, big_id) == set()
        sent = harness.scrape(cports.metrics_url)
        assert sent.get(metric_name(EXPORTER_SEND_FAILED, "spans") + "_total") == 0, sent


def test_rule_evaluation_failure_fires(procs: list[harness.Proc], tmp_path: Path) -> None:
    """A recording rule that cannot be evaluated: two input series collapse onto one output label set
    ("vector contains metrics with the same labelset after applying rule labels")."""
    broken = harness.write_yaml(
        tmp_path / "broken.rules.yml",
        {"groups": [{"name": "broken", "interval": FAST, "rules": [
            {"record": "loss:broken", "expr": '{__name__=~"up|scrape_samples_scraped"}'}]}]},
    )  # fmt: skip
    with running_prometheus(tmp_path / "prom", procs, {}, extra_rules=[broken]) as prom:
        alert = prom.wait_firing("Prometheus Rule Evaluation Failing", severity="critical")
        assert alert["rule_group"] == f"{broken};broken"


def test_remote_write_rejection_fires(procs: list[harness.Proc], tmp_path: Path) -> None:
    """The remote-write receiver refuses a sample older than the series' last one (out of order, 400),
    as it does for a late or replayed push of span metrics."""
    with running_prometheus(tmp_path / "prom", procs, {}) as prom:
        labels = [("__name__", "traces_spanmetrics_calls_total"), ("service", "loss")]
        now_ms = int(time.time() * 1000)
        codes = [
            httpx.post(
                prom.url + "/api/v1/write",
                content=remote_write.encode([remote_write.Series(labels, 1.0, t)]),
                headers=remote_write.HEADERS,
            ).status_code
            for t in (now_ms, now_ms - 10_000)
        ]
        assert codes == [204, 400], codes
        prom.wait_firing("Prometheus Rejecting Remote Write", code="400", reason="request_rejected")


def test_scrape_limits_fire(procs: list[harness.Proc], tmp_path: Path) -> None:
    """The collector's self-metrics job with sample_limit: 1, its exporter job with label_limit: 1:
    every scrape of either is dropped whole."""
    cports = harness.CollectorPorts()
    start(procs, harness.collector_proc(tmp_path / "collector", cports, f"{harness.LOOPBACK}:{free_port()}"))
    # The exporter serves series only once metrics went through the pipeline.
    assert _post_metrics(cports.http_url, _metrics_request(2)) == 200
    assert harness.wait_until(
        lambda: "loss_probe" in httpx.get(f"http://{harness.LOOPBACK}:{cports.prometheus}/metrics").text, 10
    )
    roles = _roles()
    jobs = {role: job["job_name"] for job in harness.project().load_yaml(proj.PROMETHEUS_CONFIG)["scrape_configs"]
            for sc in job["static_configs"] for t in sc["targets"] if (role := roles.get(t))}  # fmt: skip
    limits = {jobs[SELF_METRICS]: {"sample_limit": 1}, jobs[EXPORTER_METRICS]: {"label_limit": 1}}
    with running_prometheus(tmp_path / "prom", procs, collector_targets(cports), limits=limits) as prom:
        for limit in ("sample_limit", "label_limits"):
            prom.wait_firing("Prometheus Scrape Limit Hit", limit=limit, severity="critical")


def test_span_metrics_discard_fires(procs: list[harness.Proc], tmp_path: Path) -> None:
    """Spans that ended ten minutes ago (delivered late, as after a long outage) are stored but left
    out of span metrics: outside metrics_ingestion_time_range_slack."""
    tports, cports = harness.TempoPorts(), harness.CollectorPorts()
    tdoc = harness.tempo_config(tmp_path / "tempo", tports, generator=True)
    tdoc["metrics_generator"]["storage"]["remote_write"] = []  # the discard happens before any push
    start(procs, harness.tempo_proc_from(tmp_path / "tempo", tports, tdoc))
    start(procs, harness.collector_proc(tmp_path / "collector", cports, tports.otlp_target))
    with running_prometheus(tmp_path / "prom", procs, {**collector_targets(cports), TEMPO_HTTP: tports.http}) as prom:
        req, (trace_id,) = harness.build_request(31, 0, 3, 3, now_ns=time.time_ns() - 600 * 10**9)
        with grpc.insecure_channel(cports.grpc_target) as ch:
            assert harness.grpc_export_retrying(ch, req.SerializeToString(), time.monotonic() + 10).acked
        prom.wait_firing("Span Metrics Missing Spans", reason=REASON_OUTSIDE_SLACK, severity="warning")
        with httpx.Client(timeout=5) as client:
            assert harness.wait_until(lambda: len(harness.stored_span_ids(client, tports.api, trace_id)) == 3, 10)
