"""The ``otlp`` receiver: OTLP over gRPC and over HTTP (protobuf or JSON), as collector 0.100.0.

Status mapping follows ``receiver/otlpreceiver``: a temporary refusal (memory limiter) is gRPC
UNAVAILABLE / HTTP 503, a permanent one INTERNAL / 500, undecodable bodies 400 with a
``google.rpc.Status`` body in the request's encoding. Bodies over ``max_request_body_size``
(default 20 MiB) get 413 (0.100.0 itself answers 400 there; 413 is what the status means).
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import re
import zlib
from typing import Any, Self

import cramjam
import grpc
from google.protobuf import json_format
from google.protobuf.message import DecodeError
from google.rpc import code_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc
from pydantic import Field, model_validator
from starlette.middleware.cors import CORSMiddleware

from amtp_obs.collector import telemetry as tm
from amtp_obs.collector.component import (
    RECEIVER,
    Component,
    ComponentID,
    Consumer,
    ConsumerError,
    Factory,
    Host,
    StrictModel,
)
from amtp_obs.collector.config import (
    GRPCServerConfig,
    HTTPServerConfig,
    http_server_unsupported,
)
from amtp_obs.collector.signals import LOGS, METRICS, SIGNALS, TRACES, Signal
from amtp_obs.httpserver import HttpServer, StartError
from amtp_obs.net import join_host_port, split_endpoint

log = logging.getLogger(__name__)

PB_CONTENT_TYPE = "application/x-protobuf"
JSON_CONTENT_TYPE = "application/json"
DEFAULT_MAX_BODY = 20 * 1024 * 1024
"""confighttp's default ``max_request_body_size`` (20 MiB)."""
GRPC_PORT = 4317
HTTP_PORT = 4318


class GRPCProtocol(GRPCServerConfig):
    endpoint: str = f"0.0.0.0:{GRPC_PORT}"


class HTTPProtocol(HTTPServerConfig):
    endpoint: str = f"0.0.0.0:{HTTP_PORT}"
    traces_url_path: str = "/v1/traces"
    metrics_url_path: str = "/v1/metrics"
    logs_url_path: str = "/v1/logs"


class Protocols(StrictModel):
    grpc: GRPCProtocol | None = None
    http: HTTPProtocol | None = None

    @model_validator(mode="before")
    @classmethod
    def _present_means_enabled(cls, data: Any) -> Any:
        """``grpc:`` with no value enables the protocol with defaults, as in the collector."""
        if isinstance(data, dict):
            return {k: ({} if v is None else v) for k, v in data.items()}
        return data


class OTLPReceiverConfig(StrictModel):
    protocols: Protocols = Field(default_factory=Protocols)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.protocols.grpc is None and self.protocols.http is None:
            raise ValueError("must specify at least one protocol when using the OTLP receiver")
        return self


def _unsupported(cfg: OTLPReceiverConfig) -> list[str]:
    out: list[str] = []
    g, h = cfg.protocols.grpc, cfg.protocols.http
    if g is not None:
        if g.tls is not None:
            out.append("protocols.grpc.tls")
        if g.auth is not None:
            out.append("protocols.grpc.auth")
        if g.transport not in ("tcp", "tcp4", "tcp6"):
            out.append(f"protocols.grpc.transport {g.transport!r}")
    if h is not None:
        out += http_server_unsupported(h, "protocols.http")
    return out


# ---------------------------------------------------------------------------------------------
# OTLP/JSON: ids are hex strings (OTLP spec), protobuf JSON mapping expects base64
# ---------------------------------------------------------------------------------------------

_ID_LEN = {"traceId": 16, "trace_id": 16, "spanId": 8, "span_id": 8, "parentSpanId": 8, "parent_span_id": 8}


def _fix_ids(obj: dict[str, Any], where: str) -> None:
    for key, size in _ID_LEN.items():
        value = obj.get(key)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise ValueError(f"{where}.{key}: must be a hex string")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"{where}.{key}: {value!r} is not hex") from None
        if len(raw) != size:
            raise ValueError(f"{where}.{key}: expected {size * 2} hex characters, got {len(value)}")
        obj[key] = base64.b64encode(raw).decode()


def _items(obj: dict[str, Any], *keys: str) -> list[Any]:
    for k in keys:
        v = obj.get(k)
        if isinstance(v, list):
            return v
    return []


