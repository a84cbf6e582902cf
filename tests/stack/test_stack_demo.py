"""`amtp-obs demo` against a real OTLP receiver: several services, models, child spans and errors."""

from __future__ import annotations

import io
from pathlib import Path

from rich.console import Console

from amtp_obs import contract, env
from amtp_obs.demo import SERVICES, run_demo
from amtp_obs.project import Project
from amtp_obs.testing.otlp_sink import OtlpSink

REPO = Path(__file__).resolve().parents[2]

ERROR = 2  # STATUS_CODE_ERROR


def test_demo_sends_contract_spans_and_counters_from_each_service() -> None:
    with OtlpSink() as sink:
        project = Project(REPO, {env.OBS_OTEL_GRPC_PORT: str(sink.grpc_port)})
        out = io.StringIO()
        assert run_demo(project, calls=3, console=Console(file=out, width=250)) == 0, out.getvalue()
        spans = sink.spans()
        points = sink.points()
    llm = [s for s in spans if s.name == contract.SPAN_LLM_COMPLETION]
    services = {s.resource.get("service.name") for s in llm}
    assert services == set(SERVICES)
    assert len({s.attributes[contract.LLM_MODEL] for s in llm}) >= 4
    assert any(s.status_code == ERROR for s in llm), "no error span"
    assert {s.name for s in spans} >= {contract.SPAN_LLM_INFERENCE, contract.SPAN_LLM_RESPONSE_PARSE}
    # Every LLM span hangs under an agent step span of the same trace.
    by_id = {s.span_id: s for s in spans}
    assert all(s.parent_span_id in by_id for s in llm)
    from amtp_obs.contract.validate import validate_span

    ok = [s for s in llm if s.status_code != ERROR]
    assert ok and all(validate_span(s.name, s.attributes, kind=s.kind) == [] for s in ok)
    counted = {(p.resource.get("service.name"), p.metric) for p in points if p.value}
    for service in SERVICES:
        for counter in contract.TOKEN_COUNTERS:
            assert (service, counter.instrument) in counted
    assert "deliberate errors" in out.getvalue()


def test_duration_spreads_each_services_calls_over_time() -> None:
    with OtlpSink() as sink:
        project = Project(REPO, {env.OBS_OTEL_GRPC_PORT: str(sink.grpc_port)})
        out = io.StringIO()
        assert run_demo(project, calls=3, console=Console(file=out, width=250), duration=1.5) == 0, out.getvalue()
        spans = sink.spans()
    for service in SERVICES:
        mine = [s for s in spans if s.resource.get("service.name") == service]
        starts = sorted(s.start_ns for s in mine if s.name == contract.SPAN_LLM_COMPLETION)
        assert len(starts) == 3, service
        assert (starts[-1] - starts[0]) / 1e9 >= 1.4, (service, starts)  # first call at 0 s, last at 1.5 s


def test_bad_duration_is_a_clear_error() -> None:
    out = io.StringIO()
    project = Project(REPO, {env.OBS_OTEL_GRPC_PORT: "1"})
    assert run_demo(project, calls=3, console=Console(file=out, width=250), duration=-1) == 2
    assert "--duration must be between 0 and" in out.getvalue()
