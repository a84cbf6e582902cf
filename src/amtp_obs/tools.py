"""External programs the project runs (validators, Prometheus, Alertmanager, Chromium): one lookup rule.

A tool is found on PATH, else next to the running interpreter (the venv's bin holds the pip-installed
validators). Some tools ship under more than one name (Debian's ``prometheus-alertmanager``); the
first name found wins.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Final

ALTERNATIVE_NAMES: Final[dict[str, tuple[str, ...]]] = {
    "alertmanager": ("prometheus-alertmanager", "alertmanager"),
    "chromium": ("chromium", "chromium-browser"),
}
"""Tools whose executable has another name on some systems (Debian's first)."""


def names_of(tool: str) -> tuple[str, ...]:
    """The executable names ``tool`` may have, in the order they are looked for."""
    return ALTERNATIVE_NAMES.get(tool, (tool,))


def find_tool(tool: str) -> str | None:
    """Path of ``tool`` on PATH, else in the running interpreter's bin directory; None when absent."""
    for name in names_of(tool):
        found = shutil.which(name)
        if found:
            return found
        local = Path(sys.executable).parent / name
        if local.is_file():
            return str(local)
    return None
