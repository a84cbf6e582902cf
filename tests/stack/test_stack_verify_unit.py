"""The verify gate's parts that need no running stack: queries, Tempo JSON, JUnit, a dead stack."""

from __future__ import annotations

import base64
import io
import xml.etree.ElementTree as ET
from pathlib import Path

import promql_parser
import pytest
from rich.console import Console

from amtp_obs import contract
from amtp_obs.grafana.timerange import TimeRange
from amtp_obs.project import Project, ProjectError
from amtp_obs.verify import Result, run_verify, spans_from_tempo_json, write_junit
from amtp_obs.verify_panels import panel_queries


def test_every_provisioned_panel_query_parses(project: Project) -> None:
    assert project.dashboards(), "the project provisions no dashboard"
    queries = panel_queries(project, TimeRange.parse("now-1h", "now"), service=contract.VERIFY_SERVICE_NAME)
    assert queries, "dashboards exist but no panel query was found"
    kinds = {q.kind for q in queries}
    assert "prometheus" in kinds
    for q in queries:
        assert "$" not in q.query, q
        if q.kind == "prometheus":
            promql_parser.parse(q.query)  # raises ValueError on a bad substitution


def test_spans_from_tempo_json_reads_base64_ids_and_string_ints() -> None:
    tid, root, child = bytes(range(16)), bytes(range(8)), bytes(range(8, 16))
    b64 = lambda b: base64.b64encode(b).decode()  # noqa: E731
    doc = {
        "batches": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "svc"}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "s"},
                        "spans": [
                            {
                                "traceId": b64(tid),
                                "spanId": b64(root),
                                "name": contract.SPAN_LLM_COMPLETION,
                                "kind": "SPAN_KIND_CLIENT",
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "2",
                                "attributes": [{"key": contract.LLM_TOKENS_PROMPT, "value": {"intValue": "128"}}],
                            },
                            {
                                "traceId": b64(tid),
                                "spanId": b64(child),
                                "parentSpanId": b64(root),
                                "name": contract.SPAN_LLM_INFERENCE,
                                "startTimeUnixNano": "1",
                                "endTimeUnixNano": "2",
                            },
                        ],
                    }
                ],
            }
        ]
    }
    spans = spans_from_tempo_json(doc)
    assert [s.name for s in spans] == [contract.SPAN_LLM_COMPLETION, contract.SPAN_LLM_INFERENCE]
    assert spans[0].trace_id == tid.hex() and spans[1].parent_span_id == root.hex()
    assert spans[0].attributes[contract.LLM_TOKENS_PROMPT] == 128
    assert spans[0].resource["service.name"] == "svc"
    assert spans[0].kind == 3  # SPAN_KIND_CLIENT


def test_junit_report(tmp_path: Path) -> None:
    path = tmp_path / "out" / "verify.xml"
    write_junit([Result("a", "pass", "ok", 0.1), Result("b", "fail", "boom", 0.2), Result("c", "skip", "-", 0)], path)
    suite = ET.parse(path).getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "3"
    assert suite.get("failures") == "1" and suite.get("skipped") == "1"
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["b"].find("failure").get("message") == "boom"  # type: ignore[union-attr]


def test_verify_against_no_stack_fails_fast_and_says_why(project: Project, tmp_path: Path) -> None:
    out = io.StringIO()
    code = run_verify(project, junit=tmp_path / "j.xml", timeout=1.0, console=Console(file=out, width=250))
    text = out.getvalue()
    assert code == 1
    assert "FAIL" in text and "ConnectError" in text
    suite = ET.parse(tmp_path / "j.xml").getroot()
    assert int(suite.get("failures") or 0) >= 1


def test_script_facts_are_read_from_the_source_without_running_it(tmp_path: Path) -> None:
    from amtp_obs.project import VERIFY_SCRIPT
    from amtp_obs.verify_script import ScriptFacts, script_constants

    real = ScriptFacts.load(Project.discover(Path(__file__).parent).root / VERIFY_SCRIPT)
    assert real.tokens[contract.TOTAL_TOKENS.instrument] == sum(
        real.tokens[s.instrument] for s in (contract.PROMPT_TOKENS, contract.COMPLETION_TOKENS)
    )
    script = tmp_path / "verify_trace.py"
    script.write_text(
        'raise SystemExit("executing this would end the reader")\n'
        'PROMPT_TOKENS = 3\nCOMPLETION_TOKENS: int = 4\nRUN_ID_ATTRIBUTE = "x.run"\n'
    )
    facts = ScriptFacts.load(script)
    assert facts.run_id_attribute == "x.run" and facts.tokens[contract.TOTAL_TOKENS.instrument] == 7
    script.write_text("PROMPT_TOKENS = 3\nCOMPLETION_TOKENS = compute()\n")
    with pytest.raises(ProjectError, match="COMPLETION_TOKENS is not a literal"):
        script_constants(script)
    script.write_text("PROMPT_TOKENS = 3\n")
    with pytest.raises(ProjectError, match="no module-level COMPLETION_TOKENS, RUN_ID_ATTRIBUTE"):
        script_constants(script)
