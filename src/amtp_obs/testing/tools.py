"""The programs the test suite needs, and the rule for a missing one: a skip on a laptop, a failure in CI.

Tests say what they need with ``@pytest.mark.needs("promtool", ...)``; the suite's conftest calls
:func:`gate` for each such test and :func:`missing_in_ci` once per session. Under ``CI=true`` a missing
tool fails the run with its name, so a CI image without it cannot pass by skipping the tests that
would have used it.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from typing import Final, NoReturn

from amtp_obs import env
from amtp_obs.tools import find_tool

REQUIRED_TOOLS: Final[tuple[str, ...]] = (
    "prometheus",
    "promtool",
    "alertmanager",
    "amtool",
    "chromium",
    "shellcheck",
    "docker-compose",
    "actionlint",
    "check-jsonschema",
    "yamllint",
    "valgrind",
)
"""Every external program a test runs (scripts/setup.sh installs them; the pip ones come with ``.[dev]``)."""


def in_ci(environ: Mapping[str, str] = os.environ) -> bool:
    """``CI=true`` (GitHub Actions, GitLab and most runners set it) or ``CI=1``."""
    return environ.get(env.CI, "").strip().lower() in ("true", "1", "yes")


def missing(tools: Iterable[str] = REQUIRED_TOOLS) -> list[str]:
    """The tools among ``tools`` that cannot be found, in the given order."""
    return [tool for tool in tools if find_tool(tool) is None]


def missing_message(tools: Iterable[str]) -> str:
    names = ", ".join(tools)
    return f"required tools missing: {names} (install them with scripts/setup.sh; CI=true does not skip tests)"


def missing_in_ci(environ: Mapping[str, str] = os.environ) -> str | None:
    """Under CI, a one-line failure naming every missing required tool; None when all are there or not in CI."""
    if not in_ci(environ):
        return None
    absent = missing()
    return missing_message(absent) if absent else None


def unavailable(reason: str, environ: Mapping[str, str] = os.environ) -> NoReturn:
    """The calling test cannot run here (a tool, root for a mount): a skip on a laptop, a failure in CI."""
    import pytest

    if in_ci(environ):
        pytest.fail(reason, pytrace=False)
    pytest.skip(f"{reason} (a failure under CI=true)")


def gate(tools: Iterable[str], environ: Mapping[str, str] = os.environ) -> None:
    """Skip the calling test when a tool it needs is missing; fail it instead under CI."""
    absent = missing(tools)
    if absent:
        unavailable(f"not installed: {', '.join(absent)}", environ)
