"""The provisioned dashboards the embedded dashboard reads (the datasource provisioning is read by
:mod:`amtp_obs.grafana.datasources`).

Dashboard JSON is not environment-interpolated (as in Grafana) and is re-read when it changes on
disk, as Grafana's file provider does.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def slugify(title: str) -> str:
    """Grafana's URL slug for a dashboard title (lower case, dashes)."""
    return re.sub(r"[^a-z0-9]+", "-", title.lower()).strip("-") or "dashboard"


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
