"""A small OTLP receiver that records what it is sent: for tests and for debugging exporters.

It speaks real OTLP over real sockets (gRPC and HTTP/protobuf or JSON), binds 127.0.0.1 on a free
port by default, and flattens what arrived into plain records that tests can assert on.
"""

from __future__ import annotations

import gzip
import threading
from concurrent import futures
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import grpc
from google.protobuf import json_format
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

from amtp_obs.contract.validate import MetricPoint, points_from_otlp
from amtp_obs.otlp import any_value, attributes, to_key_values
from amtp_obs.tracejson import Span, spans_from_resource_spans

__all__ = ["OtlpSink", "ReceivedPoint", "ReceivedSpan", "any_value", "attributes", "to_key_values"]


ReceivedSpan = Span
"""What :meth:`OtlpSink.spans` returns: the same span record the verify gate reads from Tempo."""

ReceivedPoint = MetricPoint
"""What :meth:`OtlpSink.points` returns: the contract validator's flattened point."""


class OtlpSink:
    """Records OTLP trace and metric exports received over gRPC and HTTP."""

    def __init__(self, host: str = "127.0.0.1", grpc_port: int = 0, http_port: int = 0) -> None:
        self.host = host
        self._lock = threading.RLock()
        self._cond = threading.Condition(self._lock)
        self.trace_requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.metric_requests: list[metrics_service_pb2.ExportMetricsServiceRequest] = []
        self.http_requests: list[tuple[str, str]] = []  # (path, content-type)
        self._grpc_port_req = grpc_port
        self._http_port_req = http_port
        self._grpc_server: grpc.Server | None = None
        self._http_server: ThreadingHTTPServer | None = None
        self.grpc_port = 0
        self.http_port = 0

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> OtlpSink:
        sink = self

        class TraceSvc(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):
                sink._add_traces(request)
                return trace_service_pb2.ExportTraceServiceResponse()

        class MetricsSvc(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request, context):
                sink._add_metrics(request)
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceSvc(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsSvc(), server)
        self.grpc_port = server.add_insecure_port(f"{self.host}:{self._grpc_port_req}")
        server.start()
        self._grpc_server = server

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                req_cls: Any
                if self.path == "/v1/traces":
                    req_cls, add = trace_service_pb2.ExportTraceServiceRequest, sink._add_traces
                elif self.path == "/v1/metrics":
                    req_cls, add = metrics_service_pb2.ExportMetricsServiceRequest, sink._add_metrics
                else:
                    self.send_response(404)
                    self.end_headers()
                    return
                msg = req_cls()
                try:
                    if ctype == "application/json":
                        json_format.Parse(body, msg)
                    else:
                        msg.ParseFromString(body)
                except Exception as exc:
                    self.send_response(400)
                    self.end_headers()
                    self.wfile.write(str(exc).encode())
                    return
                with sink._lock:
                    sink.http_requests.append((self.path, ctype))
                add(msg)
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.end_headers()

        self._http_server = ThreadingHTTPServer((self.host, self._http_port_req), Handler)
        self.http_port = self._http_server.server_address[1]
        threading.Thread(target=self._http_server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()

    def __enter__(self) -> OtlpSink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def grpc_endpoint(self) -> str:
        return f"http://{self.host}:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    # -- recording -------------------------------------------------------------------------
    def _add_traces(self, req: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._cond:
            self.trace_requests.append(req)
            self._cond.notify_all()

    def _add_metrics(self, req: metrics_service_pb2.ExportMetricsServiceRequest) -> None:
        with self._cond:
            self.metric_requests.append(req)
            self._cond.notify_all()

    def wait_for(self, predicate: Any, timeout: float = 10.0) -> bool:
        """Block until ``predicate(self)`` is true or the timeout passes."""
        with self._cond:
            return self._cond.wait_for(lambda: predicate(self), timeout=timeout)

    # -- views -----------------------------------------------------------------------------
    def spans(self) -> list[ReceivedSpan]:
        with self._lock:
            reqs = list(self.trace_requests)
        return [span for req in reqs for span in spans_from_resource_spans(req.resource_spans)]

    def points(self) -> list[ReceivedPoint]:
        with self._lock:
            reqs = list(self.metric_requests)
        return [p for req in reqs for p in points_from_otlp(req)]

    def latest(self, metric: str) -> list[ReceivedPoint]:
        """The most recent point per attribute set for a cumulative metric."""
        latest: dict[tuple, ReceivedPoint] = {}
        for p in self.points():
            if p.metric == metric:
                latest[tuple(sorted(p.attributes.items()))] = p
        return list(latest.values())
