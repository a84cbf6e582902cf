"""``amtp-obs check``: validate the whole stack as code."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def check() -> None:
        """Validate the stack's files with every real validator present (not yet implemented)."""
        typer.echo("amtp-obs check: not implemented yet", err=True)
        raise typer.Exit(2)
