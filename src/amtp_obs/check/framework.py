"""A small check framework: named checks that return findings, a context they share, a runner.

Each check is a function registered with :func:`check`; it yields :class:`Finding` objects or
raises :class:`Skip` with the reason it cannot run here (a validator is missing, a file is absent).
The runner never lets one broken check take the others down: an unexpected exception becomes an
error finding naming the check.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from amtp_obs import project as proj
from amtp_obs.project import ProjectError, parse_env_file
from amtp_obs.tools import find_tool

TOOL_TIMEOUT_S = 30.0
"""Upper bound for one validator run; every real one finishes in well under a second."""


class Severity(StrEnum):
    ERROR = "error"
    WARNING = "warning"


@dataclass(frozen=True)
class Finding:
    """One problem: what is wrong and where, in the ``file[:line]: message`` form editors jump to."""

    severity: Severity
    message: str
    file: str | None = None
    line: int | None = None
    check: str = ""

    def render(self) -> str:
        where = ""
        if self.file:
            where = f"{self.file}:{self.line}: " if self.line else f"{self.file}: "
        return f"{where}{self.severity.value}: {self.message}"


def error(message: str, file: str | Path | None = None, line: int | None = None) -> Finding:
    return Finding(Severity.ERROR, message, str(file) if file is not None else None, line)


def warning(message: str, file: str | Path | None = None, line: int | None = None) -> Finding:
    return Finding(Severity.WARNING, message, str(file) if file is not None else None, line)


class Skip(Exception):
    """Raised by a check that cannot run here; the message is the reason shown in the table."""


CheckFunc = Callable[["Context"], Iterable[Finding]]


@dataclass(frozen=True)
class CheckSpec:
    name: str
    description: str
    func: CheckFunc


SPEC_ATTRIBUTE = "check_spec"


def check(name: str, description: str) -> Callable[[CheckFunc], CheckFunc]:
    """Mark a function as a check with a unique, stable name (the one ``--only`` selects).

    Marking registers nothing: :mod:`amtp_obs.check.registry` lists the check modules and collects
    the marked functions of each, in the order they are defined.
    """

    def deco(func: CheckFunc) -> CheckFunc:
        setattr(func, SPEC_ATTRIBUTE, CheckSpec(name, description, func))
        return func

    return deco


def spec_of(obj: object) -> CheckSpec | None:
    """The :class:`CheckSpec` of a function marked with :func:`check`, else None."""
    spec = getattr(obj, SPEC_ATTRIBUTE, None)
    return spec if isinstance(spec, CheckSpec) else None


# ---------------------------------------------------------------------------------------------
# Tools
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ToolResult:
    returncode: int
    stdout: str
    stderr: str

    @property
    def output(self) -> str:
        return (self.stdout + ("\n" if self.stdout and self.stderr else "") + self.stderr).strip()


def require_tool(name: str) -> str:
    path = find_tool(name)
    if path is None:
        raise Skip(f"{name} not on PATH")
    return path


def run_tool(
    args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = TOOL_TIMEOUT_S
) -> ToolResult:
    """Run a validator; a hang or a crash of the tool itself is reported, never raised."""
    full_env = dict(os.environ)
    # Tools run from the venv's bin must find their siblings (actionlint -> shellcheck is on PATH).
    full_env["PATH"] = f"{full_env.get('PATH', '')}{os.pathsep}{Path(sys.executable).parent}"
    if env:
        full_env.update(env)
    try:
        cp = subprocess.run(
            list(args), cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return ToolResult(124, "", f"{Path(args[0]).name} did not finish within {timeout:.0f}s")
    except OSError as exc:
        return ToolResult(127, "", f"cannot run {args[0]}: {exc}")
    return ToolResult(cp.returncode, cp.stdout, cp.stderr)


# ---------------------------------------------------------------------------------------------
# YAML with line numbers
# ---------------------------------------------------------------------------------------------


class YamlDoc:
    """A parsed YAML file that can say on which line a key path sits."""

    def __init__(self, rel: str, text: str) -> None:
        self.rel = rel
        self.text = text
        try:
            self.node = yaml.compose(text, Loader=yaml.SafeLoader)
            self.data: Any = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            mark = getattr(exc, "problem_mark", None)
            line = mark.line + 1 if mark is not None else None
            raise FileProblem(rel, line, f"invalid YAML: {getattr(exc, 'problem', exc)}") from None

    def line(self, *path: str | int) -> int | None:
        """1-based line of the deepest node reached along ``path`` (keys and list indexes)."""
        node = self.node
        if node is None:
            return None
        best = node.start_mark.line + 1
        for step in path:
            nxt = None
            if isinstance(node, yaml.MappingNode):
                for k, v in node.value:
                    if k.value == str(step):
                        nxt, best = v, k.start_mark.line + 1
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
                nxt = node.value[step]
                best = nxt.start_mark.line + 1
            if nxt is None:
                return best
            node = nxt
        return best

    def find_line(self, needle: str) -> int | None:
        """First line containing ``needle`` (for values whose key path is not at hand)."""
        for i, line in enumerate(self.text.splitlines(), 1):
            if needle in line:
                return i
        return None


class FileProblem(Exception):
    """A file every check needs is missing or unreadable; becomes one error finding."""

    def __init__(self, file: str, line: int | None, message: str) -> None:
        super().__init__(message)
        self.file, self.line, self.message = file, line, message


# ---------------------------------------------------------------------------------------------
# Context
# ---------------------------------------------------------------------------------------------


@dataclass
class Context:
    """What the checks share: the project, the mode, a scratch directory, parsed files (cached)."""

    root: Path
    strict: bool = False
    scratch: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="amtp-obs-check-")))
    _yaml: dict[str, YamlDoc] = field(default_factory=dict)

    def exists(self, rel: Path | str) -> bool:
        return (self.root / rel).exists()

    def read_text(self, rel: Path | str) -> str:
        path = self.root / rel
        try:
            return path.read_text()
        except FileNotFoundError:
            raise FileProblem(str(rel), None, "file is missing") from None
        except OSError as exc:
            raise FileProblem(str(rel), None, f"cannot read: {exc}") from None

    def yaml(self, rel: Path | str) -> YamlDoc:
        key = str(rel)
        if key not in self._yaml:
            self._yaml[key] = YamlDoc(key, self.read_text(rel))
        return self._yaml[key]

    def mapping(self, rel: Path | str) -> dict[str, Any]:
        data = self.yaml(rel).data
        if not isinstance(data, dict):
            raise FileProblem(str(rel), 1, "expected a YAML mapping at the top level")
        return data

    @cached_property
    def env_example(self) -> dict[str, str]:
        path = self.root / proj.ENV_EXAMPLE_FILE
        if not path.is_file():
            raise FileProblem(proj.ENV_EXAMPLE_FILE, None, "file is missing")
        try:
            return parse_env_file(path)
        except ProjectError as exc:
            raise FileProblem(proj.ENV_EXAMPLE_FILE, None, str(exc)) from None

    @cached_property
    def deployment_env_file(self) -> str:
        """``.env`` when present (what a real deploy uses), else ``.env.example``."""
        return proj.ENV_FILE if (self.root / proj.ENV_FILE).is_file() else proj.ENV_EXAMPLE_FILE

    @cached_property
    def deployment_values(self) -> dict[str, str]:
        path = self.root / self.deployment_env_file
        try:
            return parse_env_file(path)
        except ProjectError as exc:
            raise FileProblem(self.deployment_env_file, None, str(exc)) from None
        except OSError as exc:
            raise FileProblem(self.deployment_env_file, None, f"cannot read: {exc}") from None

    @cached_property
    def compose(self) -> dict[str, Any]:
        data = self.mapping(proj.COMPOSE_FILE)
        if not isinstance(data.get("services"), dict):
            raise FileProblem(proj.COMPOSE_FILE, 1, "no `services:` mapping")
        return data

    @cached_property
    def cache(self) -> dict[str, Any]:
        """Free-form memo for derived data shared between checks (e.g. the series model)."""
        return {}


@dataclass
class CheckOutcome:
    spec: CheckSpec
    findings: list[Finding] = field(default_factory=list)
    skipped: str | None = None

    @property
    def status(self) -> str:
        if self.skipped is not None:
            return "skipped"
        if any(f.severity is Severity.ERROR for f in self.findings):
            return "failed"
        if self.findings:
            return "warnings"
        return "ok"


def run_one(spec: CheckSpec, ctx: Context) -> CheckOutcome:
    outcome = CheckOutcome(spec)
    try:
        for f in spec.func(ctx):
            outcome.findings.append(Finding(f.severity, f.message, f.file, f.line, spec.name))
    except Skip as exc:
        outcome.skipped = str(exc)
    except FileProblem as exc:
        outcome.findings.append(Finding(Severity.ERROR, exc.message, exc.file, exc.line, spec.name))
    except ProjectError as exc:
        outcome.findings.append(Finding(Severity.ERROR, str(exc), None, None, spec.name))
    except Exception as exc:  # a bug in one check must not hide the others' results
        outcome.findings.append(
            Finding(Severity.ERROR, f"check crashed: {type(exc).__name__}: {exc}", None, None, spec.name)
        )
    return outcome


def iter_findings(outcomes: Iterable[CheckOutcome]) -> Iterator[Finding]:
    for o in outcomes:
        yield from o.findings
