"""The embedded stack's collection cadence: faster than production by default, production's on request."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from test_stack_cli import run as run_cli

from amtp_obs import env
from amtp_obs.project import PROMETHEUS_CONFIG, SERVICE_PROMETHEUS, SERVICE_TEMPO, TEMPO_CONFIG, Project, ProjectError
from amtp_obs.stack import cadence
from amtp_obs.stack.planning import plan
from amtp_obs.stack.state import Layout
from amtp_obs.tempo.config import validate_config

REPO = Path(__file__).resolve().parents[2]


def test_interval_defaults_and_validates() -> None:
    assert cadence.interval_from({}) == cadence.DEFAULT_INTERVAL
    assert cadence.interval_from({env.AMTP_OBS_SCRAPE_INTERVAL: " "}) == cadence.DEFAULT_INTERVAL
    assert cadence.interval_from({env.AMTP_OBS_SCRAPE_INTERVAL: "1m30s"}) == "1m30s"
    for bad in ("5", "fast", "500ms", "0s", "1.5s", "-5s"):
        with pytest.raises(ProjectError, match=env.AMTP_OBS_SCRAPE_INTERVAL):
            cadence.interval_from({env.AMTP_OBS_SCRAPE_INTERVAL: bad})


def test_prometheus_changes_only_the_collection_keys() -> None:
    doc = {
        "global": {"scrape_interval": "15s", "evaluation_interval": "15s", "scrape_timeout": "10s"},
        "scrape_configs": [
            {"job_name": "a", "static_configs": [{"targets": ["x:1"]}]},
            {"job_name": "b", "scrape_interval": "30s", "scrape_timeout": "20s"},
            {"job_name": "c", "scrape_timeout": "8s"},
        ],
    }
    out = cadence.apply_prometheus(doc, "5s")
    assert out["global"] == {"scrape_interval": "5s", "evaluation_interval": "15s", "scrape_timeout": "5s"}
    jobs = {j["job_name"]: j for j in out["scrape_configs"]}
    assert jobs["a"] == doc["scrape_configs"][0]
    assert jobs["b"] == {"job_name": "b", "scrape_interval": "30s", "scrape_timeout": "20s"}  # its own choice
    assert jobs["c"]["scrape_timeout"] == "5s"  # Prometheus refuses a timeout longer than the interval
    assert doc["global"]["scrape_interval"] == "15s"  # the input is not modified


def test_tempo_changes_the_generator_interval_only_when_there_is_a_generator() -> None:
    doc = Project(REPO, {}).load_yaml(TEMPO_CONFIG)
    out = cadence.apply_tempo(doc, "5s")
    assert out["metrics_generator"]["registry"]["collection_interval"] == "5s"
    assert (
        out["metrics_generator"]["registry"]["external_labels"]
        == doc["metrics_generator"]["registry"]["external_labels"]
    )
    assert validate_config(out) == []
    assert cadence.apply_tempo({"server": {}}, "5s") == {"server": {}}


def test_plan_applies_the_cadence_and_says_so(ports: dict[str, int], tmp_path: Path) -> None:
    stack = plan(Project(REPO, {k: str(v) for k, v in ports.items()}), Layout(tmp_path), with_alerting=False)
    prom = yaml.safe_load(stack.get(SERVICE_PROMETHEUS).config_path.read_text())  # type: ignore[union-attr]
    tempo = yaml.safe_load(stack.get(SERVICE_TEMPO).config_path.read_text())  # type: ignore[union-attr]
    assert prom["global"]["scrape_interval"] == cadence.DEFAULT_INTERVAL
    assert tempo["metrics_generator"]["registry"]["collection_interval"] == cadence.DEFAULT_INTERVAL
    notes = stack.get(SERVICE_PROMETHEUS).notes + stack.get(SERVICE_TEMPO).notes
    assert sum(env.AMTP_OBS_SCRAPE_INTERVAL in n for n in notes) == 2, notes


def test_production_cadence_on_request_is_the_files_own(ports: dict[str, int], tmp_path: Path) -> None:
    environ = {k: str(v) for k, v in ports.items()}
    environ[env.AMTP_OBS_SCRAPE_INTERVAL] = "15s"
    project = Project(REPO, environ)
    stack = plan(project, Layout(tmp_path), with_alerting=False)
    prom = yaml.safe_load(stack.get(SERVICE_PROMETHEUS).config_path.read_text())  # type: ignore[union-attr]
    assert prom["global"] == project.load_yaml(PROMETHEUS_CONFIG)["global"]
    notes = stack.get(SERVICE_PROMETHEUS).notes + stack.get(SERVICE_TEMPO).notes
    assert not any(env.AMTP_OBS_SCRAPE_INTERVAL in n for n in notes), notes


@pytest.mark.needs("promtool")
def test_a_fast_cadence_passes_promtool(ports: dict[str, int], tmp_path: Path) -> None:
    environ = {k: str(v) for k, v in ports.items()}
    environ[env.AMTP_OBS_SCRAPE_INTERVAL] = "2s"  # below the default 10s scrape_timeout
    stack = plan(Project(REPO, environ), Layout(tmp_path), with_alerting=False)
    cfg = stack.get(SERVICE_PROMETHEUS).config_path
    res = subprocess.run(["promtool", "check", "config", str(cfg)], capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, res.stdout + res.stderr


def test_up_with_a_bad_interval_is_a_clear_error(
    ports: dict[str, int], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(env.AMTP_OBS_SCRAPE_INTERVAL, "often")
    state = tmp_path / "state"
    res = run_cli(["up", "--state-dir", str(state)], ports, tmp_path)
    assert res.returncode == 1, res.stdout + res.stderr
    assert f"{env.AMTP_OBS_SCRAPE_INTERVAL}='often'" in res.stderr and "Traceback" not in res.stderr
    assert not list((state / "pids").glob("*.json"))


def test_notes_compare_durations_not_spellings_and_know_the_defaults() -> None:
    assert cadence.prometheus_note({"global": {"scrape_interval": "15000ms"}}, "15s") is None
    assert "says 1m" in (cadence.prometheus_note({}, "5s") or "")  # Prometheus' own default
    assert cadence.tempo_note({"metrics_generator": {}}, "15s") is None  # Tempo's default is 15s
    assert "says 15s" in (cadence.tempo_note({"metrics_generator": {}}, "5s") or "")
    assert cadence.tempo_note({"server": {}}, "5s") is None  # no generator, nothing to say
