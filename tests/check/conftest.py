"""Broken copies of the real stack files, so each check is proven to fail for its own reason."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from amtp_obs import project as proj

REPO = Path(__file__).resolve().parents[2]
STACK_PATHS = (
    proj.COMPOSE_FILE,
    proj.ENV_EXAMPLE_FILE,
    ".yamllint.yaml",
    "infra",
    ".github",
)


@pytest.fixture
def stack_copy(tmp_path: Path) -> Path:
    """A copy of the project's stack-as-code files (no .env: the checks then use .env.example)."""
    for rel in STACK_PATHS:
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, tmp_path / rel)
        elif src.is_file():
            shutil.copy2(src, tmp_path / rel)
    return tmp_path


@pytest.fixture
def edit(stack_copy: Path) -> Callable[[str, str, str], None]:
    """Replace one exact snippet in a copied file (fails loudly if the snippet is not there)."""

    def _edit(rel: str, old: str, new: str) -> None:
        path = stack_copy / rel
        text = path.read_text()
        assert old in text, f"{old!r} not in {rel}"
        path.write_text(text.replace(old, new, 1))

    return _edit
