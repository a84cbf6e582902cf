"""``amtp-obs up|down|status|verify|demo``: the embedded stack and its acceptance gate."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from amtp_obs import env
from amtp_obs.console import make_console
from amtp_obs.project import COMPOSE_FILE, SERVICE_COLLECTOR, SERVICE_PROMETHEUS, Project, ProjectError
from amtp_obs.stack.addresses import PortInUseError
from amtp_obs.stack.planning import EXPORTER_URL, ServicePlan, StackError, StackPlan, plan
from amtp_obs.stack.state import Layout, records, state_dir
from amtp_obs.stack.supervisor import (
    DEFAULT_READY_TIMEOUT_S,
    READY_TIMEOUT_S,
    child_env,
    log_tail,
    probe,
    running,
    spawn,
    stop_all,
)

if TYPE_CHECKING:
    from amtp_obs.accounting.drain import PrometheusDrain

console = make_console()
err = make_console(stderr=True)

StateDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--state-dir",
        help=f"Where WAL, blocks, Prometheus data, logs and pids live (default: ${env.AMTP_OBS_STATE_DIR} "
        "or .amtp-obs/ in the working directory).",
    ),
]
ProjectDirOpt = Annotated[
    Path | None,
    typer.Option(
        "--project-dir",
        help=f"Checkout holding docker-compose.observability.yml (default: ${env.AMTP_OBS_PROJECT_DIR} "
        "or searched upwards from the working directory).",
    ),
]


def load_project(project_dir: Path | None) -> Project:
    try:
        if project_dir is not None:  # an explicit flag wins over $AMTP_OBS_PROJECT_DIR
            environ = {k: v for k, v in os.environ.items() if k != env.AMTP_OBS_PROJECT_DIR}
            project = Project.discover(project_dir, environ)
            if project.root != project_dir.resolve():
                raise ProjectError(f"--project-dir {project_dir} holds no {COMPOSE_FILE}")
            return project
        return Project.discover()
    except ProjectError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from None


def _save_stack(layout: Layout, stack: StackPlan) -> None:
    doc = {
        "project": str(stack.project.root),
        "services": [
            {
                "name": s.name,
                "embedded": s.embedded,
                "ready_url": s.ready_url,
                "urls": s.urls,
                "notes": s.notes,
                "config": str(s.config_path) if s.config_path else None,
            }
            for s in stack.services
        ],
    }
    layout.stack_file.write_text(json.dumps(doc, indent=2) + "\n")


def _load_stack(layout: Layout) -> list[dict[str, Any]]:
    try:
        return list(json.loads(layout.stack_file.read_text())["services"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def _drain(services: list[dict[str, Any]]) -> PrometheusDrain | None:
    """What a stop waits for: the collector scraped, then the rules caught up (docs/accounting.md)."""
    from amtp_obs.accounting.drain import PrometheusDrain

    def url(service: str, what: str) -> str | None:
        found = [str(u) for s in services if s["name"] == service for w, u in s["urls"] if w == what]
        return found[0] if found else None

    prometheus = url(SERVICE_PROMETHEUS, "Prometheus")
    if prometheus is None:
        return None
    return PrometheusDrain(prometheus, url(SERVICE_COLLECTOR, EXPORTER_URL))


def _url_table(services: list[dict[str, Any]]) -> Table:
    table = Table(title="AMTP observability stack (embedded)", title_justify="left")
    table.add_column("service")
    table.add_column("what")
    table.add_column("URL / address")
    for s in services:
        if not s["embedded"]:
            table.add_row(s["name"], "[yellow]" + "; ".join(s["notes"]) + "[/yellow]", "-")
            continue
        for i, (what, url) in enumerate(s["urls"]):
            table.add_row(s["name"] if i == 0 else "", what, url)
    return table


def _start(stack: StackPlan, environ: dict[str, str]) -> dict[str, subprocess.Popen[bytes]]:
    """Start services as their dependencies become ready; on any failure stop everything and exit 1."""
    layout = stack.layout
    embedded = {s.name: s for s in stack.embedded()}
    procs: dict[str, subprocess.Popen[bytes]] = {}
    ready: set[str] = set()
    started_at: dict[str, float] = {}
    order = [s.name for s in stack.services]

    def deps_ready(s: ServicePlan) -> bool:
        return all(d in ready or d not in embedded for d in s.depends_on)

    def fail(name: str, why: str) -> None:
        err.print(f"[red]✗ {name} failed to become ready: {why}[/red]")
        err.print(f"[dim]--- last lines of {layout.log(name)} ---[/dim]")
        err.print(log_tail(layout.log(name)), markup=False)
        err.print("[dim]---[/dim]")
        result = stop_all(layout, order)
        for svc, what in result.items():
            err.print(f"  stopped {svc}: {what}")
        raise typer.Exit(1)

    with console.status("starting the embedded stack") as status:
        while len(ready) < len(embedded):
            for name, sp in embedded.items():
                if name not in procs and deps_ready(sp):
                    try:
                        procs[name] = spawn(sp, layout, environ)
                    except OSError as exc:
                        fail(name, f"cannot start {sp.argv[0]}: {exc}")
                    started_at[name] = time.monotonic()
            pending = [n for n in procs if n not in ready]
            status.update("waiting for " + ", ".join(pending))
            for name in pending:
                sp, proc = embedded[name], procs[name]
                if proc.poll() is not None:
                    fail(name, f"exited with code {proc.returncode}")
                ok, detail = probe(sp.ready_url, timeout=0.5) if sp.ready_url else (True, "")
                elapsed = time.monotonic() - started_at[name]
                if ok:
                    ready.add(name)
                    console.print(f"[green]✓[/green] {name} ready in {elapsed:.1f} s (pid {proc.pid})")
                elif elapsed > READY_TIMEOUT_S.get(name, DEFAULT_READY_TIMEOUT_S):
                    fail(name, f"{sp.ready_url} not ready after {elapsed:.0f} s (last: {detail})")
            time.sleep(0.1)
    return procs


class _Interrupted(Exception):
    """SIGTERM while `up` is still starting services: stop them rather than orphan them."""


def _interrupt(signum: int, _frame: Any) -> None:
    raise _Interrupted(signal.Signals(signum).name)


def _wait_foreground(layout: Layout, procs: dict[str, subprocess.Popen[bytes]], order: list[str]) -> int:
    stop = threading.Event()
    reason: list[str] = []

    def on_signal(signum: int, _frame: Any) -> None:
        reason.append(signal.Signals(signum).name)
        stop.set()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        console.print("[bold]running in the foreground: Ctrl-C stops the stack[/bold]")
        code = 0
        while not stop.wait(0.5):
            dead = [n for n, p in procs.items() if p.poll() is not None]
            if dead:
                err.print(f"[red]{', '.join(dead)} exited; stopping the stack[/red]")
                for n in dead:
                    err.print(log_tail(layout.log(n), 15), markup=False)
                code = 1
                break
        if reason:
            console.print(f"received {reason[0]}: stopping")
        for svc, what in stop_all(layout, order, drain=_drain(_load_stack(layout))).items():
            console.print(f"  {svc}: {what}")
        for p in procs.values():
            p.poll()
        return code
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def register(app: typer.Typer) -> None:
    @app.command()
    def up(
        state: StateDirOpt = None,
        foreground: Annotated[
            bool, typer.Option("--foreground", help="Stay attached; Ctrl-C or SIGTERM stops the stack.")
        ] = False,
        project_dir: ProjectDirOpt = None,
    ) -> None:
        """Start the embedded stack (collector, trace store, Prometheus, dashboard) from the Compose files."""
        project = load_project(project_dir)
        layout = Layout(state_dir(state))
        live = running(layout)
        if live:
            known = _load_stack(layout)
            want = {s["name"] for s in known if s["embedded"]}
            if want and want <= set(live):
                console.print(f"the embedded stack is already running (state dir {layout.root})")
                console.print(_url_table(known))
                return
            err.print(
                f"[red]error:[/red] the stack in {layout.root} is partly running "
                f"({', '.join(sorted(live))}); run `amtp-obs down` first"
            )
            raise typer.Exit(1)
        for rec in records(layout):  # stale records of processes that are gone
            layout.pid_file(rec.service).unlink(missing_ok=True)
        try:
            stack = plan(project, layout)
            stack.resolver.check_binds({s.name for s in stack.embedded()})
        except PortInUseError as exc:
            err.print("[red]error: cannot start the embedded stack, ports are taken:[/red]")
            for line in str(exc).splitlines():
                err.print(f"  - {line}")
            raise typer.Exit(1) from None
        except (ProjectError, StackError) as exc:
            err.print(f"[red]error:[/red] {exc}")
            raise typer.Exit(1) from None
        stack.resolver.save(layout.ports_file)
        _save_stack(layout, stack)
        console.print(f"state dir: {layout.root}")
        for s in stack.services:
            for note in s.notes:
                console.print(f"[yellow]note:[/yellow] {s.name}: {note}")
        order = [s.name for s in stack.services]
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            procs = _start(stack, child_env(project))
        except (KeyboardInterrupt, _Interrupted) as exc:
            err.print(f"[red]interrupted ({exc or 'SIGINT'}) while starting: stopping what was started[/red]")
            for svc, what in stop_all(layout, order).items():
                err.print(f"  {svc}: {what}")
            raise typer.Exit(130) from None
        finally:
            signal.signal(signal.SIGTERM, previous)
        console.print(_url_table(_load_stack(layout)))
        console.print(
            f"logs: {layout.logs}   stop with: amtp-obs down" + (f" --state-dir {layout.root}" if state else "")
        )
        if foreground:
            raise typer.Exit(_wait_foreground(layout, procs, order))

    @app.command()
    def down(state: StateDirOpt = None) -> None:
        """Stop exactly what `amtp-obs up` started (SIGTERM, then SIGKILL after a timeout).

        First Prometheus scrapes what the collector holds; Prometheus stops last, once its accounting
        and pricing rules have counted what it scraped.
        """
        layout = Layout(state_dir(state))
        services = _load_stack(layout)
        result = stop_all(layout, [s["name"] for s in services], drain=_drain(services))
        if not result:
            console.print(f"nothing to stop (state dir {layout.root})")
            return
        for svc, what in result.items():
            console.print(f"{svc}: {what}")

    @app.command()
    def status(
        state: StateDirOpt = None,
        urls: Annotated[bool, typer.Option("--urls", help="Also list every URL of every service.")] = False,
    ) -> None:
        """Show each service: pid, state, URL and readiness."""
        layout = Layout(state_dir(state))
        services = _load_stack(layout)
        if not services:
            console.print(f"the embedded stack has not been started from {layout.root}")
            raise typer.Exit(3)
        recs = {r.service: r for r in records(layout)}
        table = Table(title=f"embedded stack ({layout.root})", title_justify="left")
        for col in ("service", "pid", "state", "URL", "ready"):
            table.add_column(col)
        any_running = False
        for s in services:
            if not s["embedded"]:
                table.add_row(s["name"], "-", "not embedded", "-", "; ".join(s["notes"]))
                continue
            rec = recs.get(s["name"])
            url = s["urls"][0][1] if s["urls"] else "-"
            if rec is None:
                table.add_row(s["name"], "-", "stopped", url, "-")
                continue
            if not rec.matches():
                table.add_row(s["name"], str(rec.pid), "[red]dead[/red]", url, f"see {rec.log}")
                continue
            any_running = True
            ok, detail = probe(s["ready_url"]) if s["ready_url"] else (True, "")
            table.add_row(
                s["name"],
                str(rec.pid),
                "[green]running[/green]",
                url,
                "[green]ready[/green]" if ok else f"[yellow]not ready ({detail})[/yellow]",
            )
        console.print(table)
        if urls:
            console.print(_url_table(services))
        if not any_running:
            raise typer.Exit(3)

    @app.command()
    def verify(
        junit: Annotated[Path | None, typer.Option("--junit", help="Also write a JUnit XML report here.")] = None,
        timeout: Annotated[
            float,
            typer.Option("--timeout", min=1.0, help="Upper bound in seconds for each wait (Tempo, Prometheus)."),
        ] = 60.0,
        project_dir: ProjectDirOpt = None,
    ) -> None:
        """End-to-end acceptance gate for the running stack (embedded or Compose), found by OBS_* ports."""
        from amtp_obs.verify import run_verify

        project = load_project(project_dir)
        raise typer.Exit(run_verify(project, junit=junit, timeout=timeout, console=console))

    @app.command()
    def demo(
        calls: Annotated[int, typer.Option("--calls", min=1, max=100, help="LLM calls per demo service.")] = 4,
        duration: Annotated[
            float,
            typer.Option(
                "--duration",
                help="Spread each service's calls over this many seconds, so rate panels show more than 0.",
            ),
        ] = 0.0,
        project_dir: ProjectDirOpt = None,
    ) -> None:
        """Send a short agent workload (several services, models, errors) to the stack's collector."""
        from amtp_obs.demo import run_demo

        project = load_project(project_dir)
        raise typer.Exit(run_demo(project, calls=calls, console=console, duration=duration))
