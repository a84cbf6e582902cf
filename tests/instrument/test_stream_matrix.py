"""The acceptance matrix: both clients x {sync, async} x {stream, non-stream} x outcomes.

Every case must leave exactly one finished ``llm.completion`` span, the vendor's token counts when
usage arrived (and the counters incremented once), provenance ``unavailable`` and no counter
increments when it did not, and the vendor's own objects and exceptions in the caller's hands.
"""

from __future__ import annotations

import gc
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest
from anthropic.types import (
    Message,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
)
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from opentelemetry.trace import StatusCode

from amtp_obs import contract
from amtp_obs.testing.fake_llm import HEADER_CHUNKS, HEADER_ERROR, HEADER_FAIL_AFTER, FakeLLMServer

if TYPE_CHECKING:
    from conftest import Recorded

PROMPT = "one two three four"  # the fake server counts words: 4 prompt tokens
CHUNKS = 3  # reply words = content deltas = completion tokens
MODELS = {contract.PROVIDER_OPENAI: "gpt-fake-1", contract.PROVIDER_ANTHROPIC: "claude-fake-1"}
ERRORS: dict[str, tuple[str, type[Exception]]] = {
    contract.PROVIDER_OPENAI: ("429", openai.RateLimitError),
    contract.PROVIDER_ANTHROPIC: ("500", anthropic.InternalServerError),
}
REPORTED_DETAILS = {
    contract.PROVIDER_OPENAI: (contract.CACHE_READ_TOKENS, contract.REASONING_TOKENS),
    contract.PROVIDER_ANTHROPIC: (contract.CACHE_READ_TOKENS, contract.CACHE_CREATION_TOKENS),
}
STREAM_OUTCOMES = ("completed", "close", "context_exit", "abandoned", "http_error", "midstream_failure")
PLAIN_OUTCOMES = ("completed", "http_error")
CASES = [
    pytest.param(provider, mode, stream, outcome, id=f"{provider}-{mode}-{kind}-{outcome}")
    for provider in (contract.PROVIDER_OPENAI, contract.PROVIDER_ANTHROPIC)
    for mode in ("sync", "async")
    for stream, kind in ((True, "stream"), (False, "plain"))
    for outcome in (STREAM_OUTCOMES if stream else PLAIN_OUTCOMES)
]
ANTHROPIC_EVENTS = [
    RawMessageStartEvent,
    RawContentBlockStartEvent,
    *[RawContentBlockDeltaEvent] * CHUNKS,
    RawContentBlockStopEvent,
    RawMessageDeltaEvent,
    RawMessageStopEvent,
]


def _headers(provider: str, outcome: str) -> dict[str, str]:
    headers = {HEADER_CHUNKS: str(CHUNKS)}
    if outcome == "http_error":
        headers[HEADER_ERROR] = ERRORS[provider][0]
    if outcome == "midstream_failure":
        headers[HEADER_FAIL_AFTER] = "3"
    return headers


def _request(provider: str, client: Any, stream: bool, headers: dict[str, str]) -> Any:
    messages = [{"role": "user", "content": PROMPT}]
    if provider == contract.PROVIDER_OPENAI:
        return client.chat.completions.create(
            model=MODELS[provider], messages=messages, stream=stream, extra_headers=headers
        )
    return client.messages.create(
        model=MODELS[provider], max_tokens=64, messages=messages, stream=stream, extra_headers=headers
    )


def _check_items(provider: str, items: list[Any]) -> None:
    """The caller got the vendor's own chunk types, in the vendor's order."""
    if provider == contract.PROVIDER_OPENAI:
        assert all(type(i) is ChatCompletionChunk for i in items)
        # role chunk, CHUNKS content chunks, finish chunk; the usage chunk we asked for is not handed out
        assert len(items) == CHUNKS + 2
        assert all(c.usage is None for c in items)
        assert "".join(c.choices[0].delta.content or "" for c in items).split() != []
    else:
        assert [type(i) for i in items] == ANTHROPIC_EVENTS


def _check_plain(provider: str, result: Any) -> None:
    expected = ChatCompletion if provider == contract.PROVIDER_OPENAI else Message
    assert type(result) is expected


def _check_stream_object(provider: str, result: Any, *, is_async: bool) -> None:
    module = openai if provider == contract.PROVIDER_OPENAI else anthropic
    assert isinstance(result, module.AsyncStream if is_async else module.Stream)
    assert result.response.status_code == 200  # attributes of the vendor object are reachable


def _run_sync(provider: str, client: Any, stream: bool, outcome: str) -> BaseException | None:
    headers = _headers(provider, outcome)
    if outcome == "http_error":
        with pytest.raises(ERRORS[provider][1]) as info:
            _request(provider, client, stream, headers)
        return info.value
    result = _request(provider, client, stream, headers)
    if not stream:
        _check_plain(provider, result)
        return None
    _check_stream_object(provider, result, is_async=False)
    if outcome == "completed":
        _check_items(provider, list(result))
    elif outcome == "close":
        it = iter(result)
        next(it), next(it)
        result.close()
        assert result.response.is_closed
    elif outcome == "context_exit":
        with result as s:
            for n, _ in enumerate(s):
                if n == 1:
                    break
    elif outcome == "abandoned":
        for _ in result:
            break
        del result
        gc.collect()
    elif outcome == "midstream_failure":
        with pytest.raises(Exception) as info:
            list(result)
        return info.value
    return None


