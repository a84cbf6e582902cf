"""Spans and histograms for the GitHub MCP server: tool calls, GitHub API requests, Valkey cache.

These are not subject to the LLM contract; their names (spans, ``mcp.*`` attributes, histograms)
come from ``amtp_obs.contract``. They record through the SDK's Telemetry (configure() or the
application's global providers).

    from amtp_obs.mcp import configure_mcp_server, mcp_tool, github_api, valkey_get

    configure_mcp_server()
    with mcp_tool(contract.SPAN_REPO_READ_FILE) as tool:
        with valkey_get() as cache:
            cache.set_cache_hit(hit)
        with github_api("/repos/{owner}/{repo}/contents/{path}") as api:
            api.set_status_code(resp.status_code)
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
from opentelemetry.semconv._incubating.attributes.db_attributes import DB_OPERATION_NAME
from opentelemetry.semconv._incubating.attributes.url_attributes import URL_TEMPLATE
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from amtp_obs import contract
from amtp_obs.sdk import PROTOCOL_HTTP_PROTOBUF, Telemetry, configure, get_telemetry

F = TypeVar("F", bound=Callable[..., Any])

DURATION_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
"""Seconds; the GenAI/HTTP semconv duration buckets (the SDK default buckets are sized for ms)."""

VALKEY_GET_OPERATION = "GET"
VALKEY_SET_OPERATION = "SET"


def configure_mcp_server(
    service_name: str = contract.MCP_SERVICE_NAME,
    *,
    protocol: str | None = PROTOCOL_HTTP_PROTOBUF,
    **kwargs: Any,
) -> Telemetry:
    """configure() with the MCP server's defaults: its own service name, OTLP over HTTP (the design)."""
    return configure(service_name, protocol=protocol, **kwargs)


def tool_span_name(tool: str) -> str:
    """The span name of a tool: the contract's name when it is one, else ``mcp.<tool>``."""
    if tool in contract.MCP_SPAN_NAMES:
        return tool
    return f"{contract.MCP_TOOL.split('.')[0]}.{tool}"


class _Instruments:
    def __init__(self, telemetry: Telemetry) -> None:
        self.telemetry = telemetry
        self.tracer = telemetry.tracer
        self.histograms: dict[str, Histogram] = {
            spec.instrument: telemetry.meter.create_histogram(
                spec.instrument,
                unit=spec.unit,
                description=spec.description,
                explicit_bucket_boundaries_advisory=DURATION_BUCKETS_S,
            )
            for spec in contract.MCP_HISTOGRAMS
        }


_instruments: _Instruments | None = None


def _get_instruments(telemetry: Telemetry | None) -> _Instruments:
    global _instruments
    t = telemetry or get_telemetry()
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
        attributes: Mapping[str, Any] | None = None,
        histogram: str | None = None,
        histogram_attributes: tuple[str, ...] = (),
        telemetry: Telemetry | None = None,
    ) -> None:
        self._span_name = span_name
        self._kind = kind
        self._attributes: dict[str, Any] = {k: v for k, v in (attributes or {}).items() if v is not None}
        self._histogram = histogram
        self._histogram_attributes = histogram_attributes
        self._telemetry = telemetry
        self._span: Span | None = None
        self._token: object | None = None
        self._start = 0.0

    # -- what happened -------------------------------------------------------------------------
    def set_attribute(self, key: str, value: Any) -> None:
        if value is None:
            return
        self._attributes[key] = value
        if self._span is not None:
            self._span.set_attribute(key, value)

    def set_cache_hit(self, hit: bool) -> None:
        self.set_attribute(contract.MCP_CACHE_HIT, bool(hit))

    def set_exclusion_reason(self, reason: str) -> None:
        """Why the tool left something out (e.g. a file too large or excluded by pattern)."""
        self.set_attribute(contract.MCP_EXCLUSION_REASON, reason)

    def set_status_code(self, status_code: int) -> None:
        self.set_attribute(HTTP_RESPONSE_STATUS_CODE, int(status_code))
        if status_code >= 400 and self._span is not None:
            self._span.set_status(Status(StatusCode.ERROR, f"HTTP {status_code}"))
            self.set_attribute(ERROR_TYPE, str(status_code))

    @property
    def span(self) -> Span:
        return self._span if self._span is not None else trace.INVALID_SPAN

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> McpOperation:
        inst = _get_instruments(self._telemetry)
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
                inst = _get_instruments(self._telemetry)
                attrs = {k: self._attributes[k] for k in self._histogram_attributes if k in self._attributes}
                inst.histograms[self._histogram].record(elapsed, attrs)
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
            telemetry=self._telemetry,
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
    cache_hit: bool | None = None,
    exclusion_reason: str | None = None,
    attributes: Mapping[str, Any] | None = None,
    telemetry: Telemetry | None = None,
) -> McpOperation:
    """One MCP tool call: span (``repo.tree`` etc., else ``mcp.<tool>``) and ``mcp.tool.duration``."""
    attrs: dict[str, Any] = dict(attributes or {})
    attrs[contract.MCP_TOOL] = tool
    if cache_hit is not None:
        attrs[contract.MCP_CACHE_HIT] = bool(cache_hit)
    if exclusion_reason is not None:
        attrs[contract.MCP_EXCLUSION_REASON] = exclusion_reason
    return McpOperation(
        tool_span_name(tool),
        kind=SpanKind.INTERNAL,
        attributes=attrs,
        histogram=contract.MCP_TOOL_DURATION.instrument,
        histogram_attributes=(contract.MCP_TOOL, ERROR_TYPE),
        telemetry=telemetry,
    )


def github_api(route: str, *, method: str = "GET", telemetry: Telemetry | None = None) -> McpOperation:
    """One GitHub API request: span ``github.api`` (CLIENT) and ``mcp.github_api.duration``.

    ``route`` is the URL template (``/repos/{owner}/{repo}/git/trees/{sha}``), not the concrete URL,
    so the histogram's series stay few.
    """
    return McpOperation(
        contract.SPAN_GITHUB_API,
        kind=SpanKind.CLIENT,
        attributes={HTTP_REQUEST_METHOD: method.upper(), URL_TEMPLATE: route},
        histogram=contract.MCP_GITHUB_API_DURATION.instrument,
        histogram_attributes=(HTTP_REQUEST_METHOD, URL_TEMPLATE, HTTP_RESPONSE_STATUS_CODE, ERROR_TYPE),
        telemetry=telemetry,
    )


def valkey_get(*, cache_hit: bool | None = None, telemetry: Telemetry | None = None) -> McpOperation:
    """A cache lookup: span ``valkey.get`` (CLIENT); call set_cache_hit() with the outcome."""
    attrs: dict[str, Any] = {DB_OPERATION_NAME: VALKEY_GET_OPERATION}
    if cache_hit is not None:
        attrs[contract.MCP_CACHE_HIT] = bool(cache_hit)
    return McpOperation(contract.SPAN_VALKEY_GET, kind=SpanKind.CLIENT, attributes=attrs, telemetry=telemetry)


def valkey_set(*, telemetry: Telemetry | None = None) -> McpOperation:
    """A cache write: span ``valkey.set`` (CLIENT)."""
    return McpOperation(
        contract.SPAN_VALKEY_SET,
        kind=SpanKind.CLIENT,
        attributes={DB_OPERATION_NAME: VALKEY_SET_OPERATION},
        telemetry=telemetry,
    )


__all__ = [
    "DURATION_BUCKETS_S",
    "McpOperation",
    "configure_mcp_server",
    "github_api",
    "mcp_tool",
    "tool_span_name",
    "valkey_get",
    "valkey_set",
]
