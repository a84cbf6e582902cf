"""The OpenAI client: ``chat.completions.create`` and ``.parse``, sync and async, streaming or not.

``chat.completions.stream(...)`` goes through ``create`` and is covered by it; its stream object's
``close()`` only closes the HTTP response, so that ``close`` is wrapped too, to end the span then.

Streams report usage only when asked (``stream_options={"include_usage": True}``): with
``instrument(include_usage=True)`` (the default) we add that option to the request we send when the
caller set no ``stream_options`` at all, and hide its effects from the caller: the extra final chunk
(``choices == []``, ``usage`` set) is read for the token counts and not handed out, and the
``usage: null`` the API then adds to every other chunk is removed from the chunk's set fields, so
the caller's chunks are what they would have been (``to_dict()``, ``model_dump(exclude_unset=True)``
included). The caller's own ``stream_options`` are never changed, and then nothing is hidden.
Nor is anything asked for on a ``with_raw_response`` / ``with_streaming_response`` call: the caller
parses that body, so the added chunk could not be hidden (its usage is then not recorded).

The usage-only chunk is normally dropped before the client even parses it: the stream's event
iterator is filtered (:func:`_intercept_events`), which saves the caller the client's model
construction for a chunk it never sees (most of what asking for usage costs). Where that cannot be
done (a client whose stream is laid out differently, an event formatted unusually) the chunk is
parsed and dropped one layer up, with the same result for the caller.
"""

from __future__ import annotations

import functools
import json
import logging
import weakref
from collections.abc import AsyncIterator, Iterator, Mapping
from types import SimpleNamespace
from typing import Any

from amtp_obs import contract
from amtp_obs.instrument._core import (
    OPTIONS,
    RequestInfo,
    Target,
    call_wrappers,
    given,
    number_attributes,
)
from amtp_obs.instrument._stream import AsyncStreamProxy, StreamTracker, SyncStreamProxy
from amtp_obs.sdk import LLMCall

log = logging.getLogger("amtp_obs.instrument")

MODULE = "openai.resources.chat.completions.completions"
HELPER_MODULE = "openai.lib.streaming.chat._completions"
STREAM_OPTIONS = "stream_options"
INCLUDE_USAGE = "include_usage"
EXTRA_BODY = "extra_body"
RAW_RESPONSE_HEADER = "X-Stainless-Raw-Response"
"""What the client's ``with_raw_response`` / ``with_streaming_response`` put in ``extra_headers``."""
USAGE_ONLY_MARKS = ('"choices":[]', '"choices": []')
"""The usage-only event's empty choices as the API writes them (compact JSON) and as ``json.dumps`` does."""


def _content_text(content: Any) -> str | None:
    return content if isinstance(content, str) else None


class OpenAIAccumulator:
    """Reads ``ChatCompletionChunk`` objects: usage (final chunk), model, id, finish reasons, text."""

    def __init__(self, capture: bool = False) -> None:
        self.capture = capture
        self.model: str | None = None
        self.response_id: str | None = None
        self.usage: Any = None
        self.finish: dict[int, str] = {}
        self.text: dict[int, list[str]] = {}

    def add(self, chunk: Any) -> None:
        """Once per chunk (the hot path of a stream): only what the span needs is read."""
        if self.model is None:  # every chunk repeats the model and id: the first one tells
            self.model = getattr(chunk, "model", None)
            self.response_id = getattr(chunk, "id", None)
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        for choice in getattr(chunk, "choices", None) or ():
            reason = getattr(choice, "finish_reason", None)
            if reason:
                self.finish[getattr(choice, "index", 0) or 0] = reason
            if self.capture:  # content is collected only when capture is on
                delta = getattr(choice, "delta", None)
                piece = getattr(delta, "content", None) if delta is not None else None
                if isinstance(piece, str) and piece:
                    self.text.setdefault(getattr(choice, "index", 0) or 0, []).append(piece)

    def add_event(self, payload: dict[str, Any]) -> None:
        """The usage-only event, read as JSON before the client parsed it (see :func:`_intercept_events`)."""
        if self.model is None:
            self.model = payload.get("model")
            self.response_id = payload.get("id")
        self.usage = _as_attributes(payload["usage"])

    def apply(self, call: LLMCall) -> None:
        call.set_response(
            model=self.model,
            response_id=self.response_id,
            finish_reasons=[self.finish[i] for i in sorted(self.finish)] or None,
        )
        if self.text:
            call.record_output(["".join(self.text[i]) for i in sorted(self.text)])
        _set_usage(call, self.usage)


