"""What ``apps/otel-verify/verify_trace.py`` emits, read from its source without running it.

The script is the one source of its token counts and run-id attribute; its module-level constants
are read with :mod:`ast` (literals only), so a broken or slow script cannot break the reader.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from amtp_obs import contract
from amtp_obs.project import ProjectError

CONSTANTS = ("PROMPT_TOKENS", "COMPLETION_TOKENS", "RUN_ID_ATTRIBUTE")


def script_constants(script: Path, names: tuple[str, ...] = CONSTANTS) -> dict[str, Any]:
    """The literal values of module-level ``NAME = <literal>`` assignments in ``script``."""
    try:
        tree = ast.parse(script.read_text(), filename=str(script))
    except (OSError, SyntaxError, ValueError) as exc:
        raise ProjectError(f"cannot read {script}: {type(exc).__name__}: {exc}") from None
    found: dict[str, Any] = {}
    for node in tree.body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        value = getattr(node, "value", None)
        for target in targets:
            if isinstance(target, ast.Name) and target.id in names and value is not None:
                try:
                    found[target.id] = ast.literal_eval(value)
                except ValueError:
                    raise ProjectError(f"{script}: {target.id} is not a literal") from None
    missing = [n for n in names if n not in found]
    if missing:
        raise ProjectError(f"{script}: no module-level {', '.join(missing)}")
    return found


@dataclass(frozen=True)
class ScriptFacts:
    """What verify_trace.py emits: its run-id attribute and the tokens one run adds per counter."""

    run_id_attribute: str
    tokens: dict[str, int]
    """Counter instrument name -> the value one run adds."""

    @classmethod
    def load(cls, script: Path) -> ScriptFacts:
        c = script_constants(script)
        prompt, completion = int(c["PROMPT_TOKENS"]), int(c["COMPLETION_TOKENS"])
        return cls(
            str(c["RUN_ID_ATTRIBUTE"]),
            {
                contract.PROMPT_TOKENS.instrument: prompt,
                contract.COMPLETION_TOKENS.instrument: completion,
                contract.TOTAL_TOKENS.instrument: prompt + completion,
            },
        )
