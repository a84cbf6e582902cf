"""Extensions: ``health_check``, ``zpages`` and ``pprof``, on the endpoints the config gives.

``pprof`` cannot serve Go profiles; it serves what a Python process can honestly show:
``/debug/pprof/profile?seconds=N`` samples every thread's stack (``sys._current_frames``) every
10 ms for N seconds (default 30, at most 300) and answers the stacks in collapsed ("folded")
format, one ``frame;frame;frame count`` line per distinct stack (flamegraph.pl / speedscope
input); ``/debug/pprof/goroutine`` dumps the current stacks of all threads and asyncio tasks.
"""

from __future__ import annotations

import asyncio
import collections
import html
import io
import json
import sys
import threading
import time
import traceback
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import parse_qs

from pydantic import Field, model_validator

from amtp_obs.collector import telemetry as tm
from amtp_obs.collector.component import (
    EXTENSION,
    Component,
    ComponentID,
    Factory,
    Host,
    StrictModel,
)
from amtp_obs.collector.config import Duration, HTTPServerConfig, http_server_unsupported
from amtp_obs.httpserver import HttpServer

HEALTH_PORT = 13133
ZPAGES_PORT = 55679
PPROF_PORT = 1777


async def _respond(send: Any, status: int, body: bytes, ctype: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [(b"content-type", ctype.encode()), (b"content-length", str(len(body)).encode())],
        }
    )
    await send({"type": "http.response.body", "body": body})


class _HttpExtension(Component):
    kind = EXTENSION
    default_port = 0

    def __init__(self, cid: ComponentID, config: Any) -> None:
        super().__init__(cid, config)
        self.host: Host | None = None
        self._server: HttpServer | None = None

    async def start(self, host: Host) -> None:
        self.host = host
        self._server = HttpServer(self.app, self.config.endpoint, self.label, self.default_port)
        host.add_listener(str(self.id), "http", await self._server.start())

    async def shutdown(self) -> None:
        if self._server is not None:
            await self._server.stop()
            self._server = None

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        raise NotImplementedError


# ---------------------------------------------------------------------------------------------
# health_check
# ---------------------------------------------------------------------------------------------


def go_duration(seconds: float) -> str:
    """Go ``time.Duration.String`` (``1m2.5s``, ``350ms``) for the ``uptime`` field."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:.6g}ms" if ms >= 1 else f"{seconds * 1e6:.6g}µs"
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    out = f"{int(h)}h" if h else ""
    out += f"{int(m)}m" if h or m else ""
    return out + f"{s:.9f}".rstrip("0").rstrip(".") + "s"


class ResponseBody(StrictModel):
    healthy: str = ""
    unhealthy: str = ""


class CheckCollectorPipeline(StrictModel):
    enabled: bool = False
    interval: Duration = 300.0
    exporter_failure_threshold: int = 5


class HealthCheckConfig(HTTPServerConfig):
    endpoint: str = f"0.0.0.0:{HEALTH_PORT}"
    path: str = "/"
    response_body: ResponseBody | None = None
    check_collector_pipeline: CheckCollectorPipeline = Field(default_factory=CheckCollectorPipeline)

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.path.startswith("/"):
            raise ValueError('"path" must start with "/"')
        return self


class HealthCheck(_HttpExtension):
    """200 ``Server available`` once every pipeline has started, 503 before and while stopping."""

    default_port = HEALTH_PORT

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] != self.config.path:
            await _respond(send, 404, b"404 page not found\n", "text/plain; charset=utf-8")
            return
        assert self.host is not None
        ready = self.host.ready
        rb = self.config.response_body
        if rb is not None:
            body = (rb.healthy if ready else rb.unhealthy).encode()
        else:
            started = self.host.started_at
            doc = {
                "status": "Server available" if ready else "Server not available",
                "upSince": datetime.fromtimestamp(started, UTC).isoformat().replace("+00:00", "Z")
                if ready and started
                else "0001-01-01T00:00:00Z",
                "uptime": go_duration(time.time() - started) if ready and started else "",
            }
            body = json.dumps(doc, separators=(",", ":")).encode()
        await _respond(send, 200 if ready else 503, body, "application/json")


# ---------------------------------------------------------------------------------------------
# zpages
# ---------------------------------------------------------------------------------------------


class ZPagesConfig(HTTPServerConfig):
    endpoint: str = f"localhost:{ZPAGES_PORT}"


_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:sans-serif}}table{{border-collapse:collapse}}
td,th{{border:1px solid #999;padding:2px 8px}}</style>
</head><body><h1>{title}</h1>{body}</body></html>"""


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in r) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


