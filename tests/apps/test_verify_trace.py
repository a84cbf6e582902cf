"""apps/otel-verify/verify_trace.py: run as CI runs it, against a real OTLP sink or nothing at all."""

from __future__ import annotations

import ast
import importlib.util
import os
import re
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

from amtp_obs import contract, env
from amtp_obs.contract.validate import validate_metric_points, validate_spans
from amtp_obs.net import free_port
from amtp_obs.testing.otlp_sink import OtlpSink

SCRIPT = Path(__file__).resolve().parents[2] / "apps" / "otel-verify" / "verify_trace.py"
REQUIREMENTS = SCRIPT.with_name("requirements.txt")
DESIGN_REGEX = re.compile(r"[0-9a-f]{32}")  # the design's `grep -oE '[0-9a-f]{32}' | head -n 1`
OTLP_SPAN_KIND_CLIENT = 3
RUN_TIMEOUT_S = 60  # generous: the script's own bound is < 15 s


def run(environ: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "OBS_", "AMTP_"))}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *args],
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT_S,
        env={**clean, **environ},
    )


def first_id(stdout: str) -> str:
    """The design's extraction, exactly: the first 32-hex run of the whole output."""
    matches = DESIGN_REGEX.findall(stdout)
    assert matches, stdout
    return matches[0]


