"""Prometheus text exposition (format 0.0.4) written the way Go's ``expfmt`` writes it.

Hand-written on purpose: prometheus_client always appends ``_total`` to counter families, which
would rename both the collector's self-metrics (0.100.0 has no suffix) and exporter series.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from decimal import Decimal

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

Labels = tuple[tuple[str, str], ...]


def format_float(value: float) -> str:
    """Go ``strconv.FormatFloat(v, 'g', -1, 64)``: ``128``, ``0.25``, ``1e+06``, ``+Inf``."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign, digits, exp = Decimal(repr(float(value))).normalize().as_tuple()
    ds = "".join(map(str, digits))
    point = len(ds) + int(exp)  # position of the decimal point relative to the digits
    x = point - 1
    neg = "-" if sign else ""
    # Go: with the shortest representation, %e is used when the exponent is < -4 or >= 6.
    if x < -4 or x >= 6:
        mant = ds[0] + ("." + ds[1:] if len(ds) > 1 else "")
        return f"{neg}{mant}e{'+' if x >= 0 else '-'}{abs(x):02d}"
    if point <= 0:
        return f"{neg}0.{'0' * -point}{ds}"
    if point >= len(ds):
        return f"{neg}{ds}{'0' * (point - len(ds))}"
    return f"{neg}{ds[:point]}.{ds[point:]}"


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def render_labels(labels: Iterable[tuple[str, str]]) -> str:
    items = [f'{k}="{escape_label_value(v)}"' for k, v in labels]
    return "{" + ",".join(items) + "}" if items else ""


def render_family(
    name: str,
    mtype: str,
    help_text: str,
    samples: Iterable[tuple[str, Iterable[tuple[str, str]], float, int | None]],
) -> str:
    """One family: ``# HELP``, ``# TYPE`` and its ``(name, labels, value, timestamp_ms)`` samples."""
    lines = [f"# HELP {name} {escape_help(help_text)}", f"# TYPE {name} {mtype}"]
    for sname, labels, value, ts in samples:
        line = f"{sname}{render_labels(labels)} {format_float(value)}"
        if ts is not None:
            line += f" {ts}"
        lines.append(line)
    return "\n".join(lines) + "\n"
