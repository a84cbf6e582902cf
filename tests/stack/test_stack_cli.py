"""The CLI's failure paths, run as the user runs them (a subprocess), before anything is started."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

from amtp_obs import env
from amtp_obs.net import port_is_free
from amtp_obs.project import COMPOSE_FILE, TEMPO_CONFIG

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "amtp_obs.cli"]


def run(args: list[str], ports: dict[str, int], cwd: Path, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("OBS_")}
    environ.update({k: str(v) for k, v in ports.items()})
    environ[env.AMTP_OBS_PROJECT_DIR] = str(REPO)
    environ["COLUMNS"] = "200"
    return subprocess.run(CLI + args, capture_output=True, text=True, timeout=timeout, env=environ, cwd=cwd)


def test_up_refuses_taken_ports_and_starts_nothing(ports: dict[str, int], tmp_path: Path) -> None:
    state = tmp_path / "state"
    with socket.socket() as a, socket.socket() as b:
        a.bind(("127.0.0.1", ports[env.OBS_OTEL_GRPC_PORT]))
        a.listen()
        b.bind(("127.0.0.1", ports[env.OBS_PROMETHEUS_PORT]))
        b.listen()
        res = run(["up", "--state-dir", str(state)], ports, tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert env.OBS_OTEL_GRPC_PORT in res.stderr and env.OBS_PROMETHEUS_PORT in res.stderr
    assert str(ports[env.OBS_OTEL_GRPC_PORT]) in res.stderr
    assert "Traceback" not in res.stderr
    assert not list((state / "pids").glob("*.json"))
    assert not (state / "logs").exists() or not list((state / "logs").iterdir())


def test_status_and_down_without_a_stack(ports: dict[str, int], tmp_path: Path) -> None:
    res = run(["status", "--state-dir", str(tmp_path / "none")], ports, tmp_path)
    assert res.returncode == 3 and "has not been started" in res.stdout
    res = run(["down", "--state-dir", str(tmp_path / "none")], ports, tmp_path)
    assert res.returncode == 0 and "nothing to stop" in res.stdout


def test_missing_project_is_a_clear_error(ports: dict[str, int], tmp_path: Path) -> None:
    res = run(["up", "--state-dir", str(tmp_path / "s"), "--project-dir", str(tmp_path)], ports, tmp_path)
    assert res.returncode == 2 and "docker-compose.observability.yml" in res.stderr
    environ_res = subprocess.run(
        [*CLI, "verify", "--timeout", "1"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=tmp_path,
        env={
            **{k: v for k, v in os.environ.items() if k != env.AMTP_OBS_PROJECT_DIR},
            env.AMTP_OBS_PROJECT_DIR: str(tmp_path),
        },
    )
    assert environ_res.returncode == 2 and "holds no docker-compose.observability.yml" in environ_res.stderr
    assert "Traceback" not in res.stderr + environ_res.stderr


def test_a_service_that_fails_is_reported_and_everything_is_stopped(ports: dict[str, int], tmp_path: Path) -> None:
    """A broken tempo.yaml: `up` shows the end of Tempo's log, stops what it started and exits 1."""
    project = tmp_path / "checkout"
    shutil.copytree(REPO / "infra", project / "infra")
    shutil.copy(REPO / COMPOSE_FILE, project / COMPOSE_FILE)
    tempo = project / TEMPO_CONFIG
    tempo.write_text(tempo.read_text() + "\nbogus_top_level_key: 1\n")
    state = tmp_path / "state"
    environ_ports = dict(ports)
    res = subprocess.run(
        [*CLI, "up", "--state-dir", str(state), "--project-dir", str(project)],
        capture_output=True, text=True, timeout=120, cwd=tmp_path,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("OBS_")},
             **{k: str(v) for k, v in environ_ports.items()}, "COLUMNS": "200"},
    )  # fmt: skip
    assert res.returncode == 1, res.stdout + res.stderr
    assert "tempo failed to become ready" in res.stderr
    assert "bogus_top_level_key" in res.stderr  # the tail of its log names the problem
    assert "Traceback" not in res.stdout
    assert not list((state / "pids").glob("*.json"))
    for var in (env.OBS_PROMETHEUS_PORT, env.OBS_TEMPO_HTTP_PORT, env.OBS_OTEL_GRPC_PORT):
        assert port_is_free(ports[var]), var
