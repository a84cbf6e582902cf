"""llm_call()/LLMCall and its decorator form: what lands on the span and the counters, path by path."""

from __future__ import annotations

import asyncio
import re
import threading
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.trace import SpanKind, StatusCode

from amtp_obs import contract, env
from amtp_obs.contract.validate import validate_metric_points, validate_readable_span
from amtp_obs.sdk import Usage, llm_call
from amtp_obs.sdk.testing import InMemoryTelemetry, configure_in_memory

GPT = {contract.LLM_MODEL: "gpt-4o", contract.LLM_PROVIDER: "openai", contract.GEN_AI_SYSTEM: "openai"}
KEY = tuple(sorted(GPT.items()))


@pytest.fixture
def mem() -> InMemoryTelemetry:
    return configure_in_memory()


def _one(mem: InMemoryTelemetry) -> Any:
    [span] = mem.spans(contract.SPAN_LLM_COMPLETION)
    return span


def test_happy_path_is_valid_and_counted(mem: InMemoryTelemetry) -> None:
    with llm_call("openai", "gpt-4o", stream=True) as call:
        assert trace.get_current_span() is call.span  # entered: the call is the current span
        call.set_usage(10, 5)
    span = _one(mem)
    assert span.kind is SpanKind.CLIENT
    assert span.status.status_code is StatusCode.UNSET
    assert span.attributes[contract.GEN_AI_REQUEST_STREAM] is True
    assert span.attributes[contract.LLM_TOKENS_TOTAL] == 15
    assert validate_readable_span(span) == []
    assert mem.counter_values() == {
        "prompt_tokens": {KEY: 10},
        "completion_tokens": {KEY: 5},
        "total_tokens": {KEY: 15},
    }
    assert validate_metric_points(mem.points()) == []
    assert trace.get_current_span() is trace.INVALID_SPAN  # detached on exit


def test_operation_defaults_to_request_type(mem: InMemoryTelemetry) -> None:
    with llm_call("openai", "text-embedding-3", request_type=contract.REQUEST_TYPE_EMBEDDING) as call:
        call.set_usage(7, 0)
    a = _one(mem).attributes
    assert a[contract.GEN_AI_OPERATION_NAME] == contract.REQUEST_TYPE_EMBEDDING
    assert a[contract.LLM_REQUEST_TYPE] == contract.REQUEST_TYPE_EMBEDDING


