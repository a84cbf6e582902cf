"""Helpers for the dashboard tests: the Prometheus binary fed by remote write, the embedded trace store.

Series are named the way the pipeline names them (contract counters after the collector's naming,
Tempo span metrics with Tempo's labels), so the provisioned dashboard's own queries find them.
"""

from __future__ import annotations

import contextlib
import copy
import struct
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cramjam
import grpc
import httpx
import uvicorn
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from amtp_obs import contract, env
from amtp_obs.accounting import rules as accounting_rules
from amtp_obs.alerting import runtime
from amtp_obs.collector.prometheus_naming import normalize_label
from amtp_obs.dashboard import DashboardSettings
from amtp_obs.net import LOOPBACK, free_port, listen_socket
from amtp_obs.otlp import to_key_values
from amtp_obs.project import ALERTING_FILE, TEMPO_CONFIG, Project
from amtp_obs.tempo import TempoApp, TempoThread
from amtp_obs.tempo.app import TRACE_SERVICE

REPO = Path(__file__).resolve().parents[2]

SERVICES = ("agent-alpha", "agent-beta")
PROMPT_PER_STEP = {"agent-alpha": 10, "agent-beta": 4}
COMPLETION_PER_STEP = {"agent-alpha": 5, "agent-beta": 2}
CACHE_READ_PER_STEP = {"agent-alpha": 3, "agent-beta": 0}
"""Cached input tokens, part of the prompt tokens (a reported 0 for agent-beta)."""
STEPS = 40
GROW_STEPS = 30
"""Token counters grow for this many steps and then stay flat, so "last value" does not depend on
where the query's step grid falls; span-metric counters grow steadily, so their rates are constant."""
STEP_S = 15
FUTURE_STEPS = 480
"""Samples written ahead of the session's start (2 h): the series do not end while tests run."""
CALLS_PER_STEP = 2
P95_MS = (0.064 + 0.95 * (0.128 - 0.064)) * 1000
"""Every synthetic call lies in the (0.064, 0.128] s bucket: histogram_quantile interpolates linearly."""
TRACE_ID = "4c04e2687a2d511e2f017aef7079bb0d"
OTLP_TRACE_EXPORT = f"/{TRACE_SERVICE}/Export"


# -- Prometheus remote-write 1.0 (protobuf prometheus.WriteRequest, snappy block) ------------------


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(payload)) + payload


def _series(labels: dict[str, str], samples: list[tuple[int, float]]) -> bytes:
    body = b"".join(_field(1, _field(1, k.encode()) + _field(2, v.encode())) for k, v in sorted(labels.items()))
    for ts_ms, value in samples:
        sample = b"\x09" + struct.pack("<d", value) + b"\x10" + _varint(ts_ms)
        body += _field(2, sample)
    return body


def remote_write(url: str, series: list[tuple[dict[str, str], list[tuple[int, float]]]]) -> None:
    payload = b"".join(_field(1, _series(labels, samples)) for labels, samples in series)
    resp = httpx.post(
        url + "/api/v1/write",
        content=bytes(cramjam.snappy.compress_raw(payload)),
        headers={
            "Content-Encoding": "snappy",
            "Content-Type": "application/x-protobuf",
            "X-Prometheus-Remote-Write-Version": "0.1.0",
        },
        timeout=10,
    )
    assert resp.status_code == 204, resp.text


