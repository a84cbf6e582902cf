"""Series names and labels as the collector-contrib 0.100.0 ``prometheus`` exporter writes them.

The dashboard and alerts query what Prometheus stores, which is NOT the instrument name: the
exporter (``pkg/translator/prometheus``, feature gate ``NormalizeName`` on since 0.85) appends the
unit and ``_total`` and strips every other ``total`` token (research collector.md §2, NOTES §1).
Both the embedded collector and ``amtp-obs check`` derive names here so they cannot drift.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Callable
from typing import Final

UNIT_MAP: Final[dict[str, str]] = {
    # time
    "d": "days",
    "h": "hours",
    "min": "minutes",
    "s": "seconds",
    "ms": "milliseconds",
    "us": "microseconds",
    "ns": "nanoseconds",
    # bytes
    "By": "bytes",
    "KiBy": "kibibytes",
    "MiBy": "mebibytes",
    "GiBy": "gibibytes",
    "TiBy": "tibibytes",
    "KBy": "kilobytes",
    "MBy": "megabytes",
    "GBy": "gigabytes",
    "TBy": "terabytes",
    # SI
    "m": "meters",
    "V": "volts",
    "A": "amperes",
    "J": "joules",
    "W": "watts",
    "g": "grams",
    # misc
    "Cel": "celsius",
    "Hz": "hertz",
    "1": "",
    "%": "percent",
}
"""Main-unit map of contrib v0.100.0 ``normalize_name.go``; a unit not listed is kept as written (``token``).

``$`` is not listed: contrib removed it with the non-UCUM ``B``/``KB``/... units in PR #24647 (v0.83.0),
so a ``$`` unit cleans up to nothing and adds no suffix (no ``_dollars``) in 0.100.0.
"""

PER_UNIT_MAP: Final[dict[str, str]] = {
    "s": "second",
    "m": "minute",
    "h": "hour",
    "d": "day",
    "w": "week",
    "mo": "month",
    "y": "year",
}
"""Map for the part of a unit after ``/`` (``By/s`` -> ``bytes_per_second``)."""


def _is_alnum(ch: str) -> bool:
    """Go's ``unicode.IsLetter || unicode.IsDigit`` (letters of any script, decimal digits only)."""
    cat = unicodedata.category(ch)
    return cat.startswith("L") or cat == "Nd"


def _tokens(text: str, keep: Callable[[str], bool] = _is_alnum) -> list[str]:
    """``strings.FieldsFunc`` splitting on every rune ``keep`` rejects: empty fields are dropped."""
    out: list[str] = []
    cur: list[str] = []
    for ch in text:
        if keep(ch):
            cur.append(ch)
        elif cur:
            out.append("".join(cur))
            cur = []
    if cur:
        out.append("".join(cur))
    return out


def clean_up_string(text: str) -> str:
    """``CleanUpString``: alphanumeric runs joined by ``_`` (used for the namespace and units)."""
    return "_".join(_tokens(text))


def remove_prom_forbidden_runes(text: str) -> str:
    """``RemovePromForbiddenRunes``: like :func:`clean_up_string` but ``_`` and ``:`` survive."""
    return "_".join(_tokens(text, lambda ch: _is_alnum(ch) or ch in "_:"))


def _normalize_name(name: str, unit: str, namespace: str, monotonic_sum: bool, gauge: bool) -> str:
    name_tokens = _tokens(name)
    unit_tokens = unit.split("/", 1)
    main_unit = unit_tokens[0].strip()
    if main_unit and "{" not in main_unit and "}" not in main_unit:
        main_prom = clean_up_string(UNIT_MAP.get(main_unit, main_unit))
        if main_prom and main_prom not in name_tokens:
            name_tokens.append(main_prom)
    if len(unit_tokens) > 1 and unit_tokens[1]:
        per_unit = unit_tokens[1].strip()
        if per_unit and "{" not in per_unit and "}" not in per_unit:
            per_prom = clean_up_string(PER_UNIT_MAP.get(per_unit, per_unit))
            if per_prom and per_prom not in name_tokens:
                name_tokens += ["per", per_prom]
    if monotonic_sum:
        name_tokens = [t for t in name_tokens if t != "total"] + ["total"]
    if unit == "1" and gauge:
        name_tokens = [t for t in name_tokens if t != "ratio"] + ["ratio"]
    if namespace:
        name_tokens.insert(0, namespace)
    result = "_".join(name_tokens)
    if result and unicodedata.category(result[0]) == "Nd":
        result = "_" + result
    return result


def build_metric_name(
    name: str,
    unit: str,
    *,
    namespace: str,
    monotonic_sum: bool,
    gauge: bool = False,
    add_metric_suffixes: bool = True,
) -> str:
    """The series base name for one OTLP metric (histograms later get ``_bucket``/``_sum``/``_count``).

    ``namespace`` is the exporter's ``namespace`` setting as written; it is cleaned the way the
    exporter cleans it. ``monotonic_sum`` is a counter; ``gauge`` a Gauge (only matters for unit ``1``).
    """
    ns = clean_up_string(namespace)
    if add_metric_suffixes:
        return _normalize_name(name, unit, ns, monotonic_sum, gauge)
    metric_name = remove_prom_forbidden_runes(name)
    if ns:
        return f"{ns}_{metric_name}"
    if metric_name and unicodedata.category(metric_name[0]) == "Nd":
        metric_name = "_" + metric_name
    return metric_name


def normalize_label(name: str) -> str:
    """``NormalizeLabel``: attribute key -> label name (``llm.model`` -> ``llm_model``).

    Non-alphanumerics become ``_``; a leading digit gets ``key_``; a single leading ``_`` gets
    ``key`` (the ``PermissiveLabelSanitization`` gate that would skip this is off at 0.100.0).
    """
    if not name:
        return name
    label = "".join(ch if _is_alnum(ch) else "_" for ch in name)
    if unicodedata.category(label[0]) == "Nd":
        return "key_" + label
    if label.startswith("_") and not label.startswith("__"):
        return "key" + label
    return label
