"""Grafana's datasource provisioning (``provisioning/datasources/*.yaml``), read as Grafana reads it:
environment-interpolated, ``$$`` a literal dollar; a datasource's ``jsonData.timeInterval`` is the
scrape interval its intervals are built on."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from amtp_obs.grafana.timerange import time_interval
from amtp_obs.project import ProjectError, interpolate


class DatasourceError(Exception):
    """A datasource provisioning file cannot be used; the message names the file and the problem."""


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
        """``jsonData.timeInterval`` in seconds (Grafana's 15 s when unset): the base of the intervals."""
        return time_interval(self.json_data)


def load_datasources(directory: Path | None, variables: Mapping[str, str]) -> list[Datasource]:
    """All datasources of every ``*.yaml``/``*.yml`` in the provisioning directory."""
    if directory is None or not directory.is_dir():
        return []
    out: list[Datasource] = []
    for path in sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")]):
        try:
            doc = yaml.safe_load(interpolate(path.read_text(), variables)) or {}
        except (OSError, yaml.YAMLError, ProjectError) as exc:
            raise DatasourceError(f"{path}: {exc}") from None
        for item in doc.get("datasources") or []:
            if not isinstance(item, Mapping) or "type" not in item:
                raise DatasourceError(f"{path}: datasource entry without a type: {item!r}")
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
