"""Run the embedded collector and trace store as real processes on free loopback ports.

Shared by the benchmarks (bench/run.py) and the fault tests (tests/faults/). The configs start from
the project's own ``otel-collector-config.yaml`` and ``tempo.yaml`` (read through ``Project``) with
only addresses, paths and the knobs a scenario needs changed, so the components parse what
production runs.
"""

from __future__ import annotations

import contextlib
import copy
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, InstrumentationScope, KeyValue
from opentelemetry.proto.resource.v1.resource_pb2 import Resource
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, ScopeSpans, Span
from prometheus_client.parser import text_string_to_metric_families

from amtp_obs import contract
from amtp_obs.net import free_port
from amtp_obs.project import COLLECTOR_CONFIG, TEMPO_CONFIG, Project
from amtp_obs.testing.poll import eventually

LOOPBACK = "127.0.0.1"
BENCH_SERVICE = "amtp-bench"

# Component ids as they appear in the project's collector config.
RECEIVER_OTLP = "otlp"
PROCESSOR_MEMORY_LIMITER = "memory_limiter"
EXPORTER_TEMPO = "otlp/tempo"
EXPORTER_DEBUG = "debug"
EXPORTER_PROMETHEUS = "prometheus"


def project() -> Project:
    return Project.discover(Path(__file__).resolve().parent)


# ---------------------------------------------------------------------------------------------
# Configs
# ---------------------------------------------------------------------------------------------


@dataclass
class TempoPorts:
    http: int = field(default_factory=free_port)
    grpc: int = field(default_factory=free_port)
    otlp_grpc: int = field(default_factory=free_port)

    @property
    def api(self) -> str:
        return f"http://{LOOPBACK}:{self.http}"

    @property
    def otlp_target(self) -> str:
        """host:port of the store's OTLP gRPC receiver, where the collector exports."""
        return f"{LOOPBACK}:{self.otlp_grpc}"


UNLIMITED_BYTES = 10**12
"""Ingestion rate/burst for capacity runs: far above anything two cores can push."""


def tempo_config(
    root: Path,
    ports: TempoPorts,
    *,
    generator: bool = False,
    ingestion_limits: bool = True,
    ingester: dict[str, Any] | None = None,
    data: Path | None = None,
) -> dict[str, Any]:
    """tempo.yaml on free ports with storage under ``data`` (default ``root``); the metrics generator
    off unless asked (it would remote-write to a Prometheus that these scenarios do not run).
    ``ingestion_limits=False`` lifts the configured byte rate/burst and live-traces limits, to measure
    what the code can do rather than the design's 15 MB/s per-tenant limit; ``ingester`` overrides
    keys of that section (block cut timing)."""
    doc = copy.deepcopy(project().load_yaml(TEMPO_CONFIG))
    data = data or root
    if ingester:
        doc.setdefault("ingester", {}).update(ingester)
    if not ingestion_limits:
        ingestion = doc.setdefault("overrides", {}).setdefault("defaults", {}).setdefault("ingestion", {})
        # 0 turns the live-traces limit off, as in Tempo: past it the store would discard whole traces.
        ingestion.update(rate_limit_bytes=UNLIMITED_BYTES, burst_size_bytes=UNLIMITED_BYTES, max_traces_per_user=0)
    doc["server"].update(
        http_listen_port=ports.http,
        grpc_listen_port=ports.grpc,
        http_listen_address=LOOPBACK,
        grpc_listen_address=LOOPBACK,
        log_level="warn",
    )
    doc["distributor"]["receivers"]["otlp"]["protocols"] = {"grpc": {"endpoint": ports.otlp_target}}
    storage = doc["storage"]["trace"]
    storage["wal"]["path"] = str(data / "wal")
    storage["local"]["path"] = str(data / "blocks")
    gen = doc.get("metrics_generator") or {}
    if "storage" in gen:
        gen["storage"]["path"] = str(data / "generator")
    if not generator:
        doc.setdefault("overrides", {}).setdefault("defaults", {}).setdefault("metrics_generator", {})[
            "processors"
        ] = []
        if "storage" in gen:
            gen["storage"]["remote_write"] = []
    return doc


