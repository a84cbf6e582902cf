"""``llm.cost.usd`` on the ``llm.completion`` span, from the catalog shipped with the package."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest

from amtp_obs import contract
from amtp_obs.pricing import catalog
from amtp_obs.sdk import llm_call
from amtp_obs.sdk.testing import InMemoryTelemetry, configure_in_memory


@pytest.fixture
def mem(clean_sdk: None) -> Iterator[InMemoryTelemetry]:
    yield configure_in_memory()


def _span(mem: InMemoryTelemetry) -> Any:
    [span] = mem.spans(contract.SPAN_LLM_COMPLETION)
    return dict(span.attributes)


def _hand(provider: str, model: str, prompt: int, completion: int, cache_read: int, cache_creation: int) -> Decimal:
    """USD by hand from the catalog text's per-1M prices (Decimal, no shared code path)."""
    price = catalog.packaged().catalog.price_at(provider, model, datetime.now(UTC))
    assert price is not None

    def d(v: float | None) -> Decimal:
        return Decimal(repr(v if v is not None else price.input))

    uncached = prompt - cache_read - cache_creation
    total = (
        uncached * d(price.input)
        + cache_read * d(price.cache_read)
        + cache_creation * d(price.cache_write)
        + completion * d(price.output)
    )
    return total / 1_000_000


@pytest.mark.parametrize(
    ("provider", "model", "usage"),
    [
        # OpenAI: cached input at the cache-read rate, reasoning inside completion, no cache writes.
        (contract.PROVIDER_OPENAI, "gpt-4o-mini", (12_000, 900, 8_000, 0, 300)),
        (contract.PROVIDER_OPENAI, "gpt-4o-mini-2024-07-18", (1_000, 10, 0, 0, 0)),  # an alias
        (contract.PROVIDER_OPENAI, "o3", (5_000, 4_000, 1_024, 0, 3_500)),
        # Anthropic: prompt counts uncached + cache read + cache creation.
        (contract.PROVIDER_ANTHROPIC, "claude-sonnet-4-5", (30_000, 1_200, 20_000, 5_000, 0)),
    ],
)
def test_priced_call_carries_its_cost_and_catalog(
    mem: InMemoryTelemetry, provider: str, model: str, usage: tuple[int, int, int, int, int]
) -> None:
    prompt, completion, cache_read, cache_creation, reasoning = usage
    with llm_call(provider, model) as call:
        call.set_usage(
            prompt,
            completion,
            cache_read_tokens=cache_read,
            cache_creation_tokens=cache_creation,
            reasoning_tokens=reasoning,
        )
    attrs = _span(mem)
    expected = _hand(provider, model, prompt, completion, cache_read, cache_creation)
    assert expected > 0
    assert abs(Decimal(repr(attrs[contract.LLM_COST_USD])) - expected) <= expected * Decimal("1e-12")
    assert attrs[contract.LLM_COST_CATALOG] == catalog.packaged().version


@pytest.mark.parametrize(
    ("provider", "model"),
    [
        (contract.PROVIDER_OPENAI, "gpt-4o-mini-2099-12-31"),  # a date suffix that is no alias
        (contract.PROVIDER_ANTHROPIC, "gpt-4o-mini"),  # the provider is part of the match
        ("inprocess", "local-small"),
    ],
)
def test_unpriced_model_has_no_cost_attribute(mem: InMemoryTelemetry, provider: str, model: str) -> None:
    with llm_call(provider, model) as call:
        call.set_usage(100, 50)
    attrs = _span(mem)
    assert contract.LLM_COST_USD not in attrs and contract.LLM_COST_CATALOG not in attrs
    assert attrs[contract.LLM_TOKENS_PROMPT] == 100


def test_unknown_usage_is_not_priced(mem: InMemoryTelemetry) -> None:
    with llm_call(contract.PROVIDER_OPENAI, "gpt-4o") as call:
        call.set_usage(None, 50)
    assert contract.LLM_COST_USD not in _span(mem)


def test_price_in_force_follows_the_call_time() -> None:
    pricer = catalog.Pricer(catalog.packaged())
    june9 = datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC).timestamp()
    june10 = datetime(2025, 6, 10, tzinfo=UTC).timestamp()
    before = pricer.cost_usd("openai", "o3", prompt=1_000_000, completion=0, when=june9)
    after = pricer.cost_usd("openai", "o3", prompt=1_000_000, completion=0, when=june10)
    assert before == pytest.approx(10.0) and after == pytest.approx(2.0)
    early = datetime(2025, 4, 1, tzinfo=UTC).timestamp()
    assert pricer.cost_usd("openai", "o3", prompt=1, completion=1, when=early) is None
