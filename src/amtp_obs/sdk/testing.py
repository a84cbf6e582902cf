"""Test support: in-memory configure(), and undoing configure() and the OTel globals between tests.

OpenTelemetry lets a process set its global providers once; tests that exercise configure() need a
clean slate each time, so this resets the API's private globals (test-only, never in production).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

from amtp_obs.contract.validate import MetricPoint, points_from_metrics_data
from amtp_obs.sdk._internal import config
from amtp_obs.sdk._internal.config import Telemetry


def reset_global_providers() -> None:
    """Make the OTel API behave as if no provider had ever been set."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()  # type: ignore[attr-defined]
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
    assert metrics.get_meter_provider() is metrics_internal._PROXY_METER_PROVIDER


def reset_sdk(*, shutdown: bool = True) -> None:
    """Shut down what configure() created (optionally), forget it, and reset the OTel globals."""
    if shutdown:
        config.shutdown()
    config._reset()
    reset_global_providers()


@dataclass
class InMemoryTelemetry:
    """configure() wired to in-memory exporters: what tests read instead of a collector."""

    telemetry: Telemetry
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def points(self) -> list[MetricPoint]:
        """Every data point collected now (cumulative), flattened."""
        return points_from_metrics_data(self.reader.get_metrics_data())

    def counter_values(self) -> dict[str, dict[tuple[tuple[str, Any], ...], float]]:
        """Counter name -> sorted attribute items -> cumulative value."""
        out: dict[str, dict[tuple[tuple[str, Any], ...], float]] = {}
        for p in self.points():
            if p.kind == "sum" and p.value is not None:
                out.setdefault(p.metric, {})[tuple(sorted(p.attributes.items()))] = p.value
        return out


def configure_in_memory(
    service_name: str = "amtp-obs-test", *, capture_content: bool | None = None, set_global: bool = True
) -> InMemoryTelemetry:
    """Reset everything, then configure() with a SimpleSpanProcessor + InMemoryMetricReader."""
    reset_sdk()
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    telemetry = config.configure(
        service_name,
        capture_content=capture_content,
        span_processors=(SimpleSpanProcessor(exporter),),
        metric_readers=(reader,),
        set_global=set_global,
    )
    return InMemoryTelemetry(telemetry, exporter, reader)
