"""Acceptance: `amtp-obs up` on non-default ports, real OTLP in, Tempo API and PromQL out, verify, down.

Everything is real: the CLI runs as a subprocess, the collector and trace store are our processes,
Prometheus is the Debian binary, data goes over loopback sockets. The tests share one stack (module
fixture) and the data they read comes from module fixtures too (an SDK export, a demo run), so each
test passes alone and in any order; the tests that take a stack down start their own.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from opentelemetry.sdk.resources import SERVICE_NAME

from amtp_obs import contract, env
from amtp_obs.accounting import rules as accounting_rules
from amtp_obs.demo import SERVICES
from amtp_obs.durations import parse_duration
from amtp_obs.net import bound_sockets, free_ports, port_is_free
from amtp_obs.pricing import rules as pricing_rules
from amtp_obs.project import (
    ALERTING_FILE,
    COLLECTOR_CONFIG,
    DASHBOARDS_DIR,
    PROMETHEUS_CONFIG,
    SERVICE_COLLECTOR,
    SERVICE_GRAFANA,
    SERVICE_PROMETHEUS,
    SERVICE_TEMPO,
    Project,
)
from amtp_obs.stack import cadence
from amtp_obs.stack.planning import ALERTMANAGER
from amtp_obs.stack.state import Layout, alive, group_members, records
from amtp_obs.testing.browser import chromium, parse_panels
from amtp_obs.testing.poll import eventually, last_value

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.needs("prometheus"),
]

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "amtp_obs.cli"]
PORT_VARIABLES = tuple(Project(REPO, {}).port_variables())  # every OBS_* port compose publishes
ARTIFACTS = REPO / "artifacts"  # gitignored: screenshots for people
PROM_WAIT_S = 45.0  # generous: the embedded stack scrapes and pushes span metrics every 5 s (stack/cadence.py)
PRICED_WAIT_S = (
    parse_duration(cadence.DEFAULT_INTERVAL)  # the scrape that reads a process's last export
    + parse_duration(accounting_rules.DELAY)  # the accounting group reads that late,
    + parse_duration(accounting_rules.STEP)  # at its next step;
    + 2 * parse_duration(pricing_rules.STEP)  # the pricing group reads one step late, at its next step
    + 30.0  # evaluation time on a loaded machine
)
"""From a process's exit to its spend in the pricing rules' output: up to 65 s of rule steps."""
RUN = secrets.token_hex(4)
SDK_SERVICE = f"e2e-sdk-{RUN}"
JSON_SERVICE = f"e2e-json-{RUN}"
EMBEDDED = {SERVICE_COLLECTOR, SERVICE_TEMPO, SERVICE_PROMETHEUS, SERVICE_GRAFANA, ALERTMANAGER}
TOKENS = {contract.PROMPT_TOKENS: 11, contract.COMPLETION_TOKENS: 7, contract.TOTAL_TOKENS: 18}


@dataclass
class Stack:
    ports: dict[str, int]
    environ: dict[str, str]
    state: Path
    cwd: Path

    def url(self, variable: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[variable]}{path}"

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*CLI, *args], capture_output=True, text=True, timeout=timeout, env=self.environ, cwd=self.cwd
        )

    def promql(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(self.url(env.OBS_PROMETHEUS_PORT, "/api/v1/query"), params={"query": expr}, timeout=5)
        r.raise_for_status()
        return r.json()["data"]["result"]


def wait_for(what: Callable[[], Any], timeout: float, interval: float = 0.25) -> Any:
    """Return ``what()``'s first truthy value, or fail with the last one after ``timeout``."""
    return eventually(what, timeout, interval) or pytest.fail(
        f"timed out after {timeout:.0f} s; last result: {last_value(what)!r}"
    )


def start_stack(base: Path) -> Stack:
    """`amtp-obs up` on free ports in ``base``; a failed start fails the test with every service's log."""
    ports = dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OBS_", "OTEL_"))}
    environ.update({k: str(v) for k, v in ports.items()})
    environ[env.AMTP_OBS_PROJECT_DIR] = str(REPO)
    environ["COLUMNS"] = "220"
    # Alerting runs when its variables are set; port 9 (discard) is closed: nothing is ever delivered.
    environ[env.AMTP_SLACK_WEBHOOK_URL] = "http://127.0.0.1:9/slack"
    environ[env.AMTP_ALERT_EMAIL_ADDRESSES] = "llm-alerts@example.invalid"
    st = Stack(ports, environ, base / "state", base)
    res = st.cli("up", "--state-dir", str(st.state))
    if res.returncode != 0:
        logs = "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in (st.state / "logs").glob("*.log"))
        st.cli("down", "--state-dir", str(st.state))
        pytest.fail(f"amtp-obs up failed ({res.returncode}):\n{res.stdout}\n{res.stderr}\n{logs}")
    return st


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    st = start_stack(tmp_path_factory.mktemp("e2e"))
    try:
        yield st
    finally:
        st.cli("down", "--state-dir", str(st.state))


