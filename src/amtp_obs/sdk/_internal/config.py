"""configure()/shutdown() and the Telemetry handle every LLMCall records through.

Environment variables are read here, once, at configure time (or on the first lazy use), never on
the hot path of a call.
"""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from opentelemetry import metrics, trace
from opentelemetry.metrics import Counter, Meter
from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
from opentelemetry.sdk.metrics.export import MetricReader, PeriodicExportingMetricReader
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor, SpanProcessor
from opentelemetry.trace import Tracer

from amtp_obs import contract, env

PROTOCOL_GRPC = "grpc"
PROTOCOL_HTTP_PROTOBUF = "http/protobuf"
PROTOCOLS = (PROTOCOL_GRPC, PROTOCOL_HTTP_PROTOBUF)
SPAN_PROCESSORS = ("batch", "simple")

_TRUE = frozenset({"1", "true", "yes", "on"})

try:  # the package version, reported as the instrumentation scope version
    from importlib.metadata import version as _pkg_version

    SCOPE_VERSION: str | None = _pkg_version("amtp-obs")
except Exception:  # pragma: no cover - running from a source tree without metadata
    SCOPE_VERSION = None


class ConfigurationError(ValueError):
    """A configure() argument or OTEL_* variable has a value the SDK cannot use."""


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when the variable is set to true/1/yes/on (case-insensitive)."""
    value = (environ if environ is not None else os.environ).get(name, "")
    return value.strip().lower() in _TRUE


@dataclass(frozen=True)
class Settings:
    """What configure() resolved; kept on the Telemetry so callers can see what is in effect."""

    capture_content: bool = False
    service_name: str | None = None
    endpoint: str | None = None
    protocol: str | None = None
    span_processor: str | None = None
    metric_export_interval_ms: int | None = None
    owns_tracer_provider: bool = False
    owns_meter_provider: bool = False


@dataclass
class Telemetry:
    """The tracer, meter and the contract's token counters every LLMCall records through."""

    tracer: Tracer
    meter: Meter
    prompt_tokens: Counter
    completion_tokens: Counter
    total_tokens: Counter
    cache_read_tokens: Counter
    cache_creation_tokens: Counter
    reasoning_tokens: Counter
    settings: Settings
    tracer_provider: Any = None
    meter_provider: Any = None
    _attr_cache: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict, repr=False)

    @property
    def capture_content(self) -> bool:
        return self.settings.capture_content

    @property
    def counters(self) -> tuple[Counter, ...]:
        """In contract.ALL_TOKEN_COUNTERS order: prompt, completion, total, cache read/creation, reasoning."""
        return (
            self.prompt_tokens,
            self.completion_tokens,
            self.total_tokens,
            self.cache_read_tokens,
            self.cache_creation_tokens,
            self.reasoning_tokens,
        )

    @classmethod
    def from_providers(
        cls,
        tracer_provider: Any | None = None,
        meter_provider: Any | None = None,
        *,
        settings: Settings | None = None,
    ) -> Telemetry:
        """Build a Telemetry on given providers (None: the global ones, resolved lazily by the API)."""
        tp = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        mp = meter_provider if meter_provider is not None else metrics.get_meter_provider()
        tracer = tp.get_tracer(contract.SCOPE_NAME, SCOPE_VERSION)
        meter = mp.get_meter(contract.SCOPE_NAME, SCOPE_VERSION)
        prompt, completion, total, cache_read, cache_creation, reasoning = (
            meter.create_counter(spec.instrument, unit=spec.unit, description=spec.description)
            for spec in contract.ALL_TOKEN_COUNTERS
        )
        return cls(
            tracer=tracer,
            meter=meter,
            prompt_tokens=prompt,
            completion_tokens=completion,
            total_tokens=total,
            cache_read_tokens=cache_read,
            cache_creation_tokens=cache_creation,
            reasoning_tokens=reasoning,
            settings=settings or Settings(capture_content=env_flag(env.AMTP_OBS_CAPTURE_CONTENT)),
            tracer_provider=tp,
            meter_provider=mp,
        )

    def shutdown(self) -> None:
        """Flush and shut down the providers this Telemetry created (never an application's own)."""
        if self.settings.owns_tracer_provider and self.tracer_provider is not None:
            self.tracer_provider.shutdown()
        if self.settings.owns_meter_provider and self.meter_provider is not None:
            self.meter_provider.shutdown()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Export what is buffered now; True when every provider that supports flushing succeeded."""
        ok = True
        for provider in (self.tracer_provider, self.meter_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                ok = bool(flush(timeout_millis)) and ok
        return ok


_lock = threading.RLock()
_configured: Telemetry | None = None
_default: Telemetry | None = None


def _resolve_protocol(protocol: str | None) -> str:
    value = (protocol or os.environ.get(env.OTEL_EXPORTER_OTLP_PROTOCOL) or PROTOCOL_GRPC).strip().lower()
    if value not in PROTOCOLS:
        raise ConfigurationError(
            f"unsupported OTLP protocol {value!r} (from the protocol argument or "
            f"{env.OTEL_EXPORTER_OTLP_PROTOCOL}); use one of: {', '.join(PROTOCOLS)}"
        )
    return value


def _resolve_endpoint(endpoint: str | None, protocol: str) -> str | None:
    """Explicit endpoint, else None (the exporters read OTEL_EXPORTER_OTLP_* themselves), else OBS_*."""
    if endpoint:
        return endpoint.rstrip("/")
    names = (env.OTEL_EXPORTER_OTLP_ENDPOINT, env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    if any(os.environ.get(n) for n in names):
        return None
    # Beyond OTel's defaults: honour the stack's published host port when the user overrode it.
    port_var = env.OBS_OTEL_GRPC_PORT if protocol == PROTOCOL_GRPC else env.OBS_OTEL_HTTP_PORT
    port = os.environ.get(port_var, "").strip()
    if port:
        if not port.isdigit():
            raise ConfigurationError(f"{port_var}={port!r} is not a port number")
        return f"http://localhost:{port}"
    return None


def _exporters(protocol: str, endpoint: str | None) -> tuple[Any, Any]:
    if protocol == PROTOCOL_GRPC:
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if endpoint is None:
            return OTLPSpanExporter(), OTLPMetricExporter()
        # TLS or not: the exporter decides from the scheme and OTEL_EXPORTER_OTLP_INSECURE.
        return OTLPSpanExporter(endpoint=endpoint), OTLPMetricExporter(endpoint=endpoint)
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetric
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpan

    if endpoint is None:
        return HttpSpan(), HttpMetric()
    return HttpSpan(endpoint=f"{endpoint}/v1/traces"), HttpMetric(endpoint=f"{endpoint}/v1/metrics")


def _resource(service_name: str | None, resource_attributes: Mapping[str, str] | None) -> Resource:
    attrs: dict[str, Any] = dict(resource_attributes or {})
    if service_name:
        attrs[SERVICE_NAME] = service_name
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME under explicit attributes.
    resource = Resource.create(attrs)
    if not resource.attributes.get(SERVICE_INSTANCE_ID):
        # One series per process: two replicas must not overwrite each other's cumulative counters.
        resource = resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))
    return resource


def configure(
    service_name: str | None = None,
    *,
    endpoint: str | None = None,
    protocol: str | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    capture_content: bool | None = None,
    metric_export_interval_ms: int | None = None,
    span_processor: str = "batch",
    tracer_provider: Any | None = None,
    meter_provider: Any | None = None,
    metric_readers: tuple[MetricReader, ...] | None = None,
    span_processors: tuple[SpanProcessor, ...] | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Set up tracing and metrics for LLM calls once per process; later calls return the same handle.

    Explicit arguments win over the OTEL_* variables. Providers an application already installed
    globally (SDK ones) are reused as they are. ``tracer_provider``/``meter_provider`` use given
    providers; ``span_processors``/``metric_readers`` replace the OTLP exporters (tests, benchmarks).
    """
    global _configured, _default
    with _lock:
        if _configured is not None:
            return _configured
        if span_processor not in SPAN_PROCESSORS:
            raise ConfigurationError(
                f"span_processor must be one of {', '.join(SPAN_PROCESSORS)}, got {span_processor!r}"
            )
        if metric_export_interval_ms is not None and metric_export_interval_ms <= 0:
            raise ConfigurationError(f"metric_export_interval_ms must be positive, got {metric_export_interval_ms}")
        if capture_content is None:
            capture_content = env_flag(env.AMTP_OBS_CAPTURE_CONTENT)
        disabled = env_flag(env.OTEL_SDK_DISABLED)

        tp: Any = tracer_provider
        mp: Any = meter_provider
        owns_tp = owns_mp = False
        resolved_protocol: str | None = None
        resolved_endpoint: str | None = None
        need_tp = tp is None and not isinstance(trace.get_tracer_provider(), SdkTracerProvider)
        need_mp = mp is None and not isinstance(metrics.get_meter_provider(), SdkMeterProvider)
        needs_otlp = (need_tp and span_processors is None) or (need_mp and metric_readers is None)
        if needs_otlp and not disabled:
            resolved_protocol = _resolve_protocol(protocol)
            resolved_endpoint = _resolve_endpoint(endpoint, resolved_protocol)
        if (need_tp or need_mp) and not disabled:
            resource = _resource(service_name, resource_attributes)
            span_exporter = metric_exporter = None
            if needs_otlp:
                assert resolved_protocol is not None
                span_exporter, metric_exporter = _exporters(resolved_protocol, resolved_endpoint)
            if need_tp:
                tp = SdkTracerProvider(resource=resource)
                if span_processors is not None:
                    for proc in span_processors:
                        tp.add_span_processor(proc)
                else:
                    proc_cls = BatchSpanProcessor if span_processor == "batch" else SimpleSpanProcessor
                    tp.add_span_processor(proc_cls(span_exporter))
                owns_tp = True
                if set_global:
                    trace.set_tracer_provider(tp)
            if need_mp:
                readers: tuple[MetricReader, ...]
                if metric_readers is not None:
                    readers = metric_readers
                else:
                    readers = (
                        PeriodicExportingMetricReader(
                            metric_exporter, export_interval_millis=metric_export_interval_ms
                        ),
                    )
                mp = SdkMeterProvider(resource=resource, metric_readers=list(readers))
                owns_mp = True
                if set_global:
                    metrics.set_meter_provider(mp)
        settings = Settings(
            capture_content=capture_content,
            service_name=service_name,
            endpoint=resolved_endpoint or endpoint,
            protocol=resolved_protocol,
            span_processor=span_processor if owns_tp and span_processors is None else None,
            metric_export_interval_ms=metric_export_interval_ms,
            owns_tracer_provider=owns_tp,
            owns_meter_provider=owns_mp,
        )
        _configured = Telemetry.from_providers(tp, mp, settings=settings)
        _default = None
        return _configured


def get_telemetry() -> Telemetry:
    """The configured Telemetry, else one on the global providers (an app's own OTel setup)."""
    t = _configured or _default
    if t is not None:
        return t
    return _lazy_default()


def _lazy_default() -> Telemetry:
    global _default
    with _lock:
        if _configured is not None:
            return _configured
        if _default is None:
            _default = Telemetry.from_providers()
        return _default


def is_configured() -> bool:
    return _configured is not None


def shutdown() -> None:
    """Flush and shut down what configure() created (final: OTel global providers cannot be replaced)."""
    global _configured, _default
    with _lock:
        t, _configured, _default = _configured, None, None
    if t is not None:
        t.shutdown()


def force_flush(timeout_millis: int = 30_000) -> bool:
    """Export buffered spans and metrics now (the configured or the global providers)."""
    return get_telemetry().force_flush(timeout_millis)


def _reset() -> None:
    """Forget the SDK state without shutting anything down (tests)."""
    global _configured, _default
    with _lock:
        _configured = None
        _default = None