class ZPages(_HttpExtension):
    """What this collector can truly show: its components, pipelines and live self-metrics."""

    default_port = ZPAGES_PORT

    def _page(self, path: str) -> str | None:
        assert self.host is not None
        h = self.host
        if path == "/debug/servicez":
            rows = [
                ["status", "ready" if h.ready else "not ready"],
                [
                    "start time",
                    datetime.fromtimestamp(h.started_at, UTC).isoformat() if h.started_at else "-",
                ],
                ["uptime", go_duration(time.time() - h.started_at) if h.started_at else "-"],
                ["python", sys.version.split()[0]],
                ["collector", tm.SERVICE_NAME],
                ["instance id", h.telemetry.instance_id],
            ]
            links = "".join(
                f'<li><a href="{p}">{p}</a></li>'
                for p in ("/debug/pipelinez", "/debug/extensionz", "/debug/featurez", "/debug/tracez")
            )
            return _PAGE.format(title="Service", body=_table(["property", "value"], rows) + f"<ul>{links}</ul>")
        if path == "/debug/pipelinez":
            rows = [
                [
                    pid,
                    ", ".join(p["receivers"]),
                    " → ".join(p["processors"]) or "-",
                    ", ".join(p["exporters"]),
                ]
                for pid, p in sorted(h.pipelines.items())
            ]
            return _PAGE.format(
                title="Pipelines", body=_table(["pipeline", "receivers", "processors", "exporters"], rows)
            )
        if path == "/debug/extensionz":
            return _PAGE.format(title="Extensions", body=_table(["extension"], [[e] for e in h.extensions]))
        if path == "/debug/featurez":
            return _PAGE.format(
                title="Feature gates",
                body=_table(
                    ["gate", "enabled", "note"],
                    [
                        [
                            "pkg.translator.prometheus.NormalizeName",
                            "true",
                            "metric names get unit and _total suffixes (beta in 0.100.0)",
                        ]
                    ],
                ),
            )
        if path == "/debug/tracez":
            snap = h.telemetry.snapshot()
            rows = [
                [name, ", ".join(f"{k}={v}" for k, v in labels), f"{value:g}"]
                for name, series in sorted(snap.items())
                for labels, value in sorted(series.items())
                if name.startswith(("otelcol_receiver", "otelcol_exporter", "otelcol_processor"))
            ]
            note = (
                "<p>This collector does not trace itself; these are the per-component counts "
                "of accepted, refused, sent and failed items since start.</p>"
            )
            return _PAGE.format(title="Component activity", body=note + _table(["metric", "component", "value"], rows))
        return None

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        page = self._page(scope["path"].rstrip("/") or "/")
        if page is None:
            await _respond(send, 404, b"404 page not found\n", "text/plain; charset=utf-8")
        else:
            await _respond(send, 200, page.encode(), "text/html; charset=utf-8")


# ---------------------------------------------------------------------------------------------
# pprof
# ---------------------------------------------------------------------------------------------


class PprofConfig(StrictModel):
    endpoint: str = f"localhost:{PPROF_PORT}"
    block_profile_fraction: int = 0
    mutex_profile_fraction: int = 0
    save_to_file: str = ""


SAMPLE_INTERVAL = 0.01
MAX_PROFILE_SECONDS = 300


def _frame_name(code: Any) -> str:
    module = code.co_filename.rsplit("/", 1)[-1]
    return f"{module}:{code.co_qualname if hasattr(code, 'co_qualname') else code.co_name}"


