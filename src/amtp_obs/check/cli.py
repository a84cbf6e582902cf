"""``amtp-obs check``: validate the whole stack as code, one actionable line per problem."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from amtp_obs import env
from amtp_obs.check.framework import CheckOutcome, Severity, iter_findings
from amtp_obs.check.runner import run_checks
from amtp_obs.console import make_console
from amtp_obs.project import COMPOSE_FILE, Project, ProjectError

_STYLE = {"ok": "green", "warnings": "yellow", "failed": "red", "skipped": "dim"}


def _root(project_dir: Path | None) -> Path:
    if project_dir is not None:
        if not (project_dir / COMPOSE_FILE).is_file():
            raise ProjectError(f"{project_dir} holds no {COMPOSE_FILE}")
        return project_dir
    return Project.discover(environ=dict(os.environ)).root


def summary_table(outcomes: list[CheckOutcome]) -> Table:
    table = Table(title="amtp-obs check")
    table.add_column("check")
    table.add_column("result")
    table.add_column("details")
    for o in outcomes:
        errors = sum(1 for f in o.findings if f.severity is Severity.ERROR)
        warns = len(o.findings) - errors
        if o.skipped is not None:
            detail = f"skipped: {o.skipped}"
        elif o.findings:
            detail = f"{errors} error(s), {warns} warning(s)"
        else:
            detail = o.spec.description
        table.add_row(o.spec.name, f"[{_STYLE[o.status]}]{o.status}[/]", detail)
    return table


def register(app: typer.Typer) -> None:
    @app.command()
    def check(
        strict: Annotated[
            bool, typer.Option("--strict", help="Treat warnings (e.g. CHANGEME values) as errors.")
        ] = False,
        project_dir: Annotated[
            Path | None,
            typer.Option("--project-dir", help=f"Checkout to check (default: ${env.AMTP_OBS_PROJECT_DIR} or upwards)."),
        ] = None,
        only: Annotated[list[str] | None, typer.Option("--only", help="Run only this check (repeatable).")] = None,
    ) -> None:
        """Validate compose, collector, Tempo, Prometheus, Grafana and CI files with the real tools.

        Exit status: 0 clean (warnings allowed unless --strict), 1 problems found, 2 usage error.
        """
        err = make_console(stderr=True)
        try:
            root = _root(project_dir)
        except ProjectError as exc:
            err.print(f"amtp-obs check: {exc}")
            raise typer.Exit(2) from None
        try:
            outcomes = run_checks(root, strict=strict, only=only)
        except KeyError as exc:
            err.print(f"amtp-obs check: {exc.args[0]}")
            raise typer.Exit(2) from None
        findings = list(iter_findings(outcomes))
        for f in findings:
            typer.echo(f.render())
        make_console().print(summary_table(outcomes))
        errors = sum(1 for f in findings if f.severity is Severity.ERROR)
        warns = len(findings) - errors
        typer.echo(f"{errors} error(s), {warns} warning(s)")
        if errors or (strict and warns):
            raise typer.Exit(1)
