"""Duration strings as the pinned components read them, in seconds.

Go's ``time.ParseDuration`` (collector, Tempo) and Prometheus' ``model.ParseDuration`` (rule
``for``/``interval``, scrape intervals) share one grammar, runs of number + unit (``1h30m``); Tempo's
retention-style fields and Prometheus add ``d``, ``w`` and ``y``. Grafana's single-unit intervals
(with ``M`` for months) are another grammar: :mod:`amtp_obs.grafana.timerange`.
"""

from __future__ import annotations

import re

_GO_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_LONG_UNITS = {"d": 86400.0, "w": 7 * 86400.0, "y": 365 * 86400.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h|d|w|y)")


def parse_duration(text: str, *, long_units: bool = True) -> float:
    """``1s``, ``500ms``, ``1h30m``, ``-2m`` (and ``15d`` unless ``long_units`` is False) -> seconds."""
    units = {**_GO_UNITS, **_LONG_UNITS} if long_units else _GO_UNITS
    s = text.strip()
    sign = -1.0 if s.startswith("-") else 1.0
    s = s[1:] if s[:1] in ("-", "+") else s
    if s in ("0", "0s"):
        return 0.0
    if not s:
        raise ValueError(f"invalid duration {text!r}")
    pos, total = 0, 0.0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None or m.group(2) not in units:
            raise ValueError(
                f"invalid duration {text!r}: expected a number and a unit ({', '.join(units)}), e.g. 1s, 500ms, 1h30m"
            )
        total += float(m.group(1)) * units[m.group(2)]
        pos = m.end()
    return sign * total


def format_go_duration(ns: int) -> str:
    """Go's ``time.Duration.String()`` (``1.5s``, ``250ms``, ``1m30s``, ``0s``): how Tempo prints durations."""
    if ns == 0:
        return "0s"
    sign, u = ("-", -ns) if ns < 0 else ("", ns)

    def frac(value: int, unit: int) -> str:
        whole, rest = divmod(value, unit)
        if not rest:
            return str(whole)
        digits = str(rest).rjust(len(str(unit)) - 1, "0").rstrip("0")
        return f"{whole}.{digits}"

    if u < 1_000:
        return f"{sign}{u}ns"
    if u < 1_000_000:
        return f"{sign}{frac(u, 1_000)}µs"
    if u < 1_000_000_000:
        return f"{sign}{frac(u, 1_000_000)}ms"
    hours, rem = divmod(u, 3_600_000_000_000)
    minutes, rem = divmod(rem, 60_000_000_000)
    secs = frac(rem, 1_000_000_000) + "s"
    if hours:
        return f"{sign}{hours}h{minutes}m{secs}"
    if minutes:
        return f"{sign}{minutes}m{secs}"
    return sign + secs
