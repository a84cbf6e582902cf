"""``/api/search`` and the tag APIs over the store, shaped like Tempo 2.4.1's answers.

Difference from 2.4.1, on purpose: a trace is searchable as soon as its export is acknowledged
(Tempo moves traces out of the live set into the searchable head block 0-10 s later).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Status, TracesData

from amtp_obs.durations import format_go_duration, parse_duration
from amtp_obs.tempo import traceql
from amtp_obs.tempo.store import MAX_TAG_VALUES, TraceInfo, TraceStore

DEFAULT_LIMIT = 20
DEFAULT_SPSS = 3
NO_ROOT = "<root span not yet received>"
INTRINSIC_TAGS = sorted(traceql.INTRINSICS)


class BadRequest(ValueError):
    """Turned into HTTP 400 with this message."""


def trace_id_hex(tid: bytes) -> str:
    """Hex id with leading zeros stripped, as Tempo's search results print it."""
    return tid.hex().lstrip("0") or "0"


def parse_trace_id(text: str) -> bytes:
    """Tempo's rules: 1-32 hex characters, left-padded to 128 bits."""
    if len(text) > 32:
        raise BadRequest("trace IDs can't be larger than 128 bits")
    if not text:
        raise BadRequest("trace ID cannot be empty")
    for pos, ch in enumerate(text, 1):
        if ch not in "0123456789abcdefABCDEF":
            raise BadRequest(f"trace IDs can only contain hex characters: invalid character '{ch}' at position {pos}")
    return bytes.fromhex(text.rjust(32, "0"))


def parse_logfmt(text: str) -> dict[str, str]:
    """``key=value key2="quoted value"`` as Tempo's ``tags`` parameter."""
    out: dict[str, str] = {}
    pos, n = 0, len(text)
    while pos < n:
        while pos < n and text[pos] == " ":
            pos += 1
        if pos >= n:
            break
        m = re.compile(r'[^\s="]+').match(text, pos)
        if m is None:
            raise BadRequest(f"invalid tags: unexpected {text[pos]!r} at position {pos + 1}")
        key, pos = m.group(), m.end()
        if pos >= n or text[pos] != "=":
            out[key] = ""
            continue
        pos += 1
        if pos < n and text[pos] == '"':
            end, buf = pos + 1, []
            while end < n and text[end] != '"':
                if text[end] == "\\" and end + 1 < n:
                    end += 1
                buf.append(text[end])
                end += 1
            if end >= n:
                raise BadRequest("invalid tags: unterminated quoted value")
            out[key], pos = "".join(buf), end + 1
        else:
            m = re.compile(r"[^\s]*").match(text, pos)
            assert m is not None
            out[key], pos = m.group(), m.end()
    return out


