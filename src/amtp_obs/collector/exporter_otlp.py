"""The ``otlp`` exporter: OTLP/gRPC client with exporterhelper's sending queue and retry.

Retry follows ``configretry`` (cenkalti/backoff): the next delay is the current interval
randomised by +-``randomization_factor``, the interval grows by ``multiplier`` up to
``max_interval``, and retrying stops when the next attempt would start after
``max_elapsed_time`` (0 = never stop). Retryable gRPC codes are those the 0.100.0 exporter
retries; anything else is permanent and the data is dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from typing import Any, Self

import grpc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from pydantic import Field, model_validator

from amtp_obs.collector import telemetry as tm
from amtp_obs.collector.component import (
    EXPORTER,
    Component,
    ComponentID,
    ConsumerError,
    Factory,
    Host,
    PermanentError,
    StrictModel,
)
from amtp_obs.collector.config import Duration, QueueConfig, RetryConfig, TLSClientSetting
from amtp_obs.collector.signals import LOGS, METRICS, SIGNALS, TRACES, Signal

log = logging.getLogger(__name__)

RETRYABLE = frozenset(
    {
        grpc.StatusCode.CANCELLED,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.ABORTED,
        grpc.StatusCode.OUT_OF_RANGE,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
    }
)
"""0.100.0 retries RESOURCE_EXHAUSTED only with a RetryInfo detail; we retry it always."""


class OTLPExporterConfig(StrictModel):
    endpoint: str = ""
    compression: str = "gzip"
    tls: TLSClientSetting = Field(default_factory=TLSClientSetting)
    headers: dict[str, str] = Field(default_factory=dict)
    keepalive: dict[str, Any] | None = None
    read_buffer_size: int = 0
    write_buffer_size: int = 0
    wait_for_ready: bool = False
    balancer_name: str = ""
    authority: str = ""
    auth: dict[str, Any] | None = None
    timeout: Duration = 5.0
    sending_queue: QueueConfig = Field(default_factory=QueueConfig)
    retry_on_failure: RetryConfig = Field(default_factory=RetryConfig)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.endpoint:
            raise ValueError('requires a non-empty "endpoint"')
        return self


def _unsupported(cfg: OTLPExporterConfig) -> list[str]:
    out = []
    t = cfg.tls
    if any((t.ca_file, t.ca_pem, t.cert_file, t.cert_pem, t.key_file, t.key_pem)):
        out.append("tls certificates")
    if cfg.auth is not None:
        out.append("auth")
    if cfg.sending_queue.storage:
        out.append("sending_queue.storage")
    if cfg.compression not in ("", "none", "gzip"):
        out.append(f"compression {cfg.compression!r}")
    return out


def backoff_delays(cfg: RetryConfig, rng: random.Random | None = None) -> Any:
    """Yield successive randomised retry delays (seconds); ``max_elapsed_time`` is checked by the caller."""
    rnd = rng or random.Random()
    interval = cfg.initial_interval
    while True:
        delta = cfg.randomization_factor * interval
        yield interval - delta + rnd.random() * (2 * delta)
        interval = min(interval * cfg.multiplier, cfg.max_interval) if cfg.max_interval else interval * cfg.multiplier


class OTLPExporter(Component):
    kind = EXPORTER
    counts_sent = True

    def __init__(self, cid: ComponentID, config: OTLPExporterConfig) -> None:
        super().__init__(cid, config)
        self.host: Host | None = None
        self._channel: grpc.aio.Channel | None = None
        self._stubs: dict[str, Any] = {}
        self._queue: asyncio.Queue[tuple[Signal, Any, int]] | None = None
        self._workers: list[asyncio.Task[None]] = []
        self._stopping = asyncio.Event()
        self._metadata = tuple((k.lower(), v) for k, v in config.headers.items())

    def _target(self) -> tuple[str, bool]:
        ep = self.config.endpoint
        secure = not self.config.tls.insecure
        for scheme, sec in (("https://", True), ("http://", False)):
            if ep.startswith(scheme):
                ep, secure = ep[len(scheme) :], sec and not self.config.tls.insecure
        return ep.rstrip("/"), secure

    async def start(self, host: Host) -> None:
        self.host = host
        self._stopping = asyncio.Event()
        cfg: OTLPExporterConfig = self.config
        target, secure = self._target()
        options: list[tuple[str, Any]] = []
        r = cfg.retry_on_failure
        if r.enabled:
            # Reconnect about as often as we retry, so a peer that comes back is seen in time.
            options += [
                ("grpc.initial_reconnect_backoff_ms", max(100, int(min(r.initial_interval, 1.0) * 1000))),
                ("grpc.min_reconnect_backoff_ms", max(100, int(min(r.initial_interval, 1.0) * 1000))),
                ("grpc.max_reconnect_backoff_ms", max(1000, int(min(r.max_interval or 30, 30) * 1000))),
            ]
        if cfg.authority:
            options.append(("grpc.default_authority", cfg.authority))
        if cfg.tls.server_name_override:
            options.append(("grpc.ssl_target_name_override", cfg.tls.server_name_override))
        compression = grpc.Compression.Gzip if cfg.compression == "gzip" else grpc.Compression.NoCompression
        if secure:
            self._channel = grpc.aio.secure_channel(
                target, grpc.ssl_channel_credentials(), options=options, compression=compression
            )
        else:
            self._channel = grpc.aio.insecure_channel(target, options=options, compression=compression)
        self._stubs = {
            TRACES.name: trace_service_pb2_grpc.TraceServiceStub(self._channel).Export,
            METRICS.name: metrics_service_pb2_grpc.MetricsServiceStub(self._channel).Export,
            LOGS.name: logs_service_pb2_grpc.LogsServiceStub(self._channel).Export,
        }
        q = cfg.sending_queue
        labels = {"exporter": str(self.id)}
        for name in self.signals:
            templates = [tm.EXPORTER_SENT, tm.EXPORTER_SEND_FAILED]
            if q.enabled:
                templates.append(tm.EXPORTER_ENQUEUE_FAILED)
            for template in templates:
                host.telemetry.add(tm.metric_name(template, SIGNALS[name].item_noun), 0, **labels)
        if q.enabled:
            self._queue = asyncio.Queue(maxsize=q.queue_size)
            self._workers = [asyncio.create_task(self._worker()) for _ in range(q.num_consumers)]
            host.telemetry.set(tm.EXPORTER_QUEUE_CAPACITY, q.queue_size, **labels)
            queue = self._queue
            host.telemetry.on_collect(lambda: host.telemetry.set(tm.EXPORTER_QUEUE_SIZE, queue.qsize(), **labels))
        log.info("%s: exporting to %s (%s)", self.label, target, "tls" if secure else "insecure")

    async def consume(self, signal: Signal, req: Any) -> None:
        assert self.host is not None
        n = signal.count(req)
        if self._queue is None:
            await self._send_with_retry(signal, req, n)
            return
        try:
            self._queue.put_nowait((signal, req, n))
        except asyncio.QueueFull:
            self.host.telemetry.add(
                tm.metric_name(tm.EXPORTER_ENQUEUE_FAILED, signal.item_noun), n, exporter=str(self.id)
            )
            log.warning("%s: dropping data because sending_queue is full (%d %s)", self.label, n, signal.item_noun)
            raise ConsumerError("sending_queue is full") from None

    async def _worker(self) -> None:
        assert self._queue is not None
        while True:
            signal, req, n = await self._queue.get()
            try:
                await self._send_with_retry(signal, req, n)
            except ConsumerError:
                pass  # counted and logged in _send_with_retry
            except Exception:
                log.exception("%s: unexpected export error", self.label)
            finally:
                self._queue.task_done()

    async def _send_with_retry(self, signal: Signal, req: Any, n: int) -> None:
        assert self.host is not None
        tel, labels = self.host.telemetry, {"exporter": str(self.id)}
        cfg: OTLPExporterConfig = self.config
        retry = cfg.retry_on_failure
        delays = backoff_delays(retry)
        started = time.monotonic()
        while True:
            try:
                await self._stubs[signal.name](req, timeout=cfg.timeout or None, metadata=self._metadata or None)
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                reason = f"{code.name}: {exc.details()}"
                if code not in RETRYABLE or not retry.enabled:
                    tel.add(tm.metric_name(tm.EXPORTER_SEND_FAILED, signal.item_noun), n, **labels)
                    log.error(
                        "%s: exporting failed, dropping %d %s (permanent error %s)",
                        self.label,
                        n,
                        signal.item_noun,
                        reason,
                    )
                    raise PermanentError(reason) from None
                delay = next(delays)
                elapsed = time.monotonic() - started
                if retry.max_elapsed_time and elapsed + delay > retry.max_elapsed_time:
                    tel.add(tm.metric_name(tm.EXPORTER_SEND_FAILED, signal.item_noun), n, **labels)
                    log.error(
                        "%s: exporting failed, dropping %d %s: no more retries left after %.1fs: %s",
                        self.label,
                        n,
                        signal.item_noun,
                        elapsed,
                        reason,
                    )
                    raise ConsumerError(f"no more retries left: {reason}") from None
                if self._stopping.is_set():
                    tel.add(tm.metric_name(tm.EXPORTER_SEND_FAILED, signal.item_noun), n, **labels)
                    log.error(
                        "%s: exporting failed, dropping %d %s: interrupted due to shutdown: %s",
                        self.label,
                        n,
                        signal.item_noun,
                        reason,
                    )
                    raise ConsumerError(f"interrupted due to shutdown: {reason}") from None
                log.info("%s: exporting failed, will retry in %.2fs: %s", self.label, delay, reason)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), delay)
                continue
            tel.add(tm.metric_name(tm.EXPORTER_SENT, signal.item_noun), n, **labels)
            return

    async def shutdown(self) -> None:
        """Drain the queue (one attempt each once stopping, as exporterhelper does), then close."""
        self._stopping.set()
        if self._queue is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._queue.join(), max(self.config.timeout, 1.0) * 2 + 5)
        for w in self._workers:
            w.cancel()
        for w in self._workers:
            with contextlib.suppress(asyncio.CancelledError):
                await w
        self._workers = []
        if self._channel is not None:
            await self._channel.close()
            self._channel = None


FACTORY = Factory(
    EXPORTER,
    "otlp",
    OTLPExporterConfig,
    lambda cid, cfg: OTLPExporter(cid, cfg),
    unsupported=_unsupported,
)
"""The ``otlp`` exporter (listed in amtp_obs.collector.components)."""
