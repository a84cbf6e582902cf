"""The compose/.env loader every other part reads ports and service names through."""

from __future__ import annotations

from pathlib import Path

import pytest

from amtp_obs import env
from amtp_obs.project import Project, ProjectError, interpolate, parse_env_file, variables_in

COMPOSE = """
services:
  otel-collector:
    image: x
    ports:
      - "${OBS_OTEL_GRPC_PORT:-4317}:4317"
      - "127.0.0.1:${OBS_OTEL_ZPAGES_PORT:-55679}:55679"
  amtp-prometheus:
    image: y
    ports:
      - "${OBS_PROMETHEUS_PORT:-9091}:9090"
"""


def make_project(tmp_path: Path, environ: dict[str, str] | None = None, dotenv: str | None = None) -> Project:
    (tmp_path / "docker-compose.observability.yml").write_text(COMPOSE)
    if dotenv is not None:
        (tmp_path / ".env").write_text(dotenv)
    return Project(tmp_path, environ or {})


def test_interpolation_follows_compose_rules() -> None:
    v = {"A": "1", "EMPTY": ""}
    assert interpolate("${A:-x}/${B:-x}/${EMPTY:-x}/${EMPTY-x}/${A}/$A/$$A", v) == "1/x/x//1/1/$A"
    with pytest.raises(ProjectError, match="B is not set: need B"):
        interpolate("${B:?need B}", v)
    assert variables_in("${A:-1} $B $$C ${D}") == {"A", "B", "D"}


def test_ports_defaults_env_and_dotenv(tmp_path: Path) -> None:
    p = make_project(tmp_path, environ={env.OBS_PROMETHEUS_PORT: "19091"}, dotenv="OBS_OTEL_GRPC_PORT=14317\n")
    assert p.port(env.OBS_OTEL_GRPC_PORT) == 14317  # from .env
    assert p.port(env.OBS_PROMETHEUS_PORT) == 19091  # environment wins
    assert p.port(env.OBS_OTEL_ZPAGES_PORT) == 55679  # compose default
    zp = p.port_variable(env.OBS_OTEL_ZPAGES_PORT)
    assert (zp.host_ip, zp.container_port, zp.default) == ("127.0.0.1", 55679, 55679)
    assert p.host_port("amtp-prometheus", 9090) == 19091
    assert p.port_variables() == [env.OBS_OTEL_GRPC_PORT, env.OBS_OTEL_ZPAGES_PORT, env.OBS_PROMETHEUS_PORT]
    with pytest.raises(ProjectError, match="does not publish container port 1234"):
        p.host_port("amtp-prometheus", 1234)


def test_discover_walks_up_and_reports_missing(tmp_path: Path) -> None:
    make_project(tmp_path)
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    assert Project.discover(sub, environ={}).root == tmp_path.resolve()
    with pytest.raises(ProjectError, match=r"no docker-compose\.observability\.yml"):
        Project.discover(Path("/"), environ={})


def test_env_file_errors_name_the_line(tmp_path: Path) -> None:
    f = tmp_path / ".env"
    f.write_text("# c\nA='q'\nexport B=2\nbroken\n")
    with pytest.raises(ProjectError, match=r"\.env:4: expected KEY=VALUE"):
        parse_env_file(f)
    f.write_text("A='q'\nexport B=2\n")
    assert parse_env_file(f) == {"A": "q", "B": "2"}


def test_real_compose_file_publishes_every_obs_variable_in_env_module() -> None:
    """Every OBS_* name in amtp_obs.env is the one compose uses (one source of truth)."""
    project = Project.discover(Path(__file__).parent)
    names = {getattr(env, n) for n in dir(env) if n.startswith("OBS_")}
    assert names == set(project.port_variables())