def _as_attributes(value: Any) -> Any:
    """JSON objects as attribute namespaces (recursively), so usage read as JSON reads like the client's models."""
    if isinstance(value, dict):
        return SimpleNamespace(**{k: _as_attributes(v) for k, v in value.items()})
    return value


def _detail(usage: Any, block: str, name: str) -> int | None:
    """``usage.<block>.<name>`` when the API reported it (older models and compatible servers do not)."""
    value = getattr(getattr(usage, block, None), name, None)
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _set_usage(call: LLMCall, usage: Any) -> None:
    """Reported usage only: without a usage block the SDK records provenance ``unavailable``.

    OpenAI's ``prompt_tokens`` already includes the cached tokens and ``completion_tokens`` the
    reasoning tokens (contract.TOKEN_DETAILS), so the details are passed as parts, not added.
    """
    if usage is None:
        return
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return
    total = getattr(usage, "total_tokens", None)
    call.set_usage(
        prompt,
        completion,
        total if isinstance(total, int) else None,
        cache_read_tokens=_detail(usage, "prompt_tokens_details", "cached_tokens"),
        reasoning_tokens=_detail(usage, "completion_tokens_details", "reasoning_tokens"),
        provenance=contract.PROVENANCE_REPORTED,
    )


class OpenAIAdapter:
    provider = contract.PROVIDER_OPENAI
    _stream_types: tuple[type, type] | None = None

    def request(self, kwargs: dict[str, Any]) -> RequestInfo | None:
        model = kwargs.get("model")
        if not isinstance(model, str) or not model:
            return None  # the client itself rejects the call; nothing to measure
        max_tokens = kwargs.get("max_completion_tokens")
        if not given(max_tokens):
            max_tokens = kwargs.get("max_tokens")
        return RequestInfo(
            model=model,
            stream=kwargs.get("stream") is True,
            messages=kwargs.get("messages"),
            attributes=number_attributes(
                {
                    contract.GEN_AI_REQUEST_MAX_TOKENS: max_tokens,
                    contract.GEN_AI_REQUEST_TEMPERATURE: kwargs.get("temperature"),
                }
            ),
        )

    def prepare(self, kwargs: dict[str, Any], info: RequestInfo) -> dict[str, Any]:
        """Ask for the usage chunk when streaming and the caller did not set ``stream_options``."""
        if not (info.stream and OPTIONS.include_usage):
            return kwargs
        headers = kwargs.get("extra_headers")
        if isinstance(headers, Mapping) and RAW_RESPONSE_HEADER in headers:
            return kwargs  # a raw response: its body is the caller's to parse, so nothing could be hidden
        if STREAM_OPTIONS in kwargs and type(kwargs[STREAM_OPTIONS]).__name__ not in ("Omit", "NotGiven"):
            return kwargs
        extra_body = kwargs.get("extra_body")
        if isinstance(extra_body, dict) and STREAM_OPTIONS in extra_body:
            return kwargs
        # Sent as a body field: the same JSON on the wire, without the client's transformation of
        # its typed parameter (a measurable share of what asking for usage costs the caller).
        if not given(extra_body):
            return {**kwargs, EXTRA_BODY: {STREAM_OPTIONS: {INCLUDE_USAGE: True}}}
        if isinstance(extra_body, dict):
            return {**kwargs, EXTRA_BODY: {**extra_body, STREAM_OPTIONS: {INCLUDE_USAGE: True}}}
        return {**kwargs, STREAM_OPTIONS: {INCLUDE_USAGE: True}}

    def intercept(self, stream: Any, tracker: StreamTracker, *, is_async: bool) -> None:
        _intercept_events(stream, tracker, is_async=is_async)

    def conceal(self, chunk: Any) -> bool:
        """Undo ``include_usage`` on a chunk: drop the usage-only chunk, unset the added ``usage: null``."""
        if getattr(chunk, "usage", None) is not None:
            return not getattr(chunk, "choices", None)
        fields_set = getattr(chunk, "__pydantic_fields_set__", None)
        if isinstance(fields_set, set):
            fields_set.discard("usage")
        return False

    def apply_response(self, call: LLMCall, result: Any) -> None:
        choices = getattr(result, "choices", None)
        if choices is None:
            return  # a raw/streaming response wrapper: its body is the caller's to read
        call.set_response(
            model=getattr(result, "model", None),
            response_id=getattr(result, "id", None),
            finish_reasons=[c.finish_reason for c in choices if getattr(c, "finish_reason", None)] or None,
        )
        if call.capture_content:  # content is off by default: do not even collect it then
            texts = [
                text
                for c in choices
                if (text := _content_text(getattr(getattr(c, "message", None), "content", None))) is not None
            ]
            if texts:
                call.record_output(texts)
        _set_usage(call, getattr(result, "usage", None))

    def accumulator(self, capture: bool) -> OpenAIAccumulator:
        return OpenAIAccumulator(capture)

    def stream_types(self) -> tuple[type, type]:
        if self._stream_types is None:  # looked up once: this runs on every call
            from openai import AsyncStream, Stream

            self._stream_types = (Stream, AsyncStream)
        return self._stream_types


