"""Named steps of a gate, each ending as a :class:`Result` (pass, fail or skip, with its duration).

A step is a function: its return value is the pass detail (or a list of results of its own), it
raises :class:`CheckFailed` or :class:`Skipped` to say otherwise. Steps run one after another, or
side by side in threads when each mostly waits (polls of a backend).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import httpx

from amtp_obs.project import ProjectError

PASS, FAIL, SKIP = "pass", "fail", "skip"

Step = tuple[str, Callable[[], Any]]


class CheckFailed(Exception):
    """A check's assertion did not hold; the message is the report's detail."""


class Skipped(Exception):
    """A check could not run because an earlier one failed."""


@dataclass
class Result:
    name: str
    status: str  # pass | fail | skip
    detail: str
    duration: float


def run_step(name: str, fn: Callable[[], Any]) -> list[Result]:
    """Run one step; an expected failure (HTTP, bad data, a project problem) is a fail, not a crash."""
    start = time.monotonic()
    try:
        out = fn()
    except Skipped as exc:
        return [Result(name, SKIP, str(exc), time.monotonic() - start)]
    except (CheckFailed, ProjectError) as exc:
        return [Result(name, FAIL, str(exc), time.monotonic() - start)]
    except (httpx.HTTPError, ValueError, KeyError) as exc:
        return [Result(name, FAIL, f"{type(exc).__name__}: {exc}", time.monotonic() - start)]
    if isinstance(out, list):
        return out
    return [Result(name, PASS, str(out), time.monotonic() - start)]


def run_side_by_side(steps: Sequence[Step]) -> list[Result]:
    """Run ``steps`` in threads at once (their waits overlap); results in the order given."""
    if not steps:
        return []
    with ThreadPoolExecutor(max_workers=len(steps)) as pool:
        futures = [pool.submit(run_step, name, fn) for name, fn in steps]
        return [r for future in futures for r in future.result()]