def collector_inserted_attributes() -> dict[str, Any]:
    doc = Project(REPO, {}).load_yaml(COLLECTOR_CONFIG)
    out = {}
    for action in doc["processors"]["attributes/llm_meta"]["actions"]:
        if action["action"] in ("insert", "upsert"):
            out[action["key"]] = action["value"]
    return out


def tempo_trace(st: Stack, trace_id: str) -> dict[str, Any] | None:
    r = httpx.get(st.url(env.OBS_TEMPO_HTTP_PORT, f"/api/traces/{trace_id}"), timeout=5)
    return r.json() if r.status_code == 200 else None


def span_names(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for batch in doc["batches"]:
        for ss in batch.get("scopeSpans", []):
            for span in ss.get("spans", []):
                attrs = {}
                for kv in span.get("attributes", []):
                    (kind, value), *_ = kv["value"].items()
                    attrs[kv["key"]] = int(value) if kind == "intValue" else value
                out[span["name"]] = attrs
    return out


def contract_attributes(provider: str, model: str) -> dict[str, Any]:
    return {
        contract.LLM_PROVIDER: provider,
        contract.LLM_MODEL: model,
        contract.LLM_REQUEST_TYPE: contract.REQUEST_TYPE_CHAT,
        contract.LLM_TOKENS_PROMPT: TOKENS[contract.PROMPT_TOKENS],
        contract.LLM_TOKENS_COMPLETION: TOKENS[contract.COMPLETION_TOKENS],
        contract.LLM_TOKENS_TOTAL: TOKENS[contract.TOTAL_TOKENS],
        contract.GEN_AI_SYSTEM: provider,
        contract.GEN_AI_REQUEST_MODEL: model,
    }


# ------------------------------------------------------------------------------------------------


def test_status_shows_every_embedded_service_ready(stack: Stack) -> None:
    res = stack.cli("status", "--state-dir", str(stack.state))
    assert res.returncode == 0, res.stdout + res.stderr
    for name in EMBEDDED:
        line = next(ln for ln in res.stdout.splitlines() if ln.strip("│┃ ").startswith(name))
        assert "running" in line and "ready" in line and "not ready" not in line, line
    # Everything listens on loopback only, on the ports the OBS_* variables asked for.
    for var in PORT_VARIABLES:
        assert not port_is_free(stack.ports[var]), var


def test_every_socket_the_stack_opens_is_on_loopback(stack: Stack) -> None:
    """What the processes actually bound (from /proc), not what their configs say: nothing faces the network."""
    layout = Layout(stack.state)
    by_service = {r.service: bound_sockets(group_members(r.pid)) for r in records(layout)}
    assert set(by_service) == EMBEDDED
    for service, sockets in by_service.items():
        assert sockets, f"{service} listens on nothing"
        outside = [s for s in sockets if not s.loopback]
        assert not outside, f"{service} listens beyond loopback: {outside}"
    listening = {s.port for sockets in by_service.values() for s in sockets if s.protocol.startswith("tcp")}
    # Every port the OBS_* variables publish, and every internal one `up` chose, is among them.
    assert set(stack.ports.values()) <= listening
    internal = {info["port"] for info in json.loads(layout.ports_file.read_text())["binds"].values()}
    assert internal <= listening, internal - listening


def test_dashboard_serves_the_provisioned_dashboard(stack: Stack) -> None:
    assert httpx.get(stack.url(env.OBS_GRAFANA_PORT, "/api/health"), timeout=5).status_code == 200
    r = httpx.get(stack.url(env.OBS_GRAFANA_PORT, "/d/llm-token-accounting"), timeout=10)
    assert r.status_code == 200 and "LLM Token Accounting" in r.text


def test_up_again_is_a_no_op(stack: Stack) -> None:
    before = {r.service: r.pid for r in records(Layout(stack.state))}
    res = stack.cli("up", "--state-dir", str(stack.state))
    assert res.returncode == 0 and "already running" in res.stdout, res.stdout + res.stderr
    assert {r.service: r.pid for r in records(Layout(stack.state))} == before


@dataclass(frozen=True)
class SdkExport:
    """One LLM trace and the three token counters, sent by the plain OpenTelemetry SDK over gRPC."""

    service: str
    trace_id: str
    attributes: dict[str, Any]


def export_with_the_plain_sdk(stack: Stack, service: str) -> SdkExport:
    from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.metrics import MeterProvider
    from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.trace import SpanKind

    endpoint = stack.url(env.OBS_OTEL_GRPC_PORT)
    resource = Resource.create({SERVICE_NAME: service})
    tp = TracerProvider(resource=resource)
    tp.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=True)))
    reader = PeriodicExportingMetricReader(
        OTLPMetricExporter(endpoint=endpoint, insecure=True), export_interval_millis=3_600_000
    )
    mp = MeterProvider(resource=resource, metric_readers=[reader])
    meter = mp.get_meter("e2e")
    attrs = contract_attributes(contract.PROVIDER_OPENAI, "gpt-4o")
    metric_attrs = {k: attrs[k] for k in contract.REQUIRED_METRIC_ATTRIBUTES}
    tracer = tp.get_tracer("e2e")
    with tracer.start_as_current_span(contract.SPAN_LLM_COMPLETION, kind=SpanKind.CLIENT, attributes=attrs) as root:
        with tracer.start_as_current_span(contract.SPAN_LLM_INFERENCE):
            pass
        trace_id = format(root.get_span_context().trace_id, "032x")
    for spec, value in TOKENS.items():
        meter.create_counter(spec.instrument, unit=spec.unit, description=spec.description).add(value, metric_attrs)
    assert mp.force_flush(10_000)
    tp.shutdown()
    mp.shutdown()
    return SdkExport(service, trace_id, attrs)