def sample_stacks(seconds: float, interval: float = SAMPLE_INTERVAL) -> collections.Counter[str]:
    """Sample all other threads' stacks for ``seconds``; returns folded stack -> count."""
    me = threading.get_ident()
    names = {t.ident: t.name for t in threading.enumerate()}
    counts: collections.Counter[str] = collections.Counter()
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        for tid, frame in sys._current_frames().items():
            if tid == me:
                continue
            stack = []
            f: Any = frame
            while f is not None:
                stack.append(_frame_name(f.f_code))
                f = f.f_back
            stack.append(f"thread:{names.get(tid, tid)}")
            counts[";".join(reversed(stack))] += 1
        time.sleep(interval)
    return counts


def dump_stacks() -> str:
    out = io.StringIO()
    names = {t.ident: t.name for t in threading.enumerate()}
    for tid, frame in sys._current_frames().items():
        out.write(f"thread {names.get(tid, tid)} ({tid}):\n")
        out.write("".join(traceback.format_stack(frame)))
        out.write("\n")
    try:
        tasks = asyncio.all_tasks()
    except RuntimeError:
        tasks = set()
    for task in tasks:
        out.write(f"asyncio task {task.get_name()}: {task.get_coro()!r}\n")
        for frame in task.get_stack():
            out.write(f"  {frame.f_code.co_filename}:{frame.f_lineno} {frame.f_code.co_name}\n")
    return out.getvalue()


_PPROF_INDEX = """<html><head><title>/debug/pprof/</title></head><body><h1>/debug/pprof/</h1>
<p>Python process {pid}. Profiles:</p><ul>
<li><a href="profile?seconds=5">profile</a>: sampled stacks of all threads, collapsed ("folded") format;
 ?seconds=N (default 30, max {max})</li>
<li><a href="goroutine">goroutine</a>: current stacks of all threads and asyncio tasks</li>
</ul></body></html>"""


class Pprof(_HttpExtension):
    default_port = PPROF_PORT

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        path = scope["path"]
        if path in ("/debug/pprof", "/debug/pprof/"):
            import os

            body = _PPROF_INDEX.format(pid=os.getpid(), max=MAX_PROFILE_SECONDS).encode()
            await _respond(send, 200, body, "text/html; charset=utf-8")
        elif path == "/debug/pprof/profile":
            query = parse_qs(scope.get("query_string", b"").decode())
            raw = query.get("seconds", ["30"])[0]
            try:
                seconds = float(raw)
                if not 0 < seconds <= MAX_PROFILE_SECONDS:
                    raise ValueError
            except ValueError:
                msg = f"bad seconds={raw!r}: must be a number in (0, {MAX_PROFILE_SECONDS}]\n"
                await _respond(send, 400, msg.encode(), "text/plain; charset=utf-8")
                return
            counts = await asyncio.to_thread(sample_stacks, seconds)
            body = "".join(f"{stack} {n}\n" for stack, n in counts.most_common()).encode()
            await _respond(send, 200, body, "text/plain; charset=utf-8")
        elif path == "/debug/pprof/goroutine":
            await _respond(send, 200, dump_stacks().encode(), "text/plain; charset=utf-8")
        else:
            await _respond(send, 404, b"404 page not found\n", "text/plain; charset=utf-8")


HEALTH_CHECK_FACTORY = Factory(
    EXTENSION,
    "health_check",
    HealthCheckConfig,
    lambda cid, cfg: HealthCheck(cid, cfg),
    unsupported=lambda cfg: (
        http_server_unsupported(cfg, "health_check")
        + (["check_collector_pipeline"] if cfg.check_collector_pipeline.enabled else [])
    ),
)
"""The ``health_check`` extension."""
ZPAGES_FACTORY = Factory(
    EXTENSION,
    "zpages",
    ZPagesConfig,
    lambda cid, cfg: ZPages(cid, cfg),
    unsupported=lambda cfg: http_server_unsupported(cfg, "zpages"),
)
"""The ``zpages`` extension."""
PPROF_FACTORY = Factory(
    EXTENSION,
    "pprof",
    PprofConfig,
    lambda cid, cfg: Pprof(cid, cfg),
    unsupported=lambda cfg: ["save_to_file"] if cfg.save_to_file else [],
)
"""The ``pprof`` extension."""
