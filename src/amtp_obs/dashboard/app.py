"""The dashboard web app (starlette): Grafana's URLs, the provisioned dashboards, a server-side proxy.

Routes (Grafana's where Grafana has one):
  ``/``                                  dashboard list
  ``/d/<uid>`` and ``/d/<uid>/<slug>``   a dashboard (``from``, ``to``, ``var-<name>``, ``refresh``)
  ``/trace/<trace id>``                  span waterfall of one trace
  ``/alerting/list``                     alert states from Prometheus and Alertmanager
  ``/api/health``                        liveness, Grafana's shape
  ``/api/search``                        provisioned dashboards, Grafana's shape
  ``/api/dashboards/uid/<uid>``          the dashboard JSON, Grafana's shape
  ``/api/amtp/dashboards/<uid>/data``    what each panel shows, as JSON (variables, values, errors)
  ``/api/alerts``                        the alert rows shown on the pages, as JSON
  ``/api/datasources``, ``/api/datasources/proxy/uid/<uid>/api/...``   Grafana's datasource proxy
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Mapping
from dataclasses import asdict, dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, PlainTextResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from amtp_obs.dashboard import render
from amtp_obs.dashboard.backends import BackendError
from amtp_obs.dashboard.engine import Engine, PanelError
from amtp_obs.dashboard.model import Dashboard, DashboardStore
from amtp_obs.grafana.datasources import DatasourceError, load_datasources
from amtp_obs.grafana.timerange import TimeRange, TimeRangeError, parse_duration
from amtp_obs.project import DASHBOARDS_DIR, DATASOURCES_DIR, Project

VERSION = "embedded-10.4-compatible"
BACKEND_TIMEOUT = 10.0
_HEX = frozenset("0123456789abcdefABCDEF")
_POST_QUERY = re.compile(r"api/v1/(query|query_range|query_exemplars|series|labels|label/[^/]+/values|format_query)")
"""Prometheus answers these by POST too (Grafana's httpMethod: POST); writes never go through the proxy."""


@dataclass
class DashboardSettings:
    """Where the provisioning files are and where the real backends answer."""

    dashboards_dir: Path
    datasources_dir: Path | None = None
    variables: Mapping[str, str] = field(default_factory=dict)
    prometheus_url: str | None = None
    tempo_url: str | None = None
    alertmanager_url: str | None = None

    @classmethod
    def from_project(cls, project: Project, **urls: str | None) -> DashboardSettings:
        """Read the provisioning of a checkout; ``urls`` override the datasource URLs by type."""
        return cls(
            dashboards_dir=project.path(DASHBOARDS_DIR),
            datasources_dir=project.path(DATASOURCES_DIR),
            variables=project.variables,
            **urls,
        )


def _wants_json(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def _error(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"message": message}, status_code=status)
    return HTMLResponse(render.error_page(status, message), status_code=status)


def create_app(settings: DashboardSettings) -> Starlette:
    """The ASGI app; backend clients live as long as the app (lifespan)."""
    store = DashboardStore(settings.dashboards_dir)
    state: dict[str, Any] = {}
    overrides = {k: v for k, v in (("prometheus", settings.prometheus_url), ("tempo", settings.tempo_url)) if v}

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        async with httpx.AsyncClient(timeout=BACKEND_TIMEOUT) as client:
            state["client"] = client
            yield
        state.clear()

    def engine() -> Engine:
        try:
            datasources = load_datasources(settings.datasources_dir, settings.variables)
        except DatasourceError as exc:
            raise HTTPException(500, f"datasource provisioning cannot be read: {exc}") from None
        return Engine(datasources, state["client"], url_overrides=overrides, alertmanager_url=settings.alertmanager_url)

    def dashboard_or_404(uid: str) -> Dashboard:
        dash = store.get(uid)
        if dash is None:
            known = ", ".join(sorted(store.all())) or "none"
            raise HTTPException(404, f"dashboard with uid {uid!r} not found (provisioned: {known})")
        return dash

    def time_range(request: Request, dash: Dashboard) -> TimeRange:
        default = dash.doc.get("time") or {}
        raw_from = request.query_params.get("from") or str(default.get("from") or "now-6h")
        raw_to = request.query_params.get("to") or str(default.get("to") or "now")
        try:
            return TimeRange.parse(raw_from, raw_to)
        except TimeRangeError as exc:
            raise HTTPException(400, str(exc)) from None

    def refresh_of(request: Request, dash: Dashboard) -> str | None:
        raw = request.query_params.get("refresh")
        value = (dash.doc.get("refresh") or None) if raw is None else (raw or None)
        if value:
            try:
                if parse_duration(str(value)) < 1:
                    raise TimeRangeError("too short")
            except TimeRangeError:
                raise HTTPException(400, f"invalid refresh interval {value!r}: use e.g. 30s, 1m, 5m") from None
        return str(value) if value else None

    def requested_vars(request: Request) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for key, value in request.query_params.multi_items():
            if key.startswith("var-"):
                out.setdefault(key[4:], []).append(value)
        return out

    async def evaluate(request: Request, uid: str) -> tuple[Dashboard, TimeRange, Any, Any, Any, str | None]:
        dash = dashboard_or_404(uid)
        tr = time_range(request, dash)
        refresh = refresh_of(request, dash)
        eng = engine()
        variables = await eng.resolve_variables(dash, requested_vars(request), tr)
        panels = await eng.run_panels(dash, variables, tr)
        alerts = await eng.alerts()
        return dash, tr, variables, panels, alerts, refresh

    async def home(request: Request) -> Response:
        dashboards = sorted(store.all().values(), key=lambda d: d.title.lower())
        return HTMLResponse(render.dashboard_list(dashboards, store.errors))

    async def dashboard(request: Request) -> Response:
        dash, tr, variables, panels, alerts, refresh = await evaluate(request, request.path_params["uid"])
        if request.query_params.get("fragment"):
            return HTMLResponse(render.fragment(dash, tr, variables, panels, alerts, refresh))
        return HTMLResponse(render.dashboard_page(dash, tr, variables, panels, alerts, refresh))

    async def dashboard_data(request: Request) -> Response:
        dash, tr, variables, panels, alerts, refresh = await evaluate(request, request.path_params["uid"])
        return JSONResponse(
            {
                "uid": dash.uid,
                "title": dash.title,
                "time": {
                    "from": tr.raw_from,
                    "to": tr.raw_to,
                    "start": tr.start.isoformat(),
                    "end": tr.end.isoformat(),
                },
                "refresh": refresh,
                "variables": [
                    {
                        "name": v.name,
                        "options": v.options,
                        "current": v.selection.values,
                        "all": v.selection.is_all,
                        "error": v.error,
                    }
                    for v in variables
                ],
                "panels": [p.as_json() for p in panels],
                "alerts": {
                    "rows": [asdict(r) for r in alerts.rows],
                    "errors": alerts.errors,
                    "notes": alerts.notes,
                },
            }
        )

    async def trace(request: Request) -> Response:
        trace_id = request.path_params["trace_id"]
        if not trace_id or len(trace_id) > 32 or not set(trace_id) <= _HEX:
            raise HTTPException(400, f"invalid trace ID {trace_id!r}: expected 1 to 32 hex characters")
        try:
            doc = await engine().default_tempo().trace(trace_id)
        except BackendError as exc:
            status = 404 if exc.status == 404 else (400 if exc.status == 400 else 502)
            raise HTTPException(status, f"trace {trace_id}: {exc}") from None
        except PanelError as exc:
            raise HTTPException(502, str(exc)) from None
        back_uid = request.query_params.get("dashboard")
        back = None
        if back_uid and store.get(back_uid):
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "dashboard"]
            back = f"/d/{back_uid}?" + urlencode(params)
        return HTMLResponse(render.trace_page(trace_id, render.flatten_trace(doc), back))

    async def alerts_page(request: Request) -> Response:
        return HTMLResponse(render.alerts_page(await engine().alerts()))

    async def alerts_api(request: Request) -> Response:
        view = await engine().alerts()
        return JSONResponse({"rows": [asdict(r) for r in view.rows], "errors": view.errors, "notes": view.notes})

    async def health(request: Request) -> Response:
        return JSONResponse({"database": "ok", "version": VERSION, "dashboards": len(store.all())})

    async def search(request: Request) -> Response:
        query = (request.query_params.get("query") or "").lower()
        return JSONResponse(
            [
                {"uid": d.uid, "title": d.title, "url": d.url, "type": "dash-db", "tags": d.tags}
                for d in sorted(store.all().values(), key=lambda d: d.title.lower())
                if query in d.title.lower()
            ]
        )

    async def dashboard_json(request: Request) -> Response:
        dash = dashboard_or_404(request.path_params["uid"])
        return JSONResponse(
            {
                "dashboard": dash.doc,
                "meta": {
                    "slug": dash.slug,
                    "url": dash.url,
                    "provisioned": True,
                    "provisionedExternalId": dash.path.name,
                    "canEdit": False,
                },
            }
        )

    async def datasources(request: Request) -> Response:
        eng = engine()
        return JSONResponse(
            [
                {
                    "uid": ds.uid,
                    "name": ds.name,
                    "type": ds.type,
                    "isDefault": ds.is_default,
                    "url": ds.url,
                    "jsonData": dict(ds.json_data),
                    "readOnly": True,
                }
                for ds in eng.datasources
            ]
        )

    async def proxy(request: Request) -> Response:
        """Grafana's datasource proxy: only the backends' read/query APIs (``api/...``), never admin."""
        uid, path = request.path_params["uid"], request.path_params["path"]
        if not path.startswith("api/") or "/admin/" in f"/{path}" or ".." in path:
            raise HTTPException(403, f"the proxy only forwards query APIs (api/...), not {path!r}")
        if request.method == "POST" and not _POST_QUERY.fullmatch(path):
            raise HTTPException(403, f"the proxy only forwards POST to query endpoints, not {path!r}")
        eng = engine()
        try:
            ds = eng.datasource({"uid": uid})
            base = eng.url_of(ds)
        except PanelError as exc:
            raise HTTPException(404, str(exc)) from None
        body = await request.body()
        headers = {k: v for k, v in request.headers.items() if k.lower() in ("content-type", "accept")}
        try:
            resp = await state["client"].request(
                request.method,
                f"{base.rstrip('/')}/{path}",
                params=request.query_params.multi_items(),
                content=body or None,
                headers=headers,
            )
        except httpx.HTTPError as exc:
            raise HTTPException(502, f"datasource {uid} at {base} is unreachable: {exc!r}") from None
        keep = {k: v for k, v in resp.headers.items() if k.lower() == "content-type"}
        return Response(resp.content, status_code=resp.status_code, headers=keep)

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        return _error(request, exc.status_code, str(exc.detail))

    async def unexpected(request: Request, exc: Exception) -> Response:
        return _error(request, 500, f"internal error: {exc!r}")

    async def favicon(request: Request) -> Response:
        return PlainTextResponse("", status_code=204)

    static_dir = Path(str(files("amtp_obs.dashboard") / "static"))
    routes = [
        Route("/", home),
        Route("/dashboards", home),
        Route("/d/{uid}", dashboard),
        Route("/d/{uid}/{slug}", dashboard),
        Route("/trace/{trace_id}", trace),
        Route("/alerting/list", alerts_page),
        Route("/favicon.ico", favicon),
        Route("/api/health", health),
        Route("/api/search", search),
        Route("/api/dashboards/uid/{uid}", dashboard_json),
        Route("/api/amtp/dashboards/{uid}/data", dashboard_data),
        Route("/api/alerts", alerts_api),
        Route("/api/datasources", datasources),
        Route("/api/datasources/proxy/uid/{uid}/{path:path}", proxy, methods=["GET", "POST"]),
        Mount("/public", app=StaticFiles(directory=static_dir), name="public"),
    ]
    return Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={HTTPException: http_error, Exception: unexpected},
    )
