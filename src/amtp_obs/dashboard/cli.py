"""``amtp-obs dashboard`` and ``python -m amtp_obs.dashboard``: serve the dashboard on its own."""

from __future__ import annotations

import signal
from pathlib import Path
from typing import Annotated

import typer

from amtp_obs import env
from amtp_obs.net import listen_socket
from amtp_obs.project import Project, ProjectError

DEFAULT_HOST = "127.0.0.1"


def serve(
    *,
    project_dir: Path | None,
    host: str,
    port: int | None,
    prometheus_url: str | None,
    tempo_url: str | None,
    alertmanager_url: str | None,
    dashboards_dir: Path | None = None,
    datasources_dir: Path | None = None,
) -> None:
    """Run the app in the foreground until SIGINT/SIGTERM (uvicorn handles both gracefully)."""
    import uvicorn

    from amtp_obs.dashboard.app import DashboardSettings, create_app

    try:
        project = Project.discover(project_dir)
        settings = DashboardSettings.from_project(
            project, prometheus_url=prometheus_url, tempo_url=tempo_url, alertmanager_url=alertmanager_url
        )
        listen_port = port if port is not None else project.port(env.OBS_GRAFANA_PORT)
    except ProjectError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    if dashboards_dir is not None:
        settings.dashboards_dir = dashboards_dir
    if datasources_dir is not None:
        settings.datasources_dir = datasources_dir
    if not settings.dashboards_dir.is_dir():
        typer.echo(f"error: dashboards directory {settings.dashboards_dir} does not exist", err=True)
        raise typer.Exit(1)
    typer.echo(
        f"dashboard: http://{host}:{listen_port}/ (Prometheus {prometheus_url or 'from datasources'}, "
        f"Tempo {tempo_url or 'from datasources'}, Alertmanager {alertmanager_url or 'none'})"
    )
    try:
        sock = listen_socket(host, listen_port)
    except OSError as exc:
        typer.echo(
            f"error: cannot listen on {host}:{listen_port}: {exc.strerror} (move it with {env.OBS_GRAFANA_PORT})",
            err=True,
        )
        raise typer.Exit(1) from None
    # uvicorn re-raises the signal that stopped it; a stop on request is a clean exit for us.
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server = uvicorn.Server(uvicorn.Config(create_app(settings), log_level="warning", lifespan="on"))
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()
    if not server.started:
        raise typer.Exit(1)


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


def dashboard(
    prometheus_url: Annotated[str | None, typer.Option(help="Prometheus base URL (default: datasources file)")] = None,
    tempo_url: Annotated[str | None, typer.Option(help="Tempo-API base URL (default: datasources file)")] = None,
    alertmanager_url: Annotated[str | None, typer.Option(help="Alertmanager base URL, for alert states")] = None,
    port: Annotated[int | None, typer.Option(help=f"listen port (default: ${env.OBS_GRAFANA_PORT})")] = None,
    host: Annotated[str, typer.Option(help="listen address")] = DEFAULT_HOST,
    project_dir: Annotated[Path | None, typer.Option(help="checkout holding the compose file")] = None,
    dashboards_dir: Annotated[
        Path | None, typer.Option(help="dashboard JSON directory (default: provisioning)")
    ] = None,
    datasources_dir: Annotated[
        Path | None, typer.Option(help="datasources YAML directory (default: provisioning)")
    ] = None,
) -> None:
    """Serve the provisioned Grafana dashboards (Grafana's URLs) on the real Prometheus and trace store."""
    serve(
        project_dir=project_dir,
        host=host,
        port=port,
        prometheus_url=prometheus_url,
        tempo_url=tempo_url,
        alertmanager_url=alertmanager_url,
        dashboards_dir=dashboards_dir,
        datasources_dir=datasources_dir,
    )


def register(app: typer.Typer) -> None:
    app.command("dashboard")(dashboard)
