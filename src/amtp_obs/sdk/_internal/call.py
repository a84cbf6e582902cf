"""LLMCall: one LLM request as an ``llm.completion`` span plus the contract's token counters.

Hot-path rules (<= 1.3x the raw OTel SDK, bench/llm_overhead.py): attribute dicts are precomputed
per (provider, model, request type, stream) and reused; nothing reads the environment or logs while
a call is recorded; everything set during the call is buffered and applied to the span in one
``set_attributes`` at end.
"""

from __future__ import annotations

import functools
import json
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from types import TracebackType
from typing import Any, Final, ParamSpec, TypeVar, cast, get_args

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

from amtp_obs import contract
from amtp_obs.sdk._internal import config
from amtp_obs.sdk._internal.config import Telemetry
from amtp_obs.sdk._internal.usage import Provenance, RequestType, Usage

log = logging.getLogger("amtp_obs.sdk")

_PROVENANCES: Final = frozenset(get_args(Provenance))
_REQUEST_TYPES: Final = frozenset(get_args(RequestType))
_ATTR_CACHE_MAX = 4096
_CLIENT = SpanKind.CLIENT
_INTERNAL = SpanKind.INTERNAL
_P_PROMPT = contract.LLM_TOKENS_PROMPT
_P_COMPLETION = contract.LLM_TOKENS_COMPLETION
_P_TOTAL = contract.LLM_TOKENS_TOTAL
_P_IN = contract.GEN_AI_USAGE_INPUT_TOKENS
_P_OUT = contract.GEN_AI_USAGE_OUTPUT_TOKENS
_P_PROV = contract.LLM_TOKENS_PROVENANCE
_DETAILS = contract.TOKEN_DETAILS  # cache read, cache creation, reasoning: in set_usage's order
_UNAVAILABLE: Provenance = "unavailable"
_REPORTED: Provenance = "reported"

P = ParamSpec("P")
R = TypeVar("R")
Details = tuple[int | None, int | None, int | None]
UsageExtractor = Callable[[Any], "Usage | None"]
"""Reads a decorated function's return value: its Usage, or None when it reported none."""


def _text(value: object) -> str:
    return value if isinstance(value, str) else ("unknown" if value is None else str(value))


def _attribute_sets(
    t: Telemetry, provider: str, model: str, request_type: str, stream: bool
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The span-start and metric attribute dicts for this call shape, built once and shared."""
    key = (provider, model, request_type, stream)
    cached = t.attr_cache.get(key)
    if cached is not None:
        return cached
    if request_type not in _REQUEST_TYPES:
        raise ValueError(f"request_type must be one of {', '.join(sorted(_REQUEST_TYPES))}, got {request_type!r}")
    p, m = _text(provider), _text(model)
    span_attrs: dict[str, Any] = {
        contract.LLM_PROVIDER: p,
        contract.LLM_MODEL: m,
        contract.LLM_REQUEST_TYPE: request_type,
        contract.GEN_AI_SYSTEM: p,
        contract.GEN_AI_REQUEST_MODEL: m,
        contract.GEN_AI_OPERATION_NAME: request_type,
        contract.GEN_AI_PROVIDER_NAME: p,
        contract.GEN_AI_REQUEST_STREAM: bool(stream),
    }
    metric_attrs = {contract.LLM_MODEL: t.model_labels.label(m), contract.LLM_PROVIDER: p, contract.GEN_AI_SYSTEM: p}
    assert tuple(metric_attrs) == contract.REQUIRED_METRIC_ATTRIBUTES
    if len(t.attr_cache) >= _ATTR_CACHE_MAX:  # bounded: a runaway set of model names cannot leak
        t.attr_cache.clear()
        t.zero_series.clear()  # keyed by the ids of the dicts just dropped
    t.attr_cache[key] = (span_attrs, metric_attrs)
    return span_attrs, metric_attrs


def _count(value: object) -> int | None:
    """A token count as a non-negative int, or None when the value cannot be one (bool is not a count)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, float) and value.is_integer() and value >= 0:
        return int(value)
    return None


def _first_zero(t: Telemetry, metric_attrs: dict[str, Any], detail: int) -> bool:
    """True the first time a detail class reports 0 for this series (its attribute set), then False."""
    key = (id(metric_attrs), detail)
    if key in t.zero_series:
        return False
    t.zero_series.add(key)
    return True


