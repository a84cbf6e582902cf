"""/api/search (tags and TraceQL) and the tag APIs, over traces sent as real OTLP exports."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from tempo_helpers import Exporter, new_id, request, span

from amtp_obs import contract


@dataclass
class Corpus:
    gpt: bytes  # svc-llm: llm.completion (gpt-4o, 120 ms, ok) + llm.inference
    claude: bytes  # svc-llm: llm.completion (claude, 900 ms, error)
    web: bytes  # svc-web: SERVER GET /x, with http.status_code 500
    orphan: bytes  # no root span


@pytest.fixture
def corpus(exporter: Exporter) -> Corpus:
    c = Corpus(new_id(16), new_id(16), new_id(16), new_id(16))
    root = new_id(8)
    llm = {contract.LLM_PROVIDER: "openai", contract.GEN_AI_SYSTEM: "openai"}
    reqs = [
        request(
            "svc-llm",
            [
                span(
                    c.gpt,
                    contract.SPAN_LLM_COMPLETION,
                    span_id=root,
                    duration_ms=120,
                    status=Status.STATUS_CODE_OK,
                    attrs={contract.LLM_MODEL: "gpt-4o", contract.LLM_TOKENS_TOTAL: 300, **llm},
                ),
                span(
                    c.gpt,
                    contract.SPAN_LLM_INFERENCE,
                    parent=root,
                    duration_ms=100,
                    attrs={contract.LLM_MODEL: "gpt-4o", "temperature": 0.5},
                ),
            ],
            resource={"deployment.environment": "dev"},
        ),
        request(
            "svc-llm",
            [
                span(
                    c.claude,
                    contract.SPAN_LLM_COMPLETION,
                    duration_ms=900,
                    status=Status.STATUS_CODE_ERROR,
                    attrs={
                        contract.LLM_MODEL: "claude-3-5-sonnet",
                        contract.LLM_TOKENS_TOTAL: 50,
                        contract.LLM_PROVIDER: "anthropic",
                    },
                )
            ],
            resource={"deployment.environment": "prod"},
        ),
        request(
            "svc-web",
            [
                span(
                    c.web,
                    "GET /x",
                    kind=Span.SPAN_KIND_SERVER,
                    duration_ms=5,
                    attrs={"http.status_code": 500, "cached": True},
                )
            ],
        ),
        request("svc-llm", [span(c.orphan, "child-only", parent=new_id(8), duration_ms=1)]),
    ]
    for r in reqs:
        assert exporter.export(r)[0] == grpc.StatusCode.OK
    return c


def _ids(resp: httpx.Response) -> set[str]:
    assert resp.status_code == 200, resp.text
    return {t["traceID"] for t in resp.json()["traces"]}


def _hex(tid: bytes) -> str:
    return tid.hex().lstrip("0")


def q(http: httpx.Client, query: str, **params: object) -> httpx.Response:
    return http.get("/api/search", params={"q": query, **params})


def test_traceql_attribute_comparisons(http: httpx.Client, corpus: Corpus) -> None:
    assert _ids(q(http, '{ span.llm.model = "gpt-4o" }')) == {_hex(corpus.gpt)}
    assert _ids(q(http, '{ .llm.model != "gpt-4o" }')) == {_hex(corpus.claude)}
    assert _ids(q(http, "{ span.llm.tokens.total > 100 }")) == {_hex(corpus.gpt)}
    assert _ids(q(http, "{ span.llm.tokens.total <= 50 }")) == {_hex(corpus.claude)}
    assert _ids(q(http, '{ .llm.model =~ "claude.*" }')) == {_hex(corpus.claude)}
    assert _ids(q(http, '{ .llm.model !~ "claude.*" }')) == {_hex(corpus.gpt)}
    assert _ids(q(http, "{ span.temperature >= 0.5 }")) == {_hex(corpus.gpt)}
    assert _ids(q(http, "{ .cached = true }")) == {_hex(corpus.web)}
    assert _ids(q(http, '{ resource.deployment.environment = "prod" }')) == {_hex(corpus.claude)}
    assert _ids(q(http, '{ resource.service.name = "svc-web" }')) == {_hex(corpus.web)}
    # unscoped looks at the resource too
    assert _ids(q(http, '{ .deployment.environment = "dev" }')) == {_hex(corpus.gpt)}
    # a span attribute is not a resource attribute
    assert _ids(q(http, '{ resource.llm.model = "gpt-4o" }')) == set()


def test_traceql_intrinsics(http: httpx.Client, corpus: Corpus) -> None:
    assert _ids(q(http, '{ name = "GET /x" }')) == {_hex(corpus.web)}
    assert _ids(q(http, "{ status = error }")) == {_hex(corpus.claude)}
    assert _ids(q(http, "{ status = ok }")) == {_hex(corpus.gpt)}
    assert _ids(q(http, "{ kind = server }")) == {_hex(corpus.web)}
    assert _ids(q(http, "{ duration > 500ms }")) == {_hex(corpus.claude)}
    assert _ids(q(http, "{ duration >= 100ms && duration < 1s }")) == {_hex(corpus.gpt), _hex(corpus.claude)}
    assert _ids(q(http, '{ rootServiceName = "svc-web" }')) == {_hex(corpus.web)}


def test_traceql_boolean_logic(http: httpx.Client, corpus: Corpus) -> None:
    both = q(http, f'{{ .llm.model = "gpt-4o" && name = "{contract.SPAN_LLM_INFERENCE}" }}')
    assert _ids(both) == {_hex(corpus.gpt)}
    assert both.json()["traces"][0]["spanSet"]["matched"] == 1
    either = q(http, "{ status = error || kind = server }")
    assert _ids(either) == {_hex(corpus.claude), _hex(corpus.web)}
    grouped = q(http, '{ (status = error || kind = server) && resource.service.name = "svc-llm" }')
    assert _ids(grouped) == {_hex(corpus.claude)}
    # spanset operators: both spansets must match within the same trace
    assert _ids(q(http, '{ .llm.model = "gpt-4o" } && { status = ok }')) == {_hex(corpus.gpt)}
    assert _ids(q(http, '{ .llm.model = "gpt-4o" } && { status = error }')) == set()
    assert _ids(q(http, "{ kind = server } || { status = error }")) == {_hex(corpus.web), _hex(corpus.claude)}


def test_traceql_response_shape(http: httpx.Client, corpus: Corpus) -> None:
    doc = q(http, '{ span.llm.model = "gpt-4o" }').json()
    (t,) = doc["traces"]
    assert t["traceID"] == _hex(corpus.gpt)
    assert t["rootServiceName"] == "svc-llm"
    assert t["rootTraceName"] == contract.SPAN_LLM_COMPLETION
    assert isinstance(t["startTimeUnixNano"], str)
    assert t["durationMs"] == 120
    assert t["spanSet"] == t["spanSets"][0]
    assert t["spanSet"]["matched"] == 2
    # the span name comes back only when the query reads it (engine.go asTraceSearchMetadata)
    assert all("name" not in s for s in t["spanSet"]["spans"])
    named = q(http, '{ span.llm.model = "gpt-4o" && name =~ ".*" }').json()["traces"][0]["spanSet"]["spans"]
    assert {s["name"] for s in named} == {contract.SPAN_LLM_COMPLETION, contract.SPAN_LLM_INFERENCE}
    s0 = t["spanSet"]["spans"][0]
    assert len(s0["spanID"]) == 16 and int(s0["durationNanos"]) > 0
    assert s0["attributes"] == [{"key": contract.LLM_MODEL, "value": {"stringValue": "gpt-4o"}}]
    assert doc["metrics"]["inspectedTraces"] >= 1
    # spss caps the spans per spanset, not the matched count
    capped = q(http, '{ span.llm.model = "gpt-4o" }', spss=1).json()["traces"][0]["spanSet"]
    assert len(capped["spans"]) == 1 and capped["matched"] == 2


def test_missing_root_is_reported(http: httpx.Client, corpus: Corpus) -> None:
    (t,) = q(http, '{ name = "child-only" }').json()["traces"]
    assert t["rootServiceName"] == "<root span not yet received>"
    assert "rootTraceName" not in t


def test_empty_spanset_and_limit(http: httpx.Client, corpus: Corpus) -> None:
    assert len(_ids(q(http, "{ }"))) == 4
    assert len(_ids(q(http, "{}", limit=2))) == 2


def test_tag_search(http: httpx.Client, corpus: Corpus) -> None:
    def tags(t: str, **p: object) -> set[str]:
        return _ids(http.get("/api/search", params={"tags": t, **p}))

    assert tags(f"{contract.LLM_MODEL}=gpt-4o") == {_hex(corpus.gpt)}
    assert tags("service.name=svc-web") == {_hex(corpus.web)}
    assert tags('deployment.environment="prod"') == {_hex(corpus.claude)}
    assert tags(f"{contract.LLM_PROVIDER}=anthropic {contract.LLM_MODEL}=claude-3-5-sonnet") == {_hex(corpus.claude)}
    assert tags(f"{contract.LLM_PROVIDER}=anthropic {contract.LLM_MODEL}=gpt-4o") == set()
    assert tags("http.status_code=500") == {_hex(corpus.web)}
    assert tags("status.code=error") == {_hex(corpus.claude)}
    assert tags(f"name={contract.SPAN_LLM_INFERENCE}") == {_hex(corpus.gpt)}
    assert tags("service.name=svc-llm", minDuration="500ms") == {_hex(corpus.claude)}
    assert tags("service.name=svc-llm", maxDuration="200ms") == {_hex(corpus.gpt), _hex(corpus.orphan)}
    res = http.get("/api/search", params={"tags": "service.name=svc-web"}).json()["traces"][0]
    assert "spanSet" not in res and res["rootTraceName"] == "GET /x"


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ({"q": "{}", "tags": "a=b"}, "invalid request: can't specify tags and q in the same query"),
        ({"q": "{}", "limit": "0"}, "invalid limit: must be a positive number"),
        ({"q": "{}", "limit": "-3"}, "invalid limit: must be a positive number"),
        ({"q": "{}", "limit": "many"}, "invalid limit"),
        ({"q": "{ .a = }"}, "invalid TraceQL query: "),
        ({"q": "{ .a = 1"}, "invalid TraceQL query: "),
        ({"q": "{ llm.model = 1 }"}, "invalid TraceQL query: unknown identifier"),
        (
            {"q": '{ duration > "slow" }'},
            "invalid TraceQL query: binary operations must operate on the same type",
        ),
        ({"q": '{ .a =~ "(" }'}, "invalid TraceQL query: invalid regular expression"),
        ({"q": "{ } | rate()"}, "invalid TraceQL query: metrics queries"),
        ({"q": "{}", "start": "20"}, "http parameter start must be before end. received start=20 end=0"),
        ({"q": "{}", "start": "20", "end": "10"}, "start must be before end"),
        ({"tags": "a=b", "minDuration": "fast"}, "invalid minDuration"),
        ({"tags": 'a="open'}, "invalid tags"),
    ],
)
def test_search_errors_are_400(http: httpx.Client, params: dict[str, str], message: str) -> None:
    resp = http.get("/api/search", params=params)
    assert resp.status_code == 400
    assert message in resp.text


def test_time_window(http: httpx.Client, exporter: Exporter) -> None:
    old = new_id(16)
    exporter.export(request("svc-old", [span(old, "old", start_ns=1_600_000_000 * 10**9)]))
    found = _ids(
        http.get(
            "/api/search",
            params={"tags": "service.name=svc-old", "start": 1_599_999_000, "end": 1_600_001_000},
        )
    )
    assert found == {_hex(old)}
    assert (
        _ids(
            http.get(
                "/api/search",
                params={"tags": "service.name=svc-old", "start": 1_700_000_000, "end": 1_700_001_000},
            )
        )
        == set()
    )


def test_tag_names(http: httpx.Client, corpus: Corpus) -> None:
    v1 = http.get("/api/search/tags").json()["tagNames"]
    assert {contract.LLM_MODEL, "http.status_code", "service.name", "deployment.environment"} <= set(v1)
    assert v1 == sorted(v1)
    span_only = http.get("/api/search/tags", params={"scope": "span"}).json()["tagNames"]
    assert contract.LLM_MODEL in span_only and "service.name" not in span_only
    assert "status" in http.get("/api/search/tags", params={"scope": "intrinsic"}).json()["tagNames"]
    v2 = http.get("/api/v2/search/tags").json()["scopes"]
    by_scope = {s["name"]: s["tags"] for s in v2}
    assert set(by_scope) == {"intrinsic", "resource", "span"}
    assert {"duration", "kind", "name", "status"} <= set(by_scope["intrinsic"])
    assert "service.name" in by_scope["resource"] and "service.name" not in by_scope["span"]
    assert contract.LLM_MODEL in by_scope["span"]
    only = http.get("/api/v2/search/tags", params={"scope": "resource"}).json()["scopes"]
    assert [s["name"] for s in only] == ["resource"]
    bad = http.get("/api/v2/search/tags", params={"scope": "event"})
    assert bad.status_code == 400 and "invalid scope" in bad.text


def test_tag_values(http: httpx.Client, corpus: Corpus) -> None:
    v1 = http.get(f"/api/search/tag/{contract.LLM_MODEL}/values").json()
    assert v1 == {"tagValues": ["claude-3-5-sonnet", "gpt-4o"]}
    assert http.get("/api/search/tag/service.name/values").json()["tagValues"] == ["svc-llm", "svc-web"]
    assert http.get("/api/search/tag/no.such.tag/values").json() == {}  # jsonpb leaves out empty lists
    v2 = http.get(f"/api/v2/search/tag/span.{contract.LLM_MODEL}/values").json()["tagValues"]
    assert {"type": "string", "value": "gpt-4o"} in v2 and len(v2) == 2
    ints = http.get(f"/api/v2/search/tag/.{contract.LLM_TOKENS_TOTAL}/values").json()["tagValues"]
    assert {"type": "int", "value": "300"} in ints
    svc = http.get("/api/v2/search/tag/resource.service.name/values").json()["tagValues"]
    assert {v["value"] for v in svc} == {"svc-llm", "svc-web"}
    assert http.get(f"/api/v2/search/tag/resource.{contract.LLM_MODEL}/values").json() == {}
    names = {v["value"] for v in http.get("/api/v2/search/tag/name/values").json()["tagValues"]}
    assert {contract.SPAN_LLM_COMPLETION, "GET /x"} <= names
    status = http.get("/api/v2/search/tag/status/values").json()["tagValues"]
    assert {"type": "keyword", "value": "error"} in status
    unscoped = http.get(f"/api/v2/search/tag/{contract.LLM_MODEL}/values")
    assert unscoped.status_code == 400
    assert "please provide a valid tagName" in unscoped.text
