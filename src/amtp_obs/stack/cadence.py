"""How often the embedded stack collects metrics: Prometheus' scrapes and the trace store's span-metrics pushes.

Production collects every 15 s (``prometheus.yml``, ``tempo.yaml``; NOTES §10). On one developer
machine that makes every new number wait up to 15 s, a rate wait for two of them, and
``amtp-obs verify`` wait up to 15 s for its own run's counters and again for its span metrics. The
embedded stack therefore collects every :data:`DEFAULT_INTERVAL` unless ``AMTP_OBS_SCRAPE_INTERVAL``
says otherwise (``15s`` reproduces production's timing exactly). Only these keys change, plus a
``scrape_timeout`` longer than the new interval (Prometheus refuses that); queries, rate windows and
alert rules stay as written.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from amtp_obs import env
from amtp_obs.durations import parse_duration
from amtp_obs.project import PROMETHEUS_CONFIG, TEMPO_CONFIG, ProjectError
from amtp_obs.tempo.config import RegistryConfig

DEFAULT_INTERVAL = "5s"

_DURATION = re.compile(r"^(?:\d+(?:ms|s|m|h))+$")
"""Durations both Prometheus (model.ParseDuration) and Tempo (Go time.ParseDuration) accept."""


def interval_from(variables: Mapping[str, str]) -> str:
    """``AMTP_OBS_SCRAPE_INTERVAL`` validated, or :data:`DEFAULT_INTERVAL` when unset or empty."""
    value = variables.get(env.AMTP_OBS_SCRAPE_INTERVAL, "").strip() or DEFAULT_INTERVAL
    if not _DURATION.match(value) or parse_duration(value) < 1:
        raise ProjectError(
            f"{env.AMTP_OBS_SCRAPE_INTERVAL}={value!r} is not a duration of at least 1s such as 5s, 15s or 1m"
        )
    return value


def apply_prometheus(doc: Mapping[str, Any], interval: str) -> dict[str, Any]:
    """prometheus.yml with ``global.scrape_interval`` set; jobs that set their own interval keep it."""
    out = copy.deepcopy(dict(doc))
    glob = out.get("global")
    if glob is None:
        glob = out["global"] = {}
    if not isinstance(glob, dict):
        raise ProjectError(f"prometheus config: global must be a mapping, got {type(glob).__name__}")
    glob["scrape_interval"] = interval
    _clamp_timeout(glob, interval)
    for job in out.get("scrape_configs") or []:
        if isinstance(job, dict):
            _clamp_timeout(job, str(job.get("scrape_interval", interval)))
    return out


def _clamp_timeout(section: dict[str, Any], interval: str) -> None:
    timeout = section.get("scrape_timeout")
    if isinstance(timeout, str) and _DURATION.match(timeout) and parse_duration(timeout) > parse_duration(interval):
        section["scrape_timeout"] = interval


def apply_tempo(doc: Mapping[str, Any], interval: str) -> dict[str, Any]:
    """tempo.yaml with the metrics generator's collection interval set (when there is a generator)."""
    out = copy.deepcopy(dict(doc))
    generator = out.get("metrics_generator")
    if isinstance(generator, dict):
        registry = generator.get("registry")
        if registry is None:
            registry = generator["registry"] = {}
        if isinstance(registry, dict):
            registry["collection_interval"] = interval
    defaults = (out.get("overrides") or {}).get("defaults") if isinstance(out.get("overrides"), dict) else None
    per_tenant = defaults.get("metrics_generator") if isinstance(defaults, dict) else None
    if isinstance(per_tenant, dict) and per_tenant.get("collection_interval"):
        per_tenant["collection_interval"] = interval
    return out


def apply_rule_files(doc: Mapping[str, Any], interval: str, out_dir: Path) -> dict[str, Any]:
    """Rendered prometheus.yml whose rule files are copied to ``out_dir``, accounting and pricing at ``interval``.

    The accounting rules read samples one step late and count per step (docs/accounting.md): at the
    embedded cadence they step with the scrapes, so a new total shows in seconds, not half a minute.
    Only an unedited generated file is re-rendered; any other rule file is copied as it is.
    """
    from amtp_obs.accounting import rules
    from amtp_obs.pricing import rules as pricing

    out = copy.deepcopy(dict(doc))
    out_dir.mkdir(parents=True, exist_ok=True)
    for old in out_dir.glob("*"):
        old.unlink()
    copied: list[str] = []
    for pattern in out.get("rule_files") or []:
        path = Path(str(pattern))
        matches = sorted(path.parent.glob(path.name)) if path.is_absolute() else []
        if not matches:
            copied.append(str(pattern))
            continue
        for src in matches:
            text = src.read_text()
            if text == rules.render():
                text = rules.render(step=interval, delay=interval)
            elif src.name == pricing.RULES_NAME and text == pricing.render_checkout(root := src.parents[3]):
                text = pricing.render_checkout(root, step=interval)  # cost per step as well (docs/cost.md)
            dest = out_dir / src.name
            dest.write_text(text)
            copied.append(str(dest))
    out["rule_files"] = copied
    return out


PROMETHEUS_DEFAULT_SCRAPE_INTERVAL = "1m"
"""Prometheus' own ``global.scrape_interval`` when a file sets none."""


def prometheus_note(doc: Mapping[str, Any], interval: str) -> str | None:
    """What ``up`` says about Prometheus' cadence, or None when the file already scrapes that often."""
    configured = (doc.get("global") or {}).get("scrape_interval", PROMETHEUS_DEFAULT_SCRAPE_INTERVAL)
    return _note("scrapes", interval, str(configured), PROMETHEUS_CONFIG.as_posix())


def tempo_note(doc: Mapping[str, Any], interval: str) -> str | None:
    """What ``up`` says about the span-metrics cadence, or None (no generator, or already that often)."""
    generator = doc.get("metrics_generator")
    if not isinstance(generator, dict):
        return None
    default = f"{RegistryConfig.model_fields['collection_interval'].default:g}s"
    configured = (generator.get("registry") or {}).get("collection_interval", default)
    return _note("span metrics pushed", interval, str(configured), TEMPO_CONFIG.as_posix())


def _note(what: str, interval: str, configured: str, file: str) -> str | None:
    try:
        same = parse_duration(configured) == parse_duration(interval)
    except ValueError:
        same = False  # the component reports its own bad value
    if same:
        return None
    return (
        f"{what} every {interval} here ({file} says {configured}); "
        f"{env.AMTP_OBS_SCRAPE_INTERVAL}={configured} reproduces production's timing"
    )
