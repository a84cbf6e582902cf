"""The lean install (issue 12): build the wheel, install it alone into a fresh venv, record a call.

``pip install amtp-obs`` must bring only what instrumenting needs (docs/instrumentation.md,
"Installing"): the OpenTelemetry API/SDK, the OTLP/gRPC exporter and wrapt, with their own
dependencies. In that venv ``amtp_obs.sdk`` and ``amtp_obs.instrument`` import without pulling any
exporter, vendor client or stack library, ``configure()`` + ``llm_call()`` deliver a span and the
counters to a real OTLP sink on loopback, and the ``amtp-obs`` command says in one line that it
needs the stack extra. pip resolves the dependencies from the machine's configured package sources.
The import time is measured and printed (targets live in bench/, not here).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from amtp_obs import contract
from amtp_obs.testing.otlp_sink import OtlpSink
from amtp_obs.testing.poll import eventually

REPO = Path(__file__).resolve().parents[2]
LEAN = {"opentelemetry-api", "opentelemetry-sdk", "opentelemetry-exporter-otlp-proto-grpc", "wrapt"}
"""What pyproject.toml's lean dependencies name (checked below against the wheel's metadata)."""
STACK_ONLY = {
    "starlette",
    "uvicorn",
    "pydantic",
    "typer",
    "rich",
    "cramjam",
    "promql-parser",
    "httpx",
    "pyyaml",
    "prometheus-client",
    "requests",
    "opentelemetry-exporter-otlp-proto-http",
    "openai",
    "anthropic",
}
"""Distributions that must not come with the lean install (stack, HTTP exporter, cost, vendors)."""

PROBE = """
import json, sys, time
t0 = time.perf_counter()
import amtp_obs.sdk, amtp_obs.instrument
import_s = time.perf_counter() - t0
HEAVY = {"grpc", "google", "openai", "anthropic", "yaml", "pydantic"}
heavy = sorted(m for m in sys.modules if m.split(".")[0] in HEAVY or m.startswith("opentelemetry.exporter"))
from amtp_obs.sdk import configure, force_flush, llm_call, shutdown
configure("lean-wheel", endpoint=sys.argv[1], span_processor="simple", resource_attributes={"probe": "lean"})
with llm_call("openai", "gpt-4o") as call:
    call.set_usage(128, 64, cache_read_tokens=100)
ok = force_flush(10_000)
shutdown()
print(json.dumps({"import_s": import_s, "heavy_at_import": heavy, "flushed": ok}))
"""


def _run(*cmd: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, check=False)


@pytest.fixture(scope="module")
def lean_venv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    work = tmp_path_factory.mktemp("lean")
    built = _run(sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", work / "dist", REPO)
    assert built.returncode == 0, built.stderr
    [wheel] = (work / "dist").glob("amtp_obs-*.whl")
    venv = work / "venv"
    made = _run(sys.executable, "-m", "venv", venv)
    assert made.returncode == 0, made.stderr
    installed = _run(venv / "bin" / "python", "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel)
    assert installed.returncode == 0, installed.stderr
    yield venv


def _distributions(venv: Path) -> dict[str, str]:
    listed = _run(venv / "bin" / "python", "-m", "pip", "list", "--format", "json", "--disable-pip-version-check")
    assert listed.returncode == 0, listed.stderr
    return {d["name"].lower().replace("_", "-"): d["version"] for d in json.loads(listed.stdout)}


def test_lean_install_pulls_only_what_instrumenting_needs(lean_venv: Path) -> None:
    dists = _distributions(lean_venv)
    assert set(dists) >= LEAN
    assert not (STACK_ONLY & set(dists)), sorted(STACK_ONLY & set(dists))
    requires = _run(
        lean_venv / "bin" / "python",
        "-c",
        "from importlib.metadata import requires\n"
        "print('\\n'.join(r for r in requires('amtp-obs') if 'extra ==' not in r))",
    )
    names = {line.split(">")[0].split("=")[0].split("<")[0].strip().lower() for line in requires.stdout.split()}
    assert {n for n in names if n} == LEAN  # the wheel's own lean requirements, nothing more
    print("\nlean install:", ", ".join(f"{k} {v}" for k, v in sorted(dists.items()) if k not in ("pip", "setuptools")))


def test_lean_install_records_a_call_over_otlp(lean_venv: Path) -> None:
    with OtlpSink() as sink:
        probe = _run(lean_venv / "bin" / "python", "-c", PROBE, sink.grpc_endpoint, timeout=120)
        assert probe.returncode == 0, probe.stderr
        result = json.loads(probe.stdout.strip().splitlines()[-1])
        assert result["flushed"] is True
        assert result["heavy_at_import"] == []
        assert eventually(lambda: sink.spans() and sink.latest(contract.CACHE_READ_TOKENS.instrument))
        [span] = [s for s in sink.spans() if s.name == contract.SPAN_LLM_COMPLETION]
        assert span.resource["service.name"] == "lean-wheel" and span.resource["probe"] == "lean"
        assert span.attributes[contract.LLM_TOKENS_TOTAL] == 192
        assert span.attributes[contract.LLM_TOKENS_CACHE_READ] == 100
        assert contract.LLM_COST_USD not in span.attributes  # span cost needs the cost extra (documented)
        assert [p.value for p in sink.latest(contract.TOTAL_TOKENS.instrument)] == [192]
    print(f"\nimport amtp_obs.sdk + amtp_obs.instrument in the lean venv: {result['import_s'] * 1000:.0f} ms")


def test_the_command_line_asks_for_the_stack_extra(lean_venv: Path) -> None:
    done = _run(lean_venv / "bin" / "amtp-obs", "--help", timeout=60)
    assert done.returncode != 0
    assert "pip install 'amtp-obs[stack]'" in done.stderr and "Traceback" not in done.stderr


def test_http_protobuf_without_its_extra_is_a_clear_error(lean_venv: Path) -> None:
    script = (
        "from amtp_obs.sdk import ConfigurationError, configure\n"
        "try:\n    configure('x', protocol='http/protobuf')\n"
        "except ConfigurationError as err:\n    print(err)\n"
    )
    done = _run(lean_venv / "bin" / "python", "-c", script, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "pip install 'amtp-obs[http]'" in done.stdout
