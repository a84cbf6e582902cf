"""Required tools: a missing one is a skip on a laptop and a failure under CI=true, named in the output."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from amtp_obs import env
from amtp_obs.testing import tools
from amtp_obs.tools import find_tool, names_of

REPO = Path(__file__).resolve().parents[1]
SELF = Path(__file__).relative_to(REPO).as_posix()


def _stub_path(tmp_path: Path, *, without: str) -> str:
    """A PATH holding a do-nothing executable for every required tool except ``without``."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in tools.REQUIRED_TOOLS:
        if tool == without:
            continue
        stub = bin_dir / names_of(tool)[0]
        stub.write_text("#!/bin/sh\nexit 0\n")
        stub.chmod(0o755)
    return str(bin_dir)


def _pytest(node: str, path: str, ci: str | None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != env.CI}
    environ["PATH"] = path
    if ci is not None:
        environ[env.CI] = ci
    return subprocess.run(
        [sys.executable, "-m", "pytest", node, "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:randomly"],
        cwd=REPO,
        env=environ,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.needs("promtool")
def test_a_needs_marker_runs_the_test_with_the_tool_found() -> None:
    """The test the subprocess runs below: with promtool on PATH it runs and finds it."""
    assert find_tool("promtool") is not None


def test_ci_fails_the_run_naming_a_missing_tool(tmp_path: Path) -> None:
    path = _stub_path(tmp_path, without="promtool")
    target = f"{SELF}::test_a_needs_marker_runs_the_test_with_the_tool_found"

    in_ci = _pytest(target, path, "true")
    out = in_ci.stdout + in_ci.stderr
    assert in_ci.returncode != 0, out
    assert "required tools missing: promtool " in out, out
    assert "passed" not in out and "skipped" not in out, out

    local = _pytest(target, path, None)
    out = local.stdout + local.stderr
    assert local.returncode == 0, out
    assert "1 skipped" in out and "not installed: promtool" in out, out


def test_ci_passes_when_every_required_tool_is_there(tmp_path: Path) -> None:
    """The control: the same CI run with promtool present (a stub) runs the test instead of failing."""
    path = _stub_path(tmp_path, without="")
    res = _pytest(f"{SELF}::test_a_needs_marker_runs_the_test_with_the_tool_found", path, "true")
    assert res.returncode == 0 and "1 passed" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize(
    ("value", "expected"), [("true", True), ("1", True), ("TRUE", True), ("", False), ("0", False)]
)
def test_ci_variable(value: str, expected: bool) -> None:
    assert tools.in_ci({env.CI: value}) is expected
    assert tools.in_ci({}) is False


def test_missing_lists_only_absent_tools_in_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", _stub_path(tmp_path, without="shellcheck"))
    assert tools.missing(["shellcheck", "prometheus", "no-such-tool-here"]) == ["shellcheck", "no-such-tool-here"]
    assert tools.missing_in_ci({env.CI: "true"}) == tools.missing_message(["shellcheck"])
    assert tools.missing_in_ci({}) is None


def test_a_tool_with_another_name_is_found_under_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Debian names Alertmanager prometheus-alertmanager; an upstream install names it alertmanager."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    upstream = bin_dir / "alertmanager"
    upstream.write_text("#!/bin/sh\n")
    upstream.chmod(0o755)
    monkeypatch.setenv("PATH", str(bin_dir))
    assert find_tool("alertmanager") == str(upstream)


def test_no_test_skips_itself_past_the_gate() -> None:
    """A skip on a missing tool or an own module would bypass the CI rule: tests use needs(...) instead."""
    skips = re.compile(r"importorskip\(|pytest\.skip\(|skipif\(.*\bNone\b")
    offenders = []
    for path in sorted((REPO / "tests").rglob("*.py")):
        if path == Path(__file__).resolve():
            continue
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if skips.search(line.split("#", 1)[0]):
                offenders.append(f"{path.relative_to(REPO)}:{n}: {line.strip()}")
    assert offenders == [], "\n".join(offenders)
