"""tempo.yaml parsing: strict keys with paths, durations, 2.4.1's effective settings, CLI errors."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from tempo_helpers import tempo_doc

from amtp_obs import contract
from amtp_obs.project import TEMPO_CONFIG, Project
from amtp_obs.tempo import ConfigError, config_warnings, load_config, validate_config


@pytest.fixture
def project_doc() -> dict[str, Any]:
    return Project.discover(Path(__file__)).load_yaml(TEMPO_CONFIG)


def test_project_tempo_yaml_is_valid_and_effective(project_doc: dict[str, Any]) -> None:
    assert validate_config(project_doc) == []
    assert config_warnings(project_doc) == []
    cfg = load_config(project_doc)
    assert cfg.server.http_listen_port == 3200
    assert cfg.generator_enabled and cfg.processors == {"service-graphs", "span-metrics"}
    sm = cfg.span_metrics()
    assert tuple(sm.dimensions) == contract.SPANMETRICS_DIMENSIONS
    assert sm.enable_target_info
    assert cfg.block_retention == 72 * 3600
    assert cfg.collection_interval == 15
    assert cfg.metrics_generator.storage.remote_write[0].send_exemplars


def _errors(tmp_path: Path, **sections: Any) -> list[str]:
    return validate_config(tempo_doc(tmp_path, **sections))


def test_unknown_keys_name_their_path(tmp_path: Path) -> None:
    assert _errors(tmp_path, ingester={"trace_idle_priod": "10s"}) == [
        "ingester.trace_idle_priod: unknown key (not a Tempo 2.4.1 setting here)"
    ]
    errs = _errors(tmp_path, overrides={"defaults": {"metrics_generator": {"processor": {"span_metrics": {"x": 1}}}}})
    assert errs == [
        "overrides.defaults.metrics_generator.processor.span_metrics.x: unknown key (not a Tempo 2.4.1 setting here)"
    ]
    assert _errors(tmp_path, tempo_version="2.4.1")[0].startswith("tempo_version: unknown key")
    doc = tempo_doc(tmp_path)
    doc["metrics_generator"] = {"storage": {"remote_write": [{"url": "http://p:9090/api/v1/write"}, {"uri": "x"}]}}
    errs = validate_config(doc)
    assert "metrics_generator.storage.remote_write[1].url: required key is missing" in errs


@pytest.mark.parametrize(
    ("sections", "fragment"),
    [
        ({"ingester": {"max_block_duration": 30}}, "ingester.max_block_duration: must be a duration string"),
        (
            {"compactor": {"compaction": {"block_retention": "3 days"}}},
            "compactor.compaction.block_retention: invalid",
        ),
        ({"server": {"http_listen_port": 70000}}, "server.http_listen_port: port 70000"),
        ({"server": {"log_level": "verbose"}}, "server.log_level: unrecognized log level"),
        ({"overrides": {"max_traces_per_user": 5}}, "overrides: inline (legacy) overrides"),
        (
            {"overrides": {"defaults": {"metrics_generator": {"processors": ["span_metrics"]}}}},
            "unknown processor",
        ),
        ({"overrides": {"defaults": {"ingestion": {"rate_limit_bytes": -1}}}}, "must not be negative"),
        (
            {"metrics_generator": {"storage": {"remote_write": [{"url": "prometheus:9090"}]}}},
            "must be an http(s)://",
        ),
        ({"storage": {"trace": {"backend": "local"}}}, "storage.trace.local.path is required"),
        (
            {"storage": {"trace": {"backend": "disk", "local": {"path": "/x"}}}},
            "storage.trace.backend: unknown backend",
        ),
        ({"target": "querier"}, "single binary"),
        (
            {"distributor": {"receivers": {"otlp": {"protocols": {"grpc": {"endpoint": "localhost"}}}}}},
            "distributor.receivers.otlp.protocols.grpc.endpoint: endpoint 'localhost' must be host:port",
        ),
    ],
)
def test_bad_values(tmp_path: Path, sections: dict[str, Any], fragment: str) -> None:
    errs = _errors(tmp_path, **sections)
    assert any(fragment in e for e in errs), errs


def test_missing_storage_and_non_mapping() -> None:
    assert validate_config({"server": {"http_listen_port": 3200}}) == ["storage: required key is missing"]
    with pytest.raises(ConfigError) as exc:
        load_config(["not", "a", "mapping"])
    assert exc.value.errors == ["<root>: the config must be a YAML mapping"]


def test_warnings_for_settings_that_do_nothing(tmp_path: Path) -> None:
    doc = tempo_doc(
        tmp_path,
        metrics_generator={"processor": {"span_metrics": {"enable_target_info": True}}},
        overrides={"defaults": {"metrics_generator": {"processors": ["span-metrics"]}}},
    )
    doc["server"] = {}
    warns = config_warnings(doc)
    assert any("generator stays off" in w for w in warns)
    assert any("issue 2834" in w for w in warns)
    assert any("port 80" in w for w in warns)
    assert not load_config(doc).generator_enabled


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "amtp_obs.tempo", *args], capture_output=True, text=True, timeout=30)


def test_cli_rejects_bad_config(tmp_path: Path) -> None:
    path = tmp_path / "tempo.yaml"
    path.write_text(yaml.safe_dump(tempo_doc(tmp_path, ingester={"bogus": 1})))
    res = _run("--config", str(path))
    assert res.returncode == 1
    assert "ingester.bogus: unknown key" in res.stderr
    assert "Traceback" not in res.stderr
    path.write_text("server: [unclosed")
    res = _run("--config", str(path))
    assert res.returncode == 1 and "invalid YAML" in res.stderr and "Traceback" not in res.stderr
    res = _run("--config", str(tmp_path / "missing.yaml"))
    assert res.returncode == 1 and "cannot read" in res.stderr


def test_cli_reports_a_taken_port(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        path = tmp_path / "tempo.yaml"
        path.write_text(yaml.safe_dump(tempo_doc(tmp_path, server={"http_listen_port": port})))
        res = _run("--config", str(path))
    assert res.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in res.stderr
    assert "Traceback" not in res.stderr


def test_cli_verify_accepts_the_project_file() -> None:
    path = Project.discover(Path(__file__)).path(TEMPO_CONFIG)
    res = _run("-config.file", str(path), "-config.verify")
    assert res.returncode == 0, res.stderr
    assert "valid" in res.stdout
