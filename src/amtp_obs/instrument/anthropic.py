"""The Anthropic client: ``messages.create``/``.parse`` and the ``messages.stream(...)`` helper.

Usage: ``input_tokens`` plus the prompt-cache tokens (``cache_read_input_tokens``,
``cache_creation_input_tokens``) make the prompt count (contract.TOKEN_DETAILS: Anthropic's
``input_tokens`` excludes the cache); the cache parts are also recorded as their own classes when
reported. In a stream, ``message_start`` carries the
input usage and ``message_delta`` the (cumulative) output usage; usage counts as reported only once
``message_delta`` arrived, so a stream closed or broken before it records provenance ``unavailable``.
"""

from __future__ import annotations

import functools
from typing import Any

from amtp_obs import contract
from amtp_obs.instrument._core import (
    RequestInfo,
    Target,
    call_wrappers,
    given,
    instrumented_awaitable,
    instrumented_request,
    log,
    number_attributes,
)
from amtp_obs.instrument._stream import StreamTracker
from amtp_obs.sdk import LLMCall

MODULE = "anthropic.resources.messages.messages"
# Where the stream managers keep their deferred request (name-mangled private attributes).
_SYNC_MANAGER_REQUEST = "_MessageStreamManager__api_request"
_ASYNC_MANAGER_REQUEST = "_AsyncMessageStreamManager__api_request"


