"""Test support: configure() onto in-memory or given providers, and undoing it between tests.

OpenTelemetry lets a process set its global providers once; tests that exercise configure() need a
clean slate each time, so reset_sdk() also resets the API's globals (test-only, never in production).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import TracerProvider

from amtp_obs.contract.validate import MetricPoint, points_from_metrics_data
from amtp_obs.sdk._internal import config, otel_globals
from amtp_obs.sdk._internal.config import Telemetry


def reset_global_providers() -> None:
    """Make the OTel API behave as if no provider had ever been set."""
    otel_globals.reset_all()


def reset_sdk(*, shutdown: bool = True) -> None:
    """Shut down what configure() created (optionally), forget it, and reset the OTel globals."""
    if shutdown:
        config.shutdown()
    config.reset()
    otel_globals.reset_all()


def current_telemetry() -> Telemetry:
    """The Telemetry llm_call() records through now (for assertions on providers and ownership)."""
    return config.current()


def configure_with(
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    *,
    capture_content: bool = False,
    set_global: bool = False,
    **args: Any,
) -> Telemetry:
    """configure() onto given providers (not installed globally unless ``set_global``); replaces any configuration.

    ``args`` are configure()'s keyword arguments (service_name, span_processor, ...).
    """
    config.shutdown()
    telemetry = config.install(
        {**args, "capture_content": capture_content},
        tracer_provider=tracer_provider,
        meter_provider=meter_provider,
        set_global=set_global,
    )
    config._set_configured(telemetry, None)
    return telemetry


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
    telemetry = config.install(
        {"service_name": service_name, "capture_content": capture_content},
        span_processors=(SimpleSpanProcessor(exporter),),
        metric_readers=(reader,),
        set_global=set_global,
    )
    config._set_configured(telemetry, None)
    return InMemoryTelemetry(telemetry, exporter, reader)
