"""The embedded trace store against Tempo 2.4.1's own source (issue 11 §3): one test per behaviour.

Each docstring names the upstream file at tag v2.4.1 (github.com/grafana/tempo) the expectation comes from.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status, TracesData
from tempo_helpers import Exporter, new_id, request, span, tempo_doc

from amtp_obs import contract
from amtp_obs.tempo.config import load_config
from amtp_obs.tempo.generator import REASON_OUTSIDE_SLACK, MetricsGenerator
from amtp_obs.tempo.metrics import TENANT, TempoMetrics


def _generator(tmp_path: Path, **gen: object) -> MetricsGenerator:
    doc = tempo_doc(
        tmp_path,
        metrics_generator={
            "storage": {"path": str(tmp_path / "generator"), "remote_write": []},
            "processor": {"service_graphs": {"wait": "10s"}},
            **gen,
        },
        overrides={"defaults": {"metrics_generator": {"processors": ["service-graphs", "span-metrics"]}}},
    )
    return MetricsGenerator(load_config(doc), TempoMetrics())


def _calls(gen: MetricsGenerator) -> float:
    return sum(cell[0] for cell in gen.registry.counters.get(contract.SPANMETRICS_CALLS, {}).values())


def test_spans_outside_the_ingestion_slack_are_discarded(tmp_path: Path) -> None:
    """modules/generator/instance.go (v2.4.1) preprocessSpans: a span whose end time is outside
    now ± metrics_ingestion_time_range_slack (config.go default 30s) reaches no processor and counts in
    tempo_metrics_generator_spans_discarded_total{reason="outside_metrics_ingestion_slack"}; every span
    still counts in tempo_metrics_generator_spans_received_total."""
    gen = _generator(tmp_path)
    now = time.time_ns()
    tid = new_id(16)
    fresh = span(tid, "fresh", start_ns=now - 1_000_000_000)
    stale = span(tid, "stale", start_ns=now - 31_000_000_000, duration_ms=10)
    future = span(tid, "future", start_ns=now + 40_000_000_000)
    gen.consume(request("svc", [fresh, stale, future]))
    assert _calls(gen) == 1
    names = {dict(k)["span_name"] for k in gen.registry.counters[contract.SPANMETRICS_CALLS]}
    assert names == {"fresh"}
    m = gen.metrics.registry
    assert (
        m.get_sample_value(
            "tempo_metrics_generator_spans_discarded_total", {"tenant": TENANT, "reason": REASON_OUTSIDE_SLACK}
        )
        == 2
    )
    assert m.get_sample_value("tempo_metrics_generator_spans_received_total", {"tenant": TENANT}) == 3


def test_ingestion_slack_override_wins(tmp_path: Path) -> None:
    """modules/generator/instance.go (v2.4.1) updateSlack: the tenant override
    metrics_generator.ingestion_time_range_slack replaces the global slack when non-zero."""
    doc = tempo_doc(
        tmp_path,
        metrics_generator={
            "storage": {"path": str(tmp_path / "generator"), "remote_write": []},
            "metrics_ingestion_time_range_slack": "30s",
        },
        overrides={
            "defaults": {"metrics_generator": {"processors": ["span-metrics"], "ingestion_time_range_slack": "2m"}}
        },
    )
    gen = MetricsGenerator(load_config(doc), TempoMetrics())
    gen.consume(request("svc", [span(new_id(16), "old", start_ns=time.time_ns() - 90_000_000_000)]))
    assert _calls(gen) == 1


def test_slack_applies_to_service_graphs_too(tmp_path: Path) -> None:
    """instance.go pushSpans runs preprocessSpans before every processor, service graphs included."""
    gen = _generator(tmp_path)
    tid, client_id = new_id(16), new_id(8)
    old = time.time_ns() - 120_000_000_000
    client = span(tid, "call", span_id=client_id, kind=Span.SPAN_KIND_CLIENT, start_ns=old)
    server = span(tid, "serve", parent=client_id, kind=Span.SPAN_KIND_SERVER, start_ns=old)
    gen.consume(request("a", [client]))
    gen.consume(request("b", [server]))
    assert contract.SERVICE_GRAPH_REQUEST_TOTAL not in gen.registry.counters


# --------------------------------------------------------------------------------------------
# over the HTTP API, with real OTLP exports
# --------------------------------------------------------------------------------------------


def _search(http: httpx.Client, query: str, **params: object) -> dict[str, Any]:
    resp = http.get("/api/search", params={"q": query, **params})
    assert resp.status_code == 200, resp.text
    return resp.json()


def _spanset(doc: dict, tid: bytes) -> dict[str, Any]:
    (hit,) = [t for t in doc["traces"] if t["traceID"] == tid.hex().lstrip("0")]
    return hit["spanSet"]


def test_a_retried_export_shows_each_span_once(exporter: Exporter, http: httpx.Client) -> None:
    """pkg/model/trace/combine.go (v2.4.1) Combiner: spans are deduplicated by (span id, kind) within a
    trace, so an export delivered twice reads back once by id. Search deduplicates too (issue 11), where
    a build of Tempo v2.4.1 answers each copy (README: deliberate difference)."""
    tid, root = new_id(16), new_id(8)
    req = request("svc", [span(tid, "root", span_id=root), span(tid, "child", parent=root)])
    assert exporter.export(req)[0] == grpc.StatusCode.OK
    assert exporter.export(req)[0] == grpc.StatusCode.OK  # the client retried after a lost answer
    doc = http.get(f"/api/traces/{tid.hex()}").json()
    names = [s["name"] for b in doc["batches"] for ss in b["scopeSpans"] for s in ss["spans"]]
    assert sorted(names) == ["child", "root"]
    proto = http.get(f"/api/traces/{tid.hex()}", headers={"Accept": "application/protobuf"})
    td = TracesData.FromString(proto.content)
    assert sum(len(ss.spans) for rs in td.resource_spans for ss in rs.scope_spans) == 2
    assert _spanset(_search(http, '{ resource.service.name = "svc" }'), tid)["matched"] == 2
    # same id, other kind: Zipkin's shared client/server ids are two spans
    server = span(tid, "server", span_id=root, kind=Span.SPAN_KIND_SERVER)
    assert exporter.export(request("svc", [server]))[0] == grpc.StatusCode.OK
    assert _spanset(_search(http, '{ resource.service.name = "svc" }'), tid)["matched"] == 3


@pytest.fixture
def family(exporter: Exporter) -> dict[str, bytes]:
    """One trace: root -> (a -> a1, b), durations 100/40/10/20 ms, ``n`` attributes 1..4."""
    tid = new_id(16)
    ids = {k: new_id(8) for k in ("root", "a", "a1", "b")}
    t0 = time.time_ns()
    spans = [
        span(tid, "root", span_id=ids["root"], duration_ms=100, start_ns=t0, attrs={"n": 1, "tier": "top"}),
        span(tid, "a", span_id=ids["a"], parent=ids["root"], duration_ms=40, start_ns=t0, attrs={"n": 2}),
        span(tid, "a1", span_id=ids["a1"], parent=ids["a"], duration_ms=10, start_ns=t0, attrs={"n": 3}),
        span(tid, "b", span_id=ids["b"], parent=ids["root"], duration_ms=20, start_ns=t0, attrs={"n": 4, "x": 1.5}),
    ]
    assert exporter.export(request("fam", spans))[0] == grpc.StatusCode.OK
    return {"tid": tid, **ids}


def _names(http: httpx.Client, query: str, family: dict[str, bytes]) -> list[str] | None:
    """Names of the spans the query returns in the family trace (by span id: the search answer carries
    a span's name only when the query reads ``name``)."""
    doc = _search(http, query, spss=10)
    hits = [t for t in doc["traces"] if t["traceID"] == family["tid"].hex().lstrip("0")]
    if not hits:
        return None
    by_id = {v.hex(): k for k, v in family.items() if k != "tid"}
    return sorted(by_id[s["spanID"]] for s in hits[0]["spanSet"]["spans"])


def test_structural_operators(http: httpx.Client, family: dict[str, bytes]) -> None:
    """pkg/traceql/expr.y and ast_execute.go SpansetOperation (v2.4.1): each relation returns the right-hand
    spans; ``>`` child, ``<`` parent, ``>>`` descendant, ``<<`` ancestor, ``~`` sibling, ``!``-forms the
    right-hand spans with no such relation (vparquet3 block_traceql.go ChildOf/DescendantOf/SiblingOf)."""
    family["tid"]
    root = '{ name = "root" }'
    a = '{ name = "a" }'
    every = "{ }"
    assert _names(http, f"{root} > {every}", family) == ["a", "b"]
    assert _names(http, f"{root} >> {every}", family) == ["a", "a1", "b"]
    assert _names(http, f'{{ name = "a1" }} < {every}', family) == ["a"]
    assert _names(http, f'{{ name = "a1" }} << {every}', family) == ["a", "root"]
    assert _names(http, f"{a} ~ {every}", family) == ["b"]
    assert _names(http, f"{root} !> {every}", family) == ["a1", "root"]
    assert _names(http, f"{root} !>> {every}", family) == ["root"]
    assert _names(http, f'{{ name = "a1" }} !< {every}', family) == ["a1", "b", "root"]
    assert _names(http, f'{{ name = "a1" }} !<< {every}', family) == ["a1", "b"]
    assert _names(http, f"{a} !~ {every}", family) == ["a", "a1", "root"]
    assert _names(http, f'{root} > {{ name = "a1" }}', family) is None
    # structural operators bind tighter than && (expr.y %left order)
    assert _names(http, f'{{ name = "b" }} && {root} > {a}', family) == ["a", "b"]


def test_pipelines_and_aggregates(http: httpx.Client, family: dict[str, bytes]) -> None:
    """pkg/traceql/ast_execute.go (v2.4.1) Aggregate and ScalarFilter: count/avg/min/max/sum over the
    spanset, compared with a static; the value is attached as a spanset attribute named like the
    aggregate (``count()``), durations printed as Go durations (engine.go Static.AsAnyValue)."""
    tid = family["tid"]
    doc = _search(http, '{ resource.service.name = "fam" } | count() > 3')
    ss = _spanset(doc, tid)
    assert ss["matched"] == 4 and ss["attributes"] == [{"key": "count()", "value": {"intValue": "4"}}]
    assert _names(http, '{ resource.service.name = "fam" } | count() > 4', family) is None
    assert _names(http, "{ span.n >= 2 } | count() = 3", family) == ["a", "a1", "b"]
    assert _names(http, "{ } | avg(span.n) = 2.5", family) is not None
    assert _names(http, "{ } | avg(span.n) > 2.5", family) is None
    assert _names(http, "{ } | min(span.n) = 1 | max(span.n) = 4", family) is not None
    assert _names(http, "{ } | sum(span.n) = 10", family) is not None
    assert _names(http, "{ } | sum(span.n) < 10", family) is None
    ss = _spanset(_search(http, '{ resource.service.name = "fam" } | max(duration) > 90ms'), tid)
    assert ss["attributes"] == [{"key": "max(duration)", "value": {"stringValue": "100ms"}}]
    assert _names(http, "{ } | avg(duration) < 40ms", family) is None  # (100+40+10+20)/4 = 42.5ms
    # a later spanset filter narrows the spans, a scalar filter then sees only those
    assert _names(http, '{ } | { name =~ "a.*" } | count() = 2', family) == ["a", "a1"]


def test_select_adds_attributes_to_the_spans(http: httpx.Client, family: dict[str, bytes]) -> None:
    """pkg/traceql/ast_execute.go SelectOperation: the selected attributes come back on every span
    (the fetch layer reads them), spans without one just lack it."""
    tid = family["tid"]
    doc = _search(http, '{ name = "root" || name = "b" } | select(span.tier, span.x)', spss=10)
    spans = {s["name"]: s for s in _spanset(doc, tid)["spans"]}  # the query reads name: it comes back
    root_attrs = {a["key"]: a["value"] for a in spans["root"]["attributes"]}
    assert root_attrs["tier"] == {"stringValue": "top"} and "x" not in root_attrs
    assert {a["key"]: a["value"] for a in spans["b"]["attributes"]}["x"] == {"doubleValue": 1.5}


def test_by_and_coalesce(http: httpx.Client, family: dict[str, bytes]) -> None:
    """ast_execute.go GroupOperation splits a spanset per value (attribute ``by(...)``), and a
    structural operator over several spansets is refused (errSpansetOperationMultiple); coalesce()
    joins them again."""
    tid = family["tid"]
    doc = _search(http, '{ resource.service.name = "fam" } | by(span.tier)', spss=10)
    (hit,) = [t for t in doc["traces"] if t["traceID"] == tid.hex().lstrip("0")]
    assert sorted(s["matched"] for s in hit["spanSets"]) == [1, 3]
    by_status = _spanset(_search(http, '{ resource.service.name = "fam" } | by(status)'), tid)
    assert by_status["attributes"] == [{"key": "by(status)", "value": {"stringValue": "unset"}}]
    grouped = '({ resource.service.name = "fam" } | by(span.tier)) > { }'
    assert http.get("/api/search", params={"q": grouped}).status_code == 400
    assert _names(http, '({ resource.service.name = "fam" } | by(span.tier) | coalesce()) > { }', family) == [
        "a",
        "a1",
        "b",
    ]


def test_and_or_bind_equally(http: httpx.Client, family: dict[str, bytes]) -> None:
    """expr.y (v2.4.1) ``%left AND OR``: one precedence, left to right, in spansets and field expressions."""
    family["tid"]
    # (n = 1 || n = 2) && n = 2   -> only a; with && binding tighter it would be root and a
    assert _names(http, "{ span.n = 1 || span.n = 2 && span.n = 2 }", family) == ["a"]


def test_numbers_keep_their_type(http: httpx.Client, family: dict[str, bytes]) -> None:
    """vparquet3 block_traceql.go createAttributeIterator (v2.4.1): an int literal is matched against the
    int column only, a float literal against the float column only."""
    family["tid"]
    assert _names(http, "{ span.n = 2 }", family) == ["a"]
    assert _names(http, "{ span.n = 2.0 }", family) is None
    assert _names(http, "{ span.x = 1.5 }", family) == ["b"]
    assert _names(http, "{ span.x > 1 }", family) is None


def test_tags_search_reads_string_values_only(exporter: Exporter, http: httpx.Client) -> None:
    """vparquet3 block_search.go makePipelineWithRowGroups (v2.4.1): a generic ``tags=`` key is looked up in
    the string value column, so an int attribute never matches; http.status_code has an int column."""
    tid = new_id(16)
    attrs = {"retries": 3, "http.status_code": 503, "mode": "3"}
    assert exporter.export(request("typed", [span(tid, "op", attrs=attrs)]))[0] == grpc.StatusCode.OK

    def found(tags: str) -> bool:
        resp = http.get("/api/search", params={"tags": tags})
        assert resp.status_code == 200, resp.text
        return tid.hex().lstrip("0") in {t["traceID"] for t in resp.json()["traces"]}

    assert not found("retries=3")
    assert found("mode=3")
    assert found("http.status_code=503")
    assert found("service.name=type")  # a dedicated column: substring predicate


def test_duration_filters_ignored_with_q_and_status_message_returned(exporter: Exporter, http: httpx.Client) -> None:
    """pkg/traceql/engine.go createFetchSpansRequest (v2.4.1) does not read Min/MaxDurationMs ("TODO");
    asTraceSearchMetadata returns every attribute the query read, intrinsic statusMessage included."""
    tid = new_id(16)
    failing = span(tid, "op", duration_ms=5, status=Status.STATUS_CODE_ERROR)
    failing.status.message = "upstream timeout"
    assert exporter.export(request("msgs", [failing]))[0] == grpc.StatusCode.OK
    doc = _search(http, '{ statusMessage = "upstream timeout" }', minDuration="1h")
    (s,) = _spanset(doc, tid)["spans"]
    assert {"key": "statusMessage", "value": {"stringValue": "upstream timeout"}} in s["attributes"]
    tagged = http.get("/api/search", params={"tags": "service.name=msgs", "minDuration": "1h"}).json()
    assert tagged["traces"] == []  # tag searches still honour it


def test_autocomplete_shapes_and_filters(exporter: Exporter, http: httpx.Client) -> None:
    """Tags of every value type are listed (vparquet3 schema.go Attribute keeps the key of array and
    kvlist values); v1 values print every type (block_search_tags.go SearchTagValues wraps v2 with
    Static.EncodeToString); v2 values honour ``q`` (instance_search.go SearchTagValuesV2 with
    autocomplete_filtering_enabled, default true in 2.4; extractmatcher.go); empty lists are left out
    by jsonpb, so an empty answer is ``{}``."""
    tid = new_id(16)
    listy = span(tid, "listy", attrs={"count": 7, "ratio": 0.25})
    listy.attributes.add(key="tags.list").value.array_value.values.add(string_value="x")
    listy.attributes.add(key="tags.map").value.kvlist_value.values.add(key="k").value.string_value = "v"
    other = span(tid, "other", attrs={"count": 8})
    assert exporter.export(request("auto-a", [listy]))[0] == grpc.StatusCode.OK
    assert exporter.export(request("auto-b", [other]))[0] == grpc.StatusCode.OK
    names = http.get("/api/search/tags", params={"scope": "span"}).json()["tagNames"]
    assert {"tags.list", "tags.map", "count"} <= set(names)
    v2_span = {s["name"]: s.get("tags", []) for s in http.get("/api/v2/search/tags").json()["scopes"]}["span"]
    assert {"tags.list", "tags.map"} <= set(v2_span)
    assert http.get("/api/search/tag/tags.list/values").json() == {}
    assert http.get("/api/search/tag/count/values").json() == {"tagValues": ["7", "8"]}
    assert http.get("/api/search/tag/ratio/values").json() == {"tagValues": ["0.25000"]}
    v2 = http.get("/api/v2/search/tag/span.count/values").json()["tagValues"]
    assert v2 == [{"type": "int", "value": "7"}, {"type": "int", "value": "8"}]
    narrowed = http.get(
        "/api/v2/search/tag/span.count/values", params={"q": '{ resource.service.name = "auto-b" }'}
    ).json()
    assert narrowed == {"tagValues": [{"type": "int", "value": "8"}]}
    nothing = http.get("/api/v2/search/tag/span.count/values", params={"q": '{ name = "nope" }'})
    assert nothing.json() == {}
    # a q with || is not narrowed (extractmatcher.go singleFilterRegexp)
    both = http.get("/api/v2/search/tag/span.count/values", params={"q": '{ name = "a" || name = "b" }'})
    assert len(both.json()["tagValues"]) == 2


# --------------------------------------------------------------------------------------------
# span metrics and service graphs (the registry's output, before remote write)
# --------------------------------------------------------------------------------------------


def _series(gen: MetricsGenerator, now_ms: int) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for s in gen.collect(now_ms):
        out.setdefault(dict(s.labels)["__name__"], []).append(s)
    return out


def test_service_graph_histograms_carry_exemplars(tmp_path: Path) -> None:
    """modules/generator/processor/servicegraphs/servicegraphs.go (v2.4.1) onComplete: both latency
    histograms are observed with ObserveWithExemplar(..., e.TraceID, ...)."""
    gen = _generator(tmp_path)
    tid, client_id = new_id(16), new_id(8)
    gen.consume(request("a", [span(tid, "call", span_id=client_id, kind=Span.SPAN_KIND_CLIENT, duration_ms=50)]))
    gen.consume(request("b", [span(tid, "serve", parent=client_id, kind=Span.SPAN_KIND_SERVER, duration_ms=40)]))
    series = _series(gen, int(time.time() * 1000))
    for name in (contract.SERVICE_GRAPH_REQUEST_SERVER_SECONDS, contract.SERVICE_GRAPH_REQUEST_CLIENT_SECONDS):
        exemplars = [e for s in series[name + "_bucket"] for e in s.exemplars]
        assert [dict(e[0])["traceID"] for e in exemplars] == [tid.hex().lstrip("0")], name


def test_virtual_nodes_record_zero_for_the_missing_side(tmp_path: Path) -> None:
    """servicegraphs.go onExpire: a root SERVER span becomes client="user" and a CLIENT span with a peer
    attribute gets server=<peer>; the missing side's latency is never set, so 0 s is observed for it.
    Every expired edge counts in ..._expired_edges, virtual or not."""
    gen = _generator(tmp_path)
    gen.consume(request("front", [span(new_id(16), "GET /", kind=Span.SPAN_KIND_SERVER, duration_ms=300)]))
    out = span(new_id(16), "pay", kind=Span.SPAN_KIND_CLIENT, duration_ms=200, attrs={"peer.service": "bank"})
    gen.consume(request("shop", [out]))
    gen.expire(time.monotonic() + 11)
    series = _series(gen, int(time.time() * 1000))

    def sums(name: str) -> dict[tuple[str, str], float]:
        return {(dict(s.labels)["client"], dict(s.labels)["server"]): s.value for s in series[name + "_sum"]}

    server, client = (
        sums(contract.SERVICE_GRAPH_REQUEST_SERVER_SECONDS),
        sums(contract.SERVICE_GRAPH_REQUEST_CLIENT_SECONDS),
    )
    assert server[("user", "front")] == 0.3 and client[("user", "front")] == 0.0
    assert client[("shop", "bank")] == 0.2 and server[("shop", "bank")] == 0.0
    assert (
        gen.metrics.registry.get_sample_value(
            "tempo_metrics_generator_processor_service_graphs_expired_edges_total", {"tenant": TENANT}
        )
        == 2
    )


def test_span_size_counts_the_empty_status(tmp_path: Path) -> None:
    """spanmetrics.go (v2.4.1) adds span.Size(); the distributor re-marshals spans through pdata, whose
    Span.Status is not nullable (vendor/go.opentelemetry.io/collector/pdata/internal/data/protogen/trace/
    v1/trace.pb.go), so a span sent without a Status is 2 bytes (field 15, length 0) larger there."""
    gen = _generator(tmp_path)
    bare = span(new_id(16), "bare")
    bare.ClearField("status")
    with_status = span(new_id(16), "with")
    with_status.status.message = "fine"
    gen.consume(request("svc", [bare, with_status]))
    sizes = {dict(k)["span_name"]: v[0] for k, v in gen.registry.counters[contract.SPANMETRICS_SIZE].items()}
    assert sizes == {"bare": bare.ByteSize() + 2, "with": with_status.ByteSize()}


def test_new_counters_start_at_zero_histograms_do_not(tmp_path: Path) -> None:
    """modules/generator/registry/counter.go (v2.4.1): a new counter series is appended as 0 at the
    collection time and its value insertOffsetDuration (1 s) later; histogram.go appends no 0."""
    gen = _generator(tmp_path)
    gen.consume(request("svc", [span(new_id(16), "op")]))
    now = 1_800_000_000_000
    first = _series(gen, now)
    calls = [(s.value, s.timestamp_ms) for s in first[contract.SPANMETRICS_CALLS]]
    assert calls == [(0.0, now), (1.0, now + 1000)]
    buckets = first[contract.SPANMETRICS_LATENCY_BUCKET]
    assert {s.timestamp_ms for s in buckets} == {now} and len(buckets) == len(gen.sm.histogram_buckets) + 1
    assert [s.value for s in first[contract.SPANMETRICS_LATENCY_COUNT]] == [1.0]
    later = _series(gen, now + 15_000)
    assert [(s.value, s.timestamp_ms) for s in later[contract.SPANMETRICS_CALLS]] == [(1.0, now + 15_000)]


def test_time_parameters_as_each_api_reads_them(exporter: Exporter, http: httpx.Client) -> None:
    """pkg/api/http.go (v2.4.1): search refuses a start without an end (end reads as 0, "start must be
    before end"); trace by id only orders a full window and answers from the ingesters whatever it
    says (ValidateAndSanitizeRequest). Checked against a Tempo 2.4.1 built from its tag."""
    tid = new_id(16)
    assert exporter.export(request("timing", [span(tid, "op")]))[0] == grpc.StatusCode.OK
    alone = http.get("/api/search", params={"q": "{}", "start": "1700000000"})
    assert alone.status_code == 400 and "received start=1700000000 end=0" in alone.text
    end_alone = http.get("/api/search", params={"q": "{}", "end": "1700000000"})  # 1700000000 s since 0 > 168h
    assert end_alone.status_code == 400 and "exceeds 168h0m0s" in end_alone.text
    window = {"start": "1600000000", "end": "1600000100"}
    assert http.get(f"/api/traces/{tid.hex()}", params=window).status_code == 200
    assert http.get(f"/api/traces/{tid.hex()}", params={"start": "1900000000"}).status_code == 200
    # modules/frontend/tagsharding.go and searchsharding.go: end - start on uint32 seconds must not exceed
    # query_frontend.search.max_duration (168h): a start alone or a reversed pair wraps around
    for path in ("/api/search/tags", "/api/v2/search/tags", "/api/search/tag/service.name/values"):
        alone = http.get(path, params={"start": "20"})
        assert alone.status_code == 400, path
        assert alone.text == "range specified by start and end exceeds 168h0m0s. received start=20 end=0"
        assert http.get(path, params={"start": "20", "end": "10"}).status_code == 400, path
        assert http.get(path, params={"start": "10", "end": "20"}).status_code == 200, path
        assert http.get(path, params={"end": "20"}).status_code == 200, path
        assert http.get(path, params={"start": "soon"}).status_code == 400, path
    week = http.get("/api/search", params={"q": "{}", "start": "1700000000", "end": str(1700000000 + 8 * 86400)})
    assert week.status_code == 400 and week.text.startswith("range specified by start and end exceeds 168h0m0s")