def _check_parts(prompt: int | None, completion: int | None, details: Details) -> None:
    """A detail class is a part of prompt or completion: larger than its whole means double counting."""
    cache_read, cache_creation, reasoning = details
    cached = (cache_read or 0) + (cache_creation or 0)
    if prompt is not None and cached > prompt:
        raise ValueError(
            f"cache read ({cache_read}) + cache creation ({cache_creation}) tokens exceed prompt tokens ({prompt}):"
            " prompt_tokens must include cached input (for Anthropic: input + cache read + cache creation)"
        )
    if completion is not None and reasoning is not None and reasoning > completion:
        raise ValueError(
            f"reasoning tokens ({reasoning}) exceed completion tokens ({completion}):"
            " completion_tokens must include reasoning output"
        )


def _json_default(obj: object) -> object:
    dump = getattr(obj, "model_dump", None)  # pydantic models (openai/anthropic SDK types)
    if callable(dump):
        return dump()
    return str(obj)


def _serialize(content: object) -> str:
    if isinstance(content, str):
        return content
    try:
        return json.dumps(content, default=_json_default, ensure_ascii=False)
    except (TypeError, ValueError):
        return str(content)


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    module = cls.__module__
    return cls.__qualname__ if module in (None, "builtins") else f"{module}.{cls.__qualname__}"


_cost_warned = False


def _cost_attributes(t: Telemetry, metric_attrs: Mapping[str, Any], usage: Usage) -> Mapping[str, AttributeValue]:
    """The cost hook's attributes (issue 10); a failing hook is logged once and costs nothing else."""
    global _cost_warned
    assert t.cost is not None
    try:
        return t.cost(metric_attrs[contract.LLM_PROVIDER], metric_attrs[contract.LLM_MODEL], usage)
    except Exception:
        if not _cost_warned:
            _cost_warned = True
            log.warning("amtp_obs: the cost hook failed; calls are recorded without cost", exc_info=True)
        return {}


