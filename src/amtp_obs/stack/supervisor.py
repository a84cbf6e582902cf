"""Start, stop and inspect the embedded stack's processes (what :mod:`amtp_obs.stack.planning` planned).

``spawn()``, ``running()`` and ``stop_all()`` act on the processes recorded in the state dir.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

import httpx

from amtp_obs.project import SERVICE_COLLECTOR, SERVICE_GRAFANA, SERVICE_PROMETHEUS, SERVICE_TEMPO, Project
from amtp_obs.stack.planning import ServicePlan
from amtp_obs.stack.state import (
    Layout,
    ProcessRecord,
    process_cmdline,
    process_start_time,
    records,
    stop_record,
)

READY_TIMEOUT_S = {
    SERVICE_COLLECTOR: 30.0,
    SERVICE_TEMPO: 60.0,
    SERVICE_PROMETHEUS: 30.0,
    SERVICE_GRAFANA: 30.0,
}
DEFAULT_READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0


# ------------------------------------------------------------------------------------------------
# Running
# ------------------------------------------------------------------------------------------------


def running(layout: Layout) -> dict[str, ProcessRecord]:
    """Recorded services whose process is still the one ``up`` started."""
    return {r.service: r for r in records(layout) if r.matches()}


def spawn(sp: ServicePlan, layout: Layout, environ: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Start one service in its own session (process group), output appended to its log."""
    log_path = layout.log(sp.name)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        log.write(f"\n==> {time.strftime('%Y-%m-%dT%H:%M:%S')} amtp-obs up: {' '.join(sp.argv)}\n".encode())
        log.flush()
        proc = subprocess.Popen(
            sp.argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=str(layout.root),
            env=environ,
        )
    ProcessRecord(
        sp.name,
        proc.pid,
        process_start_time(proc.pid),
        process_cmdline(proc.pid) or list(sp.argv),
        time.time(),
        str(log_path),
    ).save(layout)
    return proc


def probe(url: str, timeout: float = 1.0) -> tuple[bool, str]:
    """(ready, detail) for one readiness URL: ready means HTTP 200."""
    try:
        r = httpx.get(url, timeout=timeout)
    except httpx.HTTPError as exc:
        return False, type(exc).__name__
    return r.status_code == 200, f"HTTP {r.status_code}"


def log_tail(path: Path, lines: int = 30) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


class Drain(Protocol):
    """What a stop waits for so that Prometheus keeps every token it was sent (docs/accounting.md)."""

    def scraped(self) -> str:
        """Before anything stops: Prometheus has scraped what the collector holds."""
        ...

    def counted(self) -> str:
        """Before Prometheus stops: its rules have counted what it scraped."""
        ...


def stop_all(
    layout: Layout,
    order: Iterable[str] | None = None,
    timeout: float = STOP_TIMEOUT_S,
    *,
    drain: Drain | None = None,
) -> dict[str, str]:
    """Stop recorded services (reverse start order when known) and forget them.

    With ``drain``, while Prometheus and the collector both run, ``drain.scraped()`` first waits
    for Prometheus to scrape the collector (reported under ``scrape``); then Prometheus goes last:
    every other service is stopped (nothing new reaches Prometheus), ``drain.counted()`` lets its
    rules catch up (reported under ``accounting``), and Prometheus is stopped.
    """
    recs = {r.service: r for r in records(layout)}
    names = [n for n in (order or []) if n in recs] or sorted(recs, key=lambda n: recs[n].started_at)
    stopping = [*reversed(names), *(set(recs) - set(names))]
    result: dict[str, str] = {}
    if drain is not None and SERVICE_PROMETHEUS in stopping:
        stopping.remove(SERVICE_PROMETHEUS)
        stopping.append(SERVICE_PROMETHEUS)
        feeder = recs.get(SERVICE_COLLECTOR)
        if feeder is not None and feeder.matches() and recs[SERVICE_PROMETHEUS].matches():
            result["scrape"] = drain.scraped()
    for name in stopping:
        if name == SERVICE_PROMETHEUS and drain is not None and recs[name].matches():
            result["accounting"] = drain.counted()
        result[name] = stop_record(recs[name], timeout)
        layout.pid_file(name).unlink(missing_ok=True)
    return result


def child_env(project: Project) -> dict[str, str]:
    """The services see the same variables Compose would give them, plus ours."""
    environ = dict(os.environ)
    for k, v in project.variables.items():
        environ.setdefault(k, v)
    return environ
