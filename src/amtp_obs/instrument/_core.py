"""Provider-neutral patching: wrap a vendor method, keep the original, open one LLMCall per request."""

from __future__ import annotations

import functools
import importlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from opentelemetry import context as otel_context
from opentelemetry import trace

from amtp_obs import contract
from amtp_obs.instrument._stream import (
    Accumulator,
    AsyncStreamProxy,
    StreamTracker,
    SyncStreamProxy,
    safely,
)
from amtp_obs.sdk import LLMCall, llm_call

log = logging.getLogger("amtp_obs.instrument")


@dataclass
class Options:
    """Settings the installed wrappers read on every call (so instrument() can update them)."""

    include_usage: bool = True
    """OpenAI streams: ask for the usage chunk (hidden from the caller) when the caller did not."""


OPTIONS = Options()


class RequestInfo(NamedTuple):
    """What one request asks for (a tuple: built on every call)."""

    model: str
    stream: bool
    messages: Any
    attributes: dict[str, Any]


class Adapter(Protocol):
    """What one vendor client contributes: how to read its requests, responses and stream items."""

    provider: str

    def request(self, kwargs: dict[str, Any]) -> RequestInfo | None:
        """None when the call is not one we understand (it then runs uninstrumented)."""
        ...

    def prepare(self, kwargs: dict[str, Any], info: RequestInfo) -> dict[str, Any]:
        """The request to send: ``kwargs`` itself, or a new dict when telemetry needs more (never mutated)."""
        ...

    def intercept(self, stream: Any, tracker: StreamTracker, *, is_async: bool) -> None:
        """For a stream whose request prepare() changed: optionally drop what the change added before it is parsed."""
        ...

    def conceal(self, item: Any) -> bool:
        """For a stream whose request prepare() changed: undo on ``item`` what the change added; True drops it."""
        ...

    def apply_response(self, call: LLMCall, result: Any) -> None: ...

    def accumulator(self, capture: bool) -> Accumulator:
        """A fresh reader of one stream's items; ``capture``: also collect the text (content capture on)."""
        ...

    def stream_types(self) -> tuple[type, type]:
        """(sync Stream class, async Stream class) of the vendor."""
        ...


def given(value: Any) -> bool:
    """False for a missing argument and for the vendors' ``omit``/``NOT_GIVEN`` sentinels."""
    if value is None:
        return False
    return type(value).__name__ not in ("Omit", "NotGiven")


def number_attributes(pairs: dict[str, Any]) -> dict[str, Any]:
    """Keep only real numbers (not bools, not sentinels) as span attributes."""
    return {k: v for k, v in pairs.items() if isinstance(v, int | float) and not isinstance(v, bool)}


class current:
    """Make the call's span current while the vendor sends the request, so its own spans nest under it.

    Exceptions are recorded by ``call.end(exc)``, not here, so they are recorded once. A plain class
    rather than ``trace.use_span`` (two generator context managers): this runs on every call.
    """

    __slots__ = ("_span", "_token")

    def __init__(self, call: LLMCall) -> None:
        self._span = call.span
        self._token: object | None = None

    def __enter__(self) -> None:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))

    def __exit__(self, *exc: object) -> None:
        otel_context.detach(self._token)  # type: ignore[arg-type]


def _open(adapter: Adapter, kwargs: dict[str, Any]) -> tuple[LLMCall, dict[str, Any]] | None:
    info = adapter.request(kwargs)
    if info is None:
        return None
    call = _start(adapter, info)
    try:
        return call, adapter.prepare(kwargs, info)
    except Exception:  # pragma: no cover - a bug of ours: send the request as the caller wrote it
        log.exception("amtp_obs.instrument: could not prepare the request")
        return call, kwargs


def _settle(call: LLMCall, adapter: Adapter, result: Any, *, is_async: bool, changed: bool = False) -> Any:
    """Hand back the vendor's result; a stream is proxied and ends the span later, anything else now.

    ``changed``: prepare() altered the request, so the stream hides what that added (adapter.conceal).
    """
    try:
        sync_cls, async_cls = adapter.stream_types()
        if isinstance(result, async_cls if is_async else sync_cls):
            conceal = adapter.conceal if changed else None
            tracker = StreamTracker(call, adapter.accumulator(call.capture_content), conceal)
            if changed:
                adapter.intercept(result, tracker, is_async=is_async)
            return AsyncStreamProxy(result, tracker) if is_async else SyncStreamProxy(result, tracker)
    except Exception:  # pragma: no cover - a bug of ours: the caller still gets the vendor's result
        log.exception("amtp_obs.instrument: could not wrap the stream")
        safely(call.end)
        return result
    safely(adapter.apply_response, call, result)
    safely(call.end)
    return result


