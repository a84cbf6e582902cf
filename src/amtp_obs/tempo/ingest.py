"""Turn one OTLP export into per-trace protobuf fragments without rebuilding messages.

Tempo stores each export as its own ``batches`` entry of the trace. ``tempopb.Trace`` and OTLP
``TracesData`` both carry ``repeated ResourceSpans = 1``, so a trace is kept as the concatenation
of ``0x0a <len> <ResourceSpans>`` records: appending is a byte join, and the stored bytes are
already the protobuf answer of ``/api/traces/{id}``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.sdk.resources import SERVICE_NAME

TRACE_ID_BYTES = 16
MAX_TAG_VALUE_CHARS = 1024
"""Longer attribute values (prompts, payloads) are not offered as tag values."""

_TAG_RESOURCE_SPANS = 0x0A  # TracesData.resource_spans / ResourceSpans.resource / ScopeSpans.scope
_TAG_SCOPE_SPANS = 0x12  # ResourceSpans.scope_spans / ScopeSpans.spans
_TAG_SCHEMA_URL = 0x1A  # ResourceSpans.schema_url / ScopeSpans.schema_url


def varint(n: int) -> bytes:
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def field_bytes(tag: int, payload: bytes) -> bytes:
    """One length-delimited protobuf field (called per span: the usual lengths are inlined)."""
    n = len(payload)
    if n < 0x80:
        return bytes((tag, n)) + payload
    if n < 0x4000:
        return bytes((tag, (n & 0x7F) | 0x80, n >> 7)) + payload
    return bytes((tag,)) + varint(n) + payload


class InvalidRequest(ValueError):
    """The export cannot be accepted (malformed protobuf, bad trace id); the message says why."""


def tag_value(v: AnyValue) -> tuple[str, str] | None:
    """(TraceQL type, value as text) of an attribute value offered by the tag-values APIs."""
    kind = v.WhichOneof("value")
    if kind == "string_value":
        s = v.string_value
        return ("string", s) if len(s) <= MAX_TAG_VALUE_CHARS else None
    if kind == "int_value":
        return "int", str(v.int_value)
    if kind == "double_value":
        return "float", repr(v.double_value)
    if kind == "bool_value":
        return "bool", "true" if v.bool_value else "false"
    if kind == "array_value":
        return "array", ""  # the key is listed by the tag APIs; the value is not offered
    if kind == "kvlist_value":
        return "kvlist", ""
    return None


@dataclass(slots=True)
class TraceDelta:
    """What one export adds to one trace."""

    data: bytes
    start_ns: int
    end_ns: int
    spans: int
    root_service: str | None = None
    root_name: str | None = None


@dataclass
class ParsedExport:
    request: ExportTraceServiceRequest
    size: int
    spans: int
    traces: dict[bytes, TraceDelta]
    tags: set[tuple[str, str, str, str]] = field(default_factory=set)
    """(scope, key, type, value) observed: scope is ``span`` or ``resource``."""
    span_names: set[str] = field(default_factory=set)


def _build_views() -> tuple[type[Message], type[Message]]:
    """Two wire-compatible views of ExportTraceServiceRequest, in a private descriptor pool.

    The raw view gives every span as its original bytes (stored as received, never re-encoded);
    the span view gives the few span fields the store indexes, with the attributes as serialized
    KeyValues so that tags are decoded once per distinct KeyValue instead of once per span.
    """
    fdp = descriptor_pb2.FileDescriptorProto(name="amtp_obs/tempo/ingest_views.proto", package="amtp_views")
    fdp.syntax = "proto2"  # the real parse validates UTF-8; these views only slice what it accepted
    fdesc = descriptor_pb2.FieldDescriptorProto
    msg_t, bytes_t, str_t, fixed_t = fdesc.TYPE_MESSAGE, fdesc.TYPE_BYTES, fdesc.TYPE_STRING, fdesc.TYPE_FIXED64

    def message(name: str, *fields: tuple[str, int, int, str, bool]) -> None:
        m = fdp.message_type.add(name=name)
        for fname, number, ftype, type_name, repeated in fields:
            f = m.field.add(name=fname, number=number, type=ftype)
            f.label = fdesc.LABEL_REPEATED if repeated else fdesc.LABEL_OPTIONAL
            if type_name:
                f.type_name = f".amtp_views.{type_name}"

    message("RawRequest", ("resource_spans", 1, msg_t, "RawResourceSpans", True))
    message("RawResourceSpans", ("scope_spans", 2, msg_t, "RawScopeSpans", True))
    message("RawScopeSpans", ("spans", 2, bytes_t, "", True))
    message("SpanRequest", ("resource_spans", 1, msg_t, "SpanResourceSpans", True))
    message("SpanResourceSpans", ("scope_spans", 2, msg_t, "SpanScopeSpans", True))
    message("SpanScopeSpans", ("spans", 2, msg_t, "SpanView", True))
    message(
        "SpanView",
        ("trace_id", 1, bytes_t, "", False),
        ("parent_span_id", 4, bytes_t, "", False),
        ("name", 5, str_t, "", False),
        ("start_time_unix_nano", 7, fixed_t, "", False),
        ("end_time_unix_nano", 8, fixed_t, "", False),
        ("attributes", 9, bytes_t, "", True),
    )
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("amtp_views.RawRequest")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("amtp_views.SpanRequest")),
    )


_RawRequest, _SpanRequest = _build_views()

_TAG_CACHE_MAX = 65536
_TAG_CACHE_MAX_KV_BYTES = MAX_TAG_VALUE_CHARS + 256
_tag_cache: dict[bytes, tuple[str, str, str] | None] = {}
"""Serialized span KeyValue -> (key, type, value) or None; the same pairs repeat in every export."""


def _span_tag(raw_kv: bytes) -> tuple[str, str, str] | None:
    hit = _tag_cache.get(raw_kv, False)
    if hit is not False:
        return hit
    kv = KeyValue.FromString(raw_kv)
    tv = tag_value(kv.value)
    out = None if tv is None else (kv.key, *tv)
    if len(raw_kv) <= _TAG_CACHE_MAX_KV_BYTES:
        if len(_tag_cache) >= _TAG_CACHE_MAX:
            _tag_cache.clear()
        _tag_cache[raw_kv] = out
    return out


def parse_export(raw: bytes, collect_tags: bool = True) -> ParsedExport:
    """Split a serialized ExportTraceServiceRequest into per-trace fragments and summaries."""
    req = ExportTraceServiceRequest()
    try:
        req.ParseFromString(raw)
        # The same bytes through the views: cannot fail where the real parse succeeded.
        raw_view = _RawRequest.FromString(raw)
        span_view = _SpanRequest.FromString(raw)
    except DecodeError as exc:
        raise InvalidRequest(f"cannot decode ExportTraceServiceRequest: {exc}") from None
    tags: set[tuple[str, str, str, str]] = set()
    names: set[str] = set()
    span_kvs: set[bytes] = set()
    # tid -> [start, end, spans, root_service, root_name, [resource-span fragments]]
    acc: dict[bytes, list] = {}
    total = 0
    for rs, raw_rs, view_rs in zip(req.resource_spans, raw_view.resource_spans, span_view.resource_spans, strict=True):
        service = ""
        for kv in rs.resource.attributes:
            if kv.key == SERVICE_NAME and kv.value.WhichOneof("value") == "string_value":
                service = kv.value.string_value
            if collect_tags:
                tv = tag_value(kv.value)
                if tv is not None:
                    tags.add(("resource", kv.key, *tv))
        res_prefix = (
            field_bytes(_TAG_RESOURCE_SPANS, rs.resource.SerializeToString()) if rs.HasField("resource") else b""
        )
        rs_suffix = field_bytes(_TAG_SCHEMA_URL, rs.schema_url.encode()) if rs.schema_url else b""
        per_trace_scopes: dict[bytes, list[bytes]] = {}
        for ss, raw_ss, view_ss in zip(rs.scope_spans, raw_rs.scope_spans, view_rs.scope_spans, strict=True):
            groups: dict[bytes, list[bytes]] = {}
            for encoded, span in zip(raw_ss.spans, view_ss.spans, strict=True):
                tid = span.trace_id
                if len(tid) != TRACE_ID_BYTES:
                    raise InvalidRequest(f"trace ids must be 128 bit, received {len(tid) * 8} bits")
                total += 1
                grp = groups.get(tid)
                if grp is None:
                    groups[tid] = [encoded]
                else:
                    grp.append(encoded)
                start, end = span.start_time_unix_nano, span.end_time_unix_nano
                a = acc.get(tid)
                if a is None:
                    a = acc[tid] = [start, end, 0, None, None]
                else:
                    if start < a[0]:
                        a[0] = start
                    if end > a[1]:
                        a[1] = end
                a[2] += 1
                if not span.parent_span_id:
                    a[3], a[4] = service, span.name
                if collect_tags:
                    names.add(span.name)
                    span_kvs.update(span.attributes)
            if not groups:
                continue
            scope_prefix = (
                field_bytes(_TAG_RESOURCE_SPANS, ss.scope.SerializeToString()) if ss.HasField("scope") else b""
            )
            scope_suffix = field_bytes(_TAG_SCHEMA_URL, ss.schema_url.encode()) if ss.schema_url else b""
            for tid, encoded_spans in groups.items():
                body = scope_prefix + b"".join([field_bytes(_TAG_SCOPE_SPANS, s) for s in encoded_spans]) + scope_suffix
                per_trace_scopes.setdefault(tid, []).append(field_bytes(_TAG_SCOPE_SPANS, body))
        for tid, scopes in per_trace_scopes.items():
            rs_body = res_prefix + b"".join(scopes) + rs_suffix
            acc[tid].append(field_bytes(_TAG_RESOURCE_SPANS, rs_body))
    for raw_kv in span_kvs:
        t = _span_tag(raw_kv)
        if t is not None:
            tags.add(("span", *t))
    traces: dict[bytes, TraceDelta] = {}
    for tid, a in acc.items():
        traces[tid] = TraceDelta(
            data=b"".join(a[5:]), start_ns=a[0], end_ns=a[1], spans=a[2], root_service=a[3], root_name=a[4]
        )
    return ParsedExport(request=req, size=len(raw), spans=total, traces=traces, tags=tags, span_names=names)
