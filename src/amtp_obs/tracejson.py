"""Tempo 2.4.1's ``/api/traces/{id}`` JSON (``batches``, base64 ids, int64 as strings) -> spans.

Decoded with the OTLP protobuf's own JSON mapping, so ids, int64 values and enums read exactly as
the store wrote them. Used by the verify gate, the dashboard's trace view and the test OTLP sink
(one span record for all of them).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import json_format
from opentelemetry.proto.trace.v1 import trace_pb2

from amtp_obs.otlp import attributes


@dataclass
class Span:
    trace_id: str
    span_id: str
    parent_span_id: str
    name: str
    kind: int
    attributes: dict[str, Any]
    resource: dict[str, Any]
    start_ns: int = 0
    end_ns: int = 0
    status_code: int = 0
    status_message: str = ""
    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    scope: str = ""
    """The instrumentation scope's name."""

    @property
    def kind_name(self) -> str:
        """``SPAN_KIND_CLIENT`` etc., as Tempo's JSON spells it."""
        return trace_pb2.Span.SpanKind.Name(self.kind)  # type: ignore[arg-type]

    @property
    def status_name(self) -> str:
        """``STATUS_CODE_OK`` etc."""
        return trace_pb2.Status.StatusCode.Name(self.status_code)  # type: ignore[arg-type]


def spans_from_tempo_json(doc: dict[str, Any]) -> list[Span]:
    """Spans of a Tempo ``/api/traces/{id}`` answer; OTLP JSON's ``resourceSpans`` reads the same."""
    data = trace_pb2.TracesData()
    batches = doc.get("batches") or doc.get("resourceSpans") or []
    json_format.ParseDict({"resourceSpans": batches}, data, ignore_unknown_fields=True)
    return spans_from_resource_spans(data.resource_spans)


def spans_from_resource_spans(resource_spans: Iterable[trace_pb2.ResourceSpans]) -> list[Span]:
    """Flatten OTLP ``resource_spans`` (of a TracesData or an export request) into spans."""
    out = []
    for rs in resource_spans:
        res = attributes(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(
                    Span(
                        s.trace_id.hex(),
                        s.span_id.hex(),
                        s.parent_span_id.hex(),
                        s.name,
                        s.kind,
                        attributes(s.attributes),
                        res,
                        s.start_time_unix_nano,
                        s.end_time_unix_nano,
                        s.status.code,
                        s.status.message,
                        [(ev.name, attributes(ev.attributes)) for ev in s.events],
                        ss.scope.name,
                    )
                )
    return out
