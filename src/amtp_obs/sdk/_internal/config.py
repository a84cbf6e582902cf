"""configure()/shutdown() and the Telemetry every LLMCall records through.

Environment variables are read here, once, at configure time (or on the first lazy use), never on
the hot path of a call. Public names are re-exported by ``amtp_obs.sdk``; everything else here is
internal (the instrumentations, the MCP helpers and ``amtp_obs.sdk.testing`` use it).
"""

from __future__ import annotations

import logging
import os
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Final, Literal, get_args

from opentelemetry import metrics, trace
from opentelemetry.metrics import Counter, Meter, MeterProvider
from opentelemetry.trace import Tracer, TracerProvider
from opentelemetry.util.types import AttributeValue

from amtp_obs import __version__, contract, env
from amtp_obs.sdk._internal import otel_globals

if TYPE_CHECKING:
    from opentelemetry.sdk.metrics.export import MetricExporter, MetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import SpanProcessor
    from opentelemetry.sdk.trace.export import SpanExporter

from amtp_obs.sdk._internal.labels import ModelLabels
from amtp_obs.sdk._internal.usage import Usage

OtlpProtocol = Literal["grpc", "http/protobuf"]
"""The OTLP transports the SDK can export with (``http/protobuf`` needs ``amtp-obs[http]``)."""
SpanProcessorKind = Literal["batch", "simple"]

PROTOCOL_GRPC: OtlpProtocol = "grpc"
PROTOCOL_HTTP_PROTOBUF: OtlpProtocol = "http/protobuf"
PROTOCOLS: tuple[OtlpProtocol, ...] = get_args(OtlpProtocol)
SPAN_PROCESSORS: tuple[SpanProcessorKind, ...] = get_args(SpanProcessorKind)

_TRUE = frozenset({"1", "true", "yes", "on"})

SCOPE_VERSION: Final = __version__
"""The instrumentation scope version (the package's, without importlib.metadata: imports stay fast)."""


class ConfigurationError(ValueError):
    """configure() cannot do what it was asked: a bad argument or OTEL_* value, or a conflicting second call."""


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """True when the variable is set to true/1/yes/on (case-insensitive)."""
    value = (environ if environ is not None else os.environ).get(name, "")
    return value.strip().lower() in _TRUE


@dataclass(frozen=True)
class Configuration:
    """What configure() put in effect (its return value): resolved settings, for logs and checks."""

    service_name: str | None
    """The resource's ``service.name`` (argument, else ``OTEL_SERVICE_NAME``); None if no provider was built."""
    endpoint: str | None
    """The collector address the exporters use; None: the exporters' own default or OTEL_* variables."""
    protocol: OtlpProtocol | None
    """None when configure() created no OTLP exporter (the application's providers, or OTEL_SDK_DISABLED)."""
    capture_content: bool
    span_processor: SpanProcessorKind | None
    metric_export_interval_ms: int | None
    resource: Mapping[str, AttributeValue] = field(default_factory=dict)
    """The resource of the providers configure() created (empty when it created none)."""


CostHook = Callable[[str, str, "Usage"], Mapping[str, AttributeValue]]
"""(provider, model, usage) -> span attributes, called once per counted call at its end.

The place for the price catalog (issue 10: ``llm.cost.usd``, ``llm.cost.catalog``): whatever the hook
returns is added to the ``llm.completion`` span. None (the default) costs nothing on the hot path.
"""


def _catalog_cost_hook() -> CostHook | None:
    """The price catalog shipped with the package (amtp_obs.pricing, docs/cost.md), loaded once per process.

    Reading the catalog needs the ``cost`` extra (PyYAML, pydantic; part of ``stack``): a lean install
    records no cost on spans (Prometheus still computes cost from the token counters), said once.
    """
    try:
        from amtp_obs.pricing.catalog import packaged_pricer
    except ImportError as err:
        if not _cost_unavailable_logged:
            _cost_unavailable_logged.append(True)
            logging.getLogger("amtp_obs.sdk").info(
                "amtp_obs: no llm.cost.* on spans: %s is not installed (pip install 'amtp-obs[cost]')", err.name
            )
        return None
    pricer = packaged_pricer()
    return pricer.span_attributes if pricer is not None else None


