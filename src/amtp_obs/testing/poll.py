"""Polling for tests and benchmarks: wait until something observable over the network becomes true."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


def eventually(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    interval: float = 0.05,
    *,
    ignore: tuple[type[BaseException], ...] = (),
) -> T | None:
    """``predicate()``'s first truthy value, polled every ``interval``; None once ``timeout`` has passed.

    The predicate is tried once more at the deadline, so a slow machine never loses the last chance.
    Exceptions of the ``ignore`` types count as "not yet" (a server still starting refuses connections).
    """
    deadline = time.monotonic() + timeout
    while True:
        last_try = time.monotonic() >= deadline
        try:
            value = predicate()
        except ignore:
            value = None
        if value:
            return value
        if last_try:
            return None
        time.sleep(min(interval, max(0.0, deadline - time.monotonic())))


def last_value(predicate: Callable[[], Any]) -> Any:
    """What the predicate returns now, for a failure message (its exception text if it raises)."""
    try:
        return predicate()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
