"""``amtp-obs up|down|status|verify|demo``: the embedded stack and its acceptance gate."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def up() -> None:
        """Start the embedded stack (not yet implemented)."""
        typer.echo("amtp-obs up: not implemented yet", err=True)
        raise typer.Exit(2)
