"""The collector service: builds components from a validated config, wires pipelines, runs them.

Like ``service/pipelines`` in the real collector: one receiver instance per id feeds every
pipeline that lists it; each pipeline gets its own processor instances; one exporter instance
per id is shared (fan-out when a pipeline lists several). Start order: extensions, exporters,
processors, receivers; shutdown is the reverse, so batches and queues drain before exit.
"""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

from amtp_obs.collector.component import (
    EXPORTER,
    EXTENSION,
    PROCESSOR,
    RECEIVER,
    Component,
    ComponentID,
    ConfigError,
    Consumer,
    ConsumerError,
    Factories,
    Host,
)
from amtp_obs.collector.components import components
from amtp_obs.collector.config import ParsedConfig, PipelineConfig, load_config_file, parse_config
from amtp_obs.collector.expfmt import CONTENT_TYPE
from amtp_obs.collector.signals import SIGNALS, Signal
from amtp_obs.collector.telemetry import EXPORTER_SEND_FAILED, EXPORTER_SENT, SelfTelemetry, metric_name
from amtp_obs.httpserver import HttpServer, StartError
from amtp_obs.net import client_host, join_host_port

log = logging.getLogger("amtp_obs.collector")

TELEMETRY = "telemetry"
"""Listener key of the self-metrics endpoint (``service.telemetry.metrics.address``)."""


class FanOut:
    """Sends to every exporter of a pipeline; the first error is raised after all were tried."""

    def __init__(self, consumers: list[Any]) -> None:
        self.consumers = consumers

    async def consume(self, signal: Signal, req: Any) -> None:
        error: Exception | None = None
        for c in self.consumers:
            try:
                await c.consume(signal, req)
            except Exception as exc:
                error = error or exc
        if error is not None:
            raise error if isinstance(error, ConsumerError) else ConsumerError(str(error))


class _ServerStopper:
    label = "service::telemetry::metrics"

    def __init__(self, server: HttpServer) -> None:
        self.server = server

    async def shutdown(self) -> None:
        await self.server.stop()


class _Counted:
    """Counts sent / send-failed items for exporters without a queue, as exporterhelper does."""

    def __init__(self, exporter: Component, telemetry: SelfTelemetry) -> None:
        self.exporter: Any = exporter
        self.telemetry = telemetry

    async def consume(self, signal: Signal, req: Any) -> None:
        n = signal.count(req)
        try:
            await self.exporter.consume(signal, req)
        except Exception:
            self.telemetry.add(metric_name(EXPORTER_SEND_FAILED, signal.item_noun), n, exporter=str(self.exporter.id))
            raise
        self.telemetry.add(metric_name(EXPORTER_SENT, signal.item_noun), n, exporter=str(self.exporter.id))


