"""Proxies around the vendors' Stream/AsyncStream that end the ``llm.completion`` span exactly once.

A proxy (``wrapt.ObjectProxy``) rather than a subclass or a copy, so user code keeps the vendor's
object: every attribute (``.response``, private helpers the vendors' own stream managers read) is
forwarded, and ``isinstance(proxy, openai.Stream)`` stays true because the proxy reports the
wrapped object's ``__class__``. ``type(proxy)`` is the one thing that differs.

The span ends on the first of: the stream is exhausted, the stream raises (vendor error, dropped
connection, ``asyncio.CancelledError``), ``close()``/``aclose()``, leaving a ``with``/``async with``
block, or the proxy being garbage-collected after ``break``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Protocol

import wrapt

from amtp_obs.sdk import LLMCall

log = logging.getLogger(__name__)


class Accumulator(Protocol):
    """Provider-specific reader of stream items: collects usage, model, id, finish reasons, text."""

    def add(self, item: Any) -> None: ...

    def apply(self, call: LLMCall) -> None:
        """Put what was collected on the call (before it ends)."""
        ...


class StreamTracker:
    """Owns one LLMCall for the life of a stream; ``finish`` is idempotent and thread-safe.

    ``conceal`` (when the instrumentation changed the request): called on each item after it was
    read; it undoes on the item what the change added and returns True for an item the caller would
    not have received at all, which the proxy then skips.
    """

    __slots__ = ("_add", "_lock", "accumulator", "call", "conceal", "finished", "started")

    def __init__(self, call: LLMCall, accumulator: Accumulator, conceal: Callable[[Any], bool] | None = None) -> None:
        self.call = call
        self.accumulator = accumulator
        self._add = accumulator.add  # bound once: it runs per chunk
        self.conceal = conceal
        self.started = False
        self.finished = False
        self._lock = threading.Lock()

    def observe(self, read: Callable[[Any], None], value: Any) -> None:
        """Count one item and let ``read(value)`` take what the span needs from it (a no-op once finished)."""
        if not self.finished:
            try:  # (inline rather than safely(): this runs once per chunk)
                if not self.started:
                    self.started = True
                    self.call.set_first_chunk()
                read(value)
            except Exception:  # pragma: no cover - a bug of ours must not break the caller's stream
                log.exception("amtp_obs.instrument: could not read a stream item")

    def item(self, item: Any) -> bool:
        """Read one item; True when the caller must not see it. (The hot path: one call per chunk.)"""
        self.observe(self._add, item)
        conceal = self.conceal
        if conceal is None:
            return False
        try:
            return conceal(item)
        except Exception:  # pragma: no cover - a bug of ours: show the item rather than lose it
            log.exception("amtp_obs.instrument: could not conceal a stream item")
            return False

    def finish(self, exc: BaseException | None = None) -> None:
        with self._lock:
            if self.finished:
                return
            self.finished = True
        try:  # (inline rather than safely(): once per stream, on the caller's time)
            self.accumulator.apply(self.call)
        except Exception:  # pragma: no cover - only reached through a bug in our code or the SDK
            log.exception("amtp_obs.instrument: could not read the stream's totals")
        try:
            self.call.end(exc=exc)
        except Exception:  # pragma: no cover - only reached through a bug in our code or the SDK
            log.exception("amtp_obs.instrument: could not end the stream's span")


def safely(fn: Any, *args: Any, **kwargs: Any) -> None:
    """Telemetry must never break the user's LLM call: log our own failures instead of raising."""
    try:
        fn(*args, **kwargs)
    except Exception:  # pragma: no cover - only reached through a bug in our code or the SDK
        log.exception("amtp_obs.instrument: telemetry step %r failed", getattr(fn, "__name__", fn))


