"""Helpers: the project's collector YAML rendered onto free loopback ports, plus an OTLP sink.

Only addresses (and the batch timeout, to keep tests fast) are rewritten; every other setting is
the project file's own, read through :class:`amtp_obs.project.Project`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from amtp_obs.collector.component import ComponentID
from amtp_obs.project import COLLECTOR_CONFIG, Project
from amtp_obs.testing.otlp_sink import OtlpSink

LOOPBACK_ANY = "127.0.0.1:0"


def project_config() -> dict[str, Any]:
    return Project.discover().load_yaml(COLLECTOR_CONFIG)


def render(doc: dict[str, Any], sink_endpoint: str, batch_timeout: str = "100ms") -> dict[str, Any]:
    """A copy with every listener on 127.0.0.1:0 and every otlp exporter aimed at ``sink_endpoint``."""
    out = copy.deepcopy(doc)
    for section in ("extensions", "exporters"):
        for cid, cfg in (out.get(section) or {}).items():
            if not isinstance(cfg, dict):
                continue
            if section == "exporters" and ComponentID.parse(cid).type == "otlp":
                cfg["endpoint"] = sink_endpoint
            elif "endpoint" in cfg:
                cfg["endpoint"] = LOOPBACK_ANY
    for cfg in (out.get("receivers") or {}).values():
        for proto in ((cfg or {}).get("protocols") or {}).values():
            if isinstance(proto, dict):
                proto["endpoint"] = LOOPBACK_ANY
    for cid, cfg in (out.get("processors") or {}).items():
        if ComponentID.parse(cid).type == "batch" and isinstance(cfg, dict):
            cfg["timeout"] = batch_timeout
    telemetry = out.setdefault("service", {}).setdefault("telemetry", {})
    telemetry.setdefault("metrics", {})["address"] = LOOPBACK_ANY
    return out


def find_id(doc: dict[str, Any], section: str, type_: str) -> str:
    """The id (``type/name``) of the first component of ``type_`` in ``section``."""
    for cid in doc[section]:
        if ComponentID.parse(cid).type == type_:
            return cid
    raise AssertionError(f"no {type_} in {section}")


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> bool:
    """Poll ``predicate`` without blocking the event loop the collector runs on."""
    import asyncio
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        await asyncio.sleep(0.02)
    return predicate()


def sink_span_count(sink: OtlpSink) -> int:
    """Spans received so far (reads the request list directly: ``OtlpSink.wait_for`` predicates
    must not call ``spans()``, which takes the same non-reentrant lock)."""
    return sum(len(ss.spans) for req in list(sink.trace_requests) for rs in req.resource_spans for ss in rs.scope_spans)
