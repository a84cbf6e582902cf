"""Every token class a vendor bills (issue 9): recorded vendor payloads through the real clients.

Each file in ``recorded/`` is a vendor answer (JSON or SSE events) in the shape the vendors' APIs
return, with the contract values it must produce (``expect``). The fake server replays it verbatim to
the official client, sync and async, so the path is the one production takes: HTTP, the vendor's
parser, our wrapper. A payload without cache or reasoning detail must leave those classes absent
(not 0) on the span and in the counters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest

from amtp_obs import contract
from amtp_obs.contract.validate import validate_readable_span
from amtp_obs.testing.fake_llm import (
    HEADER_CACHE_CREATION,
    HEADER_CACHE_READ,
    HEADER_CHUNKS,
    HEADER_REASONING,
    HEADER_REPLAY,
    FakeLLMServer,
    Recording,
)

if TYPE_CHECKING:
    from conftest import Recorded

RECORDED = Path(__file__).parent / "recorded"
FILES = sorted(p.name for p in RECORDED.glob("*.json"))
MESSAGES = [{"role": "user", "content": "why does the build fail?"}]
COUNTER_OF = {
    contract.LLM_TOKENS_PROMPT: contract.PROMPT_TOKENS,
    contract.LLM_TOKENS_COMPLETION: contract.COMPLETION_TOKENS,
    contract.LLM_TOKENS_TOTAL: contract.TOTAL_TOKENS,
    **{d.attribute: d.counter for d in contract.TOKEN_DETAILS},
}
SEMCONV_OF = {
    contract.LLM_TOKENS_PROMPT: contract.GEN_AI_USAGE_INPUT_TOKENS,
    contract.LLM_TOKENS_COMPLETION: contract.GEN_AI_USAGE_OUTPUT_TOKENS,
    **{d.attribute: d.semconv_attribute for d in contract.TOKEN_DETAILS},
}


def _load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((RECORDED / name).read_text())
    return data


def test_the_corpus_covers_both_vendors_plain_and_stream_with_and_without_detail() -> None:
    shapes = set()
    for name in FILES:
        data = _load(name)
        detail = any(d.attribute in data["expect"] for d in contract.TOKEN_DETAILS)
        shapes.add((data["vendor"], "events" in data, detail))
    assert shapes == {(v, s, d) for v in ("openai", "anthropic") for s in (True, False) for d in (True, False)}


def _stream_kwargs(stream: bool) -> dict[str, Any]:
    """The recordings were made asking for the usage chunk, as a caller who wants usage does."""
    return {"stream": True, "stream_options": {"include_usage": True}} if stream else {"stream": False}


def _replay(server: FakeLLMServer, name: str) -> tuple[dict[str, Any], dict[str, str]]:
    data = _load(name)
    server.register(name, Recording.from_dict(data))
    return data, {HEADER_REPLAY: name}


def _check(recorded: Recorded, expect: dict[str, int]) -> None:
    span = recorded.one_span()
    attrs = dict(span.attributes or {})
    assert validate_readable_span(span) == []
    assert attrs[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_REPORTED
    for detail in contract.TOKEN_DETAILS:
        if detail.attribute not in expect:  # not reported: absent, never a made-up 0
            assert detail.attribute not in attrs and detail.semconv_attribute not in attrs
    for attr, value in expect.items():
        assert attrs[attr] == value, attr
        if attr in SEMCONV_OF:
            assert attrs[SEMCONV_OF[attr]] == value, SEMCONV_OF[attr]
    totals = recorded.counter_totals()
    assert totals == {COUNTER_OF[attr].instrument: value for attr, value in expect.items()}


@pytest.mark.parametrize("name", [n for n in FILES if n.startswith("openai_")])
def test_openai_sync(instrumented: Recorded, server: FakeLLMServer, openai_sync: openai.OpenAI, name: str) -> None:
    data, headers = _replay(server, name)
    stream = "events" in data
    reply = openai_sync.chat.completions.create(
        model="o4-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers=headers,
        **_stream_kwargs(stream),
    )
    if stream:
        chunks = list(reply)
        assert chunks[-1].usage.prompt_tokens == data["expect"][contract.LLM_TOKENS_PROMPT]
    else:
        assert reply.usage.prompt_tokens == data["expect"][contract.LLM_TOKENS_PROMPT]
    _check(instrumented, data["expect"])


@pytest.mark.parametrize("name", [n for n in FILES if n.startswith("openai_")])
async def test_openai_async(instrumented: Recorded, server: FakeLLMServer, openai_async: Any, name: str) -> None:
    data, headers = _replay(server, name)
    stream = "events" in data
    reply = await openai_async.chat.completions.create(
        model="o4-mini", messages=MESSAGES, extra_headers=headers, **_stream_kwargs(stream)
    )
    if stream:
        chunks = [c async for c in reply]
        assert chunks[-1].choices == []
    _check(instrumented, data["expect"])


@pytest.mark.parametrize("name", [n for n in FILES if n.startswith("anthropic_")])
def test_anthropic_sync(
    instrumented: Recorded, server: FakeLLMServer, anthropic_sync: anthropic.Anthropic, name: str
) -> None:
    data, headers = _replay(server, name)
    stream = "events" in data
    reply = anthropic_sync.messages.create(
        model="claude-sonnet-4",
        max_tokens=512,
        messages=MESSAGES,
        stream=stream,
        extra_headers=headers,  # type: ignore[arg-type]
    )
    if stream:
        events = list(reply)
        assert events[0].type == "message_start"
    else:
        assert reply.usage.output_tokens == data["expect"][contract.LLM_TOKENS_COMPLETION]
    _check(instrumented, data["expect"])


@pytest.mark.parametrize("name", [n for n in FILES if n.startswith("anthropic_")])
async def test_anthropic_async(instrumented: Recorded, server: FakeLLMServer, anthropic_async: Any, name: str) -> None:
    data, headers = _replay(server, name)
    stream = "events" in data
    reply = await anthropic_async.messages.create(
        model="claude-sonnet-4", max_tokens=512, messages=MESSAGES, stream=stream, extra_headers=headers
    )
    if stream:
        assert [e.type async for e in reply][-1] == "message_stop"
    _check(instrumented, data["expect"])


@pytest.mark.parametrize("name", ["anthropic_stream_cache.json", "anthropic_stream_no_cache.json"])
def test_anthropic_stream_helper(
    instrumented: Recorded, server: FakeLLMServer, anthropic_sync: anthropic.Anthropic, name: str
) -> None:
    data, headers = _replay(server, name)
    with anthropic_sync.messages.stream(
        model="claude-sonnet-4",
        max_tokens=512,
        messages=MESSAGES,
        extra_headers=headers,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_message()
    assert final.usage.output_tokens == data["expect"][contract.LLM_TOKENS_COMPLETION]
    _check(instrumented, data["expect"])


@pytest.mark.parametrize("name", ["openai_stream_cached_reasoning.json", "openai_stream_no_details.json"])
async def test_openai_async_stream_helper(
    instrumented: Recorded, server: FakeLLMServer, openai_async: Any, name: str
) -> None:
    data, headers = _replay(server, name)
    async with openai_async.chat.completions.stream(
        model="o4-mini", messages=MESSAGES, extra_headers=headers, stream_options={"include_usage": True}
    ) as stream:
        final = await stream.get_final_completion()
    assert final.usage.total_tokens == data["expect"][contract.LLM_TOKENS_TOTAL]
    _check(instrumented, data["expect"])


def test_stream_cut_before_usage_records_no_class(
    instrumented: Recorded, server: FakeLLMServer, openai_sync: openai.OpenAI
) -> None:
    """The usage chunk is the last one: a stream closed before it counts nothing, details included."""
    _, headers = _replay(server, "openai_stream_cached_reasoning.json")
    stream = openai_sync.chat.completions.create(
        model="o4-mini",
        messages=MESSAGES,
        stream=True,
        extra_headers=headers,  # type: ignore[arg-type]
    )
    next(iter(stream))
    stream.close()
    attrs = dict(instrumented.one_span().attributes or {})
    assert attrs[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE
    assert not any(d.attribute in attrs for d in contract.TOKEN_DETAILS)
    assert instrumented.counter_totals() == {}


@pytest.mark.parametrize("provider", [contract.PROVIDER_OPENAI, contract.PROVIDER_ANTHROPIC])
def test_generated_streams_carry_the_classes(
    instrumented: Recorded,
    server: FakeLLMServer,
    openai_sync: openai.OpenAI,
    anthropic_sync: anthropic.Anthropic,
    provider: str,
) -> None:
    """The fake vendor's own streams (OpenAI: usage chunk requested by the instrumentation)."""
    words = len(MESSAGES[0]["content"].split())
    if provider == contract.PROVIDER_OPENAI:
        headers = {HEADER_CHUNKS: "3", HEADER_CACHE_READ: "40", HEADER_REASONING: "9"}
        list(
            openai_sync.chat.completions.create(
                model="o4-mini",
                messages=MESSAGES,
                stream=True,
                extra_headers=headers,  # type: ignore[arg-type]
            )
        )
        expect = {contract.LLM_TOKENS_PROMPT: words + 40, contract.LLM_TOKENS_COMPLETION: 3 + 9}
        expect |= {contract.LLM_TOKENS_CACHE_READ: 40, contract.LLM_TOKENS_REASONING: 9}
    else:
        headers = {HEADER_CHUNKS: "3", HEADER_CACHE_READ: "40", HEADER_CACHE_CREATION: "7"}
        list(
            anthropic_sync.messages.create(
                model="claude-sonnet-4",
                max_tokens=64,
                messages=MESSAGES,
                stream=True,
                extra_headers=headers,  # type: ignore[arg-type]
            )
        )
        expect = {contract.LLM_TOKENS_PROMPT: words + 40 + 7, contract.LLM_TOKENS_COMPLETION: 3}
        expect |= {contract.LLM_TOKENS_CACHE_READ: 40, contract.LLM_TOKENS_CACHE_CREATION: 7}
    expect[contract.LLM_TOKENS_TOTAL] = expect[contract.LLM_TOKENS_PROMPT] + expect[contract.LLM_TOKENS_COMPLETION]
    _check(instrumented, expect)