def _iterate(owner: SyncStreamProxy, tracker: StreamTracker, items: Iterator[Any]) -> Iterator[Any]:
    """What ``for chunk in stream`` runs: the vendor's items, read on the way, the hidden ones skipped.

    It shares the vendor's underlying iterator with the proxy's ``__next__``, so a caller may mix
    ``for`` loops and ``next()``; leaving a loop early does not end the span (the rest may still be
    read): the end of the stream, an error, ``close()`` or the proxy's ``__del__`` does. ``owner``
    keeps the proxy alive while a loop reads it (``for c in client.create(...)`` holds nothing
    else); a sync generator left by ``break`` is freed at once, so an abandoned proxy still is too.
    A ``for`` loop is how most callers read a stream, and resuming a generator costs less per chunk
    than calling a ``__next__`` method. (Async streams keep ``__anext__``: an abandoned async
    generator is finalised by the event loop later, which would keep the proxy, and its span, open.)
    """
    read = tracker.item
    while True:
        try:
            item = next(items)
        except StopIteration:
            tracker.finish()
            return
        except BaseException as exc:
            tracker.finish(exc)
            raise
        if not read(item):
            yield item


class SyncStreamProxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """Proxy of a vendor ``Stream``: same chunks, same object underneath, span ends once."""

    def __init__(self, wrapped: Any, tracker: StreamTracker) -> None:
        super().__init__(wrapped)
        self._self_tracker = tracker

    @property
    def telemetry_call(self) -> LLMCall:
        """The LLMCall behind this stream (for tests and advanced users)."""
        return self._self_tracker.call

    def __iter__(self) -> Iterator[Any]:
        """A generator over the vendor's stream, as the vendor's own ``__iter__`` is (see :func:`_iterate`)."""
        return _iterate(self, self._self_tracker, iter(self.__wrapped__))

    def __next__(self) -> Any:
        tracker = self._self_tracker
        while True:
            try:
                item = self.__wrapped__.__next__()
            except StopIteration:
                tracker.finish()
                raise
            except BaseException as exc:
                tracker.finish(exc)
                raise
            if not tracker.item(item):
                return item

    def close(self) -> None:
        try:
            self.__wrapped__.close()
        finally:
            self._self_tracker.finish()

    def __enter__(self) -> SyncStreamProxy:
        self.__wrapped__.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return self.__wrapped__.__exit__(exc_type, exc, tb)
        finally:
            self._self_tracker.finish()

    def __del__(self) -> None:
        # Abandoned after `break`: the span still ends (as closed early), once.
        tracker = getattr(self, "_self_tracker", None)
        if tracker is not None and not tracker.finished:
            tracker.finish()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("an instrumented LLM stream cannot be pickled (nor can the vendor's stream)")


class AsyncStreamProxy(wrapt.ObjectProxy):  # type: ignore[type-arg]
    """Proxy of a vendor ``AsyncStream``; also ends the span on ``asyncio.CancelledError``."""

    def __init__(self, wrapped: Any, tracker: StreamTracker) -> None:
        super().__init__(wrapped)
        self._self_tracker = tracker

    @property
    def telemetry_call(self) -> LLMCall:
        return self._self_tracker.call

    def __aiter__(self) -> AsyncStreamProxy:
        return self

    async def __anext__(self) -> Any:
        tracker = self._self_tracker
        while True:
            try:
                item = await self.__wrapped__.__anext__()
            except StopAsyncIteration:
                tracker.finish()
                raise
            except BaseException as exc:  # CancelledError is a BaseException: it ends the span too
                tracker.finish(exc)
                raise
            if not tracker.item(item):
                return item

    async def close(self) -> None:
        try:
            await self.__wrapped__.close()
        finally:
            self._self_tracker.finish()

    async def aclose(self) -> None:
        """The vendor's ``aclose`` where it has one (openai), else ``close`` (anthropic has only that)."""
        closer = getattr(self.__wrapped__, "aclose", None) or self.__wrapped__.close
        try:
            await closer()
        finally:
            self._self_tracker.finish()

    async def __aenter__(self) -> AsyncStreamProxy:
        await self.__wrapped__.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> Any:
        try:
            return await self.__wrapped__.__aexit__(exc_type, exc, tb)
        finally:
            self._self_tracker.finish()

    def __del__(self) -> None:
        tracker = getattr(self, "_self_tracker", None)
        if tracker is not None and not tracker.finished:
            tracker.finish()

    def __reduce_ex__(self, protocol: Any) -> Any:
        raise TypeError("an instrumented LLM stream cannot be pickled (nor can the vendor's stream)")
