"""MCP helpers: generic tool and request spans, duration histograms, error paths; the docs' GitHub example."""

from __future__ import annotations

import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.semconv._incubating.attributes.db_attributes import DB_OPERATION_NAME
from opentelemetry.semconv._incubating.attributes.url_attributes import URL_TEMPLATE
from opentelemetry.semconv.attributes.error_attributes import ERROR_TYPE
from opentelemetry.semconv.attributes.http_attributes import HTTP_REQUEST_METHOD, HTTP_RESPONSE_STATUS_CODE
from opentelemetry.trace import SpanKind, StatusCode

from amtp_obs import contract, mcp
from amtp_obs.mcp import DURATION_BUCKETS_S, McpOperation, mcp_request, mcp_tool, tool_span_name
from amtp_obs.sdk import configure, force_flush
from amtp_obs.sdk.testing import InMemoryTelemetry, configure_in_memory
from amtp_obs.testing.otlp_sink import OtlpSink
from amtp_obs.testing.poll import eventually


# The design's GitHub MCP server written with the generic helpers, as docs/instrumentation.md shows it.
def github_api(route: str, method: str = "GET") -> McpOperation:
    return mcp_request(
        contract.SPAN_GITHUB_API,
        attributes={HTTP_REQUEST_METHOD: method, URL_TEMPLATE: route},
        histogram=contract.MCP_GITHUB_API_DURATION,
        histogram_attributes=(HTTP_REQUEST_METHOD, URL_TEMPLATE, HTTP_RESPONSE_STATUS_CODE, ERROR_TYPE),
    )


def valkey(span_name: str, operation: str) -> McpOperation:
    return mcp_request(span_name, attributes={DB_OPERATION_NAME: operation})


@pytest.fixture
def mem() -> InMemoryTelemetry:
    return configure_in_memory(contract.MCP_SERVICE_NAME)


def histogram_points(mem: InMemoryTelemetry, name: str) -> list[Any]:
    data = mem.reader.get_metrics_data()
    return [
        (m, dp)
        for rm in (data.resource_metrics if data else ())
        for sm in rm.scope_metrics
        for m in sm.metrics
        if m.name == name
        for dp in m.data.data_points
    ]


def test_the_api_is_generic() -> None:
    assert set(mcp.__all__) == {"DURATION_BUCKETS_S", "McpOperation", "mcp_request", "mcp_tool", "tool_span_name"}
    assert not any("github" in name or "valkey" in name or "configure" in name for name in dir(mcp))


def test_tool_span_names(mem: InMemoryTelemetry) -> None:
    with mcp_tool("read_file", span_name=contract.SPAN_REPO_READ_FILE):
        pass
    assert [s.name for s in mem.spans()] == [contract.SPAN_REPO_READ_FILE]
    assert tool_span_name("search_code") == "mcp.search_code"
    with mcp_tool("search_code"):
        pass
    assert mem.spans()[-1].name == "mcp.search_code"
    assert mem.spans()[-1].attributes[contract.MCP_TOOL] == "search_code"


def test_tool_attributes_and_duration_histogram(mem: InMemoryTelemetry) -> None:
    with mcp_tool("read_file", span_name=contract.SPAN_REPO_READ_FILE) as op:
        assert trace.get_current_span() is op.span
        op.set_cache_hit(False)
        op.set_exclusion_reason("binary file")
        time.sleep(0.01)
    [span] = mem.spans()
    assert span.kind is SpanKind.INTERNAL
    assert span.attributes[contract.MCP_TOOL] == "read_file"
    assert span.attributes[contract.MCP_CACHE_HIT] is False
    assert span.attributes[contract.MCP_EXCLUSION_REASON] == "binary file"
    [(metric, dp)] = histogram_points(mem, contract.MCP_TOOL_DURATION.instrument)
    assert metric.unit == contract.MCP_TOOL_DURATION.unit == "s"
    assert dp.count == 1
    assert dp.attributes == {contract.MCP_TOOL: "read_file"}
    assert 0.01 <= dp.sum < 60  # seconds, not milliseconds
    assert list(dp.explicit_bounds) == list(DURATION_BUCKETS_S)


def test_tool_error_path(mem: InMemoryTelemetry) -> None:
    with pytest.raises(PermissionError, match="private repo"), mcp_tool("tree", span_name=contract.SPAN_REPO_TREE):
        raise PermissionError("private repo")
    [span] = mem.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "PermissionError"
    assert [e.name for e in span.events] == ["exception"]
    [(_, dp)] = histogram_points(mem, contract.MCP_TOOL_DURATION.instrument)
    assert dp.attributes == {contract.MCP_TOOL: "tree", "error.type": "PermissionError"}


