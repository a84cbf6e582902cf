"""``amtp-obs check``: the stack as code validated by the real tools plus cross-file rules.

Public API: :func:`run_checks` (what the CLI calls), :class:`Finding` / :class:`Severity`,
:class:`CheckOutcome`, the :func:`check` decorator and :data:`REGISTRY` for adding checks.
"""

from amtp_obs.check.framework import (
    REGISTRY,
    CheckOutcome,
    Context,
    Finding,
    Severity,
    Skip,
    check,
    find_tool,
    iter_findings,
    run_checks,
)

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
