"""Pins the collector-contrib 0.100.0 prometheus exporter naming (research collector.md §2)."""

from __future__ import annotations

import pytest

from amtp_obs import contract
from amtp_obs.collector.prometheus_naming import PER_UNIT_MAP, UNIT_MAP, build_metric_name, normalize_label


@pytest.mark.parametrize(
    ("name", "unit", "expected"),
    [
        # research table, unit "{token}" / "1" / "" / "tokens"
        ("prompt_tokens", "{token}", "llm_prompt_tokens_total"),
        ("completion_tokens", "{token}", "llm_completion_tokens_total"),
        ("total_tokens", "{token}", "llm_tokens_total"),
        ("prompt_tokens", "1", "llm_prompt_tokens_total"),
        ("prompt_tokens", "", "llm_prompt_tokens_total"),
        ("prompt_tokens", "tokens", "llm_prompt_tokens_total"),
        # research table, unit "token" (the seed): the unknown unit is appended
        ("prompt_tokens", "token", "llm_prompt_tokens_token_total"),
        ("completion_tokens", "token", "llm_completion_tokens_token_total"),
        ("total_tokens", "token", "llm_tokens_token_total"),
        # every "total" token is removed, one appended at the end
        ("network.io.total", "By", "llm_network_io_bytes_total"),
        ("requests_total", "", "llm_requests_total"),
        # mapped units, per-units
        ("io", "By/s", "llm_io_bytes_per_second_total"),
        ("mem", "KiBy", "llm_mem_kibibytes_total"),
        ("latency", "ms", "llm_latency_milliseconds_total"),
        ("x", "{req}/s", "llm_x_per_second_total"),
        ("x", "req/{s}", "llm_x_req_total"),
        ("x", "%", "llm_x_percent_total"),
        # unit already a token is not repeated
        ("duration_seconds", "s", "llm_duration_seconds_total"),
    ],
)
def test_counter_names(name: str, unit: str, expected: str) -> None:
    assert build_metric_name(name, unit, namespace="llm", monotonic_sum=True) == expected


def test_no_suffixes() -> None:
    plain = {"add_metric_suffixes": False}
    assert build_metric_name("total_tokens", "token", namespace="llm", monotonic_sum=True, **plain) == (
        "llm_total_tokens"
    )
    assert build_metric_name("mcp.tool.duration", "s", namespace="llm", monotonic_sum=False, **plain) == (
        "llm_mcp_tool_duration"
    )
    assert build_metric_name("9lives", "", namespace="", monotonic_sum=True, **plain) == "_9lives"


def test_histogram_and_gauges() -> None:
    assert build_metric_name("mcp.tool.duration", "s", namespace="llm", monotonic_sum=False) == (
        "llm_mcp_tool_duration_seconds"
    )
    assert build_metric_name("mcp.github_api.duration", "s", namespace="llm", monotonic_sum=False) == (
        "llm_mcp_github_api_duration_seconds"
    )
    # gauge with unit 1 -> ratio; a non-gauge with unit 1 gets nothing
    assert build_metric_name("cpu.utilization", "1", namespace="", monotonic_sum=False, gauge=True) == (
        "cpu_utilization_ratio"
    )
    assert build_metric_name("cpu.utilization", "1", namespace="", monotonic_sum=False) == "cpu_utilization"
    # up-down counter: no _total, total token kept
    assert build_metric_name("total_tokens", "token", namespace="llm", monotonic_sum=False) == (
        "llm_total_tokens_token"
    )


def test_namespace_cleanup_and_leading_digit() -> None:
    assert build_metric_name("calls", "", namespace="my-ns.x", monotonic_sum=True) == "my_ns_x_calls_total"
    assert build_metric_name("2xx.calls", "", namespace="", monotonic_sum=True) == "_2xx_calls_total"


def test_contract_counters_match_exporter_before_relabel() -> None:
    """Prompt and completion need no relabel; total needs one (prometheus.yml renames it)."""
    ns = contract.METRICS_NAMESPACE
    for spec in (contract.PROMPT_TOKENS, contract.COMPLETION_TOKENS):
        built = build_metric_name(spec.instrument, spec.unit, namespace=ns, monotonic_sum=True)
        assert built == spec.prometheus_name
    total = build_metric_name(
        contract.TOTAL_TOKENS.instrument, contract.TOTAL_TOKENS.unit, namespace=ns, monotonic_sum=True
    )
    assert total != contract.TOTAL_TOKENS.prometheus_name


