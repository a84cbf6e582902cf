"""The prometheus exporter's accumulation and exposition rules (collector-contrib 0.100.0)."""

from __future__ import annotations

import time
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.metrics.v1 import metrics_pb2
from prometheus_client.parser import text_string_to_metric_families

from amtp_obs.collector.component import ComponentID
from amtp_obs.collector.expfmt import format_float
from amtp_obs.collector.exporter_prometheus import PrometheusExporter, PrometheusExporterConfig
from amtp_obs.testing.otlp_sink import to_key_values

CUM = metrics_pb2.AGGREGATION_TEMPORALITY_CUMULATIVE
DELTA = metrics_pb2.AGGREGATION_TEMPORALITY_DELTA


def exporter(**cfg: Any) -> PrometheusExporter:
    return PrometheusExporter(
        ComponentID("prometheus"), PrometheusExporterConfig(endpoint="127.0.0.1:0", namespace="llm", **cfg)
    )


def request(resource: dict[str, Any], build: Any, *, t: int = 2_000) -> metrics_service_pb2.ExportMetricsServiceRequest:
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    rm = req.resource_metrics.add()
    rm.resource.attributes.extend(to_key_values(resource))
    build(rm.scope_metrics.add().metrics.add(), t)
    return req


def counter(name: str, value: int, attrs: dict[str, Any], temporality: int = CUM, monotonic: bool = True) -> Any:
    def build(m: Any, t: int) -> None:
        m.name, m.unit = name, "{token}"
        m.sum.aggregation_temporality, m.sum.is_monotonic = temporality, monotonic
        dp = m.sum.data_points.add(as_int=value, time_unix_nano=t, start_time_unix_nano=1_000)
        dp.attributes.extend(to_key_values(attrs))

    return build


def samples(exp: PrometheusExporter) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(exp.render()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


RES = {"service.name": "agent", "telemetry.sdk.language": "python"}


def test_cumulative_keeps_last_value_and_delta_accumulates() -> None:
    exp = exporter()
    exp.accumulate(request(RES, counter("prompt_tokens", 10, {"llm.model": "m"})))
    exp.accumulate(request(RES, counter("prompt_tokens", 25, {"llm.model": "m"}), t=3_000))
    exp.accumulate(request(RES, counter("prompt_tokens", 5, {"llm.model": "m"}), t=2_500))  # older: ignored
    exp.accumulate(request(RES, counter("completion_tokens", 3, {}, DELTA)))
    exp.accumulate(request(RES, counter("completion_tokens", 4, {}, DELTA), t=3_000))
    s = samples(exp)
    assert [v for _, v in s["llm_prompt_tokens_total"]] == [25]
    assert [v for _, v in s["llm_completion_tokens_total"]] == [7]


def test_non_monotonic_sums() -> None:
    exp = exporter()
    exp.accumulate(request(RES, counter("in_flight", 3, {}, CUM, monotonic=False)))
    exp.accumulate(request(RES, counter("dropped", 3, {}, DELTA, monotonic=False)))
    text = exp.render()
    assert "# TYPE llm_in_flight gauge" in text
    assert "dropped" not in text


def test_labels_job_instance_and_resource_conversion() -> None:
    res = {**RES, "service.namespace": "ns", "service.instance.id": "i-1", "region": "eu"}
    attrs = {"llm.model": "m", "region": "point-value", "a.b": "x", "a_b": "y"}
    plain = exporter()
    plain.accumulate(request(res, counter("prompt_tokens", 1, attrs)))
    ((labels, _),) = samples(plain)["llm_prompt_tokens_total"]
    assert labels["job"] == "ns/agent" and labels["instance"] == "i-1"
    assert labels["region"] == "point-value" and "service_name" not in labels
    assert labels["a_b"] == "x;y"  # two keys normalising to one label
    info = samples(plain)["llm_target_info"]
    assert info[0][0]["region"] == "eu" and info[0][0]["job"] == "ns/agent"

    converted = exporter(resource_to_telemetry_conversion={"enabled": True}, const_labels={"env": "test"})
    converted.accumulate(request(res, counter("prompt_tokens", 1, attrs)))
    ((labels, _),) = samples(converted)["llm_prompt_tokens_total"]
    assert labels["region"] == "eu"  # resource attribute overwrites the point attribute
    assert labels["service_name"] == "agent" and labels["service_namespace"] == "ns"
    assert labels["telemetry_sdk_language"] == "python" and labels["env"] == "test"


def test_gauge_ratio_histogram_summary_and_suffix_switch() -> None:
    def gauge(m: Any, t: int) -> None:
        m.name, m.unit = "cache.hit", "1"
        m.gauge.data_points.add(as_double=0.75, time_unix_nano=t)

    def hist(m: Any, t: int) -> None:
        m.name, m.unit = "latency", "ms"
        m.histogram.aggregation_temporality = CUM
        m.histogram.data_points.add(
            time_unix_nano=t, count=6, sum=42.5, explicit_bounds=[1, 10], bucket_counts=[1, 2, 3]
        )

    def summary(m: Any, t: int) -> None:
        m.name = "rpc"
        dp = m.summary.data_points.add(time_unix_nano=t, count=4, sum=2.0)
        dp.quantile_values.add(quantile=0.5, value=0.4)

    exp = exporter(send_timestamps=True)
    for build in (gauge, hist, summary):
        exp.accumulate(request(RES, build))
    s = samples(exp)
    assert s["llm_cache_hit_ratio"][0][1] == 0.75
    text = exp.render()
    for le, cumulative in (("1", 1), ("10", 3), ("+Inf", 6)):  # Go float format, cumulative counts
        assert f'llm_latency_milliseconds_bucket{{job="agent",le="{le}"}} {cumulative} ' in text
    assert s["llm_latency_milliseconds_sum"][0][1] == 42.5
    assert s["llm_rpc"][0] == ({"job": "agent", "quantile": "0.5"}, 0.4)
    assert 'llm_cache_hit_ratio{job="agent"} 0.75 0' in exp.render()  # timestamp in ms

    raw = exporter(add_metric_suffixes=False)
    raw.accumulate(request(RES, counter("total_tokens", 1, {})))
    text = raw.render()
    assert "# TYPE llm_total_tokens counter" in text and '\nllm_total_tokens{job="agent"} 1\n' in text


def test_metric_expiration_drops_stale_series() -> None:
    exp = exporter(metric_expiration="50ms")
    exp.accumulate(request(RES, counter("prompt_tokens", 1, {})))
    assert "llm_prompt_tokens_total" in samples(exp)
    time.sleep(0.1)
    assert exp.render() == ""


def test_go_float_format() -> None:
    assert [format_float(v) for v in (128, 0.25, 1e6, 1234567, 1e-5, float("inf"))] == [
        "128",
        "0.25",
        "1e+06",
        "1.234567e+06",
        "1e-05",
        "+Inf",
    ]