def synthetic_series(now_ms: int) -> list[tuple[dict[str, str], list[tuple[int, float]]]]:
    """Token counters (grow, then flat) and span metrics (steady) over the last STEPS * STEP_S seconds.

    The samples go on for FUTURE_STEPS more steps, so a query at "now" sees the same rates whenever
    during the session (and in whatever test order) it runs.
    """
    stamps = [now_ms - (STEPS - 1 - i) * STEP_S * 1000 for i in range(STEPS + FUTURE_STEPS)]
    out = []
    for service in SERVICES:
        attrs = {
            normalize_label(contract.LLM_MODEL): "gpt-4o",
            normalize_label(contract.LLM_PROVIDER): "openai",
            normalize_label(contract.GEN_AI_SYSTEM): "openai",
            "service_name": service,
            "job": "otel-collector",
        }
        prompt, completion = PROMPT_PER_STEP[service], COMPLETION_PER_STEP[service]
        for spec, per in (
            (contract.PROMPT_TOKENS, prompt),
            (contract.COMPLETION_TOKENS, completion),
            (contract.TOTAL_TOKENS, prompt + completion),
            (contract.CACHE_READ_TOKENS, CACHE_READ_PER_STEP[service]),
        ):
            out.append(
                (
                    {"__name__": spec.prometheus_name, **attrs},
                    [(t, float(per * min(i + 1, GROW_STEPS))) for i, t in enumerate(stamps)],
                )
            )
            # What the accounting rules record from that counter (promtool-proven in tests/accounting):
            # each step's growth, the first sample counted whole. Written directly because recording
            # rules only evaluate the present, and these samples are back-dated.
            rollup = {k: v for k, v in attrs.items() if k in accounting_rules.BY}
            out.append(
                (
                    {"__name__": spec.increment_record, "cluster": "zt-amtp", **rollup},
                    [(t, float(per if i < GROW_STEPS else 0)) for i, t in enumerate(stamps)],
                )
            )
        span = {
            "service": service,
            "span_name": contract.SPAN_LLM_COMPLETION,
            "span_kind": "SPAN_KIND_CLIENT",
            "status_code": "STATUS_CODE_OK",
            "job": "tempo",
        }
        out.append(
            (
                {"__name__": contract.SPANMETRICS_CALLS, **span},
                [(t, float(CALLS_PER_STEP * (i + 1))) for i, t in enumerate(stamps)],
            )
        )
        # Every call takes between 0.064 s and 0.128 s: p95 lies in that bucket.
        for le in ("0.032", "0.064", "0.128", "0.256", "+Inf"):
            per_step = 0 if float(le) <= 0.064 else CALLS_PER_STEP
            out.append(
                (
                    {"__name__": contract.SPANMETRICS_LATENCY_BUCKET, **span, "le": le},
                    [(t, float(per_step * (i + 1))) for i, t in enumerate(stamps)],
                )
            )
    return out


def alert_rules(work: Path) -> Path:
    """alerting.yaml's rules, translated, evaluated every second and firing without delay."""
    doc = yaml.safe_load((REPO / ALERTING_FILE).read_text())
    for group in doc["groups"]:
        group["interval"] = "1s"
    copy = work / "alerting.yaml"
    copy.write_text(yaml.safe_dump(doc))
    variables = {
        env.AMTP_SLACK_WEBHOOK_URL: "http://127.0.0.1:9/unused",
        env.AMTP_ALERT_EMAIL_ADDRESSES: "x@example.test",
    }
    files = runtime.prepare(
        Project(REPO, {}), work / "state", alerting_file=copy, variables=variables, for_override="0s"
    )
    return files.rules_file


def alert_titles() -> list[str]:
    doc = yaml.safe_load((REPO / ALERTING_FILE).read_text())
    return [r["title"] for g in doc["groups"] for r in g["rules"]]


# -- the embedded trace store, holding one known LLM trace ----------------------------------------


def trace_store_doc(state: Path, prometheus_url: str | None = None) -> dict[str, Any]:
    """The project's tempo.yaml with only addresses and paths rewritten, as the embedded stack does.

    Without ``prometheus_url`` the metrics generator is off, so the synthetic span metrics the
    panels are checked against stay the only ones.
    """
    doc = copy.deepcopy(Project(REPO, {}).load_yaml(TEMPO_CONFIG))
    doc["server"].update(http_listen_address=LOOPBACK, http_listen_port=0, grpc_listen_port=0)
    doc["distributor"]["receivers"]["otlp"]["protocols"] = {"grpc": {"endpoint": f"{LOOPBACK}:0"}}
    doc["storage"]["trace"]["wal"]["path"] = str(state / "wal")
    doc["storage"]["trace"]["local"]["path"] = str(state / "blocks")
    gen = doc["metrics_generator"]
    gen["storage"]["path"] = str(state / "generator")
    if prometheus_url is None:
        doc["overrides"]["defaults"]["metrics_generator"]["processors"] = []
        prometheus_url = f"http://{LOOPBACK}:9"  # discard port, closed: never written to while off
    for rw in gen["storage"]["remote_write"]:
        rw["url"] = f"{prometheus_url}/api/v1/write"
    return doc


