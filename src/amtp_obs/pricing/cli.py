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
    out = root / RULES_FILE
    current = out.read_text() if out.is_file() else None
    if check:
        if current != text:
            typer.echo(f"{RULES_FILE} is stale: run `amtp-obs pricing render`", err=True)
            raise typer.Exit(1)
        typer.echo(f"{RULES_FILE} is up to date")
        return
    if current == text:
        typer.echo(f"{RULES_FILE} is up to date")
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {RULES_FILE}")


def register(app: typer.Typer) -> None:
    app.add_typer(pricing_app, name="pricing")
