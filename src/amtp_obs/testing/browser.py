"""Headless Chromium for tests and screenshots: load a page as a person would and read its DOM.

Flags follow what works on a machine with no outside network: no background networking, no
component updates, a fresh profile per call.
"""

from __future__ import annotations

import subprocess
from html.parser import HTMLParser
from pathlib import Path

from amtp_obs.tools import find_tool

CHROMIUM = find_tool("chromium")


def chromium(url: str, profile_dir: Path, *args: str, budget_ms: int = 3000, timeout: float = 90) -> str:
    """Run headless Chromium on ``url`` with extra ``args`` (e.g. ``--dump-dom``); return its stdout."""
    if CHROMIUM is None:
        raise RuntimeError("chromium is not installed (Debian package: chromium)")
    cmd = [
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile_dir / 'chromium-profile'}",
        f"--virtual-time-budget={budget_ms}",
        *args,
        url,
    ]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if out.returncode != 0:
        raise RuntimeError(f"chromium exited {out.returncode}: {out.stderr[-2000:]}")
    return out.stdout


class DashboardPanels(HTMLParser):
    """Collects, per rendered dashboard panel: title, stat values, chart lines, table links, errors."""

    def __init__(self) -> None:
        super().__init__()
        self.panels: list[dict[str, object]] = []
        self._field: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        cls = (a.get("class") or "").split()
        if tag == "section" and "panel" in cls and "row-panel" not in cls:
            self.panels.append({"title": "", "stats": [], "lines": 0, "dots": 0, "links": [], "error": ""})
        if not self.panels:
            return
        cur = self.panels[-1]
        if "panel-title" in cls:
            self._field = "title"
        elif "stat-value" in cls:
            self._field = "stat"
        elif "panel-error" in cls:
            self._field = "error"
        elif tag == "polyline":
            cur["lines"] = int(cur["lines"]) + 1  # type: ignore[call-overload]
        elif tag == "circle":
            cur["dots"] = int(cur["dots"]) + 1  # type: ignore[call-overload]  # a lone sample
        elif tag == "a" and "trace-link" in cls:
            cur["links"].append(a.get("href"))  # type: ignore[attr-defined]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("h3", "span", "div"):
            self._field = None

    def handle_data(self, data: str) -> None:
        if not self.panels or self._field is None:
            return
        cur = self.panels[-1]
        if self._field == "title":
            cur["title"] = str(cur["title"]) + data
        elif self._field == "stat":
            cur["stats"].append(data)  # type: ignore[attr-defined]
        elif self._field == "error":
            cur["error"] = str(cur["error"]) + data


def parse_panels(dom: str) -> dict[str, dict[str, object]]:
    """Panel title -> what the page shows for it."""
    parser = DashboardPanels()
    parser.feed(dom)
    return {str(p["title"]): p for p in parser.panels}
