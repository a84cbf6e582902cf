"""``amtp-obs usage`` and ``amtp-obs accounting render``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from amtp_obs import env
from amtp_obs.accounting import rules
from amtp_obs.accounting.usage import GROUP_LABELS, UsageError, UsageReport, check_since, query_usage
from amtp_obs.console import make_console
from amtp_obs.project import Project, ProjectError
from amtp_obs.rendered import write_or_check

LOOPBACK = "127.0.0.1"

accounting_app = typer.Typer(help="Exact token accounting: the Prometheus rules behind every total.")


@accounting_app.command("render")
def render_cmd(
    project_dir: Annotated[Path | None, typer.Option("--project-dir", help="Checkout to write into.")] = None,
    check: Annotated[bool, typer.Option("--check", help="Only report whether the committed file is current.")] = False,
) -> None:
    """Write infra/observability/rules/accounting.rules.yml from the contract's counters."""
    try:
        project = Project.discover(project_dir)
    except ProjectError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    code, message = write_or_check(
        project.path(rules.RULES_FILE),
        rules.render(),
        name=rules.RULES_FILE,
        command="amtp-obs accounting render",
        check=check,
    )
    typer.echo(message, err=code != 0)
    if code:
        raise typer.Exit(code)


def _table(report: UsageReport) -> Table:
    t = Table(title=f"LLM tokens over the last {report.since}, by {report.by}")
    t.add_column(report.by)
    for c in report.classes:
        t.add_column(c.removesuffix("_tokens").replace("_", " "), justify="right")
    t.add_column("USD", justify="right")
    t.add_column("unpriced tokens", justify="right")
    for row in report.rows:
        t.add_row(
            row.group or "(none)",
            *(f"{row.tokens.get(c, 0.0):,.0f}" for c in report.classes),
            _usd(row.usd),
            f"{row.unpriced_tokens:,.0f}",
        )
    totals = report.totals()
    t.add_section()
    t.add_row(
        "total",
        *(f"{totals[c]:,.0f}" for c in report.classes),
        _usd(report.total_usd()),
        f"{sum(r.unpriced_tokens for r in report.rows):,.0f}",
        style="bold",
    )
    return t


def _usd(value: float | None) -> str:
    """USD to the micro-dollar (one call can cost less than a cent); "n/a" when nothing was priced."""
    return "n/a" if value is None else f"${value:,.6f}"


def usage_cmd(
    since: Annotated[str, typer.Option("--since", help="Range ending now, e.g. 30m, 24h, 7d.")] = "24h",
    by: Annotated[str, typer.Option("--by", help=f"Group by {' or '.join(GROUP_LABELS)}.")] = "service",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    prometheus_url: Annotated[
        str | None, typer.Option("--prometheus-url", help=f"Default: 127.0.0.1:${env.OBS_PROMETHEUS_PORT}.")
    ] = None,
    project_dir: Annotated[Path | None, typer.Option("--project-dir")] = None,
) -> None:
    """Exact tokens per service or model over a time range (the dashboard's totals, in the terminal)."""
    try:
        check_since(since)
        if by not in GROUP_LABELS:
            raise UsageError(f"--by must be one of {', '.join(GROUP_LABELS)}, got {by!r}")
        if prometheus_url is None:
            prometheus_url = f"http://{LOOPBACK}:{Project.discover(project_dir).port(env.OBS_PROMETHEUS_PORT)}"
        report = query_usage(prometheus_url, since=since, by=by)  # type: ignore[arg-type]
    except (UsageError, ProjectError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(report.as_json(), indent=2))
        return
    console = make_console()
    if not report.rows:
        console.print(f"no LLM tokens recorded in the last {since} (is the stack running and has anything run?)")
        return
    console.print(_table(report))


def register(app: typer.Typer) -> None:
    app.add_typer(accounting_app, name="accounting")
    app.command("usage")(usage_cmd)
