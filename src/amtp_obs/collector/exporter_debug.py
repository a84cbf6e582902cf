"""The ``debug`` exporter: prints what passes through a pipeline to stderr (the collector's log).

``basic`` prints one line per batch (``TracesExporter #spans: N``), ``normal`` one line per
span / data point / log record, ``detailed`` the whole batch in protobuf text format. Lines are
sampled like zap's sampler: per second, the first ``sampling_initial`` then every
``sampling_thereafter``-th.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Self

from google.protobuf import text_format
from pydantic import model_validator

from amtp_obs.collector.component import EXPORTER, Component, ComponentID, Factory, StrictModel
from amtp_obs.collector.signals import LOGS, METRICS, TRACES, Signal

log = logging.getLogger("amtp_obs.collector.debug")


class DebugExporterConfig(StrictModel):
    verbosity: str = "basic"
    sampling_initial: int = 2
    sampling_thereafter: int = 500

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.verbosity not in ("basic", "normal", "detailed"):
            raise ValueError(f"unknown verbosity level {self.verbosity!r} (basic, normal, detailed)")
        return self


_KIND = {TRACES.name: "TracesExporter", METRICS.name: "MetricsExporter", LOGS.name: "LogsExporter"}


class DebugExporter(Component):
    kind = EXPORTER

    def __init__(self, cid: ComponentID, config: DebugExporterConfig) -> None:
        super().__init__(cid, config)
        self._second = 0
        self._seen = 0

    def _sampled(self) -> bool:
        sec = int(time.monotonic())
        if sec != self._second:
            self._second, self._seen = sec, 0
        self._seen += 1
        initial, after = self.config.sampling_initial, self.config.sampling_thereafter
        if self._seen <= initial:
            return True
        return after > 0 and (self._seen - initial) % after == 0

    def summary(self, signal: Signal, req: Any) -> str:
        n_res = len(signal.resources(req))
        if signal is METRICS:
            n_metrics = sum(len(sm.metrics) for rm in req.resource_metrics for sm in rm.scope_metrics)
            return f"MetricsExporter #resource metrics: {n_res} #metrics: {n_metrics} #data points: {signal.count(req)}"
        noun = "spans" if signal is TRACES else "log records"
        return f"{_KIND[signal.name]} #resource {noun}: {n_res} #{noun}: {signal.count(req)}"

    async def consume(self, signal: Signal, req: Any) -> None:
        if not self._sampled():
            return
        log.info(
            '%s\t{"kind": "exporter", "data_type": "%s", "name": "%s"}',
            self.summary(signal, req),
            signal.name,
            self.id,
        )
        verbosity = self.config.verbosity
        if verbosity == "normal":
            for line in self._lines(signal, req):
                log.info("%s", line)
        elif verbosity == "detailed":
            log.info("%s", text_format.MessageToString(req))

    def _lines(self, signal: Signal, req: Any) -> list[str]:
        out = []
        if signal is TRACES:
            for rs in req.resource_spans:
                for ss in rs.scope_spans:
                    for s in ss.spans:
                        out.append(f"{s.name} {s.trace_id.hex()} {s.span_id.hex()}")
        elif signal is METRICS:
            for rm in req.resource_metrics:
                for sm in rm.scope_metrics:
                    for m in sm.metrics:
                        kind = m.WhichOneof("data")
                        n = len(getattr(m, kind).data_points) if kind else 0
                        out.append(f"{m.name} {kind} {m.unit} points={n}")
        else:
            for rl in req.resource_logs:
                for sl in rl.scope_logs:
                    for r in sl.log_records:
                        out.append(f"{r.severity_text} {text_format.MessageToString(r.body, as_one_line=True)}")
        return out


FACTORY = Factory(EXPORTER, "debug", DebugExporterConfig, lambda cid, cfg: DebugExporter(cid, cfg))
"""The ``debug`` exporter (listed in amtp_obs.collector.components)."""
