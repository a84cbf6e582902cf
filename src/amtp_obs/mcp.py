"""Spans and duration histograms for any MCP server: its tool calls and the requests they make.

Not subject to the LLM contract. ``mcp_tool`` records a tool call (span + ``mcp.tool.duration``);
``mcp_request`` records one thing a tool asks of a dependency (an HTTP API, a cache, a database) as a
CLIENT span, with a duration histogram of your choosing. They record through the SDK (configure(),
or the application's own global providers). docs/instrumentation.md shows the design's GitHub MCP
server (``repo.read_file``, ``github.api``, ``valkey.get``) written with them.

    from amtp_obs.mcp import mcp_request, mcp_tool

    @mcp_tool("search_docs")
    def search_docs(query: str) -> list[str]:
        with mcp_request("search.api", attributes={"http.request.method": "GET"}) as req:
            resp = ...
            req.set_status_code(resp.status_code)
"""

from __future__ import annotations

import functools
import inspect
import time
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, TypeVar, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Histogram
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from amtp_obs import contract
from amtp_obs.contract import HistogramSpec
from amtp_obs.sdk._internal import config
from amtp_obs.sdk._internal.config import Telemetry

F = TypeVar("F", bound=Callable[..., Any])

DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""Seconds; the GenAI/HTTP semconv duration buckets (the SDK default buckets are sized for ms)."""


def tool_span_name(tool: str) -> str:
    """The default span name of a tool: ``mcp.<tool>``."""
    return f"{contract.MCP_TOOL.split('.')[0]}.{tool}"


class _Instruments:
    """The tracer and the histograms made so far, for one Telemetry (rebuilt after a new configure())."""

    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.tracer = telemetry.tracer
        self.histograms: dict[str, Histogram] = {}

    def histogram(self, spec: HistogramSpec) -> Histogram:
        h = self.histograms.get(spec.instrument)
        if h is None:
            h = self.histograms[spec.instrument] = self.telemetry.meter.create_histogram(
                spec.instrument,
                unit=spec.unit,
                description=spec.description,
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
            )
        return h


_instruments: _Instruments | None = None


def _get_instruments() -> _Instruments:
    global _instruments
    t = config.current()
    inst = _instruments
    if inst is None or inst.telemetry is not t:
        inst = _instruments = _Instruments(t)
    return inst


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


class McpOperation:
    """One recorded operation: a span (current while entered) and optionally a duration histogram.

    A context manager (sync and async) and a decorator: as a decorator, each call of the wrapped
    function records its own operation.
    """

    def __init__(
        self,
        span_name: str,
        *,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: Mapping[str, AttributeValue | None] | None = None,
        histogram: HistogramSpec | None = None,
        histogram_attributes: tuple[str, ...] = (),
    ) -> None:
        self._span_name = span_name
        self._kind = kind
        self._attributes: dict[str, Any] = {k: v for k, v in (attributes or {}).items() if v is not None}
        self._histogram = histogram
        self._histogram_attributes = histogram_attributes
        self._span: Span | None = None
        self._token: object | None = None
        self._start = 0.0

    # -- what happened -------------------------------------------------------------------------
    def set_attribute(self, key: str, value: AttributeValue | None) -> None:
        if value is None:
            return
        self._attributes[key] = value
        if self._span is not None:
            self._span.set_attribute(key, value)

    def set_cache_hit(self, hit: bool) -> None:
        self.set_attribute(contract.MCP_CACHE_HIT, bool(hit))

    def set_exclusion_reason(self, reason: str) -> None:
        """Why the tool left something out (e.g. a file too large, or excluded by a pattern)."""
        self.set_attribute(contract.MCP_EXCLUSION_REASON, reason)

    def set_status_code(self, status_code: int) -> None:
        """An HTTP dependency's answer: ``http.response.status_code``; >= 400 marks the span as an error."""
        self.set_attribute(HTTP_RESPONSE_STATUS_CODE, int(status_code))
        if status_code >= 400 and self._span is not None:
            self._span.set_status(Status(StatusCode.ERROR, f"HTTP {status_code}"))
            self.set_attribute(ERROR_TYPE, str(status_code))

    @property
    def span(self) -> Span:
        return self._span if self._span is not None else trace.INVALID_SPAN

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> McpOperation:
        inst = _get_instruments()
        self._span = inst.tracer.start_span(self._span_name, kind=self._kind, attributes=self._attributes)
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        self._start = time.perf_counter()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        elapsed = time.perf_counter() - self._start
        span = self._span
        try:
            if span is None:
                return
            if exc is not None:
                self._attributes[ERROR_TYPE] = _error_type(exc)
                span.set_attribute(ERROR_TYPE, self._attributes[ERROR_TYPE])
                span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
                span.record_exception(exc)
            span.end()
            if self._histogram is not None:
                attrs = {k: self._attributes[k] for k in self._histogram_attributes if k in self._attributes}
                _get_instruments().histogram(self._histogram).record(elapsed, attrs)
        finally:
            token, self._token = self._token, None
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]

    async def __aenter__(self) -> McpOperation:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    def _fresh(self) -> McpOperation:
        return McpOperation(
            self._span_name,
            kind=self._kind,
            attributes=self._attributes,
            histogram=self._histogram,
            histogram_attributes=self._histogram_attributes,
        )

    def __call__(self, fn: F) -> F:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                async with self._fresh():
                    return await fn(*args, **kwargs)

            return cast(F, async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with self._fresh():
                return fn(*args, **kwargs)

        return cast(F, wrapper)


def mcp_tool(
    tool: str,
    *,
    span_name: str | None = None,
    attributes: Mapping[str, AttributeValue | None] | None = None,
) -> McpOperation:
    """One MCP tool call: a span (``span_name``, default ``mcp.<tool>``) with ``mcp.tool``, and ``mcp.tool.duration``.

    The histogram's attributes are ``mcp.tool`` and ``error.type`` (on failure): one series per tool.
    """
    attrs: dict[str, AttributeValue | None] = dict(attributes or {})
    attrs[contract.MCP_TOOL] = tool
    return McpOperation(
        span_name or tool_span_name(tool),
        kind=SpanKind.INTERNAL,
        attributes=attrs,
        histogram=contract.MCP_TOOL_DURATION,
        histogram_attributes=(contract.MCP_TOOL, ERROR_TYPE),
    )


def mcp_request(
    span_name: str,
    *,
    attributes: Mapping[str, AttributeValue | None] | None = None,
    histogram: HistogramSpec | None = None,
    histogram_attributes: tuple[str, ...] = (),
) -> McpOperation:
    """One request a tool makes to a dependency (HTTP API, cache, database): a CLIENT span.

    With ``histogram`` its duration is recorded too (seconds), labelled with those of
    ``histogram_attributes`` the operation has (keep them few and bounded: a URL template, not a URL).
    """
    return McpOperation(
        span_name,
        kind=SpanKind.CLIENT,
        attributes=attributes,
        histogram=histogram,
        histogram_attributes=histogram_attributes,
    )


__all__ = ["DURATION_BUCKETS_S", "McpOperation", "mcp_request", "mcp_tool", "tool_span_name"]