@pytest.mark.parametrize(
    ("attr", "label"),
    [
        ("llm.model", "llm_model"),
        ("llm.provider", "llm_provider"),
        ("gen_ai.system", "gen_ai_system"),
        ("pipeline.source", "pipeline_source"),
        ("service.name", "service_name"),
        ("http-status/code", "http_status_code"),
        ("0day", "key_0day"),
        ("_private", "key_private"),
        ("__reserved", "__reserved"),
        ("", ""),
    ],
)
def test_normalize_label(attr: str, label: str) -> None:
    assert normalize_label(attr) == label


# Every entry of unitMap and perUnitMap in collector-contrib v0.100.0
# pkg/translator/prometheus/normalize_name.go, typed from that source (not read from our module).
CONTRIB_0_100_UNIT_MAP = [
    ("d", "days"),
    ("h", "hours"),
    ("min", "minutes"),
    ("s", "seconds"),
    ("ms", "milliseconds"),
    ("us", "microseconds"),
    ("ns", "nanoseconds"),
    ("By", "bytes"),
    ("KiBy", "kibibytes"),
    ("MiBy", "mebibytes"),
    ("GiBy", "gibibytes"),
    ("TiBy", "tibibytes"),
    ("KBy", "kilobytes"),
    ("MBy", "megabytes"),
    ("GBy", "gigabytes"),
    ("TBy", "terabytes"),
    ("m", "meters"),
    ("V", "volts"),
    ("A", "amperes"),
    ("J", "joules"),
    ("W", "watts"),
    ("g", "grams"),
    ("Cel", "celsius"),
    ("Hz", "hertz"),
    ("%", "percent"),
]
CONTRIB_0_100_PER_UNIT_MAP = [
    ("s", "second"),
    ("m", "minute"),
    ("h", "hour"),
    ("d", "day"),
    ("w", "week"),
    ("mo", "month"),
    ("y", "year"),
]


@pytest.mark.parametrize(("unit", "word"), CONTRIB_0_100_UNIT_MAP)
def test_every_main_unit_of_contrib_0_100(unit: str, word: str) -> None:
    """normalize_name.go (collector-contrib v0.100.0) unitMap: the mapped word is appended to a gauge."""
    assert build_metric_name("x", unit, namespace="", monotonic_sum=False) == f"x_{word}"


@pytest.mark.parametrize(("unit", "word"), CONTRIB_0_100_PER_UNIT_MAP)
def test_every_per_unit_of_contrib_0_100(unit: str, word: str) -> None:
    """normalize_name.go (v0.100.0) perUnitMap: ``By/<unit>`` -> ``bytes_per_<word>``."""
    assert build_metric_name("x", f"By/{unit}", namespace="", monotonic_sum=False) == f"x_bytes_per_{word}"


def test_the_map_has_nothing_else() -> None:
    """The module's maps are exactly contrib 0.100.0's (``1`` maps to "" and adds nothing)."""
    assert {**dict(CONTRIB_0_100_UNIT_MAP), "1": ""} == UNIT_MAP
    assert dict(CONTRIB_0_100_PER_UNIT_MAP) == PER_UNIT_MAP


@pytest.mark.parametrize(
    ("unit", "expected"),
    [
        # `$` and the non-UCUM byte units left contrib's map in PR #24647 (v0.83.0): at v0.100.0 `$` is an
        # unknown unit that CleanUpString reduces to "", so nothing is appended (no `_dollars`); `B`
        # (bel in UCUM) and `KB` are kept as written. Prometheus v0.54.0 vendors the same map
        # (storage/remote/otlptranslator/prometheus/normalize_name.go, provenance contrib@95e8f8f).
        ("$", "cost_total"),
        ("B", "cost_B_total"),
        ("KB", "cost_KB_total"),
        ("1", "cost_total"),
        ("{USD}", "cost_total"),
        ("USD", "cost_USD_total"),
    ],
)
def test_units_outside_the_map(unit: str, expected: str) -> None:
    assert build_metric_name("cost", unit, namespace="", monotonic_sum=True) == expected