async def _run_async(provider: str, client: Any, stream: bool, outcome: str) -> BaseException | None:
    headers = _headers(provider, outcome)
    if outcome == "http_error":
        with pytest.raises(ERRORS[provider][1]) as info:
            await _request(provider, client, stream, headers)
        return info.value
    result = await _request(provider, client, stream, headers)
    if not stream:
        _check_plain(provider, result)
        return None
    _check_stream_object(provider, result, is_async=True)
    if outcome == "completed":
        _check_items(provider, [item async for item in result])
    elif outcome == "close":
        it = result.__aiter__()
        await it.__anext__()
        await it.__anext__()
        await result.close()
        assert result.response.is_closed
    elif outcome == "context_exit":
        async with result as s:
            n = 0
            async for _ in s:
                n += 1
                if n == 2:
                    break
    elif outcome == "abandoned":
        async for _ in result:
            break
        del result
        gc.collect()
    elif outcome == "midstream_failure":
        with pytest.raises(Exception) as info:
            _ = [item async for item in result]
        return info.value
    return None


def make_client(server: FakeLLMServer, provider: str, mode: str) -> Any:
    """An official client pointed at the fake server (no retries: one request per call)."""
    if provider == contract.PROVIDER_OPENAI:
        cls: Any = openai.OpenAI if mode == "sync" else openai.AsyncOpenAI
        return cls(base_url=server.openai_base_url, api_key="test-key", max_retries=0)
    cls = anthropic.Anthropic if mode == "sync" else anthropic.AsyncAnthropic
    return cls(base_url=server.anthropic_base_url, api_key="test-key", max_retries=0)


def _assert_case(recorded: Recorded, provider: str, stream: bool, outcome: str, exc: BaseException | None) -> None:
    span = recorded.one_span()
    attrs = dict(span.attributes or {})
    model = MODELS[provider]
    assert attrs[contract.LLM_PROVIDER] == provider
    assert attrs[contract.GEN_AI_SYSTEM] == provider
    assert attrs[contract.LLM_MODEL] == model
    assert attrs[contract.LLM_REQUEST_TYPE] == contract.REQUEST_TYPE_CHAT
    assert attrs[contract.GEN_AI_REQUEST_STREAM] is stream
    counters = recorded.counter_totals()
    if outcome == "completed":
        assert span.status.status_code is StatusCode.UNSET
        assert attrs[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_REPORTED
        assert (attrs[contract.LLM_TOKENS_PROMPT], attrs[contract.LLM_TOKENS_COMPLETION]) == (4, CHUNKS)
        assert attrs[contract.LLM_TOKENS_TOTAL] == 4 + CHUNKS
        assert attrs[contract.GEN_AI_RESPONSE_MODEL] == model
        assert attrs[contract.GEN_AI_RESPONSE_ID]
        assert list(attrs[contract.GEN_AI_RESPONSE_FINISH_REASONS]) in (["stop"], ["end_turn"])
        # The fake vendor reports the detail classes as the current APIs do: 0 here, still recorded.
        reported = REPORTED_DETAILS[provider]
        assert counters == {
            contract.PROMPT_TOKENS.instrument: 4,
            contract.COMPLETION_TOKENS.instrument: CHUNKS,
            contract.TOTAL_TOKENS.instrument: 4 + CHUNKS,
            **{spec.instrument: 0 for spec in reported},
        }
        assert all(attrs[d.attribute] == 0 for d in contract.TOKEN_DETAILS if d.counter in reported)
        for points in recorded.counter_points().values():
            assert [p for p, _ in points] == [
                {contract.LLM_MODEL: model, contract.LLM_PROVIDER: provider, contract.GEN_AI_SYSTEM: provider}
            ]
        if stream:
            assert attrs[contract.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] >= 0
        return
    assert attrs[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE
    assert contract.LLM_TOKENS_TOTAL not in attrs
    assert not any(counters.values()), counters
    if outcome in ("http_error", "midstream_failure"):
        assert exc is not None
        assert span.status.status_code is StatusCode.ERROR
        assert str(attrs[contract.ERROR_TYPE]).endswith(type(exc).__qualname__)
        events = [e for e in span.events if e.name == "exception"]
        assert len(events) == 1
        assert events[0].attributes["exception.type"].endswith(type(exc).__name__)  # type: ignore[index]
    else:
        assert span.status.status_code is StatusCode.UNSET  # closing early is not a failure
        assert contract.ERROR_TYPE not in attrs


@pytest.mark.parametrize(("provider", "mode", "stream", "outcome"), CASES)
async def test_matrix(
    server: FakeLLMServer, instrumented: Recorded, provider: str, mode: str, stream: bool, outcome: str
) -> None:
    client = make_client(server, provider, mode)
    if mode == "sync":
        with client:
            exc = _run_sync(provider, client, stream, outcome)
    else:
        async with client:
            exc = await _run_async(provider, client, stream, outcome)
    gc.collect()  # a second chance for any path that might end the span again
    _assert_case(instrumented, provider, stream, outcome, exc)
