"""Config validation as collector 0.100.0 does it, and the ``python -m amtp_obs.collector`` entry point."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from collector_support import find_id, project_config, render

from amtp_obs.collector import Collector, ConfigError, validate_config
from amtp_obs.collector.config import parse_duration
from amtp_obs.net import free_port


def test_project_config_is_valid() -> None:
    assert validate_config(project_config()) == []


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("500ms", 0.5),
        ("2m", 120.0),
        ("1h30m", 5400.0),
        ("1.5s", 1.5),
        ("0", 0.0),
        ("250us", 0.00025),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


def test_bad_duration_is_reported_with_its_place() -> None:
    doc = project_config()
    doc["processors"][find_id(doc, "processors", "batch")]["timeout"] = "5 seconds"
    (problem,) = validate_config(doc)
    assert "processors::batch" in problem and "timeout" in problem and "5 seconds" in problem


def test_unknown_key_names_component_and_key() -> None:
    doc = project_config()
    doc["processors"][find_id(doc, "processors", "batch")]["send_batch_sizes"] = 10
    doc["receivers"]["otlp"]["protocols"]["http"]["cors"]["allowed_origin"] = ["x"]
    problems = validate_config(doc)
    assert any("processors::batch" in p and "send_batch_sizes" in p for p in problems)
    assert any("receivers::otlp" in p and "protocols.http.cors.allowed_origin" in p for p in problems)
    assert len(problems) == 2


def test_unsupported_component_type_is_clear() -> None:
    doc = project_config()
    doc["receivers"]["kafka"] = {"brokers": ["localhost:9092"]}
    doc["service"]["pipelines"]["traces"]["receivers"].append("kafka")
    problems = validate_config(doc)
    assert any('receivers::kafka: unknown type "kafka"' in p for p in problems)
    with pytest.raises(ConfigError) as err:
        Collector.from_config(doc)
    assert "kafka" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d["service"]["pipelines"]["traces"]["exporters"].append("nope"),
            "references exporter 'nope'",
        ),
        (lambda d: d["service"]["pipelines"]["traces"].update(exporters=[]), "at least one exporter"),
        (lambda d: d["service"]["pipelines"]["traces"].update(receivers=[]), "at least one receiver"),
        (
            lambda d: d["service"]["pipelines"]["traces"]["exporters"].append("prometheus"),
            "does not support traces",
        ),
        (lambda d: d["service"]["extensions"].append("oauth2"), "extension 'oauth2'"),
        (lambda d: d.update(extra_section={}), "unknown top-level key 'extra_section'"),
        (
            lambda d: d["service"]["pipelines"]["traces"]["processors"].append(
                d["service"]["pipelines"]["traces"]["processors"][0]
            ),
            "multiple times",
        ),
        (lambda d: d["service"]["pipelines"].update({"profiles": {}}), "unknown pipeline type"),
    ],
)
def test_service_rules(mutate: Any, expected: str) -> None:
    doc = project_config()
    mutate(doc)
    problems = validate_config(doc)
    assert any(expected in p for p in problems), problems


def test_component_rules() -> None:
    doc = project_config()
    doc["processors"][find_id(doc, "processors", "batch")].update(send_batch_size=100, send_batch_max_size=10)
    ml = doc["processors"][find_id(doc, "processors", "memory_limiter")]
    ml["spike_limit_mib"] = ml["limit_mib"]
    doc["processors"][find_id(doc, "processors", "attributes")]["actions"].append({"key": "k", "action": "insert"})
    doc["exporters"]["debug"]["verbosity"] = "loud"
    problems = "\n".join(validate_config(doc))
    assert "send_batch_max_size must be greater or equal to send_batch_size" in problems
    assert "'spike_limit_mib' must be smaller than 'limit_mib'" in problems
    assert 'Either field "value"' in problems
    assert "unknown verbosity level 'loud'" in problems


def test_empty_protocol_means_defaults_and_none_is_an_error() -> None:
    doc = project_config()
    doc["receivers"]["otlp"]["protocols"] = {"grpc": None}
    assert validate_config(doc) == []
    doc["receivers"]["otlp"]["protocols"] = {}
    assert any("at least one protocol" in p for p in validate_config(doc))


def test_unsupported_setting_is_named() -> None:
    doc = project_config()
    doc["receivers"]["otlp"]["protocols"]["grpc"]["tls"] = {"cert_file": "x.pem"}
    assert validate_config(doc) == ["receivers::otlp: protocols.grpc.tls: not supported by the embedded collector"]


# -- the command -----------------------------------------------------------------------------


def _run(args: list[str], **kw: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amtp_obs.collector", *args], capture_output=True, text=True, timeout=60, **kw
    )


def test_cli_rejects_unsupported_component_without_traceback(tmp_path: Path) -> None:
    doc = project_config()
    doc["exporters"]["kafka"] = {}
    doc["service"]["pipelines"]["traces"]["exporters"].append("kafka")
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = _run(["--config", str(path)])
    assert proc.returncode == 1
    assert 'exporters::kafka: unknown type "kafka"' in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_missing_file_and_busy_port(tmp_path: Path) -> None:
    proc = _run(["--config", str(tmp_path / "absent.yaml")])
    assert proc.returncode == 1 and "cannot read" in proc.stderr and "Traceback" not in proc.stderr
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        doc = render(project_config(), "127.0.0.1:1")
        busy_port = busy.getsockname()[1]
        doc["extensions"][find_id(doc, "extensions", "health_check")]["endpoint"] = f"127.0.0.1:{busy_port}"
        path = tmp_path / "config.yaml"
        path.write_text(yaml.safe_dump(doc))
        proc = _run(["--config", str(path)])
    assert proc.returncode == 1
    assert "extensions::health_check: cannot listen on" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cli_validate_project_file() -> None:
    from amtp_obs.project import COLLECTOR_CONFIG, Project

    proc = _run(["validate", "--config", str(Project.discover().path(COLLECTOR_CONFIG))])
    assert proc.returncode == 0, proc.stderr


def test_cli_runs_until_sigterm(tmp_path: Path) -> None:
    port = free_port()
    doc = render(project_config(), "127.0.0.1:1")
    doc["extensions"][find_id(doc, "extensions", "health_check")]["endpoint"] = f"127.0.0.1:{port}"
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(doc))
    proc = subprocess.Popen(
        [sys.executable, "-m", "amtp_obs.collector", "--config", str(path)],
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        status = None
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/", timeout=1).status_code
                if status == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        assert status == 200
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0
    assert "Shutdown complete" in err
    assert "Traceback" not in err


def test_factories_come_from_one_list_and_decide_what_parses() -> None:
    """The service and the parser use the factories they are given; nothing is registered on import."""
    from amtp_obs.collector import components
    from amtp_obs.collector.component import EXPORTER, Factories
    from amtp_obs.collector.config import parse_config
    from amtp_obs.collector.exporter_debug import FACTORY as DEBUG_FACTORY

    full = components()
    assert full.types(EXPORTER) == ["debug", "otlp", "prometheus"]
    doc = project_config()
    assert parse_config(doc, full)[1] == []
    without_debug = Factories([f for f in _all_factories(full) if f is not DEBUG_FACTORY])
    problems = parse_config(doc, without_debug)[1]
    assert any('unknown type "debug" for exporter' in p and "supports: otlp, prometheus" in p for p in problems)
    with pytest.raises(ConfigError, match='unknown type "debug"'):
        Collector.from_config(doc, without_debug)
    with pytest.raises(ValueError, match="duplicate exporter factory for type 'debug'"):
        Factories([DEBUG_FACTORY, DEBUG_FACTORY])


def _all_factories(factories: Any) -> list[Any]:
    from amtp_obs.collector.component import KIND_SECTIONS

    return [factories.get(kind, t) for kind in KIND_SECTIONS for t in factories.types(kind)]