ADAPTER = OpenAIAdapter()


def _usage_only_event(data: str) -> dict[str, Any] | None:
    """The parsed usage-only event, or None for any other (a substring test first: this sees every event)."""
    if USAGE_ONLY_MARKS[0] not in data and USAGE_ONLY_MARKS[1] not in data:
        return None
    try:
        payload = json.loads(data)
    except ValueError:
        return None  # the client raises its own error for it
    if isinstance(payload, dict) and payload.get("choices") == [] and isinstance(payload.get("usage"), dict):
        return payload
    return None


def _events_without_usage(events: Iterator[Any], tracker: StreamTracker) -> Iterator[Any]:
    accumulator: OpenAIAccumulator = tracker.accumulator  # type: ignore[assignment]
    for event in events:
        payload = _usage_only_event(event.data)
        if payload is None:
            yield event
        else:
            tracker.observe(accumulator.add_event, payload)


async def _aevents_without_usage(events: AsyncIterator[Any], tracker: StreamTracker) -> AsyncIterator[Any]:
    accumulator: OpenAIAccumulator = tracker.accumulator  # type: ignore[assignment]
    async for event in events:
        payload = _usage_only_event(event.data)
        if payload is None:
            yield event
        else:
            tracker.observe(accumulator.add_event, payload)


def _intercept_events(stream: Any, tracker: StreamTracker, *, is_async: bool) -> None:
    """Filter the usage-only event out of a not-yet-started ``Stream``'s server-sent events.

    The client's ``Stream.__stream__`` reads ``self._iter_events()`` when the caller first asks for
    a chunk; an instance attribute of that name is found first. It removes itself on that first
    call, so the started stream's ``__dict__`` is the client's own again. A stream laid out
    otherwise is left alone (the chunk is then dropped after parsing, by ``conceal``).
    """
    try:
        original = getattr(type(stream), "_iter_events", None)
        state = vars(stream)
        if not callable(original) or "_iter_events" in state or not isinstance(tracker.accumulator, OpenAIAccumulator):
            return
        ref = weakref.ref(stream)  # no cycle through the instance dict: an unread stream is freed as before

        def iter_events() -> Any:
            owner = ref()
            assert owner is not None  # called by the stream's own method
            vars(owner).pop("_iter_events", None)
            events = original(owner)
            return _aevents_without_usage(events, tracker) if is_async else _events_without_usage(events, tracker)

        state["_iter_events"] = iter_events
    except Exception:  # pragma: no cover - a bug of ours: conceal still hides the chunk
        log.exception("amtp_obs.instrument: could not filter the stream's events")


def _finish_raw_stream(helper: Any) -> None:
    """End the span of the instrumented stream a ``ChatCompletionStream`` helper reads from."""
    raw = getattr(helper, "_raw_stream", None)
    if isinstance(raw, SyncStreamProxy | AsyncStreamProxy):
        raw._self_tracker.finish()


def wrap_helper_close(original: Any, *, is_async: bool) -> Any:
    if is_async:

        @functools.wraps(original)
        async def async_close(self: Any) -> None:
            try:
                await original(self)
            finally:
                _finish_raw_stream(self)

        return async_close

    @functools.wraps(original)
    def close(self: Any) -> None:
        try:
            original(self)
        finally:
            _finish_raw_stream(self)

    return close


def _sync_close(original: Any) -> Any:
    return wrap_helper_close(original, is_async=False)


def _async_close(original: Any) -> Any:
    return wrap_helper_close(original, is_async=True)


def targets() -> list[Target]:
    sync, asynchronous = call_wrappers(ADAPTER)
    return [
        Target(MODULE, "Completions", "create", sync),
        Target(MODULE, "Completions", "parse", sync),
        Target(MODULE, "AsyncCompletions", "create", asynchronous),
        Target(MODULE, "AsyncCompletions", "parse", asynchronous),
        Target(HELPER_MODULE, "ChatCompletionStream", "close", _sync_close),
        Target(HELPER_MODULE, "AsyncChatCompletionStream", "close", _async_close),
    ]
