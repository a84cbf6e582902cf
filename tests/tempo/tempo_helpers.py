"""Shared helpers for the trace-store tests: configs on free ports, raw OTLP exports, gRPC calls."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import grpc
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import ResourceSpans, Span, Status
from opentelemetry.sdk.resources import SERVICE_NAME

from amtp_obs.testing.poll import eventually as wait_until  # noqa: F401  (re-exported for the tempo tests)

EXPORT_METHOD = "/opentelemetry.proto.collector.trace.v1.TraceService/Export"


def tempo_doc(state: Path, **sections: Any) -> dict[str, Any]:
    """A tempo.yaml document on ephemeral loopback ports with its storage under ``state``."""
    doc: dict[str, Any] = {
        "server": {"http_listen_address": "127.0.0.1", "http_listen_port": 0, "grpc_listen_port": 0},
        "distributor": {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "127.0.0.1:0"}}}}},
        "storage": {
            "trace": {
                "backend": "local",
                "wal": {"path": str(state / "wal")},
                "local": {"path": str(state / "blocks")},
            }
        },
    }
    for key, value in sections.items():
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            doc[key] = {**doc[key], **value}
        else:
            doc[key] = value
    return doc


def kv(key: str, value: Any) -> KeyValue:
    if isinstance(value, bool):
        return KeyValue(key=key, value=AnyValue(bool_value=value))
    if isinstance(value, int):
        return KeyValue(key=key, value=AnyValue(int_value=value))
    if isinstance(value, float):
        return KeyValue(key=key, value=AnyValue(double_value=value))
    return KeyValue(key=key, value=AnyValue(string_value=str(value)))


def new_id(n: int) -> bytes:
    return os.urandom(n)


def span(
    trace_id: bytes,
    name: str,
    *,
    span_id: bytes | None = None,
    parent: bytes = b"",
    kind: int = Span.SPAN_KIND_INTERNAL,
    status: int = Status.STATUS_CODE_UNSET,
    duration_ms: float = 10.0,
    start_ns: int | None = None,
    attrs: dict[str, Any] | None = None,
) -> Span:
    start = start_ns if start_ns is not None else time.time_ns()
    return Span(
        trace_id=trace_id,
        span_id=span_id or new_id(8),
        parent_span_id=parent,
        name=name,
        kind=kind,  # type: ignore[arg-type]
        start_time_unix_nano=start,
        end_time_unix_nano=start + int(duration_ms * 1e6),
        attributes=[kv(k, v) for k, v in (attrs or {}).items()],
        status=Status(code=status),  # type: ignore[arg-type]
    )


def request(service: str, spans: list[Span], resource: dict[str, Any] | None = None) -> ExportTraceServiceRequest:
    rs = ResourceSpans()
    rs.resource.attributes.extend([kv(SERVICE_NAME, service), *(kv(k, v) for k, v in (resource or {}).items())])
    ss = rs.scope_spans.add()
    ss.scope.name = "tests"
    ss.spans.extend(spans)
    return ExportTraceServiceRequest(resource_spans=[rs])


class Exporter:
    """Raw OTLP gRPC Export calls, returning the status code and message the server chose."""

    def __init__(self, endpoint: str) -> None:
        self.channel = grpc.insecure_channel(endpoint)
        self.call = self.channel.unary_unary(
            EXPORT_METHOD,
            request_serializer=lambda m: m.SerializeToString(),
            response_deserializer=lambda b: b,
        )

    def export(self, req: ExportTraceServiceRequest | bytes, timeout: float = 10.0) -> tuple[grpc.StatusCode, str]:
        try:
            if isinstance(req, bytes):
                raw = self.channel.unary_unary(EXPORT_METHOD)
                raw(req, timeout=timeout)
            else:
                self.call(req, timeout=timeout)
        except grpc.RpcError as exc:
            return exc.code(), exc.details() or ""
        return grpc.StatusCode.OK, ""

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
