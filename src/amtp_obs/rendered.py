"""Generated files committed to the checkout (accounting and pricing rules): write, or check current."""

from __future__ import annotations

from pathlib import Path


def write_or_check(path: Path, text: str, *, name: str, command: str, check: bool) -> tuple[int, str]:
    """(exit code, message): with ``check`` nothing is written and a stale or missing copy is exit 1."""
    current = path.read_text() if path.is_file() else None
    if current == text:
        return 0, f"{name} is up to date"
    if check:
        return 1, f"{name} is stale: run `{command}`"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return 0, f"wrote {name}"
