"""configure(): idempotence, reuse of an application's providers, the lazy path, bad settings."""

from __future__ import annotations

import pytest
from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from amtp_obs import contract, env
from amtp_obs.contract.validate import points_from_metrics_data, validate_metric_points
from amtp_obs.sdk import ConfigurationError, configure, get_telemetry, is_configured, llm_call, shutdown
from amtp_obs.testing.otlp_sink import OtlpSink


def _app_providers() -> tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return tp, exporter, MeterProvider(metric_readers=[reader]), reader


def _totals(reader: InMemoryMetricReader) -> dict[str, float | None]:
    return {p.metric: p.value for p in points_from_metrics_data(reader.get_metrics_data())}


def test_configure_is_idempotent(sink: OtlpSink) -> None:
    first = configure("a", endpoint=sink.grpc_endpoint)
    second = configure("something-else", endpoint="http://127.0.0.1:1", protocol="http/protobuf")
    assert second is first
    assert get_telemetry() is first
    assert trace.get_tracer_provider() is first.tracer_provider
    assert metrics.get_meter_provider() is first.meter_provider
    assert first.settings.owns_tracer_provider and first.settings.owns_meter_provider


def test_reuses_providers_the_application_installed() -> None:
    tp, exporter, mp, reader = _app_providers()
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    t = configure("ignored", endpoint="http://127.0.0.1:1")
    assert trace.get_tracer_provider() is tp and metrics.get_meter_provider() is mp
    assert not t.settings.owns_tracer_provider and not t.settings.owns_meter_provider
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(3, 4)
    [span] = exporter.get_finished_spans()
    assert span.name == contract.SPAN_LLM_COMPLETION
    assert _totals(reader) == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    shutdown()  # must not shut down what the application owns
    with tp.get_tracer("app").start_as_current_span("after"):
        pass
    assert [s.name for s in exporter.get_finished_spans()][-1] == "after"


def test_reuses_only_the_tracer_provider_when_metrics_are_not_set_up(sink: OtlpSink) -> None:
    tp, _exporter, _, _ = _app_providers()
    trace.set_tracer_provider(tp)
    t = configure("svc", endpoint=sink.grpc_endpoint)
    assert not t.settings.owns_tracer_provider and t.settings.owns_meter_provider
    assert isinstance(metrics.get_meter_provider(), MeterProvider)


def test_works_without_configure_on_the_global_providers() -> None:
    tp, exporter, mp, reader = _app_providers()
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(5, 6)
    assert not is_configured()
    assert [s.name for s in exporter.get_finished_spans()] == [contract.SPAN_LLM_COMPLETION]
    assert _totals(reader) == {"prompt_tokens": 5, "completion_tokens": 6, "total_tokens": 11}
    assert validate_metric_points(points_from_metrics_data(reader.get_metrics_data())) == []


def test_calls_before_the_app_sets_providers_are_recorded_after() -> None:
    with llm_call("openai", "gpt-4o") as call:  # no provider yet: a no-op, not an error
        call.set_usage(1, 1)
    tp, exporter, mp, reader = _app_providers()
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(2, 2)
    assert len(exporter.get_finished_spans()) == 1
    assert _totals(reader)["total_tokens"] == 4


def test_given_providers_are_used_and_not_installed_globally() -> None:
    tp, exporter, mp, _reader = _app_providers()
    t = configure(tracer_provider=tp, meter_provider=mp)
    assert t.tracer_provider is tp
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(1, 2)
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"protocol": "http/json"}, "unsupported OTLP protocol 'http/json'"),
        ({"span_processor": "fast"}, "span_processor must be one of"),
        ({"metric_export_interval_ms": 0}, "metric_export_interval_ms must be positive"),
    ],
)
def test_bad_settings_are_clear_errors(kwargs: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        configure("x", **kwargs)  # type: ignore[arg-type]
    assert not is_configured()


def test_bad_protocol_from_environment_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.OTEL_EXPORTER_OTLP_PROTOCOL, "carrier-pigeon")
    with pytest.raises(ConfigurationError, match=env.OTEL_EXPORTER_OTLP_PROTOCOL):
        configure("x")


def test_bad_port_variable_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.OBS_OTEL_GRPC_PORT, "forty")
    with pytest.raises(ConfigurationError, match=f"{env.OBS_OTEL_GRPC_PORT}='forty' is not a port"):
        configure("x")


def test_obs_port_variable_is_honoured(monkeypatch: pytest.MonkeyPatch, sink: OtlpSink) -> None:
    monkeypatch.setenv(env.OBS_OTEL_GRPC_PORT, str(sink.grpc_port))
    t = configure("x")
    assert t.settings.endpoint == f"http://localhost:{sink.grpc_port}"


def test_sdk_disabled_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.OTEL_SDK_DISABLED, "true")
    t = configure("x")
    assert not t.settings.owns_tracer_provider and not t.settings.owns_meter_provider
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with llm_call("openai", "gpt-4o") as call:  # still harmless
        call.set_usage(1, 2)
