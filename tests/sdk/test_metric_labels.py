"""Bounded model labels on the counters: normalised names, a per-process cap, an explicit overflow."""

from __future__ import annotations

import logging

import pytest

from amtp_obs import contract
from amtp_obs.sdk import llm_call
from amtp_obs.sdk._internal.labels import ModelLabels, normalize_model
from amtp_obs.sdk.testing import InMemoryTelemetry, configure_in_memory


@pytest.mark.parametrize(
    ("raw", "label"),
    [
        ("gpt-4o", "gpt-4o"),
        (" GPT-4o-2024-08-06 ", "gpt-4o-2024-08-06"),  # a vendor snapshot date is kept (priced apart)
        ("claude-3-5-sonnet-20241022", "claude-3-5-sonnet-20241022"),
        ("ft:gpt-4o-mini-2024-07-18:acme:support:9x8YzAbC", "ft:gpt-4o-mini-2024-07-18:acme:support"),  # job id
        ("router-2024-12-05T10:11:12Z", "router"),  # a time of day is per request
        ("agent/req-3fa85f64-5717-4562-b3fc-2c963f66afa6", "agent/req"),  # a request uuid
        ("deadbeefdeadbeefdeadbeef-model", "model"),  # a long hex id
        ("model with spaces", "model_with_spaces"),
        ("", "unknown"),
        ("x" * 100, "x" * contract.LLM_MODEL_LABEL_MAX_LENGTH),
    ],
)
def test_normalize_model(raw: str, label: str) -> None:
    assert normalize_model(raw) == label


def test_cap_overflows_explicitly_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    labels = ModelLabels(limit=3)
    with caplog.at_level(logging.WARNING, logger="amtp_obs.sdk"):
        got = [labels.label(f"model-{i}") for i in range(5)]
        again = labels.label("model-1")  # a model seen before the cap keeps its name
    assert got == ["model-0", "model-1", "model-2", contract.LLM_MODEL_OVERFLOW, contract.LLM_MODEL_OVERFLOW]
    assert again == "model-1"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "model-3" in warnings[0].getMessage()


def test_counters_carry_the_bounded_label_and_spans_the_real_name() -> None:
    mem: InMemoryTelemetry = configure_in_memory()
    raw = "Router-2024-12-05T10:11:12Z"
    with llm_call("openai", raw) as call:
        call.set_usage(3, 2)
    [span] = mem.spans(contract.SPAN_LLM_COMPLETION)
    assert span.attributes[contract.LLM_MODEL] == raw
    models = {dict(k)[contract.LLM_MODEL] for k in mem.counter_values()["prompt_tokens"]}
    assert models == {"router"}


def test_tokens_past_the_cap_are_counted_under_the_overflow_value() -> None:
    mem = configure_in_memory()
    n = contract.LLM_MODEL_LABEL_LIMIT + 5
    for i in range(n):
        with llm_call("openai", f"m{i}") as call:
            call.set_usage(1, 1)
    values = mem.counter_values()["prompt_tokens"]
    by_model = {dict(k)[contract.LLM_MODEL]: v for k, v in values.items()}
    assert by_model[contract.LLM_MODEL_OVERFLOW] == 5
    assert sum(by_model.values()) == n  # nothing dropped
    assert len(by_model) == contract.LLM_MODEL_LABEL_LIMIT + 1
