"""Run the selected checks of the registry against a checkout."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from amtp_obs.check.framework import CheckOutcome, CheckSpec, Context, run_one
from amtp_obs.check.registry import REGISTRY


def selected(only: Sequence[str] | None) -> list[CheckSpec]:
    """The checks to run; unknown names raise ``KeyError`` listing the valid ones."""
    if not only:
        return list(REGISTRY.values())
    unknown = [n for n in only if n not in REGISTRY]
    if unknown:
        raise KeyError(f"unknown check(s): {', '.join(unknown)}; known: {', '.join(REGISTRY)}")
    return [REGISTRY[n] for n in only]


def run_checks(root: Path, *, strict: bool = False, only: Sequence[str] | None = None) -> list[CheckOutcome]:
    """Run the selected checks against the project at ``root`` (in registry order)."""
    specs = selected(only)
    ctx = Context(root.resolve(), strict=strict)
    try:
        return [run_one(spec, ctx) for spec in specs]
    finally:
        shutil.rmtree(ctx.scratch, ignore_errors=True)
