"""HTTP clients for the real backends: Prometheus's query API, Tempo's search API, Alertmanager's v2 API.

The browser never talks to these; the dashboard server does, and turns any failure into a
:class:`BackendError` whose message is shown inside the panel that needed the data.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import httpx


class BackendError(Exception):
    """A backend answered with an error or could not be reached; the message is for the user."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip()[:500] or resp.reason_phrase
    if isinstance(body, dict):
        return str(body.get("error") or body.get("message") or body)[:500]
    return str(body)[:500]


class _Client:
    name = "backend"

    def __init__(self, base_url: str, client: httpx.AsyncClient) -> None:
        self.base_url = base_url.rstrip("/")
        self.client = client

    async def _get(self, path: str, params: Any = None) -> httpx.Response:
        try:
            resp = await self.client.get(self.base_url + path, params=params)
        except httpx.HTTPError as exc:
            raise BackendError(f"{self.name} at {self.base_url} is unreachable: {exc!r}") from None
        if resp.status_code >= 400:
            raise BackendError(f"{self.name} answered {resp.status_code}: {_message(resp)}", resp.status_code)
        return resp

    async def _post_form(self, path: str, data: dict[str, str]) -> httpx.Response:
        try:
            resp = await self.client.post(self.base_url + path, data=data)
        except httpx.HTTPError as exc:
            raise BackendError(f"{self.name} at {self.base_url} is unreachable: {exc!r}") from None
        if resp.status_code >= 400:
            raise BackendError(f"{self.name} answered {resp.status_code}: {_message(resp)}", resp.status_code)
        return resp


class PrometheusClient(_Client):
    name = "Prometheus"

    async def _api(self, path: str, data: dict[str, str]) -> Any:
        resp = await self._post_form(path, data)
        body = resp.json()
        if body.get("status") != "success":
            raise BackendError(f"Prometheus: {body.get('errorType', 'error')}: {body.get('error', body)}")
        return body.get("data")

    async def instant(self, expr: str, at: datetime) -> dict[str, Any]:
        return await self._api("/api/v1/query", {"query": expr, "time": f"{at.timestamp():.3f}"})

    async def range(self, expr: str, start: float, end: float, step: float) -> dict[str, Any]:
        return await self._api(
            "/api/v1/query_range",
            {"query": expr, "start": f"{start:.3f}", "end": f"{end:.3f}", "step": f"{step:g}"},
        )

    async def label_values(self, label: str, match: str | None, start: datetime, end: datetime) -> list[str]:
        params: list[tuple[str, str]] = [
            ("start", f"{start.timestamp():.3f}"),
            ("end", f"{end.timestamp():.3f}"),
        ]
        if match:
            params.append(("match[]", match))
        body = (await self._get(f"/api/v1/label/{label}/values", params)).json()
        if body.get("status") != "success":
            raise BackendError(f"Prometheus: {body.get('error', body)}")
        return [str(v) for v in body.get("data") or []]

    async def label_names(self, match: str | None, start: datetime, end: datetime) -> list[str]:
        params: list[tuple[str, str]] = [
            ("start", f"{start.timestamp():.3f}"),
            ("end", f"{end.timestamp():.3f}"),
        ]
        if match:
            params.append(("match[]", match))
        body = (await self._get("/api/v1/labels", params)).json()
        return [str(v) for v in body.get("data") or []]

    async def alerts(self) -> list[dict[str, Any]]:
        body = (await self._get("/api/v1/alerts")).json()
        return list((body.get("data") or {}).get("alerts") or [])

    async def rules(self) -> list[dict[str, Any]]:
        body = (await self._get("/api/v1/rules", {"type": "alert"})).json()
        return list((body.get("data") or {}).get("groups") or [])


class TempoClient(_Client):
    name = "Tempo"

    async def search(self, query: str, limit: int, start: datetime, end: datetime, spss: int | None = None) -> Any:
        """Tempo takes whole seconds: round the range outwards so a trace from this second is found."""
        params = {
            "q": query,
            "limit": str(limit),
            "start": str(math.floor(start.timestamp())),
            "end": str(math.ceil(end.timestamp())),
        }
        if spss:
            params["spss"] = str(spss)
        return (await self._get("/api/search", params)).json()

    async def trace(self, trace_id: str) -> Any:
        return (await self._get(f"/api/traces/{trace_id}", None)).json()


class AlertmanagerClient(_Client):
    name = "Alertmanager"

    async def alerts(self) -> list[dict[str, Any]]:
        return list((await self._get("/api/v2/alerts")).json())

    async def status(self) -> dict[str, Any]:
        return dict((await self._get("/api/v2/status")).json())

    async def silences(self) -> list[dict[str, Any]]:
        return list((await self._get("/api/v2/silences")).json())
