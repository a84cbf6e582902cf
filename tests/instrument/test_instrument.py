"""instrument()/uninstrument(), include_usage injection, cancellation, helpers, capture, nesting."""

from __future__ import annotations

import asyncio
import gc
import json
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest
from anthropic.resources.messages import messages as anthropic_messages
from openai import _base_client as openai_base_client
from openai.lib.streaming.chat import _completions as openai_stream_helpers
from openai.resources.chat.completions import completions as openai_completions
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.trace import StatusCode

from amtp_obs import contract
from amtp_obs.instrument import instrument, instrumented, uninstrument
from amtp_obs.sdk.testing import configure_with
from amtp_obs.testing.fake_llm import (
    HEADER_CACHE_READ,
    HEADER_CHUNKS,
    HEADER_DELAY_MS,
    HEADER_REPLAY,
    FakeLLMServer,
    Recording,
)

if TYPE_CHECKING:
    from conftest import Recorded

PATCHED = [
    (openai_completions.Completions, "create"),
    (openai_completions.Completions, "parse"),
    (openai_completions.AsyncCompletions, "create"),
    (openai_completions.AsyncCompletions, "parse"),
    (openai_stream_helpers.ChatCompletionStream, "close"),
    (openai_stream_helpers.AsyncChatCompletionStream, "close"),
    (anthropic_messages.Messages, "create"),
    (anthropic_messages.Messages, "parse"),
    (anthropic_messages.Messages, "stream"),
    (anthropic_messages.AsyncMessages, "create"),
    (anthropic_messages.AsyncMessages, "parse"),
    (anthropic_messages.AsyncMessages, "stream"),
]
MESSAGES = [{"role": "user", "content": "say something nice"}]


def _provenance(recorded: Recorded) -> object:
    """The token provenance of the one LLM span recorded."""
    return (recorded.one_span().attributes or {})[contract.LLM_TOKENS_PROVENANCE]


def _ask_openai(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.create(model="gpt-fake-1", messages=MESSAGES, **kwargs)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- patching
def test_instrument_is_idempotent_and_uninstrument_restores_originals(recorded: Recorded) -> None:
    originals = {(cls, name): cls.__dict__[name] for cls, name in PATCHED}
    try:
        instrument()
        first = {(cls, name): cls.__dict__[name] for cls, name in PATCHED}
        assert all(first[k] is not originals[k] for k in PATCHED)
        instrument()  # again: nothing is wrapped twice
        assert {(cls, name): cls.__dict__[name] for cls, name in PATCHED} == first
        assert len(instrumented()) == len(PATCHED)
    finally:
        uninstrument()
    assert all(cls.__dict__[name] is originals[(cls, name)] for cls, name in PATCHED)
    assert instrumented() == []
    uninstrument()  # a second uninstrument is harmless
    assert all(cls.__dict__[name] is originals[(cls, name)] for cls, name in PATCHED)


def test_no_spans_after_uninstrument(recorded: Recorded, openai_sync: openai.OpenAI) -> None:
    instrument()
    _ask_openai(openai_sync)
    uninstrument()
    reply = _ask_openai(openai_sync)
    assert reply.usage is not None
    assert len(recorded.llm_spans()) == 1


def test_instrument_one_provider_only(recorded: Recorded, anthropic_sync: anthropic.Anthropic) -> None:
    try:
        instrument(openai=False)
        assert instrumented() and all(name.startswith("anthropic.") for name in instrumented())
        assert "__amtp_obs_original__" not in vars(openai_completions.Completions.create)
        anthropic_sync.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGES)  # type: ignore[arg-type]
    finally:
        uninstrument()
    assert recorded.one_span().attributes[contract.LLM_PROVIDER] == contract.PROVIDER_ANTHROPIC  # type: ignore[index]


