"""Before Prometheus stops: let the accounting and pricing rules count what it scraped last.

The rules count per step and read late (docs/accounting.md): a token sample is counted by the
first evaluation of the accounting group whose read point (evaluation time minus the read delay)
is at or after it, and its increment is priced by the pricing group a step later (docs/cost.md).
Prometheus does not re-run the evaluations it missed while it was down, so a stop right after a
scrape loses that scrape's growth (and the last step's cost) whenever the restart skips a step.
Before that, the collector must have been scraped: its Prometheus exporter holds a finished
process's last export in memory until the next scrape, and a collector stopped before it loses
those tokens for good (the process is gone; nobody exports them again). ``amtp-obs down`` therefore
first calls :func:`wait_until_scraped` (one scrape of the exporter that started after ``down``
did), then stops everything that feeds Prometheus, calls :func:`wait_until_counted`, and stops
Prometheus last. :class:`PrometheusDrain` is the two steps as the supervisor calls them.

Each step waits only while something is pending: an exporter page with samples on it; a token
counter that moved (or appeared) after the accounting group's read point, or a non-zero increment
after the pricing group's. An idle stack, or live series that did not move, stop at once.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import httpx

from amtp_obs import contract
from amtp_obs.accounting import rules
from amtp_obs.durations import parse_duration
from amtp_obs.pricing import rules as pricing

_OFFSET = re.compile(r"\boffset\s+((?:\d+(?:ms|s|m|h|d|w|y))+)")
_EPOCH_FLOOR = 1e9
"""A lastEvaluation before this (Go's zero time) means the group has not been evaluated yet."""


def _raw_pending(metric: str, window: str) -> str:
    """Series of ``metric`` whose value moved in the last ``window`` or that appeared in it."""
    cur = f"last_over_time({metric}[{window}])"
    prev = f"last_over_time({metric}[{rules.MEMORY}] offset {window})"
    return f"count(({cur} != {prev}) or ({cur} unless {prev}) or (changes({metric}[{window}]) > 0))"


def _accounting_pending(window: str) -> list[str]:
    """What the accounting group has not counted: raw token counters that moved in ``window``."""
    return [_raw_pending(c.prometheus_name, window) for c in contract.ALL_TOKEN_COUNTERS]


def _pricing_pending(window: str) -> list[str]:
    """What the pricing group has not priced: tokens accounted in ``window`` (increments are never negative)."""
    return [f"sum(sum_over_time({c.increment_record}[{window}]))" for c in contract.ALL_TOKEN_COUNTERS]


STAGES: tuple[tuple[str, Callable[[str], list[str]]], ...] = (
    (rules.GROUP, _accounting_pending),
    (pricing.GROUP_PRICING, _pricing_pending),
)
"""Each rule group, and the queries that are positive while it has not read everything in a window."""


def _read_delay(group: dict[str, Any]) -> float:
    """The smallest ``offset`` a group's rules read with: how late the group reads its input."""
    offsets = [parse_duration(o) for r in group.get("rules") or [] for o in _OFFSET.findall(str(r.get("query", "")))]
    return min(offsets, default=0.0)


def read_point(group: dict[str, Any], recorded: float | None = None) -> float | None:
    """Unix time up to which a group (as ``/api/v1/rules`` shows it) has surely read its input.

    Its last complete evaluation started at ``lastEvaluation`` and ran for a time at most one
    ``interval`` earlier; a sample the group ``recorded`` at or before that start gives the time
    exactly (all rules of a group are evaluated at one time). Its rules read their input the
    smallest ``offset`` they use late (the accounting rules' read delay, the pricing rules' step).
    None before any evaluation.
    """
    try:
        last = datetime.fromisoformat(str(group["lastEvaluation"])).timestamp()
        evaluated = last - float(group["interval"])
        delay = _read_delay(group)
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    if last < _EPOCH_FLOOR:
        return None
    if recorded is not None and recorded <= last:  # newer ones may be from an evaluation under way
        evaluated = max(evaluated, recorded)
    return evaluated - delay


def wait_until_counted(prometheus: str, *, poll: float = 0.5, timeout: float | None = None) -> str:
    """Wait until the accounting and pricing groups have read everything Prometheus holds; say how it went.

    Call it once nothing feeds Prometheus any more (the collector and the trace store are stopped).
    ``timeout`` defaults to four times the slowest group's interval plus read delay, plus 10 s.
    """
    started = time.monotonic()
    client = httpx.Client(base_url=prometheus, timeout=5.0)

    def positive(expr: str, at: float) -> bool:
        r = client.get("/api/v1/query", params={"query": expr, "time": f"{at:.3f}"})
        r.raise_for_status()
        result = r.json()["data"]["result"]
        return bool(result) and float(result[0]["value"][1]) > 0

    def timestamp(expr: str) -> float | None:
        r = client.get("/api/v1/query", params={"query": expr})
        r.raise_for_status()
        result = r.json()["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    try:
        while True:
            r = client.get("/api/v1/rules", params={"type": "record"})
            r.raise_for_status()
            groups = {g["name"]: g for g in r.json()["data"]["groups"]}
            stages = [(groups[name], pending) for name, pending in STAGES if name in groups]
            if not stages:
                return "no accounting rules loaded"
            if timeout is None:
                timeout = 10.0 + 4 * max(float(g["interval"]) + _read_delay(g) for g, _ in stages)
            behind = []
            for group, pending in stages:
                first = str(group["rules"][0]["name"])  # every rule of a group is evaluated at one time
                recorded = timestamp(f"max(timestamp({first}))")
                point, now = read_point(group, recorded), time.time()
                if point is None:
                    behind.append(group["name"])
                    continue
                window = f"{max(1, math.ceil((now - point) * 1000))}ms"
                if any(positive(expr, now) for expr in pending(window)):
                    behind.append(group["name"])
            waited = time.monotonic() - started
            if not behind:
                return f"counted everything scraped (waited {waited:.0f} s)"
            if waited > timeout:
                return f"gave up after {waited:.0f} s: {', '.join(behind)} not caught up (docs/accounting.md)"
            time.sleep(poll)
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        return f"not waited for: Prometheus did not answer ({type(exc).__name__})"
    finally:
        client.close()


def _has_samples(page: str) -> bool:
    """True when a Prometheus text page holds at least one sample line."""
    return any(line.strip() and not line.lstrip().startswith("#") for line in page.splitlines())


def _endpoint(url: str) -> tuple[int | None, str]:
    """(port, path) of a URL: hosts differ (localhost, 127.0.0.1, a Compose name) for one target."""
    parts = urlsplit(url)
    return parts.port, parts.path or "/"


def scrape_target(targets: Sequence[Mapping[str, Any]], exporter: str) -> Mapping[str, Any] | None:
    """The active target (``/api/v1/targets``) that scrapes ``exporter``, matched by port and path."""
    want = _endpoint(exporter)
    for target in targets:
        if _endpoint(str(target.get("scrapeUrl", ""))) == want:
            return target
    return None


def scraped_since(target: Mapping[str, Any], since: float) -> bool | None:
    """Whether the target's last scrape started at or after ``since`` (Unix time); None if unreadable.

    Prometheus records a scrape's start time once the scrape has been appended, so a scrape that
    started after the exporter page was read has stored everything that page held.
    """
    try:
        last = datetime.fromisoformat(str(target["lastScrape"])).timestamp()
    except (KeyError, TypeError, ValueError, OverflowError):
        return None
    return last >= since


DISCOVERY_TIMEOUT_S = 15.0
"""How long a Prometheus that lists no target at all yet (it has just started) is given to find one."""


def wait_until_scraped(prometheus: str, exporter: str, *, poll: float = 0.25, timeout: float | None = None) -> str:
    """Wait for one scrape of the collector's exporter that started after this call; say how it went.

    Call it before the collector stops. No wait when the exporter page is empty (nothing to lose)
    or Prometheus scrapes other targets but not this one. ``timeout`` defaults to twice the target's
    interval plus its scrape timeout, plus 5 s.
    """
    started = time.monotonic()
    since = time.time()
    try:
        with httpx.Client(timeout=5.0) as client:
            try:
                page = client.get(exporter)
                page.raise_for_status()
            except httpx.HTTPError as exc:
                return f"not waited for: the collector's exporter did not answer ({type(exc).__name__})"
            if not _has_samples(page.text):
                return "nothing to scrape"
            while True:
                r = client.get(f"{prometheus}/api/v1/targets", params={"state": "active"})
                r.raise_for_status()
                targets = r.json()["data"]["activeTargets"]
                target = scrape_target(targets, exporter)
                if target is None and targets:
                    return "not waited for: no Prometheus target scrapes the collector's exporter"
                if timeout is None and target is not None:
                    interval = parse_duration(str(target.get("scrapeInterval") or "1m"))
                    timeout = 5.0 + 2 * interval + parse_duration(str(target.get("scrapeTimeout") or "10s"))
                waited = time.monotonic() - started
                if target is not None and scraped_since(target, since):
                    if target.get("health") != "up":
                        return f"scraped, but the scrape failed: {target.get('lastError') or 'unknown error'}"
                    return f"scraped what the collector holds (waited {waited:.0f} s)"
                if waited > (DISCOVERY_TIMEOUT_S if timeout is None else timeout):
                    return f"gave up after {waited:.0f} s: the collector was not scraped again (docs/accounting.md)"
                time.sleep(poll)
    except (httpx.HTTPError, KeyError, TypeError, ValueError) as exc:
        return f"not waited for: Prometheus did not answer ({type(exc).__name__})"


@dataclass(frozen=True)
class PrometheusDrain:
    """What ``amtp-obs down`` waits for, in the supervisor's two steps (see the module docstring)."""

    prometheus: str
    exporter: str | None
    """The collector's Prometheus exporter page, when the stack runs one."""

    def scraped(self) -> str:
        """Before anything stops: Prometheus has scraped what the collector's exporter holds."""
        if self.exporter is None:
            return "no collector exporter to scrape"
        return wait_until_scraped(self.prometheus, self.exporter)

    def counted(self) -> str:
        """Before Prometheus stops: its accounting and pricing rules have counted what it scraped."""
        return wait_until_counted(self.prometheus)
