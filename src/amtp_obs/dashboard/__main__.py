"""``python -m amtp_obs.dashboard --prometheus-url URL --tempo-url URL [--alertmanager-url URL]``."""

import typer

from amtp_obs.dashboard.cli import dashboard

if __name__ == "__main__":
    typer.run(dashboard)
