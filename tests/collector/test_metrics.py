"""Metrics from the plain OTel SDK through the project's metrics pipeline to the prometheus exporter."""

from __future__ import annotations

import asyncio

import httpx
from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
from opentelemetry.sdk.resources import Resource

from amtp_obs import contract
from amtp_obs.collector import Collector
from amtp_obs.collector.prometheus_naming import normalize_label

ATTRS = {contract.LLM_MODEL: "gpt-4o", contract.LLM_PROVIDER: "openai", contract.GEN_AI_SYSTEM: "openai"}


def _emit(port: int) -> None:
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=f"127.0.0.1:{port}", insecure=True), export_interval_millis=3_600_000
    )
    provider = MeterProvider(resource=Resource.create({"service.name": "amtp-agent"}), metric_readers=[reader])
    meter = provider.get_meter(contract.SCOPE_NAME)
    # The design's unit "token", from another scope, to prove the exporter's naming rule (NOTES §1).
    design = provider.get_meter("design-units")
    for spec in contract.TOKEN_COUNTERS:
        meter.create_counter(spec.instrument, unit=spec.unit, description=spec.description).add(128, ATTRS)
        design.create_counter(spec.instrument, unit="token").add(5, ATTRS)
    hist = meter.create_histogram(contract.MCP_TOOL_DURATION.instrument, unit=contract.MCP_TOOL_DURATION.unit)
    hist.record(0.3, {contract.MCP_TOOL: "repo.tree"})
    provider.shutdown()


def _parse(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


async def _scrape_until(url: str, name: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    async with httpx.AsyncClient() as client:
        for _ in range(200):
            r = await client.get(url)
            assert r.status_code == 200
            series = _parse(r.text)
            if name in series:
                return series
            await asyncio.sleep(0.05)
    raise AssertionError(f"{name} never appeared at {url}")


async def test_sdk_counters_appear_under_exporter_names(collector: Collector) -> None:
    _, port = collector.listen_address("otlp", "grpc")
    await asyncio.to_thread(_emit, port)
    series = await _scrape_until(collector.url("prometheus", path="/metrics"), "llm_prompt_tokens_total")
    # Names pinned by research collector.md §2 / NOTES §1 (unit {token} vs the design's unit token).
    for name in ("llm_prompt_tokens_total", "llm_completion_tokens_total", "llm_tokens_total"):
        ((labels, value),) = series[name]
        assert value == 128
        for key, v in ATTRS.items():
            assert labels[normalize_label(key)] == v
        assert labels["llm_model"] == "gpt-4o" and labels["gen_ai_system"] == "openai"
        assert labels["service_name"] == "amtp-agent"  # resource_to_telemetry_conversion
        assert labels["job"] == "amtp-agent"
        assert labels["pipeline_source"] == "zt-amtp"  # attributes/llm_meta runs on data points
        assert labels["telemetry_sdk_language"] == "python"
    for name in (
        "llm_prompt_tokens_token_total",
        "llm_completion_tokens_token_total",
        "llm_tokens_token_total",
    ):
        ((labels, value),) = series[name]
        assert value == 5 and labels["llm_provider"] == "openai"
    assert "llm_total_tokens_total" not in series  # only Prometheus' relabel rule produces it
    # Histogram in seconds: _bucket with le, _sum, _count.
    buckets = series["llm_mcp_tool_duration_seconds_bucket"]
    by_le = {lab["le"]: v for lab, v in buckets}
    assert by_le["0"] == 0 and by_le["5"] == 1 and by_le["+Inf"] == 1  # SDK default bounds 0, 5, 10, ...
    assert buckets[0][0][contract.MCP_TOOL.replace(".", "_")] == "repo.tree"
    assert series["llm_mcp_tool_duration_seconds_count"][0][1] == 1
    assert abs(series["llm_mcp_tool_duration_seconds_sum"][0][1] - 0.3) < 1e-9


async def test_exposition_has_help_and_type(collector: Collector) -> None:
    _, port = collector.listen_address("otlp", "grpc")
    await asyncio.to_thread(_emit, port)
    await _scrape_until(collector.url("prometheus", path="/metrics"), "llm_prompt_tokens_total")
    async with httpx.AsyncClient() as client:
        text = (await client.get(collector.url("prometheus", path="/metrics"))).text
    assert "# TYPE llm_prompt_tokens_total counter" in text
    assert f"# HELP llm_prompt_tokens_total {contract.PROMPT_TOKENS.description}" in text
    assert "# TYPE llm_mcp_tool_duration_seconds histogram" in text