def _int_param(params: Any, name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(raw)
    except ValueError:
        raise BadRequest(f"invalid {name}: {raw!r} is not an integer") from None


def _dur_param(params: Any, name: str) -> int | None:
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    try:
        return int(parse_duration(raw) * 1e9)
    except ValueError as exc:
        raise BadRequest(f"invalid {name}: {exc}") from None


def time_range(params: Any) -> tuple[int | None, int | None]:
    """Tempo 2.4.1 pkg/api/http.go ParseSearchRequest: a non-zero start or end needs end > start
    (so ``start`` alone is refused: end reads as 0)."""
    start, end = _int_param(params, "start"), _int_param(params, "end")
    if (start or end) and (end or 0) <= (start or 0):
        raise BadRequest(f"http parameter start must be before end. received start={start or 0} end={end or 0}")
    return start, end


def tag_time_range(params: Any) -> tuple[int | None, int | None]:
    """pkg/api/search_tags.go (v2.4.1): the tag APIs parse start and end without comparing them; the
    query frontend's range check (:func:`check_max_duration`) then refuses a bad pair."""
    return _int_param(params, "start"), _int_param(params, "end")


DEFAULT_MAX_SEARCH_DURATION = 168 * 3600
"""query_frontend.search.max_duration's default (modules/frontend/config.go, 168h)."""


def check_max_duration(params: Any, max_seconds: float = DEFAULT_MAX_SEARCH_DURATION) -> None:
    """modules/frontend/searchsharding.go and tagsharding.go (v2.4.1): ``end - start`` computed on uint32
    seconds, so an end before the start (or a start alone, end 0) wraps around and exceeds it too."""
    if not max_seconds:
        return
    start, end = _int_param(params, "start") or 0, _int_param(params, "end") or 0
    if (end - start) % 2**32 > max_seconds:
        raise BadRequest(
            f"range specified by start and end exceeds {format_go_duration(int(max_seconds * 1e9))}."
            f" received start={start} end={end}"
        )


def trace_time_range(params: Any) -> tuple[int | None, int | None]:
    """pkg/api/http.go ValidateAndSanitizeRequest: by-id takes start or end alone; both must be ordered."""
    start, end = _int_param(params, "start"), _int_param(params, "end")
    if start and end and end <= start:
        raise BadRequest(f"http parameter start must be before end. received start={start} end={end}")
    return start, end


@dataclass
class SearchRequest:
    query: traceql.Query | None
    tags: dict[str, str]
    min_duration_ns: int | None
    max_duration_ns: int | None
    limit: int
    spss: int
    start: int | None
    end: int | None


def parse_search_request(params: Any) -> SearchRequest:
    q, tags_raw = params.get("q"), params.get("tags")
    if q and tags_raw:
        raise BadRequest("invalid request: can't specify tags and q in the same query")
    query = None
    if q:
        try:
            query = traceql.parse(q)
        except traceql.TraceQLError as exc:
            raise BadRequest(f"invalid TraceQL query: {exc}") from None
    tags = parse_logfmt(tags_raw) if tags_raw else {}
    limit = _int_param(params, "limit")
    if limit is None:
        limit = DEFAULT_LIMIT
    elif limit <= 0:
        raise BadRequest("invalid limit: must be a positive number")
    spss = _int_param(params, "spss")
    if spss is None:
        spss = DEFAULT_SPSS
    elif spss <= 0:
        raise BadRequest("invalid spss: must be a positive number")
    mn, mx = _dur_param(params, "minDuration"), _dur_param(params, "maxDuration")
    if mn is not None and mx is not None and mx < mn:
        raise BadRequest("invalid maxDuration: must be greater than minDuration")
    start, end = time_range(params)
    return SearchRequest(query, tags, mn, mx, limit, spss, start, end)


def _views(td: TracesData, info: TraceInfo) -> list[traceql.SpanView]:
    ctx = traceql.TraceContext(info.root_name, info.root_service, max(0, info.end_ns - info.start_ns))
    out = []
    for rs in td.resource_spans:
        res = {kv.key: traceql.any_value(kv.value) for kv in rs.resource.attributes}
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(traceql.SpanView(s, res, ctx))
    return out


_STATUS_TAG = {
    "ok": Status.STATUS_CODE_OK,
    "error": Status.STATUS_CODE_ERROR,
    "unset": Status.STATUS_CODE_UNSET,
}
# Tempo 2.4.1 tempodb/encoding/vparquet3/schema.go labelMappings: tags with their own column, matched
# by substring (block_search.go makePipelineWithRowGroups, pq.NewSubstringPredicate).
_RESOURCE_COLUMNS = (
    "service.name",
    "cluster",
    "namespace",
    "pod",
    "container",
    "k8s.cluster.name",
    "k8s.namespace.name",
    "k8s.pod.name",
    "k8s.container.name",
)
_SPAN_COLUMNS = ("http.method", "http.url")
HTTP_STATUS_CODE = "http.status_code"


def _tag_matches(view: traceql.SpanView, key: str, want: str) -> bool:
    """One ``tags=`` condition as vParquet3 evaluates it (block_search.go makePipelineWithRowGroups).

    Dedicated columns match by substring; ``http.status_code`` as an integer when ``want`` is one;
    every other key is looked up in the string value column only, so an int, float or bool attribute
    never matches (``tags=n=5`` does not find ``n: 5``).
    """
    s = view.span
    if key == "name":
        return want in s.name
    if key == "status.code":
        code = _STATUS_TAG.get(want.lower().removeprefix("status_code_"))
        return code is not None and s.status.code == code
    if key == "root.name":
        return view.trace.root_name is not None and want in view.trace.root_name
    if key == "root.service.name":
        return view.trace.root_service is not None and want in view.trace.root_service
    if key in _RESOURCE_COLUMNS or key in _SPAN_COLUMNS:
        v = (view.resource if key in _RESOURCE_COLUMNS else view.attrs).get(key)
        return isinstance(v, str) and want in v
    if key == HTTP_STATUS_CODE:
        v = view.attrs.get(key)
        try:
            return isinstance(v, int) and not isinstance(v, bool) and v == int(want)
        except ValueError:
            pass  # a non-numeric value is looked up as a generic string attribute
    for source in (view.attrs, view.resource):
        v = source.get(key)
        if isinstance(v, str) and v == want:
            return True
    return False


NAME_ATTR = traceql.Attr("intrinsic", "name")


def _span_json(view: traceql.SpanView, attrs: list[traceql.Attr]) -> dict[str, Any]:
    """engine.go asTraceSearchMetadata: the span's id, times and every attribute the query read (its
    name too when the query read it)."""
    s = view.span
    out: dict[str, Any] = {"spanID": s.span_id.hex()}
    if NAME_ATTR in attrs:  # Tempo sets the name only when the query fetched it
        out["name"] = s.name
    out["startTimeUnixNano"] = str(s.start_time_unix_nano)
    out["durationNanos"] = str(view.duration)
    kvs = []
    for a in attrs:
        if a.scope == "intrinsic":
            if a.name == "status":
                kvs.append({"key": "status", "value": {"stringValue": traceql.STATUS_NAMES.get(s.status.code, "")}})
            elif a.name == "kind":
                kvs.append({"key": "kind", "value": {"stringValue": traceql.KIND_NAMES.get(s.kind, "")}})
            elif a.name == "statusMessage":
                kvs.append({"key": "statusMessage", "value": {"stringValue": s.status.message}})
            continue
        v = traceql.lookup(view, a)
        if v is traceql._MISSING or v is None:
            continue
        kvs.append({"key": a.name, "value": _any_json(v)})
    if kvs:
        out["attributes"] = kvs
    return out


def _any_json(v: Any, duration: bool = False) -> dict[str, Any]:
    """engine.go Static.AsAnyValue: durations print as Go durations, nil as the string ``nil``."""
    if v is None:
        return {"stringValue": "nil"}
    if duration and isinstance(v, (int, float)):
        return {"stringValue": format_go_duration(int(v))}
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": str(v)}


def _spanset_json(ss: traceql.SpanSet, attrs: list[traceql.Attr], req: SearchRequest) -> dict[str, Any]:
    spans = [_span_json(v, attrs) for v in ss.spans[: req.spss]]
    out: dict[str, Any] = {"spans": spans, "matched": len(ss.spans)}
    if ss.attributes:
        durations = req.query.duration_outputs if req.query is not None else set()
        out["attributes"] = [
            {"key": name, "value": _any_json(value, duration=name in durations)} for name, value in ss.attributes
        ]
    return out


def search(store: TraceStore, req: SearchRequest) -> dict[str, Any]:
    """Newest traces first, stopping at ``limit`` matches; safe to run in a worker thread.

    ``minDuration`` / ``maxDuration`` apply to tag searches only: Tempo 2.4.1's TraceQL engine does not
    read them (pkg/traceql/engine.go createFetchSpansRequest, "TODO handle ... MinDurationMs").
    """
    results: list[dict[str, Any]] = []
    inspected_traces = inspected_bytes = 0
    attrs = req.query.attributes if req.query else []
    durations = req.query is None
    for tid in store.trace_ids_newest_first():
        if len(results) >= req.limit:
            break
        info = store.trace_info(tid)
        if info is None:
            continue
        duration = max(0, info.end_ns - info.start_ns)
        if req.start is not None and info.end_ns < req.start * 1_000_000_000:
            continue
        if req.end is not None and info.start_ns > req.end * 1_000_000_000:
            continue
        if durations and req.min_duration_ns is not None and duration < req.min_duration_ns:
            continue
        if durations and req.max_duration_ns is not None and duration > req.max_duration_ns:
            continue
        stored = store.trace(tid)
        if stored is None:
            continue
        inspected_traces += 1
        inspected_bytes += stored.size
        views = _views(stored.data, info)
        spansets: list[traceql.SpanSet] = []
        if req.query is not None:
            try:
                spansets = traceql.evaluate(req.query, views)
            except traceql.TraceQLError as exc:
                raise BadRequest(f"invalid TraceQL query: {exc}") from None
            if not spansets:
                continue
        elif not any(all(_tag_matches(v, k, w) for k, w in req.tags.items()) for v in views):
            continue
        entry: dict[str, Any] = {
            "traceID": trace_id_hex(tid),
            "rootServiceName": info.root_service if info.root_name is not None else NO_ROOT,
        }
        if info.root_name is not None:
            entry["rootTraceName"] = info.root_name
        entry["startTimeUnixNano"] = str(info.start_ns)
        ms = duration // 1_000_000
        if ms:
            entry["durationMs"] = ms
        if spansets:
            sets = [_spanset_json(ss, attrs, req) for ss in spansets]
            entry["spanSet"] = sets[0]
            entry["spanSets"] = sets
        results.append(entry)
    results.sort(key=lambda e: int(e["startTimeUnixNano"]), reverse=True)
    metrics: dict[str, Any] = {
        "inspectedTraces": inspected_traces,
        "inspectedBytes": str(inspected_bytes),
        "completedJobs": 1,
        "totalJobs": 1,
    }
    return {"traces": results, "metrics": metrics}


# --------------------------------------------------------------------------------------------
# tags
# --------------------------------------------------------------------------------------------

TAG_SCOPES = ("intrinsic", "resource", "span")


def _scope_param(params: Any) -> str | None:
    scope = params.get("scope") or None
    if scope is not None and scope not in (*TAG_SCOPES, "all"):
        raise BadRequest(f"invalid scope: {scope!r} (resource, span, intrinsic)")
    return None if scope == "all" else scope


def _values_or_empty(key: str, values: list[Any]) -> dict[str, Any]:
    """Tempo answers with jsonpb, which leaves out an empty repeated field: ``{}``, never ``{"x": []}``."""
    return {key: values} if values else {}


def tag_names_v1(store: TraceStore, params: Any) -> dict[str, Any]:
    tag_time_range(params)
    scope = _scope_param(params)
    if scope == "intrinsic":
        return {"tagNames": INTRINSIC_TAGS}
    names: set[str] = set()
    for sc in ("span", "resource"):
        if scope in (None, sc):
            names.update(store.tag_names(sc))
    return _values_or_empty("tagNames", sorted(names))


def tag_names_v2(store: TraceStore, params: Any) -> dict[str, Any]:
    tag_time_range(params)
    scope = _scope_param(params)
    scopes = []
    for sc in TAG_SCOPES:
        if scope not in (None, sc):
            continue
        tags = INTRINSIC_TAGS if sc == "intrinsic" else store.tag_names(sc)
        scopes.append({"name": sc, **_values_or_empty("tags", tags)})
    return {"scopes": scopes}


# v1 tag names routed to a scope or an intrinsic (vparquet3/block_search_tags.go translateTagToAttribute)
_V1_INTRINSIC = {"name": "name", "status.code": "status", "rootName": "rootName", "rootServiceName": "rootServiceName"}
_V1_SCOPED = {
    **dict.fromkeys(_RESOURCE_COLUMNS, "resource"),
    **dict.fromkeys((*_SPAN_COLUMNS, HTTP_STATUS_CODE), "span"),
}


def _v1_text(typ: str, value: str) -> str:
    """traceql Static.EncodeToString(false) (ast_stringer.go): floats with five decimals."""
    return f"{float(value):.5f}" if typ == "float" else value


def tag_values_v1(store: TraceStore, name: str, params: Any) -> dict[str, Any]:
    """Every type's values as text (v1 wraps v2 and prints each value: block_search_tags.go SearchTagValues)."""
    tag_time_range(params)
    if name in _V1_INTRINSIC:
        attr = traceql.Attr("intrinsic", _V1_INTRINSIC[name])
    else:
        attr = traceql.Attr(_V1_SCOPED.get(name, "unscoped"), name)
    values = {_v1_text(t, v) for t, v in _attr_values(store, attr)}
    return _values_or_empty("tagValues", sorted(values))


def _attr_values(store: TraceStore, attr: traceql.Attr) -> set[tuple[str, str]]:
    out: set[tuple[str, str]] = set()
    if attr.scope == "intrinsic":
        if attr.name == "name":
            out.update(("string", n) for n in store.span_name_values())
        elif attr.name == "status":
            out.update(("keyword", n) for n in traceql.STATUS_VALUES)
        elif attr.name == "kind":
            out.update(("keyword", n) for n in traceql.KIND_VALUES)
        elif attr.name == "rootServiceName":
            out.update((t, v) for t, v in store.tag_values("resource", "service.name") if t == "string")
        return out
    scopes = {"span": ("span",), "resource": ("resource",), "unscoped": ("span", "resource")}[attr.scope]
    for sc in scopes:
        out.update(store.tag_values(sc, attr.name))
    return out


# pkg/traceql/extractmatcher.go (v2.4.1): the conditions of a single-spanset ``q`` that narrow tag values.
# Go's \p{L}\p{N} become \w, the quoted value's letter/punctuation/symbol classes "no space".
_MATCHER = re.compile(r'[\w.]+\s*[=|<>~!]\s*(?:"[^\s"]+"|true|false|[a-z]+|[0-9smh]+)')
_SINGLE_FILTER = re.compile(r"^\{[^|{}]*[^|{}]}?$")


def extract_matchers(q: str) -> str:
    """The ``{ a && b }`` Tempo builds from an autocomplete ``q``: ``{}`` when nothing narrows it."""
    q = q.strip()
    if not q or not _SINGLE_FILTER.search(q):
        return "{}"
    return "{" + " && ".join(_MATCHER.findall(q)) + "}"


def _value_of(view: traceql.SpanView, attr: traceql.Attr) -> tuple[str, str] | None:
    v = traceql.lookup(view, attr)
    if v is traceql._MISSING or v is None:
        return None
    if attr.scope == "intrinsic":
        if attr.name == "status":
            return "keyword", traceql.STATUS_NAMES.get(v, "")
        if attr.name == "kind":
            return "keyword", traceql.KIND_NAMES.get(v, "")
        if attr.type == "duration":
            return "duration", format_go_duration(int(v))
    if isinstance(v, bool):
        return "bool", "true" if v else "false"
    if isinstance(v, int):
        return "int", str(v)
    if isinstance(v, float):
        return "float", repr(v)
    if isinstance(v, str):
        return "string", v
    return None


MAX_FILTERED_SCAN = 10_000
"""Traces a filtered tag-values request reads at most (newest first): autocomplete must stay quick."""


def _filtered_values(store: TraceStore, attr: traceql.Attr, query: traceql.Query) -> set[tuple[str, str]]:
    """Values of ``attr`` on the spans the filter keeps (engine.go ExecuteTagValues; walks the store)."""
    out: set[tuple[str, str]] = set()
    for n, tid in enumerate(store.trace_ids_newest_first()):
        if n >= MAX_FILTERED_SCAN:
            break
        stored = store.trace(tid)
        if stored is None:
            continue
        for ss in traceql.evaluate(query, _views(stored.data, stored.info)):
            for view in ss.spans:
                tv = _value_of(view, attr)
                if tv is not None:
                    out.add(tv)
        if len(out) >= MAX_TAG_VALUES:
            break
    return out


def tag_values_v2(store: TraceStore, name: str, params: Any, filtering: bool = True) -> dict[str, Any]:
    """``q`` narrows the values to spans matching its conditions unless ``autocomplete_filtering_enabled``
    is off (on by default in 2.4)."""
    tag_time_range(params)
    try:
        attr = traceql._Parser(name).operand()
    except traceql.TraceQLError:
        attr = None
    if not isinstance(attr, traceql.Attr):
        raise BadRequest(
            f"please provide a valid tagName: {name!r} is not a scoped TraceQL attribute "
            "(span.<name>, resource.<name>, .<name> or an intrinsic such as name or status)"
        )
    matchers = extract_matchers(params.get("q") or "") if filtering else "{}"
    query = None
    if matchers != "{}":
        try:
            query = traceql.parse(matchers)
        except traceql.TraceQLError as exc:
            raise BadRequest(f"invalid TraceQL query: {exc}") from None
    if query is None or (attr.scope == "intrinsic" and attr.name in ("status", "kind")):
        values = _attr_values(store, attr)
    else:
        values = _filtered_values(store, attr, query)
    out = [{"type": t, "value": f"{float(v):.5f}" if t == "float" else v} for t, v in sorted(values)]
    return _values_or_empty("tagValues", out)
