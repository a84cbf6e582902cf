"""The embedded trace store as one service: OTLP in, Tempo's HTTP API out, metrics generator on the side.

Differences from Tempo 2.4.1, on purpose: traces are searchable as soon as they are acknowledged;
``/ready`` turns 200 once the WAL is replayed (no 15 s ring wait); an empty listen address or a
host-less endpoint binds 127.0.0.1, not every interface (the embedded stack's one rule,
:func:`amtp_obs.net.split_endpoint`); the server gRPC port (9095) also accepts OTLP trace exports.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from pathlib import Path
from typing import Any

import grpc
import yaml
from google.protobuf import json_format
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from amtp_obs.httpserver import HttpServer, StartError
from amtp_obs.net import LOOPBACK, client_host, join_host_port, split_endpoint
from amtp_obs.tempo.api import build_api
from amtp_obs.tempo.config import ConfigError, TempoConfig, load_config
from amtp_obs.tempo.generator import MetricsGenerator
from amtp_obs.tempo.ingest import InvalidRequest, parse_export
from amtp_obs.tempo.metrics import (
    PER_PUSH_REASONS,
    REASON_INTERNAL_ERROR,
    REASON_LIVE_TRACES_EXCEEDED,
    REASON_RATE_LIMITED,
    REASON_TRACE_TOO_LARGE,
    TENANT,
    TempoMetrics,
)
from amtp_obs.tempo.store import StoreClosed, TraceStore

log = logging.getLogger("amtp_obs.tempo")

TRACE_SERVICE = "opentelemetry.proto.collector.trace.v1.TraceService"
STORAGE_PROBE_PERIOD = 1.0
"""Seconds between checks of a WAL that could not be written (disk full) while no export arrives."""


class RateLimiter:
    """Token bucket in bytes: ``rate`` per second, up to ``burst``; 0 disables it."""

    def __init__(self, rate: float, burst: float) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.stamp = burst, time.monotonic()

    def allow(self, n: int) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if n > self.tokens:
            return False
        self.tokens -= n
        return True


class LiveTraces:
    """Trace ids seen within ``trace_idle_period``, oldest first, for ``max_traces_per_user``, with the
    bytes each has received meanwhile, for ``max_bytes_per_trace``."""

    def __init__(self, idle: float, limit: int) -> None:
        self.idle, self.limit = idle, limit
        self.last: dict[bytes, float] = {}
        self.sizes: dict[bytes, int] = {}

    def purge(self, now: float | None = None) -> None:
        cutoff = (time.monotonic() if now is None else now) - self.idle
        old = []
        for tid, ts in self.last.items():
            if ts > cutoff:
                break
            old.append(tid)
        for tid in old:
            del self.last[tid]
            self.sizes.pop(tid, None)

    def push(self, tid: bytes, size: int, max_bytes: int, now: float) -> str | None:
        """One trace of an export, taken as Tempo 2.4.1's ingester takes it (modules/ingester/instance.go
        ``PushBytes``/``push``): refused while the live traces are at the limit, even a trace that is
        already live (``limiter.AssertMaxTracesPerUser`` compares the live count, not the new ones), or
        when its bytes so far plus these would pass ``max_bytes``. None when taken, else the discard reason.

        Tempo forgets a trace's byte count when its head block is cut; here when the trace goes idle.
        """
        if self.limit and len(self.last) >= self.limit:
            self.purge(now)
            if len(self.last) >= self.limit:
                return REASON_LIVE_TRACES_EXCEEDED
        if max_bytes and self.sizes.get(tid, 0) + size > max_bytes:
            return REASON_TRACE_TOO_LARGE
        self.last.pop(tid, None)
        self.last[tid] = now
        if max_bytes:
            self.sizes[tid] = self.sizes.get(tid, 0) + size
        return None


def read_config_file(path: Path | str) -> Any:
    """The YAML document of a tempo.yaml; unreadable or invalid YAML is a :class:`ConfigError`."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror or exc}"]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None