@dataclass
class CollectorPorts:
    grpc: int = field(default_factory=free_port)
    http: int = field(default_factory=free_port)
    self_metrics: int = field(default_factory=free_port)
    health: int = field(default_factory=free_port)
    prometheus: int = field(default_factory=free_port)

    @property
    def http_url(self) -> str:
        return f"http://{LOOPBACK}:{self.http}"

    @property
    def grpc_target(self) -> str:
        return f"{LOOPBACK}:{self.grpc}"

    @property
    def metrics_url(self) -> str:
        return f"http://{LOOPBACK}:{self.self_metrics}/metrics"

    @property
    def health_url(self) -> str:
        return f"http://{LOOPBACK}:{self.health}/"


def collector_config(
    ports: CollectorPorts,
    tempo_otlp: str,
    *,
    memory_limit_mib: int | None = None,
    spike_limit_mib: int | None = None,
    check_interval: str | None = None,
    retry: dict[str, Any] | None = None,
    queue: dict[str, Any] | None = None,
    debug_exporter: bool = False,
    log_level: str = "warn",
) -> dict[str, Any]:
    """The project's collector config on free ports, exporting to ``tempo_otlp`` (host:port).

    pprof/zpages are left out (nothing here reads them); the ``debug`` exporter is dropped unless
    asked, since printing every batch would measure the terminal. Logs are at ``warn`` unless a
    test reads the info lines (retries).
    """
    doc = copy.deepcopy(project().load_yaml(COLLECTOR_CONFIG))
    ext = doc["extensions"]
    doc["extensions"] = {"health_check": {**ext["health_check"], "endpoint": f"{LOOPBACK}:{ports.health}"}}
    doc["service"]["extensions"] = ["health_check"]
    protocols = doc["receivers"][RECEIVER_OTLP]["protocols"]
    protocols["grpc"]["endpoint"] = ports.grpc_target
    protocols["http"]["endpoint"] = f"{LOOPBACK}:{ports.http}"
    exp = doc["exporters"]
    exp[EXPORTER_TEMPO]["endpoint"] = tempo_otlp
    if retry is not None:
        exp[EXPORTER_TEMPO]["retry_on_failure"].update(retry)
    if queue is not None:
        exp[EXPORTER_TEMPO]["sending_queue"].update(queue)
    exp[EXPORTER_PROMETHEUS]["endpoint"] = f"{LOOPBACK}:{ports.prometheus}"
    limiter = doc["processors"][PROCESSOR_MEMORY_LIMITER]
    if memory_limit_mib is not None:
        limiter["limit_mib"] = memory_limit_mib
    if spike_limit_mib is not None:
        limiter["spike_limit_mib"] = spike_limit_mib
    if check_interval is not None:
        limiter["check_interval"] = check_interval
    if not debug_exporter:
        exp.pop(EXPORTER_DEBUG, None)
        for pipeline in doc["service"]["pipelines"].values():
            pipeline["exporters"] = [e for e in pipeline["exporters"] if e != EXPORTER_DEBUG]
    doc["service"]["telemetry"]["metrics"]["address"] = f"{LOOPBACK}:{ports.self_metrics}"
    doc["service"]["telemetry"]["logs"]["level"] = log_level
    return doc


