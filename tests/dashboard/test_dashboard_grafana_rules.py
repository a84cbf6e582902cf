"""Grafana's rules the page renders by: units and reducers (the query semantics: tests/grafana)."""

from __future__ import annotations

import pytest

from amtp_obs.dashboard.engine import reduce_values
from amtp_obs.dashboard.units import format_value


@pytest.mark.parametrize(
    ("value", "unit", "decimals", "text"),
    [
        (630, "short", 0, "630"),
        (1_234_567, "short", None, "1.23 Mil"),
        (124.8, "ms", None, "125 ms"),
        (2500, "ms", None, "2.5 s"),
        (0.25, "s", None, "250 ms"),
        (0.26667, "reqps", None, "0.267 req/s"),
        (1500, "reqps", None, "1.5 K req/s"),
        (2048, "bytes", None, "2 KiB"),
        (0.5, "percentunit", None, "50%"),
        (3, "suffix:tok", None, "3 tok"),
        (None, "ms", None, "No data"),
        (float("nan"), "short", None, "NaN"),
    ],
)
def test_units(value: float | None, unit: str, decimals: int | None, text: str) -> None:
    assert format_value(value, unit, decimals) == text


def test_reducers() -> None:
    values = [1.0, None, 5.0, 3.0, None]
    assert reduce_values(values, "lastNotNull") == 3.0
    assert reduce_values(values, "last") is None
    assert reduce_values(values, "max") == 5.0
    assert reduce_values(values, "mean") == 3.0
    assert reduce_values([], "lastNotNull") is None
