"""The typed vocabulary of a call: request types, provenance, and the Usage an extractor returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

RequestType = Literal["chat", "completion", "embedding"]
"""``llm.request.type`` (and ``gen_ai.operation.name``): the contract's REQUEST_TYPE_* values."""

Provenance = Literal["reported", "estimated", "unavailable"]
"""``llm.tokens.provenance``: the vendor's usage block, your own count, or nothing known."""


@dataclass(frozen=True, slots=True)
class Usage:
    """Token counts of one call (what a decorated function's ``usage=`` extractor returns).

    ``prompt_tokens`` is ALL input, cached included; ``completion_tokens`` ALL output, reasoning
    included; the other three are parts of those, None when the vendor did not report them
    (contract.TOKEN_DETAILS, docs/instrumentation.md "Token classes").
    """

    prompt_tokens: int | None
    completion_tokens: int | None
    cache_read_tokens: int | None = None
    cache_creation_tokens: int | None = None
    reasoning_tokens: int | None = None
    provenance: Provenance = "reported"