def write_yaml(path: Path, doc: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# ---------------------------------------------------------------------------------------------
# Processes
# ---------------------------------------------------------------------------------------------


class ProcessFailed(RuntimeError):
    """A component exited or never became ready; the message carries its log tail."""


@dataclass
class Proc:
    """One component process (its own process group, so kill hits only it and its children)."""

    name: str
    argv: list[str]
    log: Path
    ready_url: str
    env: dict[str, str] | None = None
    popen: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        fh = self.log.open("ab")
        environ = {**os.environ, **(self.env or {})}
        self.popen = subprocess.Popen(
            self.argv, stdout=fh, stderr=subprocess.STDOUT, env=environ, start_new_session=True
        )
        fh.close()
        self.wait_ready(timeout)
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                code = self.popen.returncode if self.popen else None
                raise ProcessFailed(f"{self.name} exited with {code}:\n{self.log_tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.ready_url, timeout=1.0).status_code == 200:
                    return
            time.sleep(0.1)
        raise ProcessFailed(f"{self.name} not ready at {self.ready_url} after {timeout:.0f}s:\n{self.log_tail()}")

    def rss_mib(self) -> float | None:
        """Resident set size from /proc (the process and nothing else)."""
        if not self.alive():
            return None
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def cpu_seconds(self) -> float | None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM (graceful: queues drained), then SIGKILL if it lingers."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        """SIGKILL the process group: no chance to flush anything."""
        if self.popen is None or self.popen.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, signal.SIGKILL)
        self.popen.wait(10)


def tempo_proc(root: Path, ports: TempoPorts, **kwargs: Any) -> Proc:
    """The trace store with its config and log under ``root``; ``kwargs`` as :func:`tempo_config`."""
    return tempo_proc_from(root, ports, tempo_config(root, ports, **kwargs))


def tempo_proc_from(root: Path, ports: TempoPorts, doc: dict[str, Any]) -> Proc:
    """The trace store on a config a scenario has edited further (a doc from :func:`tempo_config`)."""
    cfg = write_yaml(root / "tempo.yaml", doc)
    return Proc(
        "tempo",
        [sys.executable, "-m", "amtp_obs.tempo", "--config", str(cfg)],
        root / "tempo.log",
        f"{ports.api}/ready",
    )


def collector_proc(root: Path, ports: CollectorPorts, tempo_otlp: str, **kwargs: Any) -> Proc:
    return collector_proc_from(root, ports, collector_config(ports, tempo_otlp, **kwargs))


def collector_proc_from(root: Path, ports: CollectorPorts, doc: dict[str, Any]) -> Proc:
    """The collector on a config a scenario has edited further (a doc from :func:`collector_config`)."""
    cfg = write_yaml(root / "collector.yaml", doc)
    return Proc(
        "collector",
        [sys.executable, "-m", "amtp_obs.collector", "--config", str(cfg)],
        root / "collector.log",
        ports.health_url,
    )


@contextlib.contextmanager
def running(*procs: Proc, timeout: float = 30.0) -> Iterator[tuple[Proc, ...]]:
    started: list[Proc] = []
    try:
        for p in procs:
            started.append(p.start(timeout))
        yield procs
    finally:
        for p in reversed(started):
            p.stop()


# ---------------------------------------------------------------------------------------------
# Load: pre-encoded OTLP requests
# ---------------------------------------------------------------------------------------------


def _kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


LLM_ATTRIBUTES: dict[str, Any] = {
    contract.LLM_PROVIDER: contract.PROVIDER_OPENAI,
    contract.LLM_MODEL: "gpt-4o",
    contract.LLM_REQUEST_TYPE: contract.REQUEST_TYPE_CHAT,
    contract.LLM_TOKENS_PROMPT: 128,
    contract.LLM_TOKENS_COMPLETION: 64,
    contract.LLM_TOKENS_TOTAL: 192,
    contract.GEN_AI_SYSTEM: contract.PROVIDER_OPENAI,
    contract.GEN_AI_REQUEST_MODEL: "gpt-4o",
}


def trace_id_for(seed: int, index: int) -> bytes:
    """Distinct, reproducible, never-zero trace ids: 8 bytes of seed, 8 of index."""
    return (seed & 0xFFFFFFFFFFFFFFFF | 1 << 63).to_bytes(8, "big") + (index + 1).to_bytes(8, "big")


def build_request(
    seed: int,
    first_trace: int,
    n_spans: int,
    spans_per_trace: int = 1,
    *,
    service: str = BENCH_SERVICE,
    now_ns: int | None = None,
) -> tuple[ExportTraceServiceRequest, list[bytes]]:
    """One export of ``n_spans`` contract spans (``llm.completion`` roots, ``llm.inference`` children)."""
    now = now_ns or time.time_ns()
    attrs = [_kv(k, v) for k, v in LLM_ATTRIBUTES.items()]
    spans: list[Span] = []
    trace_ids: list[bytes] = []
    for i in range(n_spans):
        t_index, pos = divmod(i, spans_per_trace)
        tid = trace_id_for(seed, first_trace + t_index)
        if pos == 0:
            trace_ids.append(tid)
        span_id = ((first_trace + t_index) * 64 + pos + 1).to_bytes(8, "big")
        parent = b"" if pos == 0 else ((first_trace + t_index) * 64 + 1).to_bytes(8, "big")
        spans.append(
            Span(
                trace_id=tid,
                span_id=span_id,
                parent_span_id=parent,
                name=contract.SPAN_LLM_COMPLETION if pos == 0 else contract.SPAN_LLM_INFERENCE,
                kind=Span.SPAN_KIND_CLIENT,
                start_time_unix_nano=now - 5_000_000,
                end_time_unix_nano=now,
                attributes=attrs,
            )
        )
    req = ExportTraceServiceRequest(
        resource_spans=[
            ResourceSpans(
                resource=Resource(attributes=[_kv("service.name", service)]),
                scope_spans=[ScopeSpans(scope=InstrumentationScope(name=contract.SCOPE_NAME), spans=spans)],
            )
        ]
    )
    return req, trace_ids


# ---------------------------------------------------------------------------------------------
# Reading counters
# ---------------------------------------------------------------------------------------------


def scrape(url: str, timeout: float = 5.0) -> dict[str, float]:
    """Prometheus text exposition -> {sample name: value summed over label sets}."""
    text = httpx.get(url, timeout=timeout).text
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            if s.name.endswith("_created"):
                continue  # creation timestamps, not counts
            out[s.name] = out.get(s.name, 0.0) + float(s.value)
    return out


def wait_until(predicate: Callable[[], bool], timeout: float, interval: float = 0.1) -> bool:
    """True once ``predicate`` holds; its errors (a process still starting) count as not yet."""
    return bool(eventually(predicate, timeout, interval, ignore=(Exception,)))


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    k = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[k]


# ---------------------------------------------------------------------------------------------
# Reading traces back and sending with retries
# ---------------------------------------------------------------------------------------------

GRPC_EXPORT = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def stored_span_ids(client: httpx.Client, api: str, trace_id: bytes) -> set[str]:
    """Span ids (base64, as Tempo's JSON gives them) stored for a trace; empty when it is unknown."""
    r = client.get(f"{api}/api/traces/{trace_id.hex()}")
    if r.status_code == 404:
        return set()
    r.raise_for_status()
    out: set[str] = set()
    for batch in r.json().get("batches", []):
        for scope in batch.get("scopeSpans", []) or batch.get("instrumentationLibrarySpans", []):
            out.update(s["spanId"] for s in scope.get("spans", []))
    return out


def expected_span_ids(req: ExportTraceServiceRequest) -> dict[bytes, set[str]]:
    """trace id -> base64 span ids a request carries, to compare with :func:`stored_span_ids`."""
    import base64

    out: dict[bytes, set[str]] = {}
    for rs in req.resource_spans:
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.setdefault(s.trace_id, set()).add(base64.b64encode(s.span_id).decode())
    return out


@dataclass
class SendOutcome:
    attempts: int = 0
    refusals: list[str] = field(default_factory=list)
    acked: bool = False


def grpc_export_retrying(
    channel: Any,
    body: bytes,
    deadline: float,
    backoff: float = 0.1,
    on_refusal: Callable[[str], None] | None = None,
) -> SendOutcome:
    """Export raw bytes until acknowledged, retrying only what OTLP says is retryable, until ``deadline``."""
    import grpc

    export = channel.unary_unary(GRPC_EXPORT, request_serializer=None, response_deserializer=None)
    out = SendOutcome()
    while time.monotonic() < deadline:
        out.attempts += 1
        try:
            export(body, timeout=10.0)
            out.acked = True
            return out
        except grpc.RpcError as exc:
            code = exc.code()
            if code not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED):
                raise
            out.refusals.append(code.name)
            if on_refusal is not None:
                on_refusal(code.name)
            time.sleep(backoff)
    return out


def http_export_retrying(
    client: httpx.Client,
    url: str,
    body: bytes,
    deadline: float,
    backoff: float = 0.1,
    on_refusal: Callable[[str], None] | None = None,
) -> SendOutcome:
    """POST an OTLP/HTTP protobuf body until 2xx, retrying 429/502/503/504 as the OTLP spec says."""
    out = SendOutcome()
    while time.monotonic() < deadline:
        out.attempts += 1
        r = client.post(url, content=body, headers={"content-type": "application/x-protobuf"})
        if 200 <= r.status_code < 300:
            out.acked = True
            return out
        if r.status_code not in (429, 502, 503, 504):
            raise AssertionError(f"non-retryable answer {r.status_code}: {r.text[:200]}")
        out.refusals.append(str(r.status_code))
        if on_refusal is not None:
            on_refusal(str(r.status_code))
        time.sleep(backoff)
    return out
