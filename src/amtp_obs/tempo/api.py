"""Tempo 2.4.1's HTTP API (port 3200) as a Starlette app over a running :class:`TempoApp`."""

from __future__ import annotations

import asyncio
import json
import platform
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from google.protobuf.json_format import MessageToDict
from opentelemetry.proto.trace.v1.trace_pb2 import TracesData
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

from amtp_obs.durations import parse_duration
from amtp_obs.tempo import search as s

if TYPE_CHECKING:
    from amtp_obs.tempo.app import TempoApp

VERSION = "2.4.1-amtp"
PROTOBUF = "application/protobuf"

Handler = Callable[[Request], Awaitable[Response]]


def trace_json(td: TracesData) -> bytes:
    """jsonpb of tempopb.Trace: TracesData's JSON with ``resourceSpans`` renamed ``batches``."""
    doc = MessageToDict(td)
    return json.dumps({"batches": doc.get("resourceSpans", [])}, separators=(",", ":")).encode()


def search_max_duration(query_frontend: dict[str, Any] | None) -> float:
    """``query_frontend.search.max_duration`` in seconds (168h unless set; 0 turns the check off)."""
    raw = ((query_frontend or {}).get("search") or {}).get("max_duration")
    return s.DEFAULT_MAX_SEARCH_DURATION if raw is None else parse_duration(str(raw))


def build_api(tempo: TempoApp) -> Starlette:
    metrics = tempo.metrics
    prefix = tempo.cfg.http_api_prefix.rstrip("/")
    max_search = search_max_duration(tempo.cfg.query_frontend)

    def endpoint(route: str, fn: Handler) -> Handler:
        async def wrapped(request: Request) -> Response:
            t0 = time.perf_counter()
            try:
                resp = await fn(request)
            except s.BadRequest as exc:
                resp = PlainTextResponse(str(exc), status_code=400)
            metrics.request_duration.labels(route, str(resp.status_code)).observe(time.perf_counter() - t0)
            return resp

        return wrapped

    def need_store() -> Response | None:
        if not tempo.ready:
            return PlainTextResponse(f"trace store not ready: {tempo.not_ready_reason}", status_code=503)
        return None

    async def ready(request: Request) -> Response:
        if tempo.ready and tempo.store.storage_error:
            # Reads still work; writes do not (disk full): not ready to take traffic.
            return PlainTextResponse(
                f"Ingester not ready: cannot write storage: {tempo.store.storage_error}", status_code=503
            )
        if tempo.ready:
            return PlainTextResponse("ready")
        return PlainTextResponse(f"Ingester not ready: {tempo.not_ready_reason}", status_code=503)

    async def echo(request: Request) -> Response:
        return PlainTextResponse("echo")

    async def buildinfo(request: Request) -> Response:
        return JSONResponse(
            {
                "version": VERSION,
                "revision": "amtp-obs",
                "branch": "embedded",
                "buildUser": "amtp-obs",
                "buildDate": "",
                "goVersion": f"python{platform.python_version()}",
            }
        )

    async def status_version(request: Request) -> Response:
        return PlainTextResponse(f"tempo, version {VERSION} (branch: embedded, revision: amtp-obs)\n")

    async def prom_metrics(request: Request) -> Response:
        return Response(metrics.exposition(), media_type=CONTENT_TYPE_LATEST)

    async def trace_by_id(request: Request) -> Response:
        # Tempo 2.4.1 answers a trace held by its ingesters whatever the start/end window says
        # (pkg/api/http.go ValidateAndSanitizeRequest only checks the window's order).
        tid = s.parse_trace_id(request.path_params["trace_id"])
        s.trace_time_range(request.query_params)
        if (r := need_store()) is not None:
            return r
        stored = tempo.store.trace(tid)
        if stored is None:
            return PlainTextResponse("trace not found", status_code=404)
        if PROTOBUF in request.headers.get("accept", ""):
            return Response(stored.protobuf(), media_type=PROTOBUF)
        return Response(trace_json(stored.data), media_type="application/json")

    async def search(request: Request) -> Response:
        req = s.parse_search_request(request.query_params)
        s.check_max_duration(request.query_params, max_search)
        if (r := need_store()) is not None:
            return r
        result = await asyncio.to_thread(s.search, tempo.store, req)
        return JSONResponse(result)

    async def tags_v1(request: Request) -> Response:
        s.check_max_duration(request.query_params, max_search)
        return JSONResponse(s.tag_names_v1(tempo.store, request.query_params))

    async def tags_v2(request: Request) -> Response:
        s.check_max_duration(request.query_params, max_search)
        return JSONResponse(s.tag_names_v2(tempo.store, request.query_params))

    async def values_v1(request: Request) -> Response:
        s.check_max_duration(request.query_params, max_search)
        return JSONResponse(s.tag_values_v1(tempo.store, request.path_params["name"], request.query_params))

    async def values_v2(request: Request) -> Response:
        # a ``q`` filter walks the stored traces: off the event loop, like search
        name, params = request.path_params["name"], request.query_params
        s.check_max_duration(params, max_search)
        filtering = tempo.cfg.autocomplete_filtering_enabled
        return JSONResponse(await asyncio.to_thread(s.tag_values_v2, tempo.store, name, params, filtering))

    async def flush(request: Request) -> Response:
        if (r := need_store()) is not None:
            return r
        await tempo.store.cut()
        return Response(status_code=204)

    async def not_found(request: Request, exc: Any) -> Response:
        code = getattr(exc, "status_code", 404)
        if code == 405:
            return PlainTextResponse("405 method not allowed", status_code=405)
        if code == 404:
            return PlainTextResponse("404 page not found", status_code=404)
        return PlainTextResponse(getattr(exc, "detail", "error"), status_code=code)

    async def server_error(request: Request, exc: Exception) -> Response:
        return PlainTextResponse(f"internal error: {type(exc).__name__}", status_code=500)

    routes = [
        Route("/ready", endpoint("ready", ready)),
        Route("/metrics", endpoint("metrics", prom_metrics)),
        Route("/status/version", endpoint("status_version", status_version)),
        Route("/flush", endpoint("flush", flush), methods=["GET", "POST"]),
        Route(f"{prefix}/api/echo", endpoint("api_echo", echo)),
        Route(f"{prefix}/api/status/buildinfo", endpoint("api_status_buildinfo", buildinfo)),
        Route(f"{prefix}/api/traces/{{trace_id}}", endpoint("api_traces_traceid", trace_by_id)),
        Route(f"{prefix}/api/search", endpoint("api_search", search)),
        Route(f"{prefix}/api/search/tags", endpoint("api_search_tags", tags_v1)),
        Route(f"{prefix}/api/v2/search/tags", endpoint("api_v2_search_tags", tags_v2)),
        Route(f"{prefix}/api/search/tag/{{name}}/values", endpoint("api_search_tag_values", values_v1)),
        Route(f"{prefix}/api/v2/search/tag/{{name}}/values", endpoint("api_v2_search_tag_values", values_v2)),
    ]
    return Starlette(routes=routes, exception_handlers={HTTPException: not_found, Exception: server_error})