def call_wrappers(adapter: Adapter) -> tuple[Callable[[Any], Any], Callable[[Any], Any]]:
    """``wrap_call`` for a vendor's sync and async resource classes, as Target wrappers."""
    return (
        lambda original: wrap_call(original, adapter, is_async=False),
        lambda original: wrap_call(original, adapter, is_async=True),
    )


def wrap_call(original: Callable[..., Any], adapter: Adapter, *, is_async: bool) -> Callable[..., Any]:
    """Wrap ``create``/``parse``: one span per call; errors recorded and re-raised unchanged."""
    if is_async:

        @functools.wraps(original)
        async def async_wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            try:
                opened = _open(adapter, kwargs)
            except Exception:  # pragma: no cover - a bug of ours must not break the user's call
                log.exception("amtp_obs.instrument: could not start the LLM span")
                opened = None
            if opened is None:
                return await original(self, *args, **kwargs)
            call, sent = opened
            try:
                with current(call):
                    result = await original(self, *args, **sent)
            except BaseException as exc:
                safely(call.end, exc=exc)
                raise
            return _settle(call, adapter, result, is_async=True, changed=sent is not kwargs)

        async_wrapper.__amtp_obs_original__ = original  # type: ignore[attr-defined]
        return async_wrapper

    @functools.wraps(original)
    def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            opened = _open(adapter, kwargs)
        except Exception:  # pragma: no cover - a bug of ours must not break the user's call
            log.exception("amtp_obs.instrument: could not start the LLM span")
            opened = None
        if opened is None:
            return original(self, *args, **kwargs)
        call, sent = opened
        try:
            with current(call):
                result = original(self, *args, **sent)
        except BaseException as exc:
            safely(call.end, exc=exc)
            raise
        return _settle(call, adapter, result, is_async=False, changed=sent is not kwargs)

    wrapper.__amtp_obs_original__ = original  # type: ignore[attr-defined]
    return wrapper


def instrumented_request(adapter: Adapter, info: RequestInfo, request: Callable[[], Any]) -> Any:
    """Run a stream helper's deferred request (sync) inside a new LLMCall; return the proxied stream."""
    call = _start(adapter, info)
    try:
        with current(call):
            raw = request()
    except BaseException as exc:
        safely(call.end, exc=exc)
        raise
    return _settle(call, adapter, raw, is_async=False)


async def instrumented_awaitable(adapter: Adapter, info: RequestInfo, request: Any) -> Any:
    """Async twin of :func:`instrumented_request` for helpers that keep a coroutine to await later."""
    call = _start(adapter, info)
    try:
        with current(call):
            raw = await request
    except BaseException as exc:
        safely(call.end, exc=exc)
        raise
    return _settle(call, adapter, raw, is_async=True)


def _start(adapter: Adapter, info: RequestInfo) -> LLMCall:
    call = llm_call(
        adapter.provider,
        info.model,
        request_type=contract.REQUEST_TYPE_CHAT,
        stream=info.stream,
        attributes=info.attributes or None,
    )
    call.start()
    if call.capture_content:
        safely(call.record_input, info.messages)
    return call


# ------------------------------------------------------------------------------ patch registry
@dataclass(frozen=True)
class Target:
    """One method to patch: ``module.cls.attr``; ``factory(original)`` builds the wrapper."""

    module: str
    cls: str
    attr: str
    factory: Callable[[Callable[..., Any]], Callable[..., Any]]


_patched: dict[tuple[type, str], Any] = {}
"""(class, attribute) -> the original object found in the class __dict__."""


def patch(targets: list[Target]) -> list[str]:
    """Install wrappers that are not installed yet; return what was patched (idempotent)."""
    done: list[str] = []
    for target in targets:
        try:
            cls = getattr(importlib.import_module(target.module), target.cls)
        except (ImportError, AttributeError):
            log.debug("amtp_obs.instrument: %s.%s not found, skipped", target.module, target.cls)
            continue
        key = (cls, target.attr)
        if key in _patched:
            continue
        original = cls.__dict__.get(target.attr)
        if original is None:
            log.debug("amtp_obs.instrument: %s.%s has no %s", target.module, target.cls, target.attr)
            continue
        _patched[key] = original
        setattr(cls, target.attr, target.factory(original))
        done.append(f"{target.module}.{target.cls}.{target.attr}")
    return done


def unpatch() -> list[str]:
    """Put every original back exactly (the very same function object)."""
    restored: list[str] = []
    for (cls, attr), original in list(_patched.items()):
        setattr(cls, attr, original)
        del _patched[(cls, attr)]
        restored.append(f"{cls.__module__}.{cls.__qualname__}.{attr}")
    return restored


def patched() -> dict[tuple[type, str], Any]:
    """A copy of the registry (for tests and diagnostics)."""
    return dict(_patched)
