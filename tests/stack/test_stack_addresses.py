"""Address resolution: published ports follow OBS_*, the others get remembered free loopback ports."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from amtp_obs import env
from amtp_obs.net import port_is_free
from amtp_obs.project import SERVICE_COLLECTOR, SERVICE_PROMETHEUS, SERVICE_TEMPO, Project
from amtp_obs.stack.addresses import AddressResolver, PortInUseError


def test_published_port_follows_its_variable(project: Project, ports: dict[str, int]) -> None:
    r = AddressResolver(project)
    assert r.port(SERVICE_COLLECTOR, 4317) == ports[env.OBS_OTEL_GRPC_PORT]
    # Prometheus publishes container 9090 on OBS_PROMETHEUS_PORT (design: 9091 -> 9090).
    assert r.port(SERVICE_PROMETHEUS, 9090) == ports[env.OBS_PROMETHEUS_PORT]
    assert r.port(SERVICE_TEMPO, 3200) == ports[env.OBS_TEMPO_HTTP_PORT]
    assert r.internal == {}


def test_unpublished_port_is_free_stable_and_recorded(project: Project, ports: dict[str, int], tmp_path: Path) -> None:
    r = AddressResolver(project)
    p = r.port(SERVICE_TEMPO, 4317)  # tempo's OTLP receiver is only reachable inside amtp_net
    assert p not in ports.values()
    assert port_is_free(p)
    assert r.port(SERVICE_TEMPO, 4317) == p
    assert r.port(SERVICE_COLLECTOR, 8889) != p
    r.save(tmp_path / "ports.json")
    again = AddressResolver.load(project, tmp_path / "ports.json")
    assert again.port(SERVICE_TEMPO, 4317) == p


def test_recorded_port_taken_meanwhile_is_repicked(project: Project, tmp_path: Path) -> None:
    r = AddressResolver(project)
    p = r.port(SERVICE_TEMPO, 4317)
    r.save(tmp_path / "ports.json")
    with socket.socket() as s:
        s.bind(("127.0.0.1", p))
        s.listen()
        again = AddressResolver.load(project, tmp_path / "ports.json")
        again.refresh_internal()
        assert again.port(SERVICE_TEMPO, 4317) != p


def test_taken_port_error_names_the_variable(project: Project, ports: dict[str, int]) -> None:
    r = AddressResolver(project)
    r.listen(SERVICE_COLLECTOR, 4317)
    r.listen(SERVICE_TEMPO, 3200)
    with socket.socket() as s:
        s.bind(("127.0.0.1", ports[env.OBS_OTEL_GRPC_PORT]))
        s.listen()
        assert not port_is_free(ports[env.OBS_OTEL_GRPC_PORT])
        with pytest.raises(PortInUseError) as exc:
            r.check_binds()
    msg = str(exc.value)
    assert env.OBS_OTEL_GRPC_PORT in msg and str(ports[env.OBS_OTEL_GRPC_PORT]) in msg
    assert env.OBS_TEMPO_HTTP_PORT not in msg  # only the taken one is reported
    r.check_binds()  # released: no error


def test_garbage_ports_file_is_ignored(project: Project, tmp_path: Path) -> None:
    (tmp_path / "ports.json").write_text("{not json")
    assert AddressResolver.load(project, tmp_path / "ports.json").internal == {}