def _fix_json_ids(signal: Signal, doc: Any) -> None:
    if not isinstance(doc, dict):
        raise ValueError("top level must be a JSON object")
    if signal is TRACES:
        for rs in _items(doc, "resourceSpans", "resource_spans"):
            for ss in _items(rs, "scopeSpans", "scope_spans"):
                for i, span in enumerate(_items(ss, "spans")):
                    if isinstance(span, dict):
                        _fix_ids(span, f"spans[{i}]")
                        for link in _items(span, "links"):
                            if isinstance(link, dict):
                                _fix_ids(link, f"spans[{i}].links")
    elif signal is METRICS:
        for rm in _items(doc, "resourceMetrics", "resource_metrics"):
            for sm in _items(rm, "scopeMetrics", "scope_metrics"):
                for m in _items(sm, "metrics"):
                    if not isinstance(m, dict):
                        continue
                    for kind in (
                        "sum",
                        "gauge",
                        "histogram",
                        "exponentialHistogram",
                        "exponential_histogram",
                    ):
                        data = m.get(kind)
                        if isinstance(data, dict):
                            for dp in _items(data, "dataPoints", "data_points"):
                                for ex in _items(dp, "exemplars") if isinstance(dp, dict) else []:
                                    if isinstance(ex, dict):
                                        _fix_ids(ex, f"metric {m.get('name', '')!r} exemplar")
    else:
        for rl in _items(doc, "resourceLogs", "resource_logs"):
            for sl in _items(rl, "scopeLogs", "scope_logs"):
                for i, rec in enumerate(_items(sl, "logRecords", "log_records")):
                    if isinstance(rec, dict):
                        _fix_ids(rec, f"logRecords[{i}]")