_cost_unavailable_logged: list[bool] = []


@dataclass
class Telemetry:
    """The tracer, meter and the contract's token counters every LLMCall records through (internal)."""

    tracer: Tracer
    meter: Meter
    prompt_tokens: Counter
    completion_tokens: Counter
    total_tokens: Counter
    cache_read_tokens: Counter
    cache_creation_tokens: Counter
    reasoning_tokens: Counter
    configuration: Configuration
    tracer_provider: TracerProvider
    meter_provider: MeterProvider
    owns_tracer_provider: bool = False
    owns_meter_provider: bool = False
    cost: CostHook | None = None
    model_labels: ModelLabels = field(default_factory=ModelLabels, repr=False)
    """Bounded ``llm.model`` values for the counters (labels.py)."""
    attr_cache: dict[tuple[Any, ...], tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=dict, repr=False)
    """(provider, model, request type, stream) -> span-start and metric attribute dicts (see call.py)."""
    zero_series: set[tuple[int, int]] = field(default_factory=set, repr=False)
    """(id of a cached metric attribute dict, detail class) whose 0 was added once (see call.py)."""

    @property
    def capture_content(self) -> bool:
        return self.configuration.capture_content

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
        tracer_provider: TracerProvider | None = None,
        meter_provider: MeterProvider | None = None,
        *,
        configuration: Configuration | None = None,
        owns_tracer_provider: bool = False,
        owns_meter_provider: bool = False,
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
        if configuration is None:
            configuration = Configuration(
                service_name=None,
                endpoint=None,
                protocol=None,
                capture_content=env_flag(env.AMTP_OBS_CAPTURE_CONTENT),
                span_processor=None,
                metric_export_interval_ms=None,
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
            configuration=configuration,
            tracer_provider=tp,
            meter_provider=mp,
            owns_tracer_provider=owns_tracer_provider,
            owns_meter_provider=owns_meter_provider,
            cost=_catalog_cost_hook(),
        )

    def shutdown(self) -> None:
        """Flush and shut down the providers this Telemetry created (never an application's own)."""
        for owned, provider in (
            (self.owns_tracer_provider, self.tracer_provider),
            (self.owns_meter_provider, self.meter_provider),
        ):
            stop = getattr(provider, "shutdown", None)
            if owned and stop is not None:
                stop()

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
_configured_args: dict[str, Any] | None = None
_default: Telemetry | None = None
_shut_down: list[object] = []
"""Providers configure() created and shutdown() stopped: a later configure() replaces them."""


def _resolve_protocol(protocol: str | None) -> OtlpProtocol:
    value = (protocol or os.environ.get(env.OTEL_EXPORTER_OTLP_PROTOCOL) or PROTOCOL_GRPC).strip().lower()
    for known in PROTOCOLS:
        if value == known:
            return known
    raise ConfigurationError(
        f"unsupported OTLP protocol {value!r} (from the protocol argument or "
        f"{env.OTEL_EXPORTER_OTLP_PROTOCOL}); use one of: {', '.join(PROTOCOLS)}"
    )


def _resolve_endpoint(endpoint: str | None, protocol: OtlpProtocol) -> str | None:
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


EXTRA_FOR_PROTOCOL: dict[OtlpProtocol, str] = {PROTOCOL_GRPC: "grpc", PROTOCOL_HTTP_PROTOBUF: "http"}


def _exporters(protocol: OtlpProtocol, endpoint: str | None) -> tuple[SpanExporter, MetricExporter]:
    """The OTLP exporters of ``protocol``; a clear error when its package is not installed (lean install)."""
    try:
        if protocol == PROTOCOL_GRPC:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

            if endpoint is None:
                return OTLPSpanExporter(), OTLPMetricExporter()
            # TLS or not: the exporter decides from the scheme and OTEL_EXPORTER_OTLP_INSECURE.
            return OTLPSpanExporter(endpoint=endpoint), OTLPMetricExporter(endpoint=endpoint)
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as HttpMetric
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpSpan
    except ImportError as err:
        raise ConfigurationError(
            f"OTLP protocol {protocol!r} needs its exporter package ({err.name} is not installed): "
            f"pip install 'amtp-obs[{EXTRA_FOR_PROTOCOL[protocol]}]'"
        ) from err
    if endpoint is None:
        return HttpSpan(), HttpMetric()
    return HttpSpan(endpoint=f"{endpoint}/v1/traces"), HttpMetric(endpoint=f"{endpoint}/v1/metrics")