def _int(value: Any) -> int | None:
    """A reported count, or None (absent, null, or not a count)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _set_usage(
    call: LLMCall, input_tokens: int | None, output_tokens: int, cache_read: int | None, cache_creation: int | None
) -> None:
    """Prompt = uncached input + cache read + cache creation; the cache classes only when reported."""
    call.set_usage(
        (input_tokens or 0) + (cache_read or 0) + (cache_creation or 0),
        output_tokens,
        cache_read_tokens=cache_read,
        cache_creation_tokens=cache_creation,
        provenance=contract.PROVENANCE_REPORTED,
    )


def _texts(blocks: Any) -> list[str]:
    return [b.text for b in blocks or () if getattr(b, "type", None) == "text" and isinstance(b.text, str)]


class AnthropicAccumulator:
    """Reads ``RawMessageStreamEvent`` objects in order."""

    def __init__(self, capture: bool = False) -> None:
        self.capture = capture
        self.model: str | None = None
        self.response_id: str | None = None
        self.stop_reason: str | None = None
        self.input_tokens: int | None = None
        self.cache_read: int | None = None
        self.cache_creation: int | None = None
        self.output_tokens: int | None = None
        self.text: list[str] = []

    def add(self, event: Any) -> None:
        kind = getattr(event, "type", None)
        if kind == "message_start":
            message = event.message
            self.model = getattr(message, "model", None)
            self.response_id = getattr(message, "id", None)
            usage = getattr(message, "usage", None)
            if usage is not None:
                self.input_tokens = _int(usage.input_tokens)
                self.cache_read = _int(getattr(usage, "cache_read_input_tokens", None))
                self.cache_creation = _int(getattr(usage, "cache_creation_input_tokens", None))
        elif kind == "content_block_delta" and self.capture:  # text only when content capture is on
            text = getattr(event.delta, "text", None)
            if isinstance(text, str):
                self.text.append(text)
        elif kind == "message_delta":
            self.stop_reason = getattr(event.delta, "stop_reason", None) or self.stop_reason
            usage = getattr(event, "usage", None)
            if usage is not None:
                self.output_tokens = _int(usage.output_tokens)
                # Newer API versions repeat the (cumulative) input figures here: they win.
                for attr, name in (
                    ("input_tokens", "input_tokens"),
                    ("cache_read", "cache_read_input_tokens"),
                    ("cache_creation", "cache_creation_input_tokens"),
                ):
                    value = _int(getattr(usage, name, None))
                    if value is not None:
                        setattr(self, attr, value)

    def apply(self, call: LLMCall) -> None:
        call.set_response(
            model=self.model,
            response_id=self.response_id,
            finish_reasons=[self.stop_reason] if self.stop_reason else None,
        )
        if self.text:
            call.record_output(["".join(self.text)])
        if self.output_tokens is not None:
            _set_usage(call, self.input_tokens, self.output_tokens, self.cache_read, self.cache_creation)


class AnthropicAdapter:
    provider = contract.PROVIDER_ANTHROPIC
    _stream_types: tuple[type, type] | None = None

    def request(self, kwargs: dict[str, Any]) -> RequestInfo | None:
        model = kwargs.get("model")
        if not isinstance(model, str) or not model:
            return None
        messages = kwargs.get("messages")
        system = kwargs.get("system")
        if given(system) and isinstance(messages, list):
            messages = [{"role": "system", "content": system}, *messages]
        return RequestInfo(
            model=model,
            stream=kwargs.get("stream") is True,
            messages=messages,
            attributes=number_attributes(
                {
                    contract.GEN_AI_REQUEST_MAX_TOKENS: kwargs.get("max_tokens"),
                    contract.GEN_AI_REQUEST_TEMPERATURE: kwargs.get("temperature"),
                }
            ),
        )

    def prepare(self, kwargs: dict[str, Any], info: RequestInfo) -> dict[str, Any]:
        return kwargs  # Anthropic streams always report usage: the request is sent as written

    def intercept(self, stream: Any, tracker: StreamTracker, *, is_async: bool) -> None:
        return None  # the request is never changed (prepare), so there is nothing to drop

    def conceal(self, event: Any) -> bool:
        return False

    def apply_response(self, call: LLMCall, result: Any) -> None:
        usage = getattr(result, "usage", None)
        if getattr(result, "type", None) != "message":
            return  # a raw/streaming response wrapper: its body is the caller's to read
        stop = getattr(result, "stop_reason", None)
        call.set_response(
            model=getattr(result, "model", None),
            response_id=getattr(result, "id", None),
            finish_reasons=[stop] if stop else None,
        )
        if call.capture_content:
            texts = _texts(getattr(result, "content", None))
            if texts:
                call.record_output(["".join(texts)])
        if usage is not None and isinstance(getattr(usage, "output_tokens", None), int):
            _set_usage(
                call,
                _int(getattr(usage, "input_tokens", None)),
                usage.output_tokens,
                _int(getattr(usage, "cache_read_input_tokens", None)),
                _int(getattr(usage, "cache_creation_input_tokens", None)),
            )

    def accumulator(self, capture: bool) -> AnthropicAccumulator:
        return AnthropicAccumulator(capture)

    def stream_types(self) -> tuple[type, type]:
        if self._stream_types is None:  # looked up once: this runs on every call
            from anthropic import AsyncStream, Stream

            self._stream_types = (Stream, AsyncStream)
        return self._stream_types


ADAPTER = AnthropicAdapter()


def wrap_stream_helper(original: Any, *, is_async: bool) -> Any:
    """Wrap ``messages.stream(...)``: the span starts when the manager sends the request (``with``)."""
    attr = _ASYNC_MANAGER_REQUEST if is_async else _SYNC_MANAGER_REQUEST

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        manager = original(self, *args, **kwargs)
        try:
            info = ADAPTER.request({**kwargs, "stream": True})
            request = getattr(manager, attr, None)
            if info is None or request is None:
                if request is None:
                    log.debug("amtp_obs.instrument: %s has no %s; stream helper not traced", manager, attr)
                return manager
            if is_async:
                setattr(manager, attr, instrumented_awaitable(ADAPTER, info, request))
            else:
                setattr(manager, attr, functools.partial(instrumented_request, ADAPTER, info, request))
        except Exception:  # pragma: no cover - a bug of ours must not break the user's call
            log.exception("amtp_obs.instrument: could not instrument messages.stream")
        return manager

    wrapper.__amtp_obs_original__ = original  # type: ignore[attr-defined]
    return wrapper


def targets() -> list[Target]:
    sync, asynchronous = call_wrappers(ADAPTER)
    return [
        Target(MODULE, "Messages", "create", sync),
        Target(MODULE, "Messages", "parse", sync),
        Target(MODULE, "Messages", "stream", lambda o: wrap_stream_helper(o, is_async=False)),
        Target(MODULE, "AsyncMessages", "create", asynchronous),
        Target(MODULE, "AsyncMessages", "parse", asynchronous),
        Target(MODULE, "AsyncMessages", "stream", lambda o: wrap_stream_helper(o, is_async=True)),
    ]