# ------------------------------------------------------------------------- include_usage
def test_include_usage_is_injected_and_its_chunk_hidden(
    instrumented: Recorded, server: FakeLLMServer, openai_sync: openai.OpenAI
) -> None:
    server.clear()
    kwargs: dict[str, Any] = {"stream": True, "extra_headers": {HEADER_CHUNKS: "2"}}
    chunks = list(_ask_openai(openai_sync, **kwargs))
    assert kwargs == {"stream": True, "extra_headers": {HEADER_CHUNKS: "2"}}  # the caller's request untouched
    body = server.requests_to("/v1/chat/completions")[-1].body
    assert body["stream_options"] == {"include_usage": True}  # what went over the wire
    assert all(c.choices for c in chunks)  # the usage-only chunk was read, not handed out
    assert all(c.usage is None and "usage" not in c.to_dict() for c in chunks)
    span = instrumented.one_span()
    assert span.attributes[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_REPORTED  # type: ignore[index]
    assert span.attributes[contract.LLM_TOKENS_COMPLETION] == 2  # type: ignore[index]


def test_include_usage_off_sends_nothing_extra(
    recorded: Recorded, server: FakeLLMServer, openai_sync: openai.OpenAI
) -> None:
    server.clear()
    try:
        instrument(include_usage=False)
        chunks = list(_ask_openai(openai_sync, stream=True))
    finally:
        uninstrument()
    body = server.requests_to("/v1/chat/completions")[-1].body
    assert "stream_options" not in body
    assert all(c.choices for c in chunks)  # no usage-only chunk
    assert _provenance(recorded) == contract.PROVENANCE_UNAVAILABLE
    assert not any(recorded.counter_totals().values())


def test_callers_stream_options_are_respected(
    instrumented: Recorded, server: FakeLLMServer, openai_sync: openai.OpenAI
) -> None:
    server.clear()
    list(_ask_openai(openai_sync, stream=True, stream_options={"include_usage": False}))
    body = server.requests_to("/v1/chat/completions")[-1].body
    assert body["stream_options"] == {"include_usage": False}
    assert _provenance(instrumented) == contract.PROVENANCE_UNAVAILABLE


def test_non_stream_request_is_not_changed(
    instrumented: Recorded, server: FakeLLMServer, openai_sync: openai.OpenAI
) -> None:
    server.clear()
    _ask_openai(openai_sync)
    assert "stream_options" not in server.requests_to("/v1/chat/completions")[-1].body


def test_callers_extra_body_is_kept_and_not_mutated(
    instrumented: Recorded, server: FakeLLMServer, openai_sync: openai.OpenAI
) -> None:
    server.clear()
    extra = {"user_tag": "abc"}
    chunks = list(_ask_openai(openai_sync, stream=True, extra_body=extra))
    assert extra == {"user_tag": "abc"}  # the caller's dict is not changed
    body = server.requests_to("/v1/chat/completions")[-1].body
    assert body["user_tag"] == "abc"
    assert body["stream_options"] == {"include_usage": True}
    assert all(c.choices for c in chunks)
    assert _provenance(instrumented) == contract.PROVENANCE_REPORTED


def test_stream_options_in_callers_extra_body_are_respected(
    instrumented: Recorded, server: FakeLLMServer, openai_sync: openai.OpenAI
) -> None:
    server.clear()
    chunks = list(_ask_openai(openai_sync, stream=True, extra_body={"stream_options": {"include_usage": True}}))
    assert not chunks[-1].choices and chunks[-1].usage is not None  # asked for by the caller: handed out
    assert _provenance(instrumented) == contract.PROVENANCE_REPORTED


def _usage_stream(separators: tuple[str, str]) -> Recording:
    """An OpenAI stream with its usage-only event last, serialised with ``separators``."""
    base = {"id": "chatcmpl-r", "object": "chat.completion.chunk", "created": 1, "model": "gpt-fake-1-2024"}
    chunks = [
        {**base, "choices": [{"index": 0, "delta": {"role": "assistant", "content": "Hi"}}], "usage": None},
        {**base, "choices": [{"index": 0, "delta": {"content": " there"}}], "usage": None},
        {**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}], "usage": None},
        {**base, "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 2, "total_tokens": 9}},
    ]
    events = [(None, json.dumps(c, separators=separators)) for c in chunks] + [(None, "[DONE]")]
    return Recording(events=tuple(events))


