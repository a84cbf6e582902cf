"""The ``amtp-obs`` command line: each concept's module registers its own commands.

The command belongs to the stack (``pip install 'amtp-obs[stack]'``); in a lean SDK-only install it
says so in one line instead of a traceback.
"""

from __future__ import annotations

import sys
from typing import Any


def build_app() -> Any:
    """The typer application with every module's commands (imports the stack's dependencies)."""
    import typer

    from amtp_obs.accounting import cli as accounting_cli
    from amtp_obs.check import cli as check_cli
    from amtp_obs.dashboard import cli as dashboard_cli
    from amtp_obs.pricing import cli as pricing_cli
    from amtp_obs.stack import cli as stack_cli

    app = typer.Typer(
        name="amtp-obs",
        help="AMTP Observability: check the stack as code, run it locally, verify it end to end.",
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
    )
    for module in (check_cli, stack_cli, dashboard_cli, accounting_cli, pricing_cli):
        module.register(app)
    return app


def main() -> None:
    try:
        app = build_app()
    except ImportError as err:
        sys.exit(
            f"amtp-obs: the command line needs the stack extra ({err.name} is not installed): "
            "pip install 'amtp-obs[stack]'"
        )
    app()


if __name__ == "__main__":
    main()
