"""Duration strings as the pinned components read them, in seconds.

Go's ``time.ParseDuration`` (collector, Tempo) and Prometheus' ``model.ParseDuration`` (rule
``for``/``interval``, scrape intervals) share one grammar, runs of number + unit (``1h30m``); Tempo's
retention-style fields and Prometheus add ``d``, ``w`` and ``y``. Grafana's single-unit intervals
(with ``M`` for months) are another grammar: :mod:`amtp_obs.dashboard.timerange`.
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