def test_nested_operations_form_one_trace(mem: InMemoryTelemetry) -> None:
    with mcp_tool("read_file", span_name=contract.SPAN_REPO_READ_FILE):
        with valkey(contract.SPAN_VALKEY_GET, "GET") as cache:
            cache.set_cache_hit(False)
        with github_api("/repos/{owner}/{repo}/contents/{path}") as api:
            api.set_status_code(200)
        with valkey(contract.SPAN_VALKEY_SET, "SET"):
            pass
    spans = {s.name: s for s in mem.spans()}
    root = spans[contract.SPAN_REPO_READ_FILE]
    for name in (contract.SPAN_VALKEY_GET, contract.SPAN_GITHUB_API, contract.SPAN_VALKEY_SET):
        assert spans[name].parent is not None and spans[name].parent.span_id == root.context.span_id
        assert spans[name].kind is SpanKind.CLIENT
    assert spans[contract.SPAN_VALKEY_GET].attributes[contract.MCP_CACHE_HIT] is False
    assert contract.MCP_CACHE_HIT not in spans[contract.SPAN_VALKEY_SET].attributes
    api = spans[contract.SPAN_GITHUB_API].attributes
    assert api["http.request.method"] == "GET"
    assert api["url.template"] == "/repos/{owner}/{repo}/contents/{path}"
    assert api["http.response.status_code"] == 200
    [(metric, dp)] = histogram_points(mem, contract.MCP_GITHUB_API_DURATION.instrument)
    assert metric.unit == "s"
    assert dp.attributes == {
        "http.request.method": "GET",
        "url.template": "/repos/{owner}/{repo}/contents/{path}",
        "http.response.status_code": 200,
    }


def test_github_http_error_status_marks_the_span(mem: InMemoryTelemetry) -> None:
    with github_api("/rate_limit") as api:
        api.set_status_code(403)
    [span] = mem.spans()
    assert span.status.status_code is StatusCode.ERROR
    assert span.attributes["error.type"] == "403"
    assert span.attributes["http.request.method"] == "GET"


def test_request_without_histogram_records_only_a_span(mem: InMemoryTelemetry) -> None:
    with mcp_request("cache.get", attributes={contract.MCP_CACHE_HIT: True, "ignored": None}):
        pass
    [span] = mem.spans()
    assert span.kind is SpanKind.CLIENT and span.attributes == {contract.MCP_CACHE_HIT: True}
    assert mem.points() == []


def test_decorator_sync_records_each_call(mem: InMemoryTelemetry) -> None:
    @mcp_tool("tree", span_name=contract.SPAN_REPO_TREE)
    def tree(ref: str) -> list[str]:
        return [ref]

    assert tree("main") == ["main"] and tree("dev") == ["dev"]
    assert [s.name for s in mem.spans()] == [contract.SPAN_REPO_TREE] * 2
    assert len({s.context.span_id for s in mem.spans()}) == 2
    [(_, dp)] = histogram_points(mem, contract.MCP_TOOL_DURATION.instrument)
    assert dp.count == 2


async def test_decorator_and_context_manager_async(mem: InMemoryTelemetry) -> None:
    @github_api("/repos/{owner}/{repo}")
    async def fetch() -> int:
        return 1

    assert await fetch() == 1
    async with mcp_tool("search") as op:
        op.set_cache_hit(True)
    assert [s.name for s in mem.spans()] == [contract.SPAN_GITHUB_API, "mcp.search"]
    assert mem.spans()[1].attributes[contract.MCP_CACHE_HIT] is True


def test_mcp_server_exports_over_otlp_http(sink: OtlpSink) -> None:
    configure(contract.MCP_SERVICE_NAME, endpoint=sink.http_endpoint, protocol="http/protobuf")
    with mcp_tool("tree", span_name=contract.SPAN_REPO_TREE), mcp_request(contract.SPAN_VALKEY_GET) as cache:
        cache.set_cache_hit(True)
    assert force_flush(10_000)
    assert eventually(lambda: len(sink.spans()) == 2 and sink.latest(contract.MCP_TOOL_DURATION.instrument))
    assert {s.resource["service.name"] for s in sink.spans()} == {contract.MCP_SERVICE_NAME}
    assert {p for p, _ in sink.http_requests} == {"/v1/traces", "/v1/metrics"}
    [p] = sink.latest(contract.MCP_TOOL_DURATION.instrument)
    assert p.kind == "histogram" and p.unit == "s" and p.count == 1
    assert p.attributes == {contract.MCP_TOOL: "tree"}
