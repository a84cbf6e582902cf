"""``amtp-obs pricing render``: the catalog and budgets -> ``infra/observability/rules/pricing.rules.yml``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from amtp_obs import env
from amtp_obs.pricing.catalog import CatalogError
from amtp_obs.pricing.rules import RULES_FILE, render_checkout
from amtp_obs.project import Project, ProjectError
from amtp_obs.rendered import write_or_check

pricing_app = typer.Typer(help="LLM spend: render the price catalog and budgets into Prometheus rules.")


@pricing_app.command("render")
def render_cmd(
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 when the committed rules are stale.")
    ] = False,
    project_dir: Annotated[
        Path | None,
        typer.Option("--project-dir", help=f"Checkout (default: ${env.AMTP_OBS_PROJECT_DIR} or upwards)."),
    ] = None,
) -> None:
    """Render infra/observability/pricing/{catalog,budgets}.yaml into the pricing rules file."""
    try:
        root = Project.discover(project_dir, environ=dict(os.environ)).root
        text = render_checkout(root)
    except (ProjectError, CatalogError, OSError) as exc:
        typer.echo(f"amtp-obs pricing render: {exc}", err=True)
        raise typer.Exit(2) from None
    code, message = write_or_check(
        root / RULES_FILE, text, name=RULES_FILE, command="amtp-obs pricing render", check=check
    )
    typer.echo(message, err=code != 0)
    if code:
        raise typer.Exit(code)


def register(app: typer.Typer) -> None:
    app.add_typer(pricing_app, name="pricing")