def _resource(service_name: str | None, resource_attributes: Mapping[str, str] | None) -> Resource:
    from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource

    attrs: dict[str, AttributeValue] = dict(resource_attributes or {})
    if service_name:
        attrs[SERVICE_NAME] = service_name
    # Resource.create merges OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME under explicit attributes.
    resource = Resource.create(attrs)
    if not resource.attributes.get(SERVICE_INSTANCE_ID):
        # One series per process: two replicas must not overwrite each other's cumulative counters.
        resource = resource.merge(Resource({SERVICE_INSTANCE_ID: str(uuid.uuid4())}))
    return resource


def _usable_global(provider: object, sdk_type: type) -> bool:
    """An SDK provider the application (or an earlier configure()) installed that is still running."""
    return isinstance(provider, sdk_type) and not any(provider is dead for dead in _shut_down)


def _describe_difference(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    return "; ".join(f"{k}: first {old[k]!r}, now {new[k]!r}" for k in new if old.get(k) != new[k])


def configure(
    service_name: str | None = None,
    *,
    endpoint: str | None = None,
    protocol: OtlpProtocol | None = None,
    resource_attributes: Mapping[str, str] | None = None,
    capture_content: bool | None = None,
    metric_export_interval_ms: int | None = None,
    span_processor: SpanProcessorKind = "batch",
) -> Configuration:
    """Set up tracing and metrics for LLM calls, once per process.

    Explicit arguments win over the OTEL_* variables. SDK providers an application already installed
    globally are reused as they are. Calling it again with the same arguments returns the same
    Configuration; with different arguments it raises ConfigurationError naming each difference
    (call shutdown() first to change them). After shutdown() it starts afresh.
    """
    args: dict[str, Any] = {
        "service_name": service_name,
        "endpoint": endpoint,
        "protocol": protocol,
        "resource_attributes": dict(resource_attributes) if resource_attributes is not None else None,
        "capture_content": capture_content,
        "metric_export_interval_ms": metric_export_interval_ms,
        "span_processor": span_processor,
    }
    with _lock:
        if _configured is not None and _configured_args is not None:
            if args == _configured_args:
                return _configured.configuration
            raise ConfigurationError(
                "configure() was already called with other arguments ("
                + _describe_difference(_configured_args, args)
                + "); call shutdown() first to configure differently"
            )
        if _configured is not None:
            raise ConfigurationError("the SDK was configured for tests (amtp_obs.sdk.testing); call shutdown() first")
        telemetry = install(args)
        _set_configured(telemetry, args)
        return telemetry.configuration


def install(
    args: Mapping[str, Any],
    *,
    tracer_provider: TracerProvider | None = None,
    meter_provider: MeterProvider | None = None,
    metric_readers: tuple[MetricReader, ...] | None = None,
    span_processors: tuple[SpanProcessor, ...] | None = None,
    set_global: bool = True,
) -> Telemetry:
    """Build the Telemetry for configure()'s ``args``; the keyword hooks are for amtp_obs.sdk.testing and bench.

    ``tracer_provider``/``meter_provider`` use given providers; ``span_processors``/``metric_readers``
    replace the OTLP exporters. Does not register the result (see _set_configured).
    """
    from opentelemetry.sdk.metrics import MeterProvider as SdkMeterProvider
    from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider

    span_processor = args.get("span_processor", "batch")
    if span_processor not in SPAN_PROCESSORS:
        raise ConfigurationError(f"span_processor must be one of {', '.join(SPAN_PROCESSORS)}, got {span_processor!r}")
    interval = args.get("metric_export_interval_ms")
    if interval is not None and (isinstance(interval, bool) or not isinstance(interval, int) or interval <= 0):
        raise ConfigurationError(f"metric_export_interval_ms must be a positive integer, got {interval!r}")
    capture = args.get("capture_content")
    capture_content = env_flag(env.AMTP_OBS_CAPTURE_CONTENT) if capture is None else bool(capture)
    disabled = env_flag(env.OTEL_SDK_DISABLED)

    tp: TracerProvider | None = tracer_provider
    mp: MeterProvider | None = meter_provider
    global_tp, global_mp = trace.get_tracer_provider(), metrics.get_meter_provider()
    need_tp = tp is None and not _usable_global(global_tp, SdkTracerProvider)
    need_mp = mp is None and not _usable_global(global_mp, SdkMeterProvider)
    needs_otlp = (need_tp and span_processors is None) or (need_mp and metric_readers is None)
    protocol: OtlpProtocol | None = None
    endpoint: str | None = None
    if needs_otlp and not disabled:
        protocol = _resolve_protocol(args.get("protocol"))
        endpoint = _resolve_endpoint(args.get("endpoint"), protocol)
    owns_tp = owns_mp = False
    resource_attrs: dict[str, AttributeValue] = {}
    if (need_tp or need_mp) and not disabled:
        resource = _resource(args.get("service_name"), args.get("resource_attributes"))
        resource_attrs = dict(resource.attributes)
        span_exporter = metric_exporter = None
        if needs_otlp:
            assert protocol is not None
            span_exporter, metric_exporter = _exporters(protocol, endpoint)
        if need_tp:
            from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

            sdk_tp = SdkTracerProvider(resource=resource)
            if span_processors is not None:
                for proc in span_processors:
                    sdk_tp.add_span_processor(proc)
            else:
                assert span_exporter is not None
                proc_cls = BatchSpanProcessor if span_processor == "batch" else SimpleSpanProcessor
                sdk_tp.add_span_processor(proc_cls(span_exporter))
            tp, owns_tp = sdk_tp, True
            if set_global:
                otel_globals.install_tracer_provider(sdk_tp, replacing=global_tp if global_tp in _shut_down else None)
        if need_mp:
            from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader

            readers: tuple[MetricReader, ...]
            if metric_readers is not None:
                readers = metric_readers
            else:
                assert metric_exporter is not None
                readers = (PeriodicExportingMetricReader(metric_exporter, export_interval_millis=interval),)
            sdk_mp = SdkMeterProvider(resource=resource, metric_readers=list(readers))
            mp, owns_mp = sdk_mp, True
            if set_global:
                otel_globals.install_meter_provider(sdk_mp, replacing=global_mp if global_mp in _shut_down else None)
    configuration = Configuration(
        service_name=str(resource_attrs["service.name"]) if "service.name" in resource_attrs else None,
        endpoint=endpoint,
        protocol=protocol,
        capture_content=capture_content,
        span_processor=span_processor if owns_tp and span_processors is None else None,
        metric_export_interval_ms=interval,
        resource=resource_attrs,
    )
    return Telemetry.from_providers(
        tp, mp, configuration=configuration, owns_tracer_provider=owns_tp, owns_meter_provider=owns_mp
    )


def _set_configured(telemetry: Telemetry, args: dict[str, Any] | None) -> None:
    global _configured, _configured_args, _default
    with _lock:
        _configured, _configured_args, _default = telemetry, args, None


def current() -> Telemetry:
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
    """Flush and stop what configure() created; a later configure() starts afresh."""
    global _configured, _configured_args, _default
    with _lock:
        t, _configured, _configured_args, _default = _configured, None, None, None
        if t is not None:
            _shut_down.extend(
                p
                for owned, p in ((t.owns_tracer_provider, t.tracer_provider), (t.owns_meter_provider, t.meter_provider))
                if owned
            )
    if t is not None:
        t.shutdown()


def force_flush(timeout_millis: int = 30_000) -> bool:
    """Export buffered spans and metrics now (the configured or the global providers); False on failure."""
    return current().force_flush(timeout_millis)


def reset() -> None:
    """Forget the SDK state without shutting anything down (tests)."""
    global _configured, _configured_args, _default
    with _lock:
        _configured = _configured_args = _default = None
        _shut_down.clear()
