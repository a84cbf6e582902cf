"""Grafana's value formatting for the unit ids a panel's ``fieldConfig.defaults.unit`` names.

Only the units an LLM dashboard plausibly uses are implemented; any other id is shown as a suffix
(Grafana's ``suffix:`` behaviour), so the number is never hidden.
"""

from __future__ import annotations

import math
from collections.abc import Callable

_SHORT = ("", " K", " Mil", " Bil", " Tri", " Quadr", " Quint", " Sext", " Sept")
_SI = (" ", " k", " M", " G", " T", " P", " E", " Z", " Y")
_CURRENCY = ("", "K", "M", "B", "T")
"""Grafana's currency units (``currency('$')``): the symbol before, 1000-scaled suffixes after."""
_IEC = (" ", " Ki", " Mi", " Gi", " Ti", " Pi", " Ei", " Zi", " Yi")


def _auto_decimals(value: float) -> int:
    """Enough decimals for about three significant digits, like Grafana's default display."""
    if value == 0 or not math.isfinite(value):
        return 0
    magnitude = math.floor(math.log10(abs(value)))
    return max(0, min(3, 2 - magnitude))


def _fixed(value: float, decimals: int | None) -> str:
    d = _auto_decimals(value) if decimals is None else decimals
    text = f"{value:.{d}f}"
    if decimals is None and "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _scaled(value: float, base: int, prefixes: tuple[str, ...], suffix: str, decimals: int | None) -> str:
    step = 0
    v = value
    while abs(v) >= base and step < len(prefixes) - 1:
        v /= base
        step += 1
    return f"{_fixed(v, decimals)}{prefixes[step]}{suffix}"


def _time(value: float, unit_seconds: float, decimals: int | None) -> str:
    seconds = value * unit_seconds
    a = abs(seconds)
    if a == 0:
        return f"0 {'ms' if unit_seconds < 1 else 's'}"
    for limit, div, name in (
        (1e-6, 1e-9, "ns"),
        (1e-3, 1e-6, "µs"),
        (1, 1e-3, "ms"),
        (60, 1, "s"),
        (3600, 60, "min"),
        (86400, 3600, "hour"),
        (86400 * 365, 86400, "day"),
    ):
        if a < limit:
            return f"{_fixed(seconds / div, decimals)} {name}"
    return f"{_fixed(seconds / (86400 * 365), decimals)} year"


def _percent(value: float, decimals: int | None) -> str:
    return f"{_fixed(value, decimals)}%"


_FORMATTERS: dict[str, Callable[[float, int | None], str]] = {
    "none": lambda v, d: _fixed(v, d),
    "short": lambda v, d: _scaled(v, 1000, _SHORT, "", d),
    "locale": lambda v, d: f"{v:,.{d or 0}f}",
    "percent": _percent,
    "percentunit": lambda v, d: _percent(v * 100, d),
    "ns": lambda v, d: _time(v, 1e-9, d),
    "µs": lambda v, d: _time(v, 1e-6, d),
    "us": lambda v, d: _time(v, 1e-6, d),
    "ms": lambda v, d: _time(v, 1e-3, d),
    "s": lambda v, d: _time(v, 1, d),
    "m": lambda v, d: _time(v, 60, d),
    "h": lambda v, d: _time(v, 3600, d),
    "d": lambda v, d: _time(v, 86400, d),
    "reqps": lambda v, d: _scaled(v, 1000, _SHORT, " req/s", d),
    "reqpm": lambda v, d: _scaled(v, 1000, _SHORT, " req/min", d),
    "rps": lambda v, d: _scaled(v, 1000, _SHORT, " rd/s", d),
    "wps": lambda v, d: _scaled(v, 1000, _SHORT, " wr/s", d),
    "ops": lambda v, d: _scaled(v, 1000, _SHORT, " ops/s", d),
    "opm": lambda v, d: _scaled(v, 1000, _SHORT, " ops/min", d),
    "cps": lambda v, d: _scaled(v, 1000, _SHORT, " c/s", d),
    "bytes": lambda v, d: _scaled(v, 1024, _IEC, "B", d),
    "decbytes": lambda v, d: _scaled(v, 1000, _SI, "B", d),
    "bits": lambda v, d: _scaled(v, 1024, _IEC, "b", d),
    "decbits": lambda v, d: _scaled(v, 1000, _SI, "b", d),
    "Bps": lambda v, d: _scaled(v, 1024, _IEC, "B/s", d),
    "binBps": lambda v, d: _scaled(v, 1024, _IEC, "B/s", d),
    "currencyUSD": lambda v, d: ("-$" if v < 0 else "$") + _scaled(abs(v), 1000, _CURRENCY, "", d),
}

KNOWN_UNITS = frozenset(_FORMATTERS)


def format_value(value: float | None, unit: str | None = None, decimals: int | None = None) -> str:
    """Render one number as the panel would in Grafana; ``None``/NaN read "No data"/"NaN"."""
    if value is None:
        return "No data"
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    unit = unit or "short"
    fmt = _FORMATTERS.get(unit)
    if fmt is not None:
        return fmt(value, decimals)
    suffix = unit.removeprefix("suffix:")
    if unit.startswith("prefix:"):
        return f"{unit.removeprefix('prefix:')}{_fixed(value, decimals)}"
    return f"{_fixed(value, decimals)} {suffix}"