def test_error_path_marks_span_and_propagates_unchanged(mem: InMemoryTelemetry) -> None:
    class VendorDown(RuntimeError):
        pass

    original = VendorDown("503 from vendor")
    with pytest.raises(VendorDown) as caught, llm_call("openai", "gpt-4o"):
        raise original
    assert caught.value is original
    span = _one(mem)
    assert span.status.status_code is StatusCode.ERROR
    assert "503 from vendor" in (span.status.description or "")
    assert span.attributes[contract.ERROR_TYPE].endswith("VendorDown")
    [event] = [e for e in span.events if e.name == "exception"]
    assert event.attributes["exception.message"] == "503 from vendor"
    # No usage was reported: provenance unavailable, no counters, and the span is still valid.
    assert span.attributes[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE
    assert validate_readable_span(span) == []
    assert mem.counter_values() == {}


def test_usage_unavailable_omits_tokens_and_counts_nothing(mem: InMemoryTelemetry) -> None:
    with llm_call("openai", "gpt-4o"):
        pass
    a = _one(mem).attributes
    assert a[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE
    for name in (contract.LLM_TOKENS_PROMPT, contract.LLM_TOKENS_COMPLETION, contract.LLM_TOKENS_TOTAL):
        assert name not in a
    assert contract.GEN_AI_USAGE_INPUT_TOKENS not in a
    assert validate_readable_span(_one(mem)) == []
    assert mem.counter_values() == {}


def test_partial_usage_is_kept_on_the_span_but_not_counted(mem: InMemoryTelemetry) -> None:
    with llm_call("anthropic", "claude") as call:
        call.set_usage(40, None)
    a = _one(mem).attributes
    assert a[contract.LLM_TOKENS_PROMPT] == 40
    assert contract.LLM_TOKENS_COMPLETION not in a
    assert a[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE
    assert mem.counter_values() == {}


@pytest.mark.parametrize("bad", [True, -3, "12", 1.5])
def test_non_counts_are_treated_as_unknown(mem: InMemoryTelemetry, bad: Any) -> None:
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(bad, 3)
    a = _one(mem).attributes
    assert contract.LLM_TOKENS_PROMPT not in a
    assert a[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE


def test_total_is_prompt_plus_completion(mem: InMemoryTelemetry) -> None:
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(10, 5, 99)  # an inconsistent vendor total does not break the contract
    assert _one(mem).attributes[contract.LLM_TOKENS_TOTAL] == 15
    assert mem.counter_values()["total_tokens"] == {KEY: 15}


def test_estimated_provenance_is_recorded_and_counted(mem: InMemoryTelemetry) -> None:
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(12.0, 3, provenance=contract.PROVENANCE_ESTIMATED)
    assert _one(mem).attributes[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_ESTIMATED
    assert _one(mem).attributes[contract.LLM_TOKENS_PROMPT] == 12
    assert mem.counter_values()["prompt_tokens"] == {KEY: 12}


def test_unknown_provenance_is_rejected(mem: InMemoryTelemetry) -> None:
    call = llm_call("openai", "gpt-4o")
    with pytest.raises(ValueError, match=r"llm\.tokens\.provenance must be one of reported, estimated"):
        call.set_usage(1, 2, provenance="guessed")  # type: ignore[arg-type]


def test_unknown_request_type_is_rejected(mem: InMemoryTelemetry) -> None:
    with pytest.raises(ValueError, match="request_type must be one of chat, completion, embedding, got 'rerank'"):
        llm_call("openai", "gpt-4o", request_type="rerank")  # type: ignore[arg-type]


def test_manual_end_is_idempotent(mem: InMemoryTelemetry) -> None:
    call = llm_call("openai", "gpt-4o", stream=True).start()
    assert trace.get_current_span() is trace.INVALID_SPAN  # started, not attached
    call.set_usage(2, 3)
    for _ in range(3):
        call.end()
    call.end(RuntimeError("late error after the end"))
    assert call.ended
    span = _one(mem)
    assert span.status.status_code is StatusCode.UNSET
    assert mem.counter_values()["total_tokens"] == {KEY: 5}


def test_end_from_many_threads_records_once(mem: InMemoryTelemetry) -> None:
    for _ in range(20):
        call = llm_call("openai", "gpt-4o").start()
        call.set_usage(1, 1)
        barrier = threading.Barrier(8)

        def finish(c: Any = call, b: threading.Barrier = barrier) -> None:
            b.wait()
            c.end()

        threads = [threading.Thread(target=finish) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    assert len(mem.spans(contract.SPAN_LLM_COMPLETION)) == 20
    assert mem.counter_values()["total_tokens"] == {KEY: 40}


def test_exit_after_manual_end_does_not_record_twice(mem: InMemoryTelemetry) -> None:
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(1, 2)
        call.end()
    assert len(mem.spans()) == 1
    assert mem.counter_values()["total_tokens"] == {KEY: 3}


def test_end_without_start_still_records(mem: InMemoryTelemetry) -> None:
    call = llm_call("openai", "gpt-4o")
    call.set_usage(1, 2)
    call.end()
    assert len(mem.spans()) == 1


def test_manual_exemplar_context_links_counters_to_the_trace(mem: InMemoryTelemetry) -> None:
    call = llm_call("openai", "gpt-4o").start()
    call.set_usage(4, 4)
    call.end()
    data = mem.reader.get_metrics_data()
    trace_id = call.span.get_span_context().trace_id
    exemplar_traces = {
        ex.trace_id
        for rm in data.resource_metrics
        for sm in rm.scope_metrics
        for m in sm.metrics
        for dp in m.data.data_points
        for ex in dp.exemplars
    }
    assert trace_id in exemplar_traces


def test_child_spans_hang_under_the_call(mem: InMemoryTelemetry) -> None:
    call = llm_call("openai", "gpt-4o").start()  # not entered: children still attach to it
    with call.inference() as inf:
        assert trace.get_current_span() is inf
    with pytest.raises(KeyError), call.response_parse():
        raise KeyError("choices")
    call.end()
    root = _one(mem)
    children = {s.name: s for s in mem.spans() if s.name != contract.SPAN_LLM_COMPLETION}
    assert set(children) == {contract.SPAN_LLM_INFERENCE, contract.SPAN_LLM_RESPONSE_PARSE}
    for child in children.values():
        assert child.parent is not None and child.parent.span_id == root.context.span_id
    assert children[contract.SPAN_LLM_RESPONSE_PARSE].status.status_code is StatusCode.ERROR


def test_response_and_extra_attributes(mem: InMemoryTelemetry) -> None:
    extra = {"agent.name": "planner", contract.LLM_MODEL: "x", "agent.step": None}
    with llm_call("openai", "gpt-4o", attributes=extra) as call:
        call.set_response(model="gpt-4o-2024", response_id="r-1", finish_reasons=("stop", "length"))
        call.set_attribute(contract.GEN_AI_REQUEST_MAX_TOKENS, 256)
        call.set_usage(1, 1)
    a = _one(mem).attributes
    assert a["agent.name"] == "planner"
    assert "agent.step" not in a
    assert a[contract.LLM_MODEL] == "gpt-4o"  # caller attributes cannot override the contract's
    assert a[contract.GEN_AI_RESPONSE_MODEL] == "gpt-4o-2024"
    assert a[contract.GEN_AI_RESPONSE_ID] == "r-1"
    assert a[contract.GEN_AI_RESPONSE_FINISH_REASONS] == ("stop", "length")
    assert a[contract.GEN_AI_REQUEST_MAX_TOKENS] == 256


def test_time_to_first_chunk_is_recorded_once(mem: InMemoryTelemetry) -> None:
    call = llm_call("openai", "gpt-4o", stream=True).start()
    call.set_first_chunk()
    first = call._extra[contract.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]  # type: ignore[index]
    call.set_first_chunk()
    call.end()
    ttfc = _one(mem).attributes[contract.GEN_AI_RESPONSE_TIME_TO_FIRST_CHUNK]
    assert ttfc == first
    assert isinstance(ttfc, float) and ttfc >= 0.0


MESSAGES = [{"role": "user", "content": "secret prompt"}]


def test_content_is_not_captured_by_default(mem: InMemoryTelemetry) -> None:
    with llm_call("openai", "gpt-4o") as call:
        assert call.capture_content is False
        call.record_input(MESSAGES)
        call.record_output("secret answer")
    a = _one(mem).attributes
    assert contract.GEN_AI_INPUT_MESSAGES not in a and contract.GEN_AI_OUTPUT_MESSAGES not in a
    assert not any("secret" in str(v) for v in a.values())


def test_content_capture_opt_in_by_argument() -> None:
    mem = configure_in_memory(capture_content=True)
    with llm_call("openai", "gpt-4o") as call:
        call.record_input(MESSAGES)
        call.record_output("secret answer")
    a = _one(mem).attributes
    assert '"secret prompt"' in a[contract.GEN_AI_INPUT_MESSAGES]
    assert a[contract.GEN_AI_OUTPUT_MESSAGES] == "secret answer"


def test_content_capture_opt_in_by_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(env.AMTP_OBS_CAPTURE_CONTENT, "true")
    mem = configure_in_memory()
    assert mem.telemetry.capture_content is True
    with llm_call("openai", "gpt-4o") as call:
        call.record_input(MESSAGES)
    assert contract.GEN_AI_INPUT_MESSAGES in _one(mem).attributes


def test_sync_decorator_with_usage_extractor(mem: InMemoryTelemetry) -> None:
    @llm_call("openai", "gpt-4o", usage=lambda r: Usage(r["in"], r["out"]))
    def ask(question: str) -> dict[str, Any]:
        assert trace.get_current_span().name == contract.SPAN_LLM_COMPLETION  # type: ignore[attr-defined]
        return {"in": len(question), "out": 2}

    assert ask("hello") == {"in": 5, "out": 2}
    assert ask.__name__ == "ask"
    assert _one(mem).attributes[contract.LLM_TOKENS_TOTAL] == 7
    assert mem.counter_values()["prompt_tokens"] == {KEY: 5}


async def test_async_decorator_and_async_context_manager(mem: InMemoryTelemetry) -> None:
    @llm_call("openai", "gpt-4o", usage=lambda r: Usage(*r, cache_read_tokens=2))
    async def ask() -> tuple[int, int]:
        await asyncio.sleep(0)
        return (3, 4)

    assert await ask() == (3, 4)
    assert mem.counter_values()["cache_read_tokens"] == {KEY: 2}
    async with llm_call("openai", "gpt-4o") as call:
        await asyncio.sleep(0)
        call.set_usage(1, 1)
    assert len(mem.spans(contract.SPAN_LLM_COMPLETION)) == 2
    assert mem.counter_values()["total_tokens"] == {KEY: 9}


async def test_async_decorator_error_propagates(mem: InMemoryTelemetry) -> None:
    @llm_call("openai", "gpt-4o")
    async def ask() -> None:
        raise TimeoutError("vendor timeout")

    with pytest.raises(TimeoutError, match="vendor timeout"):
        await ask()
    span = _one(mem)
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes[contract.ERROR_TYPE] == "TimeoutError"


def test_decorator_without_usage_and_with_broken_extractors(
    mem: InMemoryTelemetry, caplog: pytest.LogCaptureFixture
) -> None:
    @llm_call("openai", "gpt-4o")
    def plain() -> str:
        return "ok"

    @llm_call("openai", "gpt-4o", usage=lambda r: r.usage.prompt_tokens)  # raises AttributeError
    def broken() -> str:
        return "ok"

    @llm_call("openai", "gpt-4o", usage=lambda r: (1, 2))  # not a Usage
    def wrong_type() -> str:
        return "ok"

    caplog.set_level("WARNING", logger="amtp_obs.sdk")
    results = [plain(), broken(), broken(), broken(), wrong_type(), wrong_type()]
    assert results == ["ok"] * 6  # the application's calls are never broken
    spans = mem.spans(contract.SPAN_LLM_COMPLETION)
    assert len(spans) == 6
    for span in spans:
        assert span.attributes[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE
        assert span.status.status_code is StatusCode.UNSET
    assert mem.counter_values() == {}
    warnings = [r.getMessage() for r in caplog.records if r.name == "amtp_obs.sdk"]
    assert len(warnings) == 2  # one per call site, however often it fails
    assert "broken failed (AttributeError" in warnings[0] and "llm.tokens.provenance=unavailable" in warnings[0]
    assert "wrong_type failed (TypeError: the usage extractor returned tuple, not amtp_obs.sdk.Usage)" in warnings[1]


def test_decorator_records_through_the_configuration_of_call_time() -> None:
    """Decorated at import, before configure(): each call uses what is configured when it runs."""

    @llm_call("openai", "gpt-4o", usage=lambda r: Usage(1, 1))
    def ask() -> str:
        return "ok"

    first = configure_in_memory()
    ask()
    second = configure_in_memory()
    ask()
    assert len(first.spans()) == 1 and len(second.spans()) == 1


# ------------------------------------------------------------------ token classes (issue 9)
def test_detail_classes_are_recorded_beside_their_parents(mem: InMemoryTelemetry) -> None:
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(1000, 300, cache_read_tokens=800, cache_creation_tokens=0, reasoning_tokens=120)
    a = _one(mem).attributes
    assert (a[contract.LLM_TOKENS_PROMPT], a[contract.LLM_TOKENS_COMPLETION], a[contract.LLM_TOKENS_TOTAL]) == (
        1000,
        300,
        1300,
    )  # the parts are not added to the whole a second time
    for detail, value in zip(contract.TOKEN_DETAILS, (800, 0, 120), strict=True):
        assert a[detail.attribute] == a[detail.semconv_attribute] == value
    assert validate_readable_span(_one(mem)) == []
    assert mem.counter_values() == {
        "prompt_tokens": {KEY: 1000},
        "completion_tokens": {KEY: 300},
        "total_tokens": {KEY: 1300},
        "cache_read_tokens": {KEY: 800},
        "cache_creation_tokens": {KEY: 0},  # reported 0 is a fact: the series exists
        "reasoning_tokens": {KEY: 120},
    }
    assert validate_metric_points(mem.points()) == []


def test_unreported_classes_are_absent_not_zero(mem: InMemoryTelemetry) -> None:
    with llm_call("anthropic", "claude") as call:
        call.set_usage(10, 5, cache_read_tokens=4)
    a = _one(mem).attributes
    assert a[contract.LLM_TOKENS_CACHE_READ] == 4
    assert contract.LLM_TOKENS_CACHE_CREATION not in a and contract.LLM_TOKENS_REASONING not in a
    assert set(mem.counter_values()) == {"prompt_tokens", "completion_tokens", "total_tokens", "cache_read_tokens"}


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"cache_read_tokens": 8, "cache_creation_tokens": 3}, "exceed prompt tokens (10)"),
        ({"reasoning_tokens": 6}, "exceed completion tokens (5)"),
    ],
)
def test_a_class_larger_than_its_parent_is_refused(mem: InMemoryTelemetry, kwargs: dict[str, int], needle: str) -> None:
    with llm_call("openai", "gpt-4o") as call:
        with pytest.raises(ValueError, match=re.escape(needle)):
            call.set_usage(10, 5, **kwargs)
        call.set_usage(10, 5)  # the refused values left nothing behind
    assert contract.LLM_TOKENS_CACHE_READ not in _one(mem).attributes


def test_details_without_usage_are_shown_but_not_counted(mem: InMemoryTelemetry) -> None:
    with llm_call("openai", "gpt-4o") as call:
        call.set_usage(None, 5, cache_read_tokens=3)
    a = _one(mem).attributes
    assert a[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_UNAVAILABLE
    assert a[contract.LLM_TOKENS_CACHE_READ] == 3
    assert mem.counter_values() == {}


def test_a_reported_zero_creates_the_series_and_later_values_still_count(mem: InMemoryTelemetry) -> None:
    for reasoning in (0, 0, 7, 0):
        with llm_call("openai", "o4-mini") as call:
            call.set_usage(10, 10, reasoning_tokens=reasoning)
    o4 = tuple(sorted({**GPT, contract.LLM_MODEL: "o4-mini"}.items()))
    assert mem.counter_values()["reasoning_tokens"] == {o4: 7}
    with llm_call("openai", "gpt-4o") as call:  # another series: its own first zero
        call.set_usage(1, 1, reasoning_tokens=0)
    assert mem.counter_values()["reasoning_tokens"] == {o4: 7, KEY: 0}