@pytest.fixture
def parsed_chunks(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every event the OpenAI client turned into an object (a spy on its one parsing step)."""
    seen: list[Any] = []
    original = openai_base_client.BaseClient._process_response_data

    def spy(self: Any, **kwargs: Any) -> Any:
        seen.append(kwargs["data"])
        return original(self, **kwargs)

    monkeypatch.setattr(openai_base_client.BaseClient, "_process_response_data", spy)
    return seen


@pytest.mark.parametrize(
    ("separators", "parsed"),
    [((",", ":"), 3), ((", ", ": "), 3), ((" , ", " : "), 4)],
    ids=["api-compact", "json-dumps", "unusual-spacing"],
)
def test_usage_only_event_is_dropped_before_the_client_parses_it(
    instrumented: Recorded,
    server: FakeLLMServer,
    openai_sync: openai.OpenAI,
    parsed_chunks: list[Any],
    separators: tuple[str, str],
    parsed: int,
) -> None:
    """Compact (the API) and json.dumps spacing are filtered as events; anything else falls back to conceal."""
    server.register("usage-stream", _usage_stream(separators))
    stream = _ask_openai(openai_sync, stream=True, extra_headers={HEADER_REPLAY: "usage-stream"})
    chunks = list(stream)
    assert [c.choices[0].delta.content for c in chunks] == ["Hi", " there", None]
    assert all("usage" not in c.to_dict() for c in chunks)
    assert len(parsed_chunks) == parsed  # 3: the usage-only event never became an object
    assert "_iter_events" not in vars(stream)  # the started stream's instance dict is the client's again
    span = instrumented.one_span()
    attrs = span.attributes or {}
    assert (attrs[contract.LLM_TOKENS_PROMPT], attrs[contract.LLM_TOKENS_COMPLETION]) == (7, 2)
    assert attrs[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_REPORTED
    assert attrs[contract.GEN_AI_RESPONSE_MODEL] == "gpt-fake-1-2024"


async def test_usage_only_event_is_dropped_before_parsing_async(
    instrumented: Recorded, server: FakeLLMServer, openai_async: openai.AsyncOpenAI, parsed_chunks: list[Any]
) -> None:
    server.register("usage-stream-compact", _usage_stream((",", ":")))
    stream = await openai_async.chat.completions.create(
        model="gpt-fake-1",
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        extra_headers={HEADER_REPLAY: "usage-stream-compact"},
    )
    chunks = [c async for c in stream]
    assert len(chunks) == 3 and all(c.choices for c in chunks)
    assert len(parsed_chunks) == 3
    attrs = instrumented.one_span().attributes or {}
    assert (attrs[contract.LLM_TOKENS_PROMPT], attrs[contract.LLM_TOKENS_COMPLETION]) == (7, 2)


def test_callers_own_usage_request_gets_its_usage_chunk_parsed(
    instrumented: Recorded, server: FakeLLMServer, openai_sync: openai.OpenAI, parsed_chunks: list[Any]
) -> None:
    """Nothing is filtered when the caller asked for usage: the chunk is theirs."""
    server.register("usage-stream-own", _usage_stream((",", ":")))
    chunks = list(
        _ask_openai(
            openai_sync,
            stream=True,
            stream_options={"include_usage": True},
            extra_headers={HEADER_REPLAY: "usage-stream-own"},
        )
    )
    assert len(chunks) == 4 and chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 9
    assert len(parsed_chunks) == 4


# ------------------------------------------------------------------------- cancellation
@pytest.mark.parametrize("provider", [contract.PROVIDER_OPENAI, contract.PROVIDER_ANTHROPIC])
async def test_cancelled_async_stream_ends_span_once(
    instrumented: Recorded, server: FakeLLMServer, provider: str
) -> None:
    got_first = asyncio.Event()
    slow = {HEADER_DELAY_MS: "2000", HEADER_CHUNKS: "5"}

    async def consume(client: Any) -> None:
        if provider == contract.PROVIDER_OPENAI:
            stream = await client.chat.completions.create(
                model="gpt-fake-1", messages=MESSAGES, stream=True, extra_headers=slow
            )
        else:
            stream = await client.messages.create(
                model="claude-fake-1", max_tokens=16, messages=MESSAGES, stream=True, extra_headers=slow
            )
        async for _ in stream:
            got_first.set()

    if provider == contract.PROVIDER_OPENAI:
        client: Any = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
    else:
        client = anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k", max_retries=0)
    async with client:
        task = asyncio.create_task(consume(client))
        await asyncio.wait_for(got_first.wait(), timeout=10)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        gc.collect()
    span = instrumented.one_span()
    attrs = dict(span.attributes or {})
    assert span.status.status_code is StatusCode.ERROR
    assert str(attrs[contract.ERROR_TYPE]).endswith("CancelledError")
    assert attrs[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE
    assert not any(instrumented.counter_totals().values())


# ------------------------------------------------------------------------- vendor helpers
def test_openai_stream_helper_is_traced_through_create(
    instrumented: Recorded, server: FakeLLMServer, openai_sync: openai.OpenAI
) -> None:
    with openai_sync.chat.completions.stream(model="gpt-fake-1", messages=MESSAGES) as stream:  # type: ignore[arg-type]
        final = stream.get_final_completion()
    assert final.usage is None  # as without instrumentation: the caller did not ask for usage
    attrs = instrumented.one_span().attributes or {}
    assert attrs[contract.LLM_TOKENS_PROMPT] == len(MESSAGES[0]["content"].split())  # the fake counts words
    assert attrs[contract.LLM_TOKENS_COMPLETION] == server.chunks


def test_openai_stream_helper_closed_early_ends_span_at_exit(
    instrumented: Recorded, openai_sync: openai.OpenAI
) -> None:
    with openai_sync.chat.completions.stream(model="gpt-fake-1", messages=MESSAGES) as stream:  # type: ignore[arg-type]
        for _ in stream:
            break
        assert instrumented.llm_spans() == []  # still open while the caller holds the stream
    # `stream` is still referenced here: only the helper's close() can have ended the span
    assert _provenance(instrumented) == contract.PROVENANCE_UNAVAILABLE
    assert stream is not None


async def test_openai_async_stream_helper(instrumented: Recorded, server: FakeLLMServer) -> None:
    client = openai.AsyncOpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0)
    async with (
        client,
        client.chat.completions.stream(model="gpt-fake-1", messages=MESSAGES) as stream,  # type: ignore[arg-type]
    ):
        final = await stream.get_final_completion()
    assert final.usage is None  # as without instrumentation
    attrs = instrumented.one_span().attributes or {}
    assert attrs[contract.LLM_TOKENS_TOTAL] == len(MESSAGES[0]["content"].split()) + server.chunks


def test_openai_parse_is_traced(instrumented: Recorded, openai_sync: openai.OpenAI) -> None:
    parsed = openai_sync.chat.completions.parse(model="gpt-fake-1", messages=MESSAGES)  # type: ignore[arg-type]
    assert isinstance(parsed, openai.types.chat.ChatCompletion)
    attrs = instrumented.one_span().attributes or {}
    assert parsed.usage is not None
    assert attrs[contract.LLM_TOKENS_TOTAL] == parsed.usage.total_tokens


def test_anthropic_stream_helper_sync(instrumented: Recorded, anthropic_sync: anthropic.Anthropic) -> None:
    with anthropic_sync.messages.stream(
        model="claude-fake-1",
        max_tokens=16,
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={HEADER_CHUNKS: "4"},
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert len(text.split()) == 4
    attrs = instrumented.one_span().attributes or {}
    assert attrs[contract.LLM_TOKENS_PROMPT] == final.usage.input_tokens
    assert attrs[contract.LLM_TOKENS_COMPLETION] == final.usage.output_tokens == 4
    assert attrs[contract.GEN_AI_REQUEST_STREAM] is True


async def test_anthropic_stream_helper_async_closed_early(instrumented: Recorded, server: FakeLLMServer) -> None:
    client = anthropic.AsyncAnthropic(base_url=server.anthropic_base_url, api_key="k", max_retries=0)
    async with (
        client,
        client.messages.stream(model="claude-fake-1", max_tokens=16, messages=MESSAGES) as stream,  # type: ignore[arg-type]
    ):
        async for _ in stream.text_stream:
            break
    span = instrumented.one_span()
    assert span.attributes[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE  # type: ignore[index]
    assert span.status.status_code is StatusCode.UNSET


def test_anthropic_cache_tokens_count_as_prompt(instrumented: Recorded, anthropic_sync: anthropic.Anthropic) -> None:
    reply = anthropic_sync.messages.create(
        model="claude-fake-1",
        max_tokens=16,
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_headers={HEADER_CACHE_READ: "100"},
    )
    attrs = instrumented.one_span().attributes or {}
    assert reply.usage.cache_read_input_tokens == 100
    assert attrs[contract.LLM_TOKENS_PROMPT] == reply.usage.input_tokens + 100
    assert attrs[contract.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] == 100
    assert instrumented.counter_totals()[contract.PROMPT_TOKENS.instrument] == reply.usage.input_tokens + 100


# ------------------------------------------------------------------------- content and context
def test_content_is_not_captured_by_default(instrumented: Recorded, openai_sync: openai.OpenAI) -> None:
    list(_ask_openai(openai_sync, stream=True))
    _ask_openai(openai_sync)
    for span in instrumented.llm_spans():
        attrs = span.attributes or {}
        assert contract.GEN_AI_INPUT_MESSAGES not in attrs
        assert contract.GEN_AI_OUTPUT_MESSAGES not in attrs


def test_content_is_captured_when_enabled(
    recorded: Recorded, anthropic_sync: anthropic.Anthropic, openai_sync: openai.OpenAI
) -> None:
    configure_with(recorded.tracer_provider, MeterProvider(), capture_content=True)
    try:
        instrument()
        reply = anthropic_sync.messages.create(model="claude-fake-1", max_tokens=16, messages=MESSAGES)  # type: ignore[arg-type]
        chunks = list(_ask_openai(openai_sync, stream=True, extra_headers={HEADER_CHUNKS: "3"}))
    finally:
        uninstrument()
    first, second = recorded.llm_spans()
    assert "say something nice" in str(first.attributes[contract.GEN_AI_INPUT_MESSAGES])  # type: ignore[index]
    assert reply.content[0].text in str(first.attributes[contract.GEN_AI_OUTPUT_MESSAGES])  # type: ignore[index, union-attr]
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed in str(second.attributes[contract.GEN_AI_OUTPUT_MESSAGES])  # type: ignore[index]


def test_span_nests_under_the_callers_span(instrumented: Recorded, openai_sync: openai.OpenAI) -> None:
    tracer = instrumented.tracer_provider.get_tracer("test")
    with tracer.start_as_current_span("agent.step") as parent:
        _ask_openai(openai_sync)
    span = instrumented.one_span()
    assert span.parent is not None and span.parent.span_id == parent.get_span_context().span_id
    assert span.context.trace_id == parent.get_span_context().trace_id


def test_raw_response_still_works_and_ends_span(instrumented: Recorded, server: FakeLLMServer) -> None:
    with openai.OpenAI(base_url=server.openai_base_url, api_key="k", max_retries=0) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-fake-1", messages=MESSAGES)  # type: ignore[arg-type]
        completion = raw.parse()
    assert completion.usage is not None and raw.http_response.status_code == 200
    span = instrumented.one_span()
    # The raw body is the caller's to read: no usage is taken from it (documented).
    assert span.attributes[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE  # type: ignore[index]


def test_missing_client_or_method_is_skipped() -> None:
    from amtp_obs.instrument import _core

    def never(original: Any) -> Any:
        raise AssertionError("must not wrap what does not exist")

    assert _core.patch([_core.Target("amtp_obs_no_such_module", "X", "create", never)]) == []
    assert _core.patch([_core.Target(openai_completions.__name__, "NoSuchClass", "create", never)]) == []
    assert _core.patch([_core.Target(openai_completions.__name__, "Completions", "no_such", never)]) == []
    assert instrumented() == []


def test_every_exit_path_after_exhaustion_records_nothing_more(
    instrumented: Recorded, anthropic_sync: anthropic.Anthropic
) -> None:
    stream = anthropic_sync.messages.create(
        model="claude-fake-1",
        max_tokens=16,
        messages=MESSAGES,  # type: ignore[arg-type]
        stream=True,
        extra_headers={HEADER_CHUNKS: "2"},
    )
    with stream:
        events = list(stream)
        stream.close()
    stream.close()
    del stream
    gc.collect()
    assert events[-1].type == "message_stop"
    span = instrumented.one_span()
    assert span.attributes[contract.LLM_TOKENS_COMPLETION] == 2  # type: ignore[index]
    assert instrumented.counter_totals()[contract.COMPLETION_TOKENS.instrument] == 2