class LLMCall:
    """One LLM request: a (sync or async) context manager, a decorator, or driven by start()/end().

    end() is idempotent: the span ends and the counters are recorded exactly once, however many
    times end() (or __exit__) runs, so stream wrappers may call it from every exit path.
    """

    __slots__ = (
        "_completion",
        "_details",
        "_extra",
        "_metric_attrs",
        "_once",
        "_prompt",
        "_provenance",
        "_span",
        "_span_attrs",
        "_t",
        "_template",
        "_token",
        "_total",
        "_ttfc_set",
    )

    def __init__(
        self,
        telemetry: Telemetry,
        span_attrs: dict[str, Any],
        metric_attrs: dict[str, Any],
        args: tuple[Any, ...] | None = None,
    ) -> None:
        self._t = telemetry
        self._span_attrs = span_attrs
        self._metric_attrs = metric_attrs
        self._template = args  # llm_call()'s arguments, for the decorator form
        self._span: Span | None = None
        self._token: object | None = None
        self._once: list[None] = [None]
        self._prompt: int | None = None
        self._completion: int | None = None
        self._total: int | None = None
        self._details: Details | None = None
        self._provenance: Provenance | None = None
        self._extra: dict[str, Any] | None = None
        self._ttfc_set = False

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> LLMCall:
        """Start the CLIENT span (not made current; entering the call does that). Idempotent."""
        if self._span is None:
            self._span = self._t.tracer.start_span(
                contract.SPAN_LLM_COMPLETION, kind=_CLIENT, attributes=self._span_attrs
            )
        return self

    def end(self, exc: BaseException | None = None) -> None:
        """Finish the call: attributes, status, span end and counters, exactly once."""
        try:
            self._once.pop()  # atomic under the GIL: only the first end() gets past this
        except IndexError:
            return
        span = self._span
        if span is None:
            span = self.start()._span
            assert span is not None
        p, c = self._prompt, self._completion
        attrs: dict[str, Any]
        total = 0
        if p is not None and c is not None and self._provenance != _UNAVAILABLE:
            total = p + c
            attrs = {_P_PROMPT: p, _P_COMPLETION: c, _P_TOTAL: total, _P_IN: p, _P_OUT: c, _P_PROV: self._provenance}
            counted = True
        else:
            counted = False
            attrs = {_P_PROV: _UNAVAILABLE}
            if p is not None:
                attrs[_P_PROMPT] = attrs[_P_IN] = p
            if c is not None:
                attrs[_P_COMPLETION] = attrs[_P_OUT] = c
            if self._total is not None:
                attrs[_P_TOTAL] = self._total
        details = self._details
        if details is not None:
            for detail, value in zip(_DETAILS, details, strict=True):
                if value is not None:
                    attrs[detail.attribute] = attrs[detail.semconv_attribute] = value
        t = self._t
        if counted and t.cost is not None:
            attrs.update(_cost_attributes(t, self._metric_attrs, self.usage))
        if self._extra:
            attrs.update(self._extra)
        if exc is not None:
            attrs[contract.ERROR_TYPE] = _error_type(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.record_exception(exc)
        span.set_attributes(attrs)
        span.end()
        if counted:
            m = self._metric_attrs
            # Exemplars link the counters to this trace: when the call is not the current span
            # (driven by start()/end()), hand its context to the counters explicitly.
            ctx = None if self._token is not None else trace.set_span_in_context(span)
            t.prompt_tokens.add(p, m, ctx)  # type: ignore[arg-type]
            t.completion_tokens.add(c, m, ctx)  # type: ignore[arg-type]
            t.total_tokens.add(total, m, ctx)
            if details is not None:
                cache_read, cache_creation, reasoning = details
                # A reported 0 must make the series exist (the hit ratio's denominator), once: later
                # zeros would not change it, so they are skipped (most calls report zeros here).
                if cache_read or (cache_read == 0 and _first_zero(t, m, 0)):
                    t.cache_read_tokens.add(cache_read, m, ctx)
                if cache_creation or (cache_creation == 0 and _first_zero(t, m, 1)):
                    t.cache_creation_tokens.add(cache_creation, m, ctx)
                if reasoning or (reasoning == 0 and _first_zero(t, m, 2)):
                    t.reasoning_tokens.add(reasoning, m, ctx)

    @property
    def ended(self) -> bool:
        return not self._once

    def __enter__(self) -> LLMCall:
        if self._span is None:
            self.start()
        self._token = otel_context.attach(trace.set_span_in_context(self._span))  # type: ignore[arg-type]
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self.end(exc)
        finally:
            token, self._token = self._token, None
            if token is not None:
                otel_context.detach(token)  # type: ignore[arg-type]

    async def __aenter__(self) -> LLMCall:
        return self.__enter__()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.__exit__(exc_type, exc, tb)

    # -- what happened -------------------------------------------------------------------------
    def set_usage(
        self,
        prompt_tokens: int | None,
        completion_tokens: int | None,
        total_tokens: int | None = None,
        *,
        cache_read_tokens: int | None = None,
        cache_creation_tokens: int | None = None,
        reasoning_tokens: int | None = None,
        provenance: Provenance = _REPORTED,
    ) -> None:
        """Token counts for this call; the last call before end() wins.

        ``prompt_tokens`` is ALL input, cached tokens included, and ``completion_tokens`` ALL output,
        reasoning included (contract.TOKEN_DETAILS): the three detail classes are parts of them,
        recorded beside them, never added to them. Pass a detail only when the vendor reported it
        (a reported 0 is recorded; None means not reported). The contract's total is always
        prompt + completion (a different vendor total is not used); ``total_tokens`` only shows on
        the span when one of the other two is unknown. If either count is unknown the call's
        provenance is ``unavailable`` and no counter is incremented.

        Raises ValueError for an unknown provenance, or a detail larger than the count it is part of.
        """
        if provenance not in _PROVENANCES:
            raise ValueError(
                f"{contract.LLM_TOKENS_PROVENANCE} must be one of {', '.join(contract.PROVENANCE_VALUES)},"
                f" got {provenance!r}"
            )
        prompt = _count(prompt_tokens)
        completion = _count(completion_tokens)
        details: Details | None = None
        if cache_read_tokens is not None or cache_creation_tokens is not None or reasoning_tokens is not None:
            details = (_count(cache_read_tokens), _count(cache_creation_tokens), _count(reasoning_tokens))
            _check_parts(prompt, completion, details)
        self._prompt = prompt
        self._completion = completion
        self._total = _count(total_tokens)
        self._details = details
        self._provenance = provenance

    @property
    def usage(self) -> Usage:
        """The usage set so far (provenance ``unavailable`` while prompt or completion is unknown)."""
        cr, cc, rs = self._details or (None, None, None)
        p, c = self._prompt, self._completion
        known = p is not None and c is not None and self._provenance is not None
        provenance: Provenance = self._provenance if known and self._provenance else _UNAVAILABLE
        return Usage(p, c, cr, cc, rs, provenance)

    def set_response(
        self,
        *,
        model: str | None = None,
        response_id: str | None = None,
        finish_reasons: Sequence[str] | None = None,
    ) -> None:
        """What the vendor answered with (``gen_ai.response.*``); unknown values are left out."""
        extra = self._extra_dict()
        if model is not None:
            extra[contract.GEN_AI_RESPONSE_MODEL] = _text(model)
        if response_id is not None:
            extra[contract.GEN_AI_RESPONSE_ID] = _text(response_id)
        if finish_reasons is not None:
            extra[contract.GEN_AI_RESPONSE_FINISH_REASONS] = [_text(r) for r in finish_reasons]

    def set_attribute(self, key: str, value: AttributeValue | None) -> None:
        """Any extra span attribute (e.g. contract.GEN_AI_REQUEST_MAX_TOKENS), applied at end(); None is ignored."""
        if value is not None:
            self._extra_dict()[key] = value

    def set_attributes(self, attributes: Mapping[str, AttributeValue | None]) -> None:
        extra = self._extra_dict()
        for k, v in attributes.items():
            if v is not None:
                extra[k] = v

    @property
    def capture_content(self) -> bool:
        """Whether record_input/record_output record anything (off unless the user opted in)."""
        return self._t.configuration.capture_content

    def record_input(self, messages: object) -> None:
        """Prompt content as ``gen_ai.input.messages`` - only when content capture is on."""
        if self._t.configuration.capture_content:
            self._extra_dict()[contract.GEN_AI_INPUT_MESSAGES] = _serialize(messages)

    def record_output(self, content: object) -> None:
        """Response content as ``gen_ai.output.messages`` - only when content capture is on."""
        if self._t.configuration.capture_content:
            self._extra_dict()[contract.GEN_AI_OUTPUT_MESSAGES] = _serialize(content)

    def set_first_chunk(self) -> None:
        """Record the time to first chunk of a stream (seconds since start); later calls are ignored."""
        if self._ttfc_set or not self._once:
            return
        self._ttfc_set = True
        start_ns = getattr(self.span, "start_time", None)
        if isinstance(start_ns, int):
            self._extra_dict()[contract.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK] = max(
                0.0, (time.time_ns() - start_ns) / 1e9
            )

    # -- child spans ---------------------------------------------------------------------------
    @contextmanager
    def _child(self, name: str, attributes: Mapping[str, AttributeValue] | None) -> Iterator[Span]:
        parent = trace.set_span_in_context(self.span)
        with self._t.tracer.start_as_current_span(name, context=parent, kind=_INTERNAL, attributes=attributes) as child:
            yield child

    def inference(self, attributes: Mapping[str, AttributeValue] | None = None) -> AbstractContextManager[Span]:
        """Child span ``llm.inference``: the vendor round trip."""
        return self._child(contract.SPAN_LLM_INFERENCE, attributes)

    def response_parse(self, attributes: Mapping[str, AttributeValue] | None = None) -> AbstractContextManager[Span]:
        """Child span ``llm.response.parse``: turning the answer into the agent's data."""
        return self._child(contract.SPAN_LLM_RESPONSE_PARSE, attributes)

    @property
    def span(self) -> Span:
        """The ``llm.completion`` span (started on first access if start() was not called yet)."""
        if self._span is None:
            self.start()
        return self._span  # type: ignore[return-value]

    def _extra_dict(self) -> dict[str, Any]:
        extra = self._extra
        if extra is None:
            extra = self._extra = {}
        return extra

    # -- decorator form ------------------------------------------------------------------------
    def __call__(self, fn: Callable[P, R]) -> Callable[P, R]:
        """``@llm_call(...)``: each call of ``fn`` is recorded as its own LLM call (sync or async).

        With ``usage=``, the extractor reads the token counts from ``fn``'s return value; an
        extractor that fails logs one warning per decorated function and the call records
        provenance ``unavailable``.
        """
        if self._template is None:
            raise TypeError("only an LLMCall made by llm_call() can decorate a function")
        template = _Template(*self._template)
        import inspect  # only when decorating: importing the SDK stays cheap

        site = f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', repr(fn))}"
        if inspect.iscoroutinefunction(fn):
            afn = cast(Callable[P, Awaitable[Any]], fn)

            @functools.wraps(fn)
            async def async_wrapper(*args: P.args, **kwargs: P.kwargs) -> Any:
                async with template.new_call() as call:
                    result = await afn(*args, **kwargs)
                    template.apply_usage(call, result, site)
                    return result

            return cast(Callable[P, R], async_wrapper)

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
            with template.new_call() as call:
                result = fn(*args, **kwargs)
                template.apply_usage(call, result, site)
                return result

        return wrapper


_warned_sites: set[str] = set()
_warned_lock = threading.Lock()


class _Template:
    """What llm_call() was given, so a decorator can open a fresh call (on the current Telemetry) each time."""

    __slots__ = ("attributes", "model", "provider", "request_type", "stream", "usage")

    def __init__(
        self,
        provider: str,
        model: str,
        request_type: RequestType,
        stream: bool,
        attributes: Mapping[str, AttributeValue] | None,
        usage: UsageExtractor | None,
    ) -> None:
        self.provider, self.model, self.request_type = provider, model, request_type
        self.stream, self.attributes, self.usage = stream, attributes, usage

    def new_call(self) -> LLMCall:
        return llm_call(
            self.provider, self.model, request_type=self.request_type, stream=self.stream, attributes=self.attributes
        )

    def apply_usage(self, call: LLMCall, result: object, site: str) -> None:
        extractor = self.usage
        if extractor is None:
            return
        try:
            usage = extractor(result)
            if usage is None:
                return
            if not isinstance(usage, Usage):
                raise TypeError(f"the usage extractor returned {type(usage).__name__}, not amtp_obs.sdk.Usage")
            call.set_usage(
                usage.prompt_tokens,
                usage.completion_tokens,
                cache_read_tokens=usage.cache_read_tokens,
                cache_creation_tokens=usage.cache_creation_tokens,
                reasoning_tokens=usage.reasoning_tokens,
                provenance=usage.provenance,
            )
        except Exception as err:  # a broken extractor must not break the application's call
            call.set_usage(None, None, provenance=_UNAVAILABLE)
            with _warned_lock:
                first = site not in _warned_sites
                _warned_sites.add(site)
            if first:
                log.warning(
                    "amtp_obs: the usage extractor of %s failed (%s: %s); its calls record %s=%s"
                    " (logged once per decorated function)",
                    site,
                    type(err).__name__,
                    err,
                    contract.LLM_TOKENS_PROVENANCE,
                    _UNAVAILABLE,
                )


def llm_call(
    provider: str,
    model: str,
    *,
    request_type: RequestType = "chat",
    stream: bool = False,
    attributes: Mapping[str, AttributeValue] | None = None,
    usage: UsageExtractor | None = None,
) -> LLMCall:
    """Record one LLM call: ``with llm_call("openai", "gpt-4o") as call: ... call.set_usage(p, c)``.

    Also a decorator (``@llm_call("openai", "gpt-4o", usage=lambda r: Usage(...))``), where ``usage``
    reads the token counts from the decorated function's return value. Attributes passed with
    ``attributes=`` are added to the span but never override the contract's.
    """
    t = config._configured or config._default or config._lazy_default()
    span_attrs, metric_attrs = _attribute_sets(t, provider, model, request_type, stream)
    if attributes:
        # Contract attributes cannot be overridden; None values are dropped (OTel would warn).
        span_attrs = {**{k: v for k, v in attributes.items() if v is not None}, **span_attrs}
    return LLMCall(t, span_attrs, metric_attrs, (provider, model, request_type, stream, attributes, usage))