@pytest.fixture(scope="module")
def sdk_export(stack: Stack) -> SdkExport:
    return export_with_the_plain_sdk(stack, SDK_SERVICE)


@pytest.fixture(scope="module")
def demo(stack: Stack) -> subprocess.CompletedProcess[str]:
    """The demo workload: calls at 0, 3, 6, 9, 12 and 15 s (the last one fails on purpose).

    Each service alternates two models, so the first model's calls at 0, 6 and 12 s put one span
    series' latency into three generator pushes 5 s apart: the P95 panel's histogram rate needs a
    series that rises between two pushes (a new histogram series gets no zero sample in Tempo 2.4.1).
    """
    res = stack.cli("demo", "--calls", "6", "--duration", "15", timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    return res


def test_grpc_export_from_the_plain_sdk_reaches_tempo(stack: Stack, sdk_export: SdkExport) -> None:
    doc = wait_for(lambda: tempo_trace(stack, sdk_export.trace_id), 20)
    spans = span_names(doc)
    assert set(spans) == {contract.SPAN_LLM_COMPLETION, contract.SPAN_LLM_INFERENCE}
    root_attrs = spans[contract.SPAN_LLM_COMPLETION]
    for key, value in sdk_export.attributes.items():
        assert root_attrs[key] == value, key
    for key, value in collector_inserted_attributes().items():  # the collector's processor ran
        assert root_attrs[key] == value, key


def test_demo_workload_runs_against_the_stack(stack: Stack, demo: subprocess.CompletedProcess[str]) -> None:
    assert "deliberate errors" in demo.stdout

    # Calls at 0, 3, ..., 15 s (the last one fails on purpose, so tokens stop at 12 s), exported every
    # second and scraped every 5 s: the first scrape that sees a series comes before its last rise, so
    # the Token Rate panel's rate() has two different samples for every service. The window reaches
    # back over the whole module run: the demo may have run well before this test (any test order).
    expr = f'sum by (service_name) (rate({contract.TOTAL_TOKENS.prometheus_name}{{service_name=~"amtp-demo-.*"}}[30m]))'

    def rising() -> set[str] | None:
        names = {s["metric"]["service_name"] for s in stack.promql(expr) if float(s["value"][1]) > 0}
        return names if names == set(SERVICES) else None

    wait_for(rising, PROM_WAIT_S, interval=1.0)


def test_prometheus_runs_at_the_embedded_cadence(stack: Stack) -> None:
    r = httpx.get(stack.url(env.OBS_PROMETHEUS_PORT, "/api/v1/status/config"), timeout=5)
    running = yaml.safe_load(r.json()["data"]["yaml"])
    assert running["global"]["scrape_interval"] == cadence.DEFAULT_INTERVAL
    written = Project(REPO, {}).load_yaml(PROMETHEUS_CONFIG)["global"]
    assert running["global"]["evaluation_interval"] == written["evaluation_interval"]  # only collection changes
    assert {j["scrape_interval"] for j in running["scrape_configs"]} == {cadence.DEFAULT_INTERVAL}
    tempo = yaml.safe_load((stack.state / "config" / SERVICE_TEMPO / "tempo.yaml").read_text())
    assert tempo["metrics_generator"]["registry"]["collection_interval"] == cadence.DEFAULT_INTERVAL


def test_otlp_http_json_with_hex_ids_reaches_tempo(stack: Stack) -> None:
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    now = time.time_ns()
    attrs = contract_attributes(contract.PROVIDER_ANTHROPIC, "claude-haiku-4-5")

    def value(v: Any) -> dict[str, Any]:
        return {"intValue": str(v)} if isinstance(v, int) else {"stringValue": v}

    body = {
        "resourceSpans": [{
            "resource": {"attributes": [{"key": SERVICE_NAME, "value": {"stringValue": JSON_SERVICE}}]},
            "scopeSpans": [{
                "scope": {"name": "e2e-json"},
                "spans": [{
                    "traceId": trace_id, "spanId": span_id, "name": contract.SPAN_LLM_COMPLETION, "kind": 3,
                    "startTimeUnixNano": str(now - 5_000_000), "endTimeUnixNano": str(now),
                    "attributes": [{"key": k, "value": value(v)} for k, v in attrs.items()],
                }],
            }],
        }]
    }  # fmt: skip
    r = httpx.post(stack.url(env.OBS_OTEL_HTTP_PORT, "/v1/traces"), json=body, timeout=10)
    assert r.status_code == 200, r.text
    doc = wait_for(lambda: tempo_trace(stack, trace_id), 20)
    spans = span_names(doc)
    assert spans[contract.SPAN_LLM_COMPLETION][contract.LLM_MODEL] == "claude-haiku-4-5"
    # The ids survived as the hex we sent (Tempo answers base64 in JSON; the protobuf form is exact).
    proto = httpx.get(
        stack.url(env.OBS_TEMPO_HTTP_PORT, f"/api/traces/{trace_id}"),
        headers={"Accept": "application/protobuf"}, timeout=5,
    )  # fmt: skip
    assert proto.status_code == 200
    from opentelemetry.proto.trace.v1 import trace_pb2

    data = trace_pb2.TracesData.FromString(proto.content)
    got = [s for rs in data.resource_spans for ss in rs.scope_spans for s in ss.spans]
    assert [(s.trace_id.hex(), s.span_id.hex()) for s in got] == [(trace_id, span_id)]


@pytest.mark.parametrize(
    ("content_type", "body", "status"),
    [
        ("application/x-protobuf", b"\xff\xff\xff\xff not protobuf", 400),
        ("application/json", b'{"resourceSpans": [ {"scopeSpans": ', 400),
        ("application/json", b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}', 400),
        ("text/plain", b"hello", 415),
    ],
    ids=["bad-protobuf", "truncated-json", "non-hex-trace-id", "wrong-content-type"],
)
def test_bad_otlp_input_is_a_4xx_with_a_message(stack: Stack, content_type: str, body: bytes, status: int) -> None:
    r = httpx.post(
        stack.url(env.OBS_OTEL_HTTP_PORT, "/v1/traces"), content=body, headers={"Content-Type": content_type},
        timeout=10,
    )  # fmt: skip
    assert r.status_code == status, r.text
    assert r.content.strip(), "no message"
    assert b"Traceback" not in r.content


def test_oversized_body_is_refused(stack: Stack) -> None:
    big = b"\x0a" + b"\x00" * (21 * 1024 * 1024)
    try:
        r = httpx.post(
            stack.url(env.OBS_OTEL_HTTP_PORT, "/v1/traces"), content=big,
            headers={"Content-Type": "application/x-protobuf"}, timeout=30,
        )  # fmt: skip
    except httpx.HTTPError as exc:  # the server may close while we still send; it must still serve after
        pytest.fail(f"no 413 answer: {exc!r}")
    assert r.status_code == 413, r.text[:300]
    assert r.content.strip()


def test_invalid_trace_ids_against_tempo(stack: Stack) -> None:
    r = httpx.get(stack.url(env.OBS_TEMPO_HTTP_PORT, "/api/traces/xyz-not-hex"), timeout=5)
    assert r.status_code == 400 and "hex" in r.text
    r = httpx.get(stack.url(env.OBS_TEMPO_HTTP_PORT, f"/api/traces/{secrets.token_hex(16)}"), timeout=5)
    assert r.status_code == 404 and r.text.strip()
    r = httpx.get(stack.url(env.OBS_TEMPO_HTTP_PORT, "/api/search"), params={"q": "{ nope"}, timeout=5)
    assert 400 <= r.status_code < 500 and r.text.strip()


def test_services_keep_serving_after_bad_input(stack: Stack, sdk_export: SdkExport) -> None:
    health = Project(REPO, {}).load_yaml(COLLECTOR_CONFIG)["extensions"]["health_check"].get("path", "/")
    assert httpx.get(stack.url(env.OBS_OTEL_HEALTH_PORT, health), timeout=5).status_code == 200
    assert httpx.get(stack.url(env.OBS_TEMPO_HTTP_PORT, "/ready"), timeout=5).status_code == 200
    assert httpx.get(stack.url(env.OBS_PROMETHEUS_PORT, "/-/ready"), timeout=5).status_code == 200
    assert wait_for(lambda: tempo_trace(stack, sdk_export.trace_id), 20)


def test_counters_in_prometheus_under_the_contract_names(
    stack: Stack, sdk_export: SdkExport, demo: subprocess.CompletedProcess[str]
) -> None:
    def series() -> dict[str, float] | None:
        got = {}
        for spec in TOKENS:
            result = stack.promql(f'{spec.prometheus_name}{{service_name="{SDK_SERVICE}"}}')
            if not result:
                return None
            got[spec.prometheus_name] = sum(float(s["value"][1]) for s in result)
        return got

    got = wait_for(series, PROM_WAIT_S, interval=1.0)
    assert got == {spec.prometheus_name: float(v) for spec, v in TOKENS.items()}
    labels = stack.promql(f'{contract.PROMPT_TOKENS.prometheus_name}{{service_name="{SDK_SERVICE}"}}')[0]["metric"]
    assert (
        labels["llm_model"] == "gpt-4o" and labels["llm_provider"] == "openai" and labels["gen_ai_system"] == "openai"
    )
    assert labels["job"] == "otel-collector"  # the scrape job's name from prometheus.yml

    # The demo's services are there too, each under its own service_name.
    def demo_services() -> set[str] | None:
        names = {s["metric"]["service_name"] for s in stack.promql(contract.TOTAL_TOKENS.prometheus_name)}
        return names if set(SERVICES) <= names else None

    wait_for(demo_services, PROM_WAIT_S, interval=1.0)
    # The relabel rule renamed the exporter's llm_tokens_total: nothing is left under that name.
    assert stack.promql(f'llm_tokens_total{{service_name="{SDK_SERVICE}"}}') == []


def test_span_metrics_in_prometheus(stack: Stack, sdk_export: SdkExport) -> None:
    expr = f'{contract.SPANMETRICS_CALLS}{{service="{SDK_SERVICE}", span_name="{contract.SPAN_LLM_COMPLETION}"}}'

    def counted() -> list[dict[str, Any]] | None:
        # The generator writes a new series at 0 first (so rate() sees its first call): wait for the 1.
        result = stack.promql(expr)
        return result if sum(float(s["value"][1]) for s in result) >= 1 else None

    result = wait_for(counted, PROM_WAIT_S, interval=1.0)
    assert result[0]["metric"]["llm_model"] == "gpt-4o"
    buckets = stack.promql(f'{contract.SPANMETRICS_LATENCY_BUCKET}{{service="{SDK_SERVICE}"}}')
    assert buckets and any(s["metric"].get("le") == "+Inf" for s in buckets)


def test_verify_passes(stack: Stack) -> None:
    junit = stack.cwd / "verify.xml"
    res = stack.cli("verify", "--junit", str(junit), "--timeout", "60", timeout=240)
    assert res.returncode == 0, res.stdout + res.stderr
    suite = ET.parse(junit).getroot()
    assert suite.get("failures") == "0" and suite.get("skipped") == "0"
    assert int(suite.get("tests") or 0) >= 7


@pytest.mark.needs("chromium")
def test_dashboard_in_headless_chromium_after_the_demo(stack: Stack, demo: subprocess.CompletedProcess[str]) -> None:
    """The embedded Grafana stand-in shows every provisioned panel with values, as a browser sees it."""
    source = json.loads((REPO / DASHBOARDS_DIR / "llm-token-accounting.json").read_text())
    titles = [p["title"] for p in source["panels"]]
    url = stack.url(env.OBS_GRAFANA_PORT, f"/d/{source['uid']}")
    number = re.compile(r"-?\$?\d+(\.\d+)?( ?[a-zA-Z/%]+)?")

    kinds = {p["title"]: p["type"] for p in source["panels"]}

    def has_value(title: str, panel: dict[str, Any]) -> bool:
        if kinds[title] in ("stat", "bargauge"):
            return bool(panel["stats"]) and all(number.fullmatch(str(v).strip()) for v in panel["stats"])
        if kinds[title] == "timeseries":
            # Right after the demo a 1-minute step may hold the only sample: Grafana draws it as a dot.
            return bool(panel["lines"] or panel["dots"])
        if kinds[title] == "alertlist":
            return not panel["error"]  # which alerts it lists depends on what fires (tests/faults)
        return bool(panel["links"])  # the trace-search table: rows linking to the trace view

    def panels_with_values() -> dict[str, dict[str, Any]] | None:
        panels = parse_panels(chromium(url, stack.cwd, "--dump-dom", budget_ms=3000))
        ok = list(panels) == titles and all(has_value(t, p) for t, p in panels.items())
        return panels if ok else None

    # Right after the demo every panel waits for a scrape, the rules (spend: the pricing rules' steps
    # after the accounting rules') and two generator pushes.
    panels = eventually(panels_with_values, PRICED_WAIT_S, 2.0)
    if not panels:
        pytest.fail(f"panels without values: {parse_panels(chromium(url, stack.cwd, '--dump-dom', budget_ms=3000))}")
    assert not any(p["error"] for p in panels.values())
    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "dashboard-embedded.png"
    chromium(url, stack.cwd, f"--screenshot={shot}", "--window-size=1400,1800", "--hide-scrollbars")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# -- LLM spend (issue 10, docs/cost.md) ----------------------------------------------------------

COST_SERVICE = f"e2e-cost-{RUN}"
UNPRICED_MODEL = "gpt-4o-mini-2099-01-01"  # a date suffix no catalog alias lists: unpriced
COST_WORKLOAD = r"""
import json, sys
import anthropic, openai
from opentelemetry import trace
from amtp_obs.instrument import instrument
from amtp_obs.sdk import configure, shutdown
from amtp_obs.testing.fake_llm import HEADER_CACHE_CREATION, HEADER_CACHE_READ, HEADER_REASONING

endpoint, service, base_openai, base_anthropic, unpriced = sys.argv[1:6]
configure(service, endpoint=endpoint, protocol="grpc", metric_export_interval_ms=1000)
instrument()
tracer = trace.get_tracer("e2e-cost")
oa = openai.OpenAI(base_url=base_openai, api_key="e2e-not-a-key", max_retries=0)
an = anthropic.Anthropic(base_url=base_anthropic, api_key="e2e-not-a-key", max_retries=0)
out = []

def traced(fn):
    with tracer.start_as_current_span("e2e-agent") as span:
        usage = fn()
    out.append({**usage, "trace_id": format(span.get_span_context().trace_id, "032x")})

msg = [{"role": "user", "content": "price this call to the last fraction of a cent please"}]
for model, headers in (
    ("gpt-4o-mini", {HEADER_CACHE_READ: "2048", HEADER_REASONING: "128"}),
    (unpriced, {HEADER_CACHE_READ: "512"}),
):
    def call(model=model, headers=headers):
        u = oa.chat.completions.create(model=model, messages=msg, extra_headers=headers).usage
        cached = u.prompt_tokens_details.cached_tokens
        return {"provider": "openai", "model": model, "uncached": u.prompt_tokens - cached, "cache_read": cached,
                "cache_write": 0, "output": u.completion_tokens,
                "reasoning": u.completion_tokens_details.reasoning_tokens}
    traced(call)
for headers in ({HEADER_CACHE_CREATION: "4096"}, {HEADER_CACHE_READ: "4096"}):
    def call(headers=headers):
        u = an.messages.create(model="claude-haiku-4-5", max_tokens=256, messages=msg, extra_headers=headers).usage
        return {"provider": "anthropic", "model": "claude-haiku-4-5", "uncached": u.input_tokens,
                "cache_read": u.cache_read_input_tokens or 0, "cache_write": u.cache_creation_input_tokens or 0,
                "output": u.output_tokens, "reasoning": 0}
    traced(call)
shutdown()
print(json.dumps(out))
"""


def _catalog_prices(provider: str, model: str) -> dict[str, Decimal] | None:
    """USD per token in force today, read from the catalog file itself (no shared code path)."""
    doc = yaml.safe_load((REPO / "infra/observability/pricing/catalog.yaml").read_text())
    today = time.strftime("%Y-%m-%d", time.gmtime())
    for entry in doc["models"]:
        if entry["provider"] == provider and model in [entry["model"], *(entry.get("aliases") or [])]:
            current = [p for p in entry["prices"] if str(p["effective_from"]) <= today][-1]
            per = {k: Decimal(repr(current[k])) / 1_000_000 for k in ("input", "output")}
            for k in ("cache_read", "cache_write"):
                per[k] = Decimal(repr(current[k])) / 1_000_000 if k in current else per["input"]
            return per
    return None


def _close(got: float, want: Decimal, rel: str = "1e-9") -> bool:
    return abs(Decimal(repr(got)) - want) <= abs(want) * Decimal(rel)


def test_spend_equals_the_hand_computed_usd_everywhere(stack: Stack) -> None:
    """Real openai/anthropic clients against the fake vendor, with cached and reasoning tokens: the
    dashboard's spend panels, `amtp-obs usage`, and each span's llm.cost.usd equal the USD computed
    here by hand from the catalog; the unpriced model is shown as unpriced and its alert fires."""
    from amtp_obs.testing.fake_llm import FakeLLMServer

    with FakeLLMServer() as fake:
        res = subprocess.run(
            [sys.executable, "-c", COST_WORKLOAD, stack.url(env.OBS_OTEL_GRPC_PORT), COST_SERVICE,
             fake.openai_base_url, fake.anthropic_base_url, UNPRICED_MODEL],
            capture_output=True, text=True, timeout=120, env=stack.environ, cwd=stack.cwd,
        )  # fmt: skip
    assert res.returncode == 0, res.stdout + res.stderr
    calls = json.loads(res.stdout.strip().splitlines()[-1])
    assert any(c["cache_read"] and c["reasoning"] for c in calls) and any(c["cache_write"] for c in calls)

    per_call: list[Decimal | None] = []
    for c in calls:
        price = _catalog_prices(c["provider"], c["model"])
        per_call.append(
            None if price is None else sum((Decimal(c[k]) * price[k.replace("uncached", "input")]
                                             for k in ("uncached", "cache_read", "cache_write", "output")), Decimal(0))
        )  # fmt: skip
    assert per_call[1] is None and all(v is not None and v > 0 for i, v in enumerate(per_call) if i != 1)
    total = sum((v for v in per_call if v is not None), Decimal(0))
    unpriced = calls[1]
    unpriced_tokens = unpriced["uncached"] + unpriced["cache_read"] + unpriced["output"]

    # The dashboard's own panel queries for this service over the last hour.
    source = json.loads((REPO / DASHBOARDS_DIR / "llm-token-accounting.json").read_text())
    exprs = {p["title"]: t[0]["expr"] for p in source["panels"] if (t := p.get("targets")) and "expr" in t[0]}

    def panel(title: str) -> list[dict[str, Any]]:
        expr = exprs[title].replace("$service_name", COST_SERVICE).replace("$__range", "1h")
        return stack.promql(expr)

    def spend_shown() -> bool:
        tot = panel("Total Spend (USD)")
        by_svc = {s["metric"].get("service_name"): float(s["value"][1]) for s in panel("Spend by Service")}
        by_model = {s["metric"].get("llm_model"): float(s["value"][1]) for s in panel("Spend by Model")}
        per_call_cost = panel("Cost per Call (USD)")
        return (
            len(tot) == 1 and _close(float(tot[0]["value"][1]), total)
            and _close(by_svc.get(COST_SERVICE, 0.0), total)
            and set(by_model) == {"gpt-4o-mini", "claude-haiku-4-5"}
            and _close(by_model["gpt-4o-mini"], per_call[0])  # type: ignore[arg-type]
            and len(per_call_cost) == 1 and _close(float(per_call_cost[0]["value"][1]), total / 3)
        )  # fmt: skip

    wait_for(spend_shown, PRICED_WAIT_S, interval=1.0)
    unpriced_panel = {s["metric"].get("llm_model"): float(s["value"][1]) for s in panel("Unpriced Tokens")}
    assert unpriced_panel == {UNPRICED_MODEL: unpriced_tokens}

    usage = stack.cli("usage", "--since", "1h", "--json")
    assert usage.returncode == 0, usage.stdout + usage.stderr
    rows = {r["service"]: r for r in json.loads(usage.stdout)["rows"]}
    assert _close(rows[COST_SERVICE]["usd"], total)
    assert rows[COST_SERVICE]["unpriced_tokens"] == unpriced_tokens

    # Each span carries its own cost (none for the unpriced model), and TraceQL finds the priced ones.
    for c, want in zip(calls, per_call, strict=True):
        doc = wait_for(lambda c=c: tempo_trace(stack, c["trace_id"]), 20)
        attrs = span_names(doc)[contract.SPAN_LLM_COMPLETION]
        if want is None:
            assert contract.LLM_COST_USD not in attrs and contract.LLM_COST_CATALOG not in attrs
        else:
            assert _close(attrs[contract.LLM_COST_USD], want, "1e-12")
            assert str(attrs[contract.LLM_COST_CATALOG]).startswith("sha256:")
    cheapest = min(v for v in per_call if v is not None)
    q = f'{{ span.llm.cost.usd > {float(cheapest) * 0.999!r} && resource.service.name = "{COST_SERVICE}" }}'

    def found() -> set[str] | None:
        r = httpx.get(stack.url(env.OBS_TEMPO_HTTP_PORT, "/api/search"), params={"q": q}, timeout=5)
        ids = {t["traceID"].lstrip("0") for t in r.json().get("traces", [])} if r.status_code == 200 else set()
        want = {c["trace_id"].lstrip("0") for c, v in zip(calls, per_call, strict=True) if v is not None}
        return ids if ids == want else None

    wait_for(found, 20, interval=1.0)

    # No silent $0: the unpriced model's warning alert fires, naming it. Its rule group evaluates
    # every minute (alerting.yaml); seen in CI: first firing 157 s after the unpriced tokens were
    # recorded (two evaluations that did not fire it, cause not found), so allow four intervals.
    groups = Project(REPO, {}).load_yaml(ALERTING_FILE)["groups"]
    (interval,) = {g["interval"] for g in groups if any(r["title"] == "LLM Tokens Unpriced" for r in g["rules"])}
    sel = f'ALERTS{{alertname="LLM Tokens Unpriced", alertstate="firing", llm_model="{UNPRICED_MODEL}"}}'
    wait_for(lambda: stack.promql(sel), 4 * parse_duration(interval), interval=2.0)


def test_down_leaves_nothing_behind_and_up_keeps_the_state(tmp_path: Path) -> None:
    """`down` stops every process and frees every port; WAL/blocks and Prometheus data survive for `up`.

    Its own stack: taking the shared one down would pull it from under the other tests.
    """
    st = start_stack(tmp_path)
    try:
        sent = export_with_the_plain_sdk(st, f"e2e-restart-{RUN}")
        samples = f'count_over_time({contract.PROMPT_TOKENS.prometheus_name}{{service_name="{sent.service}"}}[30m])'
        wait_for(lambda: tempo_trace(st, sent.trace_id), 20)
        wait_for(lambda: st.promql(samples), PROM_WAIT_S, interval=1.0)
        layout = Layout(st.state)
        recs = records(layout)
        assert {r.service for r in recs} == EMBEDDED
        res = st.cli("down", "--state-dir", str(st.state))
        assert res.returncode == 0, res.stdout + res.stderr
        for r in recs:
            assert not alive(r.pid), r.service
            assert group_members(r.pid) == [], r.service
        assert records(layout) == []
        bound = json.loads(layout.ports_file.read_text())["binds"]
        for key, info in bound.items():
            assert port_is_free(info["port"]), key
        # State survives for the next `up` (WAL, blocks, Prometheus data, logs).
        assert (st.state / "logs").is_dir() and any((st.state / "volumes").iterdir())
        res = st.cli("status", "--state-dir", str(st.state))
        assert res.returncode == 3 and "stopped" in res.stdout
        assert yaml.safe_load((layout.config / SERVICE_TEMPO / "tempo.yaml").read_text())["server"]

        res = st.cli("up", "--state-dir", str(st.state))
        assert res.returncode == 0, res.stdout + res.stderr
        doc = tempo_trace(st, sent.trace_id)
        assert doc is not None and contract.SPAN_LLM_COMPLETION in span_names(doc)
        assert st.promql(samples), "Prometheus lost the samples scraped before the restart"
    finally:
        res = st.cli("down", "--state-dir", str(st.state))
    assert res.returncode == 0 and records(Layout(st.state)) == []


def test_foreground_stops_everything_on_sigterm(tmp_path: Path) -> None:
    """`up --foreground` stays attached and takes the whole stack down on SIGTERM."""
    ports = dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True))
    alerting = (env.AMTP_SLACK_WEBHOOK_URL, env.AMTP_ALERT_EMAIL_ADDRESSES)  # unset: routed, not delivered
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OBS_", "OTEL_")) and k not in alerting}
    environ.update({k: str(v) for k, v in ports.items()})
    environ[env.AMTP_OBS_PROJECT_DIR] = str(REPO)
    environ["COLUMNS"] = "220"
    state, log = tmp_path / "state", tmp_path / "up.log"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CLI, "up", "--foreground", "--state-dir", str(state)],
            env=environ, cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
    try:
        wait_for(lambda: proc.poll() is not None or "running in the foreground" in log.read_text(), 90)
        assert proc.poll() is None, log.read_text()
        recs = records(Layout(state))
        assert {r.service for r in recs} == EMBEDDED and all(r.matches() for r in recs)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        subprocess.run([*CLI, "down", "--state-dir", str(state)], env=environ, timeout=60, capture_output=True)
    text = log.read_text()
    assert proc.returncode == 0, text
    assert "SIGTERM" in text
    for r in recs:
        assert not alive(r.pid) and group_members(r.pid) == [], r.service
    assert all(port_is_free(p) for p in ports.values())