class Collector:
    """An embedded OpenTelemetry Collector driven by collector YAML."""

    def __init__(self, parsed: ParsedConfig, factories: Factories) -> None:
        self.parsed = parsed
        self.factories = factories
        self.telemetry = SelfTelemetry(parsed.service.telemetry.metrics.level)
        self.host = Host(self.telemetry)
        self.receivers: dict[str, Any] = {}
        self.processors: list[Component] = []
        self.exporters: dict[str, Component] = {}
        self.extensions: dict[str, Component] = {}
        self._consumers: dict[str, Any] = {}
        self._started: list[Component] = []
        self._telemetry_server: HttpServer | None = None
        self._running = False
        self._build()

    @classmethod
    def from_config(cls, doc: dict[str, Any], factories: Factories | None = None) -> Collector:
        """Parse ``doc`` with ``factories`` (default: every component, :func:`components`) and build it."""
        factories = factories or components()
        parsed, problems = parse_config(doc, factories)
        if problems:
            raise ConfigError(problems)
        return cls(parsed, factories)

    @classmethod
    def from_file(cls, path: str | Path, factories: Factories | None = None) -> Collector:
        return cls.from_config(load_config_file(path), factories)

    def _create(self, kind: str, ref: str) -> Component:
        cid, cfg = self.parsed.components[(kind, ref)]
        factory = self.factories.get(kind, cid.type)
        assert factory is not None  # parse_config with the same factories accepted it
        return factory.create(cid, cfg)

    def _build(self) -> None:
        svc = self.parsed.service
        for ext in svc.extensions:
            self.extensions[ext] = self._create(EXTENSION, ext)
        for pid, pipe in svc.pipelines.items():
            pipe = pipe or PipelineConfig()
            signal = SIGNALS[pid.partition("/")[0]]
            exporters: list[Any] = []
            for ref in pipe.exporters:
                if ref not in self.exporters:
                    self.exporters[ref] = exp = self._create(EXPORTER, ref)
                    self._consumers[ref] = exp if exp.counts_sent else _Counted(exp, self.telemetry)
                exporters.append(self._consumers[ref])
                self.exporters[ref].signals.add(signal.name)
            nxt: Consumer = exporters[0] if len(exporters) == 1 else FanOut(exporters)  # type: ignore[assignment]
            chain: list[Component] = []
            for ref in reversed(pipe.processors):
                proc: Any = self._create(PROCESSOR, ref)
                proc.next = nxt
                proc.signals.add(signal.name)
                nxt = proc
                chain.insert(0, proc)
            self.processors.extend(chain)
            for ref in pipe.receivers:
                if ref not in self.receivers:
                    self.receivers[ref] = self._create(RECEIVER, ref)
                self.receivers[ref].add_consumer(signal, nxt)
                self.receivers[ref].signals.add(signal.name)
            self.host.pipelines[pid] = {
                "receivers": list(pipe.receivers),
                "processors": list(pipe.processors),
                "exporters": list(pipe.exporters),
            }
        self.host.extensions = list(svc.extensions)

    # -- lifecycle -----------------------------------------------------------------------------
    async def start(self) -> None:
        """Open every listener; raises :class:`StartError` (after undoing what started) on failure."""
        if self._running:
            raise RuntimeError("collector already started")
        self._running = True
        order = [
            *self.extensions.values(),
            *self.exporters.values(),
            *reversed(self.processors),
            *self.receivers.values(),
        ]
        try:
            metrics_cfg = self.parsed.service.telemetry.metrics
            if metrics_cfg.level != "none" and metrics_cfg.address:
                self._telemetry_server = HttpServer(
                    self._telemetry_app, metrics_cfg.address, "service::telemetry::metrics"
                )
                self.host.add_listener(TELEMETRY, "http", await self._telemetry_server.start())
            for comp in order:
                await comp.start(self.host)
                self._started.append(comp)
                if comp.kind == EXPORTER and not comp.counts_sent:
                    for name in comp.signals:
                        for template in (EXPORTER_SENT, EXPORTER_SEND_FAILED):
                            self.telemetry.add(metric_name(template, SIGNALS[name].item_noun), 0, exporter=str(comp.id))
        except BaseException:
            await self._stop_started()
            raise
        self.host.started_at = time.time()
        self.host.ready = True
        log.info("Everything is ready. Begin running and processing data.")

    async def shutdown(self) -> None:
        """Stop receivers first, flush processors and exporter queues, then extensions."""
        if not self._running:
            return
        self.host.ready = False
        log.info("Shutdown: stopping receivers, flushing processors and exporters")
        await self._stop_started()
        log.info("Shutdown complete.")

    async def _stop_started(self) -> None:
        ext_ids = {id(e) for e in self.extensions.values()}
        rest = [c for c in self._started if id(c) not in ext_ids]
        exts = [c for c in self._started if id(c) in ext_ids]
        receivers = [c for c in rest if c.kind == RECEIVER]
        processors = [c for c in self.processors if c in rest]
        exporters = [c for c in rest if c.kind == EXPORTER]
        # Receivers first (no new data), processors in pipeline order (flush), then exporters (drain).
        # Components of one stage are independent, so they stop concurrently.
        await asyncio.gather(*(self._stop_one(c) for c in receivers))
        for comp in processors:
            await self._stop_one(comp)
        await asyncio.gather(*(self._stop_one(c) for c in exporters))
        if self._telemetry_server is not None:
            exts.append(_ServerStopper(self._telemetry_server))
            self._telemetry_server = None
        await asyncio.gather(*(self._stop_one(c) for c in exts))
        self._started = []
        self._running = False

    @staticmethod
    async def _stop_one(comp: Any) -> None:
        try:
            await comp.shutdown()
        except Exception:
            log.exception("%s: error during shutdown", comp.label)

    async def __aenter__(self) -> Collector:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.shutdown()

    async def run(self, stop: asyncio.Event) -> None:
        """Start, wait for ``stop``, shut down gracefully."""
        await self.start()
        try:
            await stop.wait()
        finally:
            await self.shutdown()

    # -- introspection -------------------------------------------------------------------------
    def listen_address(self, component: str, protocol: str = "http") -> tuple[str, int]:
        """Bound (host, port) of a listener: ``("otlp", "grpc")``, ``("health_check")``, ``(TELEMETRY)``."""
        try:
            return self.host.listeners[(component, protocol)]
        except KeyError:
            known = ", ".join(f"{c}/{p}" for c, p in self.host.listeners)
            raise KeyError(f"no listener {component}/{protocol} (known: {known})") from None

    def url(self, component: str, protocol: str = "http", path: str = "") -> str:
        host, port = self.listen_address(component, protocol)
        return f"http://{join_host_port(client_host(host), port)}{path}"

    def component(self, kind: str, ref: str) -> Component:
        table: dict[str, dict[str, Any]] = {
            RECEIVER: self.receivers,
            EXPORTER: self.exporters,
            EXTENSION: self.extensions,
        }
        return table[kind][str(ComponentID.parse(ref))]

    async def _telemetry_app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] == "/metrics":
            status, body, ctype = 200, self.telemetry.render().encode(), CONTENT_TYPE
        else:
            status, body, ctype = 404, b"404 page not found\n", "text/plain; charset=utf-8"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


__all__ = ["TELEMETRY", "Collector", "ConfigError", "StartError"]