@pytest.fixture(scope="module")
def script_module() -> ModuleType:
    spec = importlib.util.spec_from_file_location("verify_trace_under_test", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_delivers_the_contract_trace_and_counters_over_grpc(sink: OtlpSink) -> None:
    proc = run({env.OTEL_EXPORTER_OTLP_ENDPOINT: sink.grpc_endpoint}, "--run-id", "run-42")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert re.fullmatch(r"Trace ID: [0-9a-f]{32}", lines[0])
    hint = lines[1]
    assert "Trace ID" in hint and not DESIGN_REGEX.search(hint)
    trace_id = first_id(proc.stdout)

    spans = sink.spans()
    assert sorted(s.name for s in spans) == sorted(contract.LLM_SPAN_NAMES)
    assert {s.trace_id for s in spans} == {trace_id}
    by_name = {s.name: s for s in spans}
    root = by_name[contract.SPAN_LLM_COMPLETION]
    assert root.kind == OTLP_SPAN_KIND_CLIENT and root.parent_span_id == ""
    for child in (contract.SPAN_LLM_INFERENCE, contract.SPAN_LLM_RESPONSE_PARSE):
        assert by_name[child].parent_span_id == root.span_id
    assert validate_spans(spans) == []
    a = root.attributes
    assert a[contract.LLM_TOKENS_PROMPT] == contract.VERIFY_PROMPT_TOKENS == 128
    assert a[contract.LLM_TOKENS_COMPLETION] == contract.VERIFY_COMPLETION_TOKENS == 64
    assert a[contract.LLM_TOKENS_TOTAL] == 192
    assert a[contract.LLM_MODEL] == a[contract.GEN_AI_REQUEST_MODEL] == contract.VERIFY_MODEL == "gpt-4o"
    assert a[contract.LLM_PROVIDER] == a[contract.GEN_AI_SYSTEM] == contract.VERIFY_PROVIDER == "openai"
    assert a[contract.LLM_REQUEST_TYPE] == contract.REQUEST_TYPE_CHAT
    assert a[contract.GEN_AI_PROVIDER_NAME] == "openai"
    assert a[contract.GEN_AI_OPERATION_NAME] == contract.REQUEST_TYPE_CHAT
    assert a[contract.GEN_AI_USAGE_INPUT_TOKENS] == 128 and a[contract.GEN_AI_USAGE_OUTPUT_TOKENS] == 64
    assert a[contract.LLM_TOKENS_PROVENANCE] == contract.PROVENANCE_REPORTED
    assert root.resource["service.name"] == contract.VERIFY_SERVICE_NAME
    assert root.resource[contract.VERIFY_RUN_ID] == "run-42"

    points = sink.points()
    assert validate_metric_points(points) == []
    values = {p.metric: p for p in points}
    for spec, value in zip(contract.TOKEN_COUNTERS, (128, 64, 192), strict=True):
        p = values[spec.instrument]
        assert p.value == value and p.unit == contract.TOKEN_UNIT and p.monotonic is True
        assert p.attributes == {
            contract.LLM_MODEL: "gpt-4o",
            contract.LLM_PROVIDER: "openai",
            contract.GEN_AI_SYSTEM: "openai",
        }
        assert p.resource[contract.VERIFY_RUN_ID] == "run-42"


def test_http_protobuf_run_id_and_service_name_from_environment(sink: OtlpSink) -> None:
    proc = run(
        {
            env.OTEL_EXPORTER_OTLP_ENDPOINT: sink.http_endpoint,
            env.OTEL_EXPORTER_OTLP_PROTOCOL: "http/protobuf",
            env.OTEL_SERVICE_NAME: "verify-from-env",
            env.AMTP_VERIFY_RUN_ID: "env-run",
        }
    )
    assert proc.returncode == 0, proc.stderr
    assert {p for p, _ in sink.http_requests} == {"/v1/traces", "/v1/metrics"}
    root = next(s for s in sink.spans() if s.name == contract.SPAN_LLM_COMPLETION)
    assert root.trace_id == first_id(proc.stdout)
    assert root.resource["service.name"] == "verify-from-env"
    assert root.resource[contract.VERIFY_RUN_ID] == "env-run"


def test_default_endpoint_uses_obs_otel_grpc_port(sink: OtlpSink) -> None:
    proc = run({env.OBS_OTEL_GRPC_PORT: str(sink.grpc_port)})
    assert proc.returncode == 0, proc.stderr
    assert first_id(proc.stdout) in {s.trace_id for s in sink.spans()}
    assert contract.VERIFY_RUN_ID not in sink.spans()[0].resource


def test_concurrent_runs_are_told_apart(sink: OtlpSink) -> None:
    environ = {env.OTEL_EXPORTER_OTLP_ENDPOINT: sink.grpc_endpoint}
    results: dict[str, subprocess.CompletedProcess[str]] = {}
    threads = [
        threading.Thread(target=lambda r=r: results.__setitem__(r, run(environ, "--run-id", r))) for r in ("a", "b")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = {r: first_id(p.stdout) for r, p in results.items()}
    assert ids["a"] != ids["b"]
    for r, trace_id in ids.items():
        runs = {s.resource[contract.VERIFY_RUN_ID] for s in sink.spans() if s.trace_id == trace_id}
        assert runs == {r}


def closed_port() -> int:
    return free_port()


def test_no_collector_fails_clearly_and_in_bounded_time() -> None:
    endpoint = f"http://127.0.0.1:{closed_port()}"
    started = time.monotonic()
    proc = run({env.OTEL_EXPORTER_OTLP_ENDPOINT: endpoint})
    elapsed = time.monotonic() - started
    assert proc.returncode != 0
    assert "no OTel collector answered" in proc.stderr and endpoint in proc.stderr
    assert not DESIGN_REGEX.search(proc.stdout)  # nothing for CI to mistake for a delivered trace
    print(f"no-collector exit after {elapsed:.2f} s")  # informational; the bound is the script's


@pytest.fixture
def silent_listener() -> Iterator[int]:
    """Accepts TCP connections and closes them: a port that is open but speaks no OTLP."""
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    srv.settimeout(0.2)
    stop = threading.Event()

    def loop() -> None:
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            conn.close()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    yield srv.getsockname()[1]
    stop.set()
    thread.join()
    srv.close()


def test_listener_that_does_not_speak_otlp_fails_the_export(silent_listener: int) -> None:
    endpoint = f"http://127.0.0.1:{silent_listener}"
    proc = run({env.OTEL_EXPORTER_OTLP_ENDPOINT: endpoint}, "--timeout", "1")
    assert proc.returncode == 1
    assert "was not delivered" in proc.stderr and endpoint in proc.stderr
    assert not DESIGN_REGEX.search(proc.stdout)


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_listener_that_never_answers_fails_the_export(protocol: str) -> None:
    with socket.socket() as black_hole:  # listens, never accepts: connections hang in the backlog
        black_hole.bind(("127.0.0.1", 0))
        black_hole.listen(16)
        endpoint = f"http://127.0.0.1:{black_hole.getsockname()[1]}"
        proc = run(
            {env.OTEL_EXPORTER_OTLP_ENDPOINT: endpoint, env.OTEL_EXPORTER_OTLP_PROTOCOL: protocol},
            "--timeout",
            "1",
        )
    assert proc.returncode == 1
    assert "no OTel collector answered" in proc.stderr and f"({protocol})" in proc.stderr
    assert not DESIGN_REGEX.search(proc.stdout)


def test_bad_arguments_are_usage_errors() -> None:
    proc = run({env.OTEL_EXPORTER_OTLP_PROTOCOL: "http/json"})
    assert proc.returncode == 2 and "unsupported OTEL_EXPORTER_OTLP_PROTOCOL='http/json'" in proc.stderr
    proc = run({}, "--timeout", "60")
    assert proc.returncode == 2 and "--timeout" in proc.stderr


def test_literal_names_match_the_contract(script_module: ModuleType) -> None:
    m = script_module
    pairs = {
        m.SPAN_LLM_COMPLETION: contract.SPAN_LLM_COMPLETION,
        m.SPAN_LLM_INFERENCE: contract.SPAN_LLM_INFERENCE,
        m.SPAN_LLM_RESPONSE_PARSE: contract.SPAN_LLM_RESPONSE_PARSE,
        m.LLM_PROVIDER: contract.LLM_PROVIDER,
        m.LLM_MODEL: contract.LLM_MODEL,
        m.LLM_REQUEST_TYPE: contract.LLM_REQUEST_TYPE,
        m.LLM_TOKENS_PROMPT: contract.LLM_TOKENS_PROMPT,
        m.LLM_TOKENS_COMPLETION: contract.LLM_TOKENS_COMPLETION,
        m.LLM_TOKENS_TOTAL: contract.LLM_TOKENS_TOTAL,
        m.LLM_TOKENS_PROVENANCE: contract.LLM_TOKENS_PROVENANCE,
        m.GEN_AI_SYSTEM: contract.GEN_AI_SYSTEM,
        m.GEN_AI_REQUEST_MODEL: contract.GEN_AI_REQUEST_MODEL,
        m.GEN_AI_OPERATION_NAME: contract.GEN_AI_OPERATION_NAME,
        m.GEN_AI_PROVIDER_NAME: contract.GEN_AI_PROVIDER_NAME,
        m.GEN_AI_USAGE_INPUT_TOKENS: contract.GEN_AI_USAGE_INPUT_TOKENS,
        m.GEN_AI_USAGE_OUTPUT_TOKENS: contract.GEN_AI_USAGE_OUTPUT_TOKENS,
        m.GEN_AI_RESPONSE_MODEL: contract.GEN_AI_RESPONSE_MODEL,
        m.GEN_AI_REQUEST_STREAM: contract.GEN_AI_REQUEST_STREAM,
        m.PROVENANCE_REPORTED: contract.PROVENANCE_REPORTED,
        m.REQUEST_TYPE_CHAT: contract.REQUEST_TYPE_CHAT,
        m.TOKEN_UNIT: contract.TOKEN_UNIT,
        m.MODEL: contract.VERIFY_MODEL,
        m.PROVIDER: contract.VERIFY_PROVIDER,
        m.PROMPT_TOKENS: contract.VERIFY_PROMPT_TOKENS,
        m.COMPLETION_TOKENS: contract.VERIFY_COMPLETION_TOKENS,
        m.SERVICE_NAME: contract.VERIFY_SERVICE_NAME,
        m.RUN_ID_ATTRIBUTE: contract.VERIFY_RUN_ID,
        m.ENV_ENDPOINT: env.OTEL_EXPORTER_OTLP_ENDPOINT,
        m.ENV_PROTOCOL: env.OTEL_EXPORTER_OTLP_PROTOCOL,
        m.ENV_SERVICE_NAME: env.OTEL_SERVICE_NAME,
        m.ENV_RUN_ID: env.AMTP_VERIFY_RUN_ID,
        m.ENV_GRPC_PORT: env.OBS_OTEL_GRPC_PORT,
        m.ENV_HTTP_PORT: env.OBS_OTEL_HTTP_PORT,
    }
    for literal, expected in pairs.items():
        assert literal == expected
    assert [(n, d) for n, d in m.COUNTERS] == [(s.instrument, s.description) for s in contract.TOKEN_COUNTERS]


def test_default_ports_match_the_compose_file(script_module: ModuleType) -> None:
    from amtp_obs.project import Project

    project = Project.discover(SCRIPT.parent)
    assert int(script_module.DEFAULT_GRPC_PORT) == project.port_variable(env.OBS_OTEL_GRPC_PORT).default
    assert int(script_module.DEFAULT_HTTP_PORT) == project.port_variable(env.OBS_OTEL_HTTP_PORT).default


def test_imports_only_opentelemetry_and_the_standard_library() -> None:
    tree = ast.parse(SCRIPT.read_text())
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    third_party = roots - set(sys.stdlib_module_names) - {"__future__"}
    assert third_party == {"opentelemetry"}


def test_requirements_are_current_opentelemetry_releases() -> None:
    reqs = [line.strip() for line in REQUIREMENTS.read_text().splitlines() if line.strip() and not line.startswith("#")]
    names = {re.split(r"[<>=~!]", r)[0] for r in reqs}
    assert names == {
        "opentelemetry-api",
        "opentelemetry-sdk",
        "opentelemetry-exporter-otlp-proto-grpc",
        "opentelemetry-exporter-otlp-proto-http",
    }
    for r in reqs:
        assert ">=1.45" in r, r  # NOTES §22: not the design's 1.24.0 pins
