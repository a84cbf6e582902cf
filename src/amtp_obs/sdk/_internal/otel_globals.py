"""The OpenTelemetry API's global providers, and the one place that may replace them.

The API lets a process set each global provider once, so that libraries cannot fight over it. The
SDK bends that rule in exactly one case: configure() after shutdown() replaces the provider that an
earlier configure() installed and shutdown() stopped, because that provider is dead and every span
handed to it would be dropped. Tests reset the globals through the same code (reset_all).
"""

from __future__ import annotations

from opentelemetry import metrics, trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.trace import TracerProvider
from opentelemetry.util._once import Once


def _forget_tracer_provider() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None


def _forget_meter_provider() -> None:
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None


def install_tracer_provider(provider: TracerProvider, *, replacing: object | None) -> None:
    """Set the global tracer provider; ``replacing``: the dead provider of ours that may be replaced."""
    if replacing is not None and trace.get_tracer_provider() is replacing:
        _forget_tracer_provider()
    trace.set_tracer_provider(provider)


def install_meter_provider(provider: MeterProvider, *, replacing: object | None) -> None:
    """Set the global meter provider; ``replacing``: the dead provider of ours that may be replaced."""
    if replacing is not None and metrics.get_meter_provider() is replacing:
        _forget_meter_provider()
    metrics.set_meter_provider(provider)


def reset_all() -> None:
    """Make the API behave as if no provider had ever been set (tests only)."""
    _forget_tracer_provider()
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()
    _forget_meter_provider()
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()
