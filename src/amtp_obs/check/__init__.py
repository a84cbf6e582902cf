"""``amtp-obs check``: the stack as code validated by the real tools plus cross-file rules.

Public API: :func:`run_checks` (what the CLI calls), :class:`Finding` / :class:`Severity`,
:class:`CheckOutcome`, the :func:`check` mark and :data:`REGISTRY` (built from the modules listed
in :mod:`amtp_obs.check.registry`).
"""

from amtp_obs.check.framework import (
    CheckOutcome,
    Context,
    Finding,
    Severity,
    Skip,
    check,
    iter_findings,
)
from amtp_obs.check.registry import REGISTRY
from amtp_obs.check.runner import run_checks
from amtp_obs.tools import find_tool

__all__ = [
    "REGISTRY",
    "CheckOutcome",
    "Context",
    "Finding",
    "Severity",
    "Skip",
    "check",
    "find_tool",
    "iter_findings",
    "run_checks",
]
