"""Invisible instrumentation (issue 12): what the caller observes is identical with and without it.

A corpus of the ways callers use the two clients - plain calls, iterating a stream, ``choices[0]``,
``with`` streams, ``async for``, an early ``break``, ``.close()``, and the vendors' helpers
(``get_final_completion()``, ``text_stream``, ``get_final_message()``) - runs once uninstrumented and
once instrumented against the same fake vendor. Every object the caller gets is recorded (its type
and every field it carries, as ``model_dump(exclude_unset=True)`` shows it), as is every exception
and the request arguments after the call; the two runs must be equal, apart from the ids and
timestamps the fake server makes per response. The instrumented run must also have recorded the call.
"""

from __future__ import annotations

import copy
import gc
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anthropic
import openai
import pytest
from pydantic import BaseModel

from amtp_obs import contract
from amtp_obs.instrument import instrument, uninstrument
from amtp_obs.testing.fake_llm import FakeLLMServer

if TYPE_CHECKING:
    from conftest import Recorded

VOLATILE = frozenset({"id", "created"})
"""Per-response values the fake server generates (a counter, the clock)."""
PROMPT = [{"role": "user", "content": "tell me about token accounting"}]


def observe(obj: Any) -> Any:
    """Everything the caller can read off an object: its type and its set fields, recursively."""
    if isinstance(obj, BaseModel):
        return {"__type__": type(obj).__qualname__, **observe(obj.model_dump(mode="json", exclude_unset=True))}
    if isinstance(obj, dict):
        return {k: ("<volatile>" if k in VOLATILE else observe(v)) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [observe(v) for v in obj]
    return obj


def outcome(fn: Callable[[], Any]) -> Any:
    try:
        return fn()
    except Exception as exc:  # part of what the caller observes
        return {"raised": type(exc).__qualname__}


async def aoutcome(fn: Callable[[], Awaitable[Any]]) -> Any:
    try:
        return await fn()
    except Exception as exc:
        return {"raised": type(exc).__qualname__}


# ----------------------------------------------------------------------------- OpenAI, sync
def oa_plain(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    return observe(c.chat.completions.create(**kw))


def oa_iterate(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    return [observe(chunk) for chunk in c.chat.completions.create(stream=True, **kw)]


def oa_choices0(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    stream = c.chat.completions.create(stream=True, **kw)
    return "".join(chunk.choices[0].delta.content or "" for chunk in stream)  # most code does this


def oa_with(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    with c.chat.completions.create(stream=True, **kw) as stream:
        status = stream.response.status_code
        return [status, [observe(chunk) for chunk in stream]]


def oa_break(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    seen = []
    for chunk in c.chat.completions.create(stream=True, **kw):
        seen.append(observe(chunk))
        if len(seen) == 2:
            break
    return seen


def oa_close(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    stream = c.chat.completions.create(stream=True, **kw)
    first = observe(next(iter(stream)))
    # (What iterating after close() yields depends on what the socket had buffered: not compared.)
    return [first, stream.close(), stream.response.is_closed]


def oa_helper(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    with c.chat.completions.stream(**kw) as stream:
        events = [observe(event) for event in stream]
        return [events, observe(stream.get_final_completion())]


def oa_helper_break(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    with c.chat.completions.stream(**kw) as stream:
        for event in stream:
            return observe(event)
    return None


def oa_resume(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    """Leave a loop early, then read on: with next() and with a second loop over the same stream."""
    stream = c.chat.completions.create(stream=True, **kw)
    for chunk in stream:
        first = observe(chunk)
        break
    return [first, observe(next(stream)), [observe(chunk) for chunk in stream], iter(stream) is stream]


def oa_raw_stream(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    raw = c.chat.completions.with_raw_response.create(stream=True, **kw)
    return [raw.http_response.status_code, [observe(chunk) for chunk in raw.parse()]]


def oa_streaming_response(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    with c.chat.completions.with_streaming_response.create(stream=True, **kw) as response:
        return [observe(chunk) for chunk in response.parse()]


def oa_extra_body(c: openai.OpenAI, kw: dict[str, Any]) -> Any:
    extra = {"user": "caller-tag"}
    chunks = [observe(chunk) for chunk in c.chat.completions.create(stream=True, extra_body=extra, **kw)]
    return [chunks, extra]  # the caller's dict is part of what it observes


# ----------------------------------------------------------------------------- OpenAI, async
async def oaa_plain(c: openai.AsyncOpenAI, kw: dict[str, Any]) -> Any:
    return observe(await c.chat.completions.create(**kw))


async def oaa_iterate(c: openai.AsyncOpenAI, kw: dict[str, Any]) -> Any:
    return [observe(chunk) async for chunk in await c.chat.completions.create(stream=True, **kw)]


async def oaa_choices0(c: openai.AsyncOpenAI, kw: dict[str, Any]) -> Any:
    stream = await c.chat.completions.create(stream=True, **kw)
    return "".join([chunk.choices[0].delta.content or "" async for chunk in stream])


async def oaa_with(c: openai.AsyncOpenAI, kw: dict[str, Any]) -> Any:
    async with await c.chat.completions.create(stream=True, **kw) as stream:
        return [stream.response.status_code, [observe(chunk) async for chunk in stream]]


async def oaa_break(c: openai.AsyncOpenAI, kw: dict[str, Any]) -> Any:
    stream = await c.chat.completions.create(stream=True, **kw)
    async for chunk in stream:
        first = observe(chunk)
        break
    await stream.close()
    return first


async def oaa_close(c: openai.AsyncOpenAI, kw: dict[str, Any]) -> Any:
    stream = await c.chat.completions.create(stream=True, **kw)
    first = observe(await stream.__anext__())
    return [first, await stream.close(), stream.response.is_closed]


async def oaa_helper(c: openai.AsyncOpenAI, kw: dict[str, Any]) -> Any:
    async with c.chat.completions.stream(**kw) as stream:
        events = [observe(event) async for event in stream]
        return [events, observe(await stream.get_final_completion())]


async def oaa_raw_stream(c: openai.AsyncOpenAI, kw: dict[str, Any]) -> Any:
    raw = await c.chat.completions.with_raw_response.create(stream=True, **kw)
    return [observe(chunk) async for chunk in raw.parse()]


# ----------------------------------------------------------------------------- Anthropic, sync
def an_plain(c: anthropic.Anthropic, kw: dict[str, Any]) -> Any:
    return observe(c.messages.create(**kw))


def an_iterate(c: anthropic.Anthropic, kw: dict[str, Any]) -> Any:
    return [observe(event) for event in c.messages.create(stream=True, **kw)]


def an_text(c: anthropic.Anthropic, kw: dict[str, Any]) -> Any:
    stream = c.messages.create(stream=True, **kw)
    return "".join(e.delta.text for e in stream if e.type == "content_block_delta" and e.delta.type == "text_delta")


def an_with(c: anthropic.Anthropic, kw: dict[str, Any]) -> Any:
    with c.messages.create(stream=True, **kw) as stream:
        return [stream.response.status_code, [observe(event) for event in stream]]


def an_break(c: anthropic.Anthropic, kw: dict[str, Any]) -> Any:
    seen = []
    for event in c.messages.create(stream=True, **kw):
        seen.append(observe(event))
        if len(seen) == 3:
            break
    return seen


def an_resume(c: anthropic.Anthropic, kw: dict[str, Any]) -> Any:
    stream = c.messages.create(stream=True, **kw)
    for event in stream:
        first = observe(event)
        break
    return [first, observe(next(stream)), [observe(event) for event in stream], iter(stream) is stream]


def an_close(c: anthropic.Anthropic, kw: dict[str, Any]) -> Any:
    stream = c.messages.create(stream=True, **kw)
    first = observe(next(iter(stream)))
    return [first, stream.close(), stream.response.is_closed]


def an_helper_text(c: anthropic.Anthropic, kw: dict[str, Any]) -> Any:
    with c.messages.stream(**kw) as stream:
        text = "".join(stream.text_stream)
        return [text, observe(stream.get_final_message())]


def an_helper_events(c: anthropic.Anthropic, kw: dict[str, Any]) -> Any:
    with c.messages.stream(**kw) as stream:
        return [observe(event) for event in stream]


def an_helper_break(c: anthropic.Anthropic, kw: dict[str, Any]) -> Any:
    with c.messages.stream(**kw) as stream:
        for text in stream.text_stream:
            return text
    return None


# ----------------------------------------------------------------------------- Anthropic, async
async def ana_plain(c: anthropic.AsyncAnthropic, kw: dict[str, Any]) -> Any:
    return observe(await c.messages.create(**kw))


async def ana_iterate(c: anthropic.AsyncAnthropic, kw: dict[str, Any]) -> Any:
    return [observe(event) async for event in await c.messages.create(stream=True, **kw)]


async def ana_with(c: anthropic.AsyncAnthropic, kw: dict[str, Any]) -> Any:
    async with await c.messages.create(stream=True, **kw) as stream:
        return [stream.response.status_code, [observe(event) async for event in stream]]


async def ana_break(c: anthropic.AsyncAnthropic, kw: dict[str, Any]) -> Any:
    stream = await c.messages.create(stream=True, **kw)
    async for event in stream:
        first = observe(event)
        break
    await stream.close()
    return first


async def ana_close(c: anthropic.AsyncAnthropic, kw: dict[str, Any]) -> Any:
    stream = await c.messages.create(stream=True, **kw)
    first = observe(await stream.__anext__())
    return [first, await stream.close(), stream.response.is_closed]


async def ana_helper_text(c: anthropic.AsyncAnthropic, kw: dict[str, Any]) -> Any:
    async with c.messages.stream(**kw) as stream:
        text = "".join([t async for t in stream.text_stream])
        return [text, observe(await stream.get_final_message())]


async def ana_helper_break(c: anthropic.AsyncAnthropic, kw: dict[str, Any]) -> Any:
    async with c.messages.stream(**kw) as stream:
        async for text in stream.text_stream:
            return text
    return None


CORPUS: dict[tuple[str, str], list[Callable[..., Any]]] = {
    ("openai", "sync"): [
        oa_plain,
        oa_iterate,
        oa_choices0,
        oa_with,
        oa_break,
        oa_close,
        oa_helper,
        oa_helper_break,
        oa_resume,
        oa_raw_stream,
        oa_streaming_response,
        oa_extra_body,
    ],
    ("openai", "async"): [
        oaa_plain,
        oaa_iterate,
        oaa_choices0,
        oaa_with,
        oaa_break,
        oaa_close,
        oaa_helper,
        oaa_raw_stream,
    ],
    ("anthropic", "sync"): [
        an_plain,
        an_iterate,
        an_text,
        an_with,
        an_break,
        an_resume,
        an_close,
        an_helper_text,
        an_helper_events,
        an_helper_break,
    ],
    ("anthropic", "async"): [
        ana_plain,
        ana_iterate,
        ana_with,
        ana_break,
        ana_close,
        ana_helper_text,
        ana_helper_break,
    ],
}
COMPLETE = frozenset(
    {"plain", "iterate", "choices0", "with", "text", "helper", "helper_text", "helper_events", "extra_body", "resume"}
)
"""Patterns that read the whole answer."""
CASES = [
    pytest.param(vendor, mode, fn, id=f"{vendor}-{mode}-{fn.__name__.split('_', 1)[1]}")
    for (vendor, mode), fns in CORPUS.items()
    for fn in fns
]


def _client(server: FakeLLMServer, vendor: str, mode: str) -> Any:
    if vendor == "openai":
        cls: Any = openai.OpenAI if mode == "sync" else openai.AsyncOpenAI
        return cls(base_url=server.openai_base_url, api_key="k", max_retries=0)
    cls = anthropic.Anthropic if mode == "sync" else anthropic.AsyncAnthropic
    return cls(base_url=server.anthropic_base_url, api_key="k", max_retries=0)


def _request(vendor: str) -> dict[str, Any]:
    if vendor == "openai":
        return {"model": "gpt-fake-1", "messages": copy.deepcopy(PROMPT)}
    return {"model": "claude-fake-1", "max_tokens": 64, "messages": copy.deepcopy(PROMPT)}


async def _run(server: FakeLLMServer, vendor: str, mode: str, fn: Callable[..., Any]) -> Any:
    """One run of a pattern: what it returned, and the request arguments as the call left them."""
    kw = _request(vendor)
    client = _client(server, vendor, mode)
    if mode == "sync":
        with client:
            result = outcome(lambda: fn(client, kw))
    else:
        async with client:
            result = await aoutcome(lambda: fn(client, kw))
    gc.collect()  # streams abandoned by the pattern end their spans now
    return [result, kw]


def test_the_corpus_covers_every_pattern_the_issue_names() -> None:
    names = {fn.__name__.split("_", 1)[1] for fns in CORPUS.values() for fn in fns}
    assert {"plain", "iterate", "choices0", "with", "break", "close", "helper", "helper_text"} <= names
    assert set(CORPUS) == {(v, m) for v in ("openai", "anthropic") for m in ("sync", "async")}


@pytest.mark.parametrize(("vendor", "mode", "fn"), CASES)
async def test_caller_sees_the_same_with_and_without_instrumentation(
    recorded: Recorded, server: FakeLLMServer, vendor: str, mode: str, fn: Callable[..., Any]
) -> None:
    bare = await _run(server, vendor, mode, fn)
    assert recorded.llm_spans() == []
    instrument()
    try:
        instrumented = await _run(server, vendor, mode, fn)
    finally:
        uninstrument()
    assert instrumented == bare
    assert instrumented[1] == _request(vendor)  # the caller's arguments are left as written
    span = recorded.one_span()  # the instrumented run was recorded, once
    assert span.attributes[contract.LLM_PROVIDER] == vendor  # type: ignore[index]
    if fn.__name__.split("_", 1)[1] in COMPLETE:  # read to the end: the usage (hidden or not) was counted
        assert span.attributes[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_REPORTED  # type: ignore[index]
    assert not (isinstance(bare[0], dict) and "raised" in bare[0]), bare[0]  # the pattern itself worked