class TempoApp:
    """One embedded Tempo: ``await start()``, talk to ``http_url`` and ``otlp_grpc_endpoint``, then stop it.

    Construct with :meth:`from_config` (a loaded YAML document) or :meth:`from_file`.
    """

    def __init__(self, cfg: TempoConfig, *, collection_interval: float | None = None) -> None:
        self.cfg = cfg
        self.metrics = TempoMetrics()
        trace = cfg.storage.trace
        assert trace.local is not None
        self.store = TraceStore(
            Path(trace.wal.path), Path(trace.local.path) / TENANT, self.metrics, cfg.ingester.max_block_bytes
        )
        ing = cfg.overrides.defaults.ingestion
        self.limiter = RateLimiter(ing.rate_limit_bytes, ing.burst_size_bytes)
        self.live = LiveTraces(cfg.ingester.trace_idle_period, ing.max_traces_per_user)
        self.max_bytes_per_trace = cfg.overrides.defaults.global_.max_bytes_per_trace
        self.generator = MetricsGenerator(cfg, self.metrics, interval=collection_interval)
        self.ready = False
        self.not_ready_reason = "starting"
        self.http_host, self.http_port = "", 0
        self.grpc_port = 0
        self.otlp_grpc_host, self.otlp_grpc_port = "", 0
        self.otlp_http_port: int | None = None
        self._servers: list[HttpServer] = []
        self._grpc: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._started = False
        self._stopped = asyncio.Event()

    # -- construction ----------------------------------------------------------------------

    @classmethod
    def from_config(cls, doc: Any, **kwargs: Any) -> TempoApp:
        """From a loaded tempo.yaml document; raises ConfigError naming each bad key."""
        return cls(load_config(doc), **kwargs)

    @classmethod
    def from_file(cls, path: Path | str, **kwargs: Any) -> TempoApp:
        return cls.from_config(read_config_file(path), **kwargs)

    # -- addresses -------------------------------------------------------------------------

    @property
    def http_url(self) -> str:
        return f"http://{join_host_port(client_host(self.http_host), self.http_port)}"

    @property
    def otlp_grpc_endpoint(self) -> str:
        return join_host_port(client_host(self.otlp_grpc_host), self.otlp_grpc_port)

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self) -> None:
        """Listen on HTTP first (so /ready can say why it is not ready), replay, then take traffic."""
        if self._started:
            raise RuntimeError("already started")
        self._started = True
        try:
            await self._start()
        except BaseException:
            await self.shutdown()
            raise

    async def _start(self) -> None:
        srv = self.cfg.server
        endpoint = join_host_port(srv.http_listen_address, srv.http_listen_port)
        self.http_host, self.http_port = await self._serve_http(build_api(self), endpoint, "http")
        for path in (self.cfg.storage.trace.wal.path, self.store.blocks_dir):
            try:
                Path(path).mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StartError(f"cannot create {path}: {exc.strerror or exc}") from None
        if self.generator.enabled:
            gen_dir = Path(self.cfg.metrics_generator.storage.path) / TENANT
            try:
                gen_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise StartError(f"cannot create {gen_dir}: {exc.strerror or exc}") from None
        self.not_ready_reason = "replaying the WAL"
        await self.store.open()
        await self._start_grpc()
        otlp = self.cfg.distributor.receivers.otlp
        if otlp is not None and otlp.protocols.http is not None:
            _, self.otlp_http_port = await self._serve_http(
                self._otlp_http_app(), otlp.protocols.http.endpoint, "otlp http", 4318
            )
        for other in ("jaeger", "zipkin", "opencensus", "kafka"):
            if getattr(self.cfg.distributor.receivers, other) is not None:
                log.warning("receiver %s is configured but the embedded trace store only runs otlp", other)
        self._tasks.append(asyncio.create_task(self._flush_loop(), name="tempo-flush"))
        self._tasks.append(asyncio.create_task(self._retention_loop(), name="tempo-retention"))
        self._tasks.append(asyncio.create_task(self._storage_probe_loop(), name="tempo-storage-probe"))
        self.generator.start()
        self.ready = True
        self.not_ready_reason = ""
        log.info(
            "tempo ready: http=%s otlp_grpc=%s grpc=%d generator=%s",
            self.http_url,
            self.otlp_grpc_endpoint,
            self.grpc_port,
            sorted(self.generator.processors) or "off",
        )

    async def _serve_http(self, app: Starlette, endpoint: str, where: str, default_port: int = 0) -> tuple[str, int]:
        server = HttpServer(app, endpoint, f"tempo {where}", default_port)
        self._servers.append(server)
        return await server.start()

    async def _start_grpc(self) -> None:
        otlp = self.cfg.distributor.receivers.otlp
        max_recv = self.cfg.server.grpc_server_max_recv_msg_size
        endpoints: list[tuple[str, int, str]] = []
        if otlp is not None and otlp.protocols.grpc is not None:
            host, port = split_endpoint(otlp.protocols.grpc.endpoint, 4317)  # validated by load_config
            endpoints.append((host, port, "otlp"))
            max_recv = max(max_recv, otlp.protocols.grpc.max_recv_msg_size_mib * 1024 * 1024)
        srv = self.cfg.server
        endpoints.append((srv.grpc_listen_address or LOOPBACK, srv.grpc_listen_port, "server"))
        server = grpc.aio.server(
            options=[
                ("grpc.so_reuseport", 0),
                ("grpc.max_receive_message_length", max_recv),
            ]
        )
        handler = grpc.method_handlers_generic_handler(
            TRACE_SERVICE,
            {"Export": grpc.unary_unary_rpc_method_handler(self._grpc_export)},
        )
        server.add_generic_rpc_handlers((handler,))
        for host, port, role in endpoints:
            addr = join_host_port(host, port)
            try:
                bound = server.add_insecure_port(addr)
            except RuntimeError as exc:
                raise StartError(f"cannot listen on {addr} ({role} gRPC): {exc}") from None
            if not bound:
                raise StartError(f"cannot listen on {addr} ({role} gRPC): address in use or unavailable")
            if role == "otlp":
                self.otlp_grpc_host, self.otlp_grpc_port = host, bound
            else:
                self.grpc_port = bound
        if not self.otlp_grpc_port:
            self.otlp_grpc_host, self.otlp_grpc_port = srv.grpc_listen_address or LOOPBACK, self.grpc_port
        await server.start()
        self._grpc = server

    def _otlp_http_app(self) -> Starlette:
        async def traces(request: Request) -> Response:
            body = await request.body()
            ctype = request.headers.get("content-type", "").split(";")[0].strip()
            if ctype == "application/json":
                try:
                    body = json_format.Parse(body, ExportTraceServiceRequest()).SerializeToString()
                except json_format.ParseError as exc:
                    return PlainTextResponse(f"cannot decode JSON export: {exc}", status_code=400)
            elif ctype not in ("application/x-protobuf", "application/protobuf"):
                return PlainTextResponse(f"unsupported content type {ctype!r}", status_code=415)
            code, msg = await self.ingest(body)
            if code is None:
                return Response(b"", media_type="application/x-protobuf")
            status = {grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.RESOURCE_EXHAUSTED: 429}.get(code, 503)
            return PlainTextResponse(msg, status_code=status)

        return Starlette(routes=[Route("/v1/traces", traces, methods=["POST"])])

    # -- ingest ----------------------------------------------------------------------------

    async def _grpc_export(self, raw: bytes, context: grpc.aio.ServicerContext) -> bytes:
        code, msg = await self.ingest(raw)
        if code is not None:
            await context.abort(code, msg)
        return b""  # an empty ExportTraceServiceResponse

    def _discard(self, reason: str, spans: int) -> None:
        self.metrics.discarded_spans.labels(reason, TENANT).inc(spans)
        self.metrics.push_requests.labels(TENANT, reason).inc()

    async def ingest(self, raw: bytes) -> tuple[grpc.StatusCode | None, str]:
        """Accept one serialized export; (None, "") once durable, else the gRPC status and message."""
        if not self.ready:
            return grpc.StatusCode.UNAVAILABLE, f"trace store not ready: {self.not_ready_reason}"
        try:
            parsed = parse_export(raw)
        except InvalidRequest as exc:
            # Tempo's receiver fails to decode it before the distributor: nothing counts as discarded.
            self.metrics.push_requests.labels(TENANT, "invalid").inc()
            return grpc.StatusCode.INVALID_ARGUMENT, str(exc)
        if not parsed.spans:
            return None, ""
        if not self.limiter.allow(len(raw)):
            self._discard(REASON_RATE_LIMITED, parsed.spans)
            return grpc.StatusCode.RESOURCE_EXHAUSTED, (
                f"RATE_LIMITED: ingestion rate limit ({self.limiter.rate:.0f} bytes) exceeded while adding "
                f"{len(raw)} bytes for user {TENANT}"
            )
        # Trace by trace, as the ingesters answer Tempo 2.4.1's distributor: a trace over a limit is
        # discarded and counted, the others are stored, and the push succeeds
        # (modules/distributor/distributor.go sendToIngestersViaBytes, countDiscaredSpans).
        now = time.monotonic()
        discarded = dict.fromkeys(PER_PUSH_REASONS, 0)
        kept: list[bytes] = []
        for tid, delta in parsed.traces.items():
            reason = self.live.push(tid, len(delta.data), self.max_bytes_per_trace, now)
            if reason is None:
                kept.append(delta.data)
            else:
                discarded[reason] += delta.spans
        stored, body = parsed, raw
        if any(discarded.values()):
            # Each trace's fragment is itself an export of its resource spans: the kept ones concatenated.
            body = b"".join(kept)
            stored = parse_export(body)
        try:
            if stored.spans:
                await self.store.commit(body, stored)
        except StoreClosed as exc:
            return grpc.StatusCode.UNAVAILABLE, str(exc)
        except OSError as exc:
            # Tempo's ingester failing the push is an internal error to the distributor.
            self._discard(REASON_INTERNAL_ERROR, parsed.spans)
            return grpc.StatusCode.UNAVAILABLE, f"cannot write the WAL: {exc.strerror or exc}"
        m = self.metrics
        m.spans_received.labels(TENANT).inc(parsed.spans)
        m.bytes_received.labels(TENANT).inc(len(raw))
        m.push_requests.labels(TENANT, "success").inc()
        for reason, n in discarded.items():
            m.discarded_spans.labels(reason, TENANT).inc(n)
        m.live_traces.labels(TENANT).set(len(self.live.last))
        if self.generator.enabled:
            try:
                self.generator.consume(parsed.request)
            except Exception:
                log.exception("metrics generator failed on an export")
        return None, ""

    # -- background work -------------------------------------------------------------------

    async def _flush_loop(self) -> None:
        ing = self.cfg.ingester
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.store.head_full.wait(), ing.flush_check_period)
            self.store.head_full.clear()
            try:
                self.live.purge()
                self.metrics.live_traces.labels(TENANT).set(len(self.live.last))
                if (
                    self.store.head_age() >= ing.max_block_duration
                    or self.store.head_bytes() >= self.store.max_head_bytes
                ):
                    await self.store.rotate()
                if self.store.sealed:
                    await self.store.flush_sealed()
            except Exception:
                log.exception("flush cycle failed")

    async def _storage_probe_loop(self) -> None:
        """While the disk refuses writes, check every second whether it takes them again (for /ready)."""
        while True:
            await asyncio.sleep(STORAGE_PROBE_PERIOD)
            try:
                await self.store.probe_storage()
            except Exception:
                log.exception("storage probe failed")

    async def _retention_loop(self) -> None:
        while True:
            await asyncio.sleep(self.cfg.compactor.compaction.compaction_cycle)
            try:
                self.store.enforce_retention(self.cfg.block_retention)
            except Exception:
                log.exception("retention cycle failed")

    async def shutdown(self) -> None:
        """Stop taking traffic, finish in-flight commits, push metrics one last time, close files."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        self.ready = False
        self.not_ready_reason = "shutting down"
        if self._grpc is not None:
            await self._grpc.stop(grace=2)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.generator.enabled and self.store.head is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.generator.push_once(), timeout=2)
        await self.generator.close()
        await self.store.close()
        for server in self._servers:
            await server.stop()

    async def serve_forever(self) -> None:
        await self._stopped.wait()


class TempoThread:
    """A TempoApp on its own event loop in a daemon thread: for synchronous tests and tools."""

    def __init__(self, app: TempoApp) -> None:
        self.app = app
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="tempo", daemon=True)

    def start(self, timeout: float = 30.0) -> TempoApp:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.app.start(), self.loop).result(timeout)
        return self.app

    def call(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self, timeout: float = 30.0) -> None:
        try:
            self.call(self.app.shutdown(), timeout)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(timeout)
            self.loop.close()

    def __enter__(self) -> TempoApp:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
