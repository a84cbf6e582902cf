"""The provisioned files the dashboard reads: dashboard JSON and the datasources provisioning YAML.

They are read exactly as Grafana reads them (datasource YAML is environment-interpolated with
``$$`` as a literal dollar; dashboard JSON is not), and re-read when they change on disk, as
Grafana's file provider does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amtp_obs.project import ProjectError, interpolate

DEFAULT_SCRAPE_INTERVAL = 15.0
"""Grafana's fallback when the Prometheus datasource has no ``jsonData.timeInterval``."""


class ModelError(Exception):
    """A provisioning file cannot be used; the message names the file and the problem."""


def slugify(title: str) -> str:
    """Grafana's URL slug for a dashboard title (lower case, dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "dashboard"


@dataclass(frozen=True)
class Datasource:
    name: str
    uid: str
    type: str
    url: str
    is_default: bool = False
    json_data: Mapping[str, Any] = field(default_factory=dict)

    @property
    def scrape_interval(self) -> float:
        from amtp_obs.dashboard.timerange import TimeRangeError, parse_duration

        raw = self.json_data.get("timeInterval")
        if not raw:
            return DEFAULT_SCRAPE_INTERVAL
        try:
            return parse_duration(str(raw))
        except TimeRangeError:
            return DEFAULT_SCRAPE_INTERVAL


@dataclass(frozen=True)
class Dashboard:
    uid: str
    title: str
    path: Path
    doc: Mapping[str, Any]

    @property
    def slug(self) -> str:
        return slugify(self.title)

    @property
    def url(self) -> str:
        return f"/d/{self.uid}/{self.slug}"

    @property
    def tags(self) -> list[str]:
        return [str(t) for t in self.doc.get("tags") or []]


def load_datasources(directory: Path | None, variables: Mapping[str, str]) -> list[Datasource]:
    """All datasources of every ``*.yaml``/``*.yml`` in the provisioning directory."""
    if directory is None or not directory.is_dir():
        return []
    out: list[Datasource] = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            doc = yaml.safe_load(interpolate(path.read_text(), variables)) or {}
        except (OSError, yaml.YAMLError, ProjectError) as exc:
            raise ModelError(f"{path}: {exc}") from None
        for item in doc.get("datasources") or []:
            if not isinstance(item, Mapping) or "type" not in item:
                raise ModelError(f"{path}: datasource entry without a type: {item!r}")
            out.append(
                Datasource(
                    name=str(item.get("name") or item.get("uid") or item["type"]),
                    uid=str(item.get("uid") or item.get("name") or item["type"]),
                    type=str(item["type"]),
                    url=str(item.get("url") or ""),
                    is_default=bool(item.get("isDefault")),
                    json_data=dict(item.get("jsonData") or {}),
                )
            )
    return out


class DashboardStore:
    """The ``*.json`` dashboards of a directory, keyed by uid, re-read when a file changes."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._stamp: tuple[tuple[str, float, int], ...] | None = None
        self._dashboards: dict[str, Dashboard] = {}
        self.errors: list[str] = []

    def _current_stamp(self) -> tuple[tuple[str, float, int], ...]:
        files = sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []
        stamp = []
        for f in files:
            try:
                st = f.stat()
            except OSError:
                continue
            stamp.append((f.name, st.st_mtime, st.st_size))
        return tuple(stamp)

    def all(self) -> dict[str, Dashboard]:
        stamp = self._current_stamp()
        if stamp != self._stamp:
            self._load()
            self._stamp = stamp
        return self._dashboards

    def get(self, uid: str) -> Dashboard | None:
        return self.all().get(uid)

    def _load(self) -> None:
        dashboards: dict[str, Dashboard] = {}
        errors: list[str] = []
        for path in sorted(self.directory.glob("*.json")) if self.directory.is_dir() else []:
            try:
                doc = json.loads(path.read_text())
            except (OSError, ValueError) as exc:
                errors.append(f"{path.name}: not valid JSON: {exc}")
                continue
            if not isinstance(doc, dict):
                errors.append(f"{path.name}: the top level must be a JSON object")
                continue
            uid = str(doc.get("uid") or path.stem)
            if uid in dashboards:
                errors.append(f"{path.name}: uid {uid!r} is already used by {dashboards[uid].path.name}")
                continue
            dashboards[uid] = Dashboard(uid, str(doc.get("title") or uid), path, doc)
        self._dashboards, self.errors = dashboards, errors
