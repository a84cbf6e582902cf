"""``/api/search`` and the tag APIs over the store, shaped like Tempo 2.4.1's answers.

Difference from 2.4.1, on purpose: a trace is searchable as soon as its export is acknowledged
(Tempo moves traces out of the live set into the searchable head block 0-10 s later).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.trace.v1.trace_pb2 import Status, TracesData

from amtp_obs.durations import parse_duration
from amtp_obs.tempo import traceql
from amtp_obs.tempo.store import TraceInfo, TraceStore

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
    start, end = _int_param(params, "start"), _int_param(params, "end")
    if start is not None and end is not None and end <= start:
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


def _tag_matches(view: traceql.SpanView, key: str, want: str) -> bool:
    s = view.span
    if key == "name":
        return s.name == want
    if key == "status.code":
        code = _STATUS_TAG.get(want.lower().removeprefix("status_code_"))
        return code is not None and s.status.code == code
    if key == "root.name":
        return view.trace.root_name == want
    if key == "root.service.name":
        return view.trace.root_service == want
    for source in (view.attrs, view.resource):
        if key in source:
            v = source[key]
            text = ("true" if v else "false") if isinstance(v, bool) else str(v)
            if text == want:
                return True
    return False


def _span_json(view: traceql.SpanView, attrs: list[traceql.Attr]) -> dict[str, Any]:
    s = view.span
    out: dict[str, Any] = {
        "spanID": s.span_id.hex(),
        "name": s.name,
        "startTimeUnixNano": str(s.start_time_unix_nano),
        "durationNanos": str(view.duration),
    }
    kvs = []
    for a in attrs:
        if a.scope == "intrinsic":
            if a.name == "status":
                kvs.append({"key": "status", "value": {"stringValue": traceql.STATUS_NAMES.get(s.status.code, "")}})
            elif a.name == "kind":
                kvs.append({"key": "kind", "value": {"stringValue": traceql.KIND_NAMES.get(s.kind, "")}})
            continue
        v = traceql.lookup(view, a)
        if v is traceql._MISSING or v is None:
            continue
        kvs.append({"key": a.name, "value": _any_json(v)})
    if kvs:
        out["attributes"] = kvs
    return out


def _any_json(v: Any) -> dict[str, Any]:
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    return {"stringValue": str(v)}


def search(store: TraceStore, req: SearchRequest) -> dict[str, Any]:
    """Newest traces first, stopping at ``limit`` matches; safe to run in a worker thread."""
    results: list[dict[str, Any]] = []
    inspected_traces = inspected_bytes = 0
    attrs = req.query.attributes if req.query else []
    for tid in store.trace_ids_newest_first():
        if len(results) >= req.limit:
            break
        info = store.traces.get(tid)
        if info is None:
            continue
        duration = max(0, info.end_ns - info.start_ns)
        if req.start is not None and info.end_ns < req.start * 1_000_000_000:
            continue
        if req.end is not None and info.start_ns > req.end * 1_000_000_000:
            continue
        if req.min_duration_ns is not None and duration < req.min_duration_ns:
            continue
        if req.max_duration_ns is not None and duration > req.max_duration_ns:
            continue
        blob = store.find(tid)
        if not blob:
            continue
        inspected_traces += 1
        inspected_bytes += len(blob)
        td = TracesData()
        try:
            td.ParseFromString(blob)
        except Exception:
            continue
        views = _views(td, info)
        if req.query is not None:
            matched = traceql.evaluate(req.query, views)
        else:
            matched = [v for v in views if all(_tag_matches(v, k, w) for k, w in req.tags.items())]
        if not matched:
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
        if req.query is not None:
            span_set = {"spans": [_span_json(v, attrs) for v in matched[: req.spss]], "matched": len(matched)}
            entry["spanSet"] = span_set
            entry["spanSets"] = [span_set]
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


def tag_names_v1(store: TraceStore, params: Any) -> dict[str, Any]:
    time_range(params)
    scope = _scope_param(params)
    if scope == "intrinsic":
        return {"tagNames": INTRINSIC_TAGS}
    names: set[str] = set()
    for sc in ("span", "resource"):
        if scope in (None, sc):
            names.update(store.tag_index[sc])
    return {"tagNames": sorted(names)}


def tag_names_v2(store: TraceStore, params: Any) -> dict[str, Any]:
    time_range(params)
    scope = _scope_param(params)
    scopes = []
    for sc in TAG_SCOPES:
        if scope not in (None, sc):
            continue
        tags = INTRINSIC_TAGS if sc == "intrinsic" else sorted(store.tag_index[sc])
        scopes.append({"name": sc, "tags": tags})
    return {"scopes": scopes}


def tag_values_v1(store: TraceStore, name: str, params: Any) -> dict[str, Any]:
    time_range(params)
    values: set[str] = set()
    if name == "name":
        values.update(store.span_names)
    for sc in ("span", "resource"):
        for typ, v in store.tag_index[sc].get(name, {}):
            if typ == "string":
                values.add(v)
    return {"tagValues": sorted(values)}


def tag_values_v2(store: TraceStore, name: str, params: Any) -> dict[str, Any]:
    time_range(params)
    try:
        attr = traceql._Parser(name).operand()
    except traceql.TraceQLError:
        attr = None
    if not isinstance(attr, traceql.Attr):
        raise BadRequest(
            f"please provide a valid tagName: {name!r} is not a scoped TraceQL attribute "
            "(span.<name>, resource.<name>, .<name> or an intrinsic such as name or status)"
        )
    out: dict[tuple[str, str], None] = {}
    if attr.scope == "intrinsic":
        if attr.name == "name":
            out.update((("string", n), None) for n in store.span_names)
        elif attr.name == "status":
            out.update((("keyword", n), None) for n in traceql.STATUS_VALUES)
        elif attr.name == "kind":
            out.update((("keyword", n), None) for n in traceql.KIND_VALUES)
        elif attr.name == "rootServiceName":
            out.update(
                (("string", v), None) for t, v in store.tag_index["resource"].get("service.name", {}) if t == "string"
            )
    else:
        scopes = {"span": ("span",), "resource": ("resource",), "unscoped": ("span", "resource")}[attr.scope]
        for sc in scopes:
            out.update(dict.fromkeys(store.tag_index[sc].get(attr.name, {})))
    return {"tagValues": [{"type": t, "value": v} for t, v in sorted(out)]}
