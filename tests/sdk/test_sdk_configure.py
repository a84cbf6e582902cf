"""configure(): same or other arguments, after shutdown, an application's providers, the lazy path, bad settings."""

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
from amtp_obs.sdk import ConfigurationError, configure, force_flush, llm_call, shutdown
from amtp_obs.sdk._internal.config import is_configured
from amtp_obs.sdk.testing import configure_with, current_telemetry
from amtp_obs.testing.otlp_sink import OtlpSink
from amtp_obs.testing.poll import eventually


def _app_providers() -> tuple[TracerProvider, InMemorySpanExporter, MeterProvider, InMemoryMetricReader]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider()
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    return tp, exporter, MeterProvider(metric_readers=[reader]), reader


def _totals(reader: InMemoryMetricReader) -> dict[str, float | None]:
    return {p.metric: p.value for p in points_from_metrics_data(reader.get_metrics_data())}


def test_configure_again_with_the_same_arguments_returns_the_same_configuration(sink: OtlpSink) -> None:
    first = configure("a", endpoint=sink.grpc_endpoint, resource_attributes={"team": "x"})
    assert configure("a", endpoint=sink.grpc_endpoint, resource_attributes={"team": "x"}) is first
    t = current_telemetry()
    assert trace.get_tracer_provider() is t.tracer_provider
    assert metrics.get_meter_provider() is t.meter_provider
    assert t.owns_tracer_provider and t.owns_meter_provider
    assert (first.service_name, first.endpoint, first.protocol) == ("a", sink.grpc_endpoint, "grpc")
    assert first.resource["team"] == "x" and first.resource["service.name"] == "a"


def test_configure_again_with_other_arguments_says_what_differs(sink: OtlpSink) -> None:
    first = configure("a", endpoint=sink.grpc_endpoint)
    with pytest.raises(ConfigurationError) as err:
        configure("b", endpoint=sink.grpc_endpoint, protocol="http/protobuf")
    message = str(err.value)
    assert "service_name: first 'a', now 'b'" in message
    assert "protocol: first None, now 'http/protobuf'" in message
    assert "endpoint" not in message  # the same: not listed
    assert "call shutdown() first" in message
    assert configure("a", endpoint=sink.grpc_endpoint) is first  # still configured as first asked


def test_configure_after_shutdown_starts_afresh() -> None:
    with OtlpSink() as first_sink, OtlpSink() as second_sink:
        configure("first", endpoint=first_sink.grpc_endpoint, span_processor="simple")
        dead = trace.get_tracer_provider()
        with llm_call("openai", "gpt-4o") as call:
            call.set_usage(1, 1)
        shutdown()
        configure("second", endpoint=second_sink.grpc_endpoint, span_processor="simple")
        assert trace.get_tracer_provider() is not dead  # the stopped provider was replaced, globally too
        with llm_call("openai", "gpt-4o") as call:
            call.set_usage(2, 2)
        with trace.get_tracer("app").start_as_current_span("app-span"):  # the application's own spans too
            pass
        assert force_flush(10_000)
        assert eventually(lambda: len(second_sink.spans()) == 2 and second_sink.latest("total_tokens"))
        assert {s.resource["service.name"] for s in second_sink.spans()} == {"second"}
        assert [p.value for p in second_sink.latest("total_tokens")] == [4]  # a fresh counter
        assert {s.resource["service.name"] for s in first_sink.spans()} == {"first"}
        shutdown()


def test_reuses_providers_the_application_installed() -> None:
    tp, exporter, mp, reader = _app_providers()
    trace.set_tracer_provider(tp)
    metrics.set_meter_provider(mp)
    configuration = configure("ignored", endpoint="http://127.0.0.1:1")
    assert trace.get_tracer_provider() is tp and metrics.get_meter_provider() is mp
    t = current_telemetry()
    assert not t.owns_tracer_provider and not t.owns_meter_provider
    assert configuration.protocol is None and configuration.resource == {}
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
    configure("svc", endpoint=sink.grpc_endpoint)
    t = current_telemetry()
    assert not t.owns_tracer_provider and t.owns_meter_provider
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
    t = configure_with(tp, mp)
    assert t.tracer_provider is tp
    with pytest.raises(ConfigurationError, match="configured for tests"):
        configure("app")
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(1, 2)
    assert len(exporter.get_finished_spans()) == 1


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"protocol": "http/json"}, "unsupported OTLP protocol 'http/json'"),
        ({"span_processor": "fast"}, "span_processor must be one of"),
        ({"metric_export_interval_ms": 0}, "metric_export_interval_ms must be a positive integer"),
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
    assert configure("x").endpoint == f"http://localhost:{sink.grpc_port}"


def test_sdk_disabled_installs_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.OTEL_SDK_DISABLED, "true")
    configure("x")
    t = current_telemetry()
    assert not t.owns_tracer_provider and not t.owns_meter_provider
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)
    with llm_call("openai", "gpt-4o") as call:  # still harmless
        call.set_usage(1, 2)