def decode_request(signal: Signal, body: bytes, content_type: str) -> Any:
    """Parse an OTLP body; raises ``ValueError`` with a message naming what is wrong."""
    msg = signal.request_cls()
    if content_type == JSON_CONTENT_TYPE:
        try:
            doc = json.loads(body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
        _fix_json_ids(signal, doc)
        try:
            json_format.ParseDict(doc, msg, ignore_unknown_fields=True)
        except (json_format.ParseError, TypeError, ValueError) as exc:
            raise ValueError(f"invalid OTLP JSON: {exc}") from None
        return msg
    try:
        msg.ParseFromString(body)
    except (DecodeError, RuntimeWarning, ValueError) as exc:
        raise ValueError(f"invalid protobuf body: {exc or 'Error parsing message'}") from None
    return msg


def encode_message(msg: Any, content_type: str) -> bytes:
    if content_type == JSON_CONTENT_TYPE:
        return json_format.MessageToJson(msg, indent=None).encode()
    return msg.SerializeToString()


class BodyTooLarge(Exception):
    pass


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding`` (gzip, deflate, zstd, snappy) with the body-size limit applied."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    try:
        if enc in ("gzip", "x-gzip", "deflate"):
            d = zlib.decompressobj(16 + zlib.MAX_WBITS if enc != "deflate" else zlib.MAX_WBITS)
            out = d.decompress(body, limit + 1)
            if len(out) > limit:
                raise BodyTooLarge
            if not d.eof:
                raise ValueError("unexpected EOF")
            return out
        if enc == "zstd":
            out = bytes(cramjam.zstd.decompress(body))
        elif enc == "snappy":
            out = bytes(cramjam.snappy.decompress(body))
        else:
            raise ValueError(f"unsupported Content-Encoding: {encoding}")
    except (zlib.error, cramjam.DecompressionError) as exc:
        raise ValueError(f"cannot decompress {enc} body: {exc}") from None
    if len(out) > limit:
        raise BodyTooLarge
    return out


def status_body(code: int, message: str, content_type: str) -> bytes:
    return encode_message(status_pb2.Status(code=code, message=message), content_type)


# ---------------------------------------------------------------------------------------------
# The receiver
# ---------------------------------------------------------------------------------------------


class OTLPReceiver(Component):
    kind = RECEIVER

    def __init__(self, cid: ComponentID, config: OTLPReceiverConfig) -> None:
        super().__init__(cid, config)
        self.consumers: dict[str, list[Consumer]] = {}
        self.host: Host | None = None
        self._grpc: grpc.aio.Server | None = None
        self._http: HttpServer | None = None
        self._paths: dict[str, Signal] = {}

    def add_consumer(self, signal: Signal, consumer: Consumer) -> None:
        self.consumers.setdefault(signal.name, []).append(consumer)

    async def push(self, signal: Signal, req: Any, transport: str) -> None:
        """Hand a request to every pipeline of its signal; raises :class:`ConsumerError` on refusal."""
        consumers = self.consumers.get(signal.name)
        if not consumers:
            return
        assert self.host is not None
        n = signal.count(req)
        labels = {"receiver": str(self.id), "transport": transport}
        try:
            last = len(consumers) - 1
            for i, consumer in enumerate(consumers):
                if i == last:
                    await consumer.consume(signal, req)
                else:
                    clone = signal.request_cls()
                    clone.CopyFrom(req)
                    await consumer.consume(signal, clone)
        except ConsumerError:
            self.host.telemetry.add(tm.metric_name(tm.RECEIVER_REFUSED, signal.item_noun), n, **labels)
            raise
        except Exception as exc:
            self.host.telemetry.add(tm.metric_name(tm.RECEIVER_REFUSED, signal.item_noun), n, **labels)
            log.exception("%s: pipeline error", self.label)
            raise ConsumerError(str(exc)) from exc
        self.host.telemetry.add(tm.metric_name(tm.RECEIVER_ACCEPTED, signal.item_noun), n, **labels)

    async def start(self, host: Host) -> None:
        self.host = host
        cfg: OTLPReceiverConfig = self.config
        # Like obsreport, which records accepted and refused on every call: series exist from the start.
        for name in self.signals:
            noun = SIGNALS[name].item_noun
            for transport, proto in (("grpc", cfg.protocols.grpc), ("http", cfg.protocols.http)):
                if proto is not None:
                    for template in (tm.RECEIVER_ACCEPTED, tm.RECEIVER_REFUSED):
                        host.telemetry.add(
                            tm.metric_name(template, noun), 0, receiver=str(self.id), transport=transport
                        )
        if cfg.protocols.grpc is not None:
            await self._start_grpc(host, cfg.protocols.grpc)
        if cfg.protocols.http is not None:
            try:
                await self._start_http(host, cfg.protocols.http)
            except BaseException:
                await self.shutdown()
                raise

    # -- gRPC ----------------------------------------------------------------------------------
    async def _start_grpc(self, host: Host, g: GRPCProtocol) -> None:
        options: list[tuple[str, Any]] = [("grpc.so_reuseport", 0)]
        if g.max_recv_msg_size_mib > 0:
            options.append(("grpc.max_receive_message_length", g.max_recv_msg_size_mib * 1024 * 1024))
        if g.max_concurrent_streams > 0:
            options.append(("grpc.max_concurrent_streams", g.max_concurrent_streams))
        server = grpc.aio.server(options=options)
        receiver = self

        async def export(signal: Signal, request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                await receiver.push(signal, request, "grpc")
            except ConsumerError as exc:
                code = grpc.StatusCode.INTERNAL if exc.permanent else grpc.StatusCode.UNAVAILABLE
                await context.abort(code, str(exc))
            return signal.response_cls()

        class TraceSvc(trace_service_pb2_grpc.TraceServiceServicer):
            async def Export(self, request: Any, context: Any) -> Any:
                return await export(TRACES, request, context)

        class MetricsSvc(metrics_service_pb2_grpc.MetricsServiceServicer):
            async def Export(self, request: Any, context: Any) -> Any:
                return await export(METRICS, request, context)

        class LogsSvc(logs_service_pb2_grpc.LogsServiceServicer):
            async def Export(self, request: Any, context: Any) -> Any:
                return await export(LOGS, request, context)

        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(TraceSvc(), server)
        metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(MetricsSvc(), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(LogsSvc(), server)
        where = f"{self.label} (grpc)"
        try:
            h, p = split_endpoint(g.endpoint, GRPC_PORT)
        except ValueError as exc:
            raise StartError(f"{where}: {exc}") from None
        target = join_host_port(h, p)
        try:
            port = server.add_insecure_port(target)
        except RuntimeError as exc:
            raise StartError(f"{where}: cannot listen on {g.endpoint}: {exc}") from None
        if not port:
            raise StartError(f"{where}: cannot listen on {g.endpoint}")
        await server.start()
        self._grpc = server
        host.add_listener(str(self.id), "grpc", (h, port))
        log.info("%s: gRPC listening on %s:%d", self.label, h, port)

    # -- HTTP ----------------------------------------------------------------------------------
    async def _start_http(self, host: Host, h: HTTPProtocol) -> None:
        self._paths = {h.traces_url_path: TRACES, h.metrics_url_path: METRICS, h.logs_url_path: LOGS}
        limit = h.max_request_body_size or DEFAULT_MAX_BODY
        app: Any = _HttpApp(self, limit)
        if h.cors is not None and h.cors.allowed_origins:
            patterns = [".*" if o == "*" else re.escape(o).replace(r"\*", ".*") for o in h.cors.allowed_origins]
            app = CORSMiddleware(
                app,
                allow_origin_regex="^(?:" + "|".join(patterns) + ")$",
                allow_methods=["POST"],
                allow_headers=h.cors.allowed_headers or ["Origin", "Accept", "Content-Type", "X-Requested-With"],
                allow_credentials=True,
                max_age=h.cors.max_age or 600,
            )
        self._http = HttpServer(app, h.endpoint, f"{self.label} (http)", HTTP_PORT)
        address = await self._http.start()
        host.add_listener(str(self.id), "http", address)
        log.info("%s: HTTP listening on %s:%d", self.label, *address)

    async def shutdown(self) -> None:
        http, grpc_server = self._http, self._grpc
        self._http = self._grpc = None
        await asyncio.gather(
            http.stop() if http is not None else asyncio.sleep(0),
            grpc_server.stop(grace=2) if grpc_server is not None else asyncio.sleep(0),
        )


async def _send(send: Any, status: int, body: bytes, content_type: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", content_type.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _HttpApp:
    """Raw ASGI app: routing, limits and encodings are few and need exact status codes."""

    def __init__(self, receiver: OTLPReceiver, limit: int) -> None:
        self.receiver = receiver
        self.limit = limit

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        signal = self.receiver._paths.get(scope["path"])
        if signal is None:
            await _send(send, 404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        if scope["method"] != "POST":
            await _send(send, 405, b"405 method not allowed, supported: [POST]", "text/plain")
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        ctype = headers.get("content-type", "").split(";")[0].strip().lower()
        if ctype not in (PB_CONTENT_TYPE, JSON_CONTENT_TYPE):
            msg = f"415 unsupported media type, supported: [{JSON_CONTENT_TYPE}, {PB_CONTENT_TYPE}]"
            await _send(send, 415, msg.encode(), "text/plain")
            return
        try:
            body = await self._read_body(headers, receive)
            body = decompress(body, headers.get("content-encoding", ""), self.limit)
        except BodyTooLarge:
            msg = f"request body too large: the limit is {self.limit} bytes (max_request_body_size)"
            await _send(send, 413, status_body(code_pb2.INVALID_ARGUMENT, msg, ctype), ctype)
            return
        except ValueError as exc:
            await _send(send, 400, status_body(code_pb2.INVALID_ARGUMENT, str(exc), ctype), ctype)
            return
        try:
            req = decode_request(signal, body, ctype)
        except ValueError as exc:
            await _send(send, 400, status_body(code_pb2.INVALID_ARGUMENT, str(exc), ctype), ctype)
            return
        try:
            await self.receiver.push(signal, req, "http")
        except ConsumerError as exc:
            status, code = (500, code_pb2.INTERNAL) if exc.permanent else (503, code_pb2.UNAVAILABLE)
            await _send(send, status, status_body(code, str(exc), ctype), ctype)
            return
        await _send(send, 200, encode_message(signal.response_cls(), ctype), ctype)

    async def _read_body(self, headers: dict[str, str], receive: Any) -> bytes:
        declared = headers.get("content-length")
        if declared is not None:
            try:
                if int(declared) > self.limit:
                    raise BodyTooLarge
            except ValueError:
                raise ValueError(f"invalid Content-Length {declared!r}") from None
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise ValueError("client disconnected")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


FACTORY = Factory(
    RECEIVER,
    "otlp",
    OTLPReceiverConfig,
    lambda cid, cfg: OTLPReceiver(cid, cfg),
    unsupported=_unsupported,
)
"""The ``otlp`` receiver (listed in amtp_obs.collector.components)."""

__all__ = ["JSON_CONTENT_TYPE", "PB_CONTENT_TYPE", "OTLPReceiver", "OTLPReceiverConfig"]