@contextlib.contextmanager
def run_trace_store(state: Path, prometheus_url: str | None = None, **kwargs: Any) -> Iterator[TempoApp]:
    """amtp_obs.tempo on free loopback ports, in a thread (see :func:`trace_store_doc`)."""
    with TempoThread(TempoApp.from_config(trace_store_doc(state, prometheus_url), **kwargs)) as app:
        yield app


def seed_trace(otlp_grpc_endpoint: str, start_ns: int) -> None:
    """TRACE_ID over OTLP gRPC: an llm.completion root of SERVICES[0] with its two children."""
    attrs = {contract.LLM_MODEL: "gpt-4o", contract.LLM_PROVIDER: "openai", contract.LLM_TOKENS_PROMPT: 128}
    req = ExportTraceServiceRequest()
    rs = req.resource_spans.add()
    rs.resource.attributes.extend(to_key_values({"service.name": SERVICES[0]}))
    spans = rs.scope_spans.add(scope={"name": "test"}).spans
    root = bytes.fromhex("6d16f62bf3fcca46")
    for span_id, parent, name, start_ms, end_ms, span_attrs in (
        (root, b"", contract.SPAN_LLM_COMPLETION, 0, 67, attrs),
        (bytes.fromhex("0000000000000b01"), root, contract.SPAN_LLM_INFERENCE, 1, 60, {}),
        (bytes.fromhex("0000000000000b02"), root, contract.SPAN_LLM_RESPONSE_PARSE, 61, 66, {}),
    ):
        span = spans.add(
            trace_id=bytes.fromhex(TRACE_ID),
            span_id=span_id,
            parent_span_id=parent,
            name=name,
            kind=Span.SPAN_KIND_CLIENT if not parent else Span.SPAN_KIND_INTERNAL,
            start_time_unix_nano=start_ns + start_ms * 1_000_000,
            end_time_unix_nano=start_ns + end_ms * 1_000_000,
        )
        span.attributes.extend(to_key_values(span_attrs))
        span.status.code = Status.STATUS_CODE_OK
    with grpc.insecure_channel(otlp_grpc_endpoint) as channel:
        channel.unary_unary(OTLP_TRACE_EXPORT)(req.SerializeToString(), timeout=10)


class RecordingApp:
    """An ASGI app that notes each HTTP request (path and query) before passing it on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.requests: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").decode("latin-1")
            self.requests.append(scope["path"] + (f"?{query}" if query else ""))
        await self.app(scope, receive, send)

    def count(self, path: str, query_part: str = "") -> int:
        """Requests for ``path`` whose query contains ``query_part``."""
        return sum(1 for r in self.requests if r.partition("?")[0] == path and query_part in r.partition("?")[2])


class ServerThread:
    """Runs an ASGI app with uvicorn on a pre-bound free loopback port, in a thread."""

    def __init__(self, app: Any) -> None:
        self.sock = listen_socket(LOOPBACK, free_port())
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on"))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True)

    def __enter__(self) -> ServerThread:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.sock.close()


def final_tokens(per_step: dict[str, int], services: tuple[str, ...] = SERVICES) -> int:
    return sum(per_step[s] * GROW_STEPS for s in services)


def make_settings(prom_url: str, tempo_url: str, dashboards_dir: Path | None = None) -> DashboardSettings:
    settings = DashboardSettings.from_project(Project(REPO, {}), prometheus_url=prom_url, tempo_url=tempo_url)
    if dashboards_dir is not None:
        settings.dashboards_dir = dashboards_dir
    return settings
