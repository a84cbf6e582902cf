"""verify's panel checks on a real Prometheus: a token stat panel must show whole verify runs, at least one.

The series are written as the accounting rules and the collector would leave them after verify
runs (``llm:<class>:increment`` steps and the run-labelled counters), so the gate's judgement of
the panels' own queries is what is tested: a right total passes, a total that is not a whole
number of runs fails at once, no data keeps the panel pending.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
from dash_helpers import REPO, remote_write

from amtp_obs import contract
from amtp_obs.accounting import rules
from amtp_obs.collector.prometheus_naming import normalize_label
from amtp_obs.project import VERIFY_SCRIPT, Project
from amtp_obs.testing.prometheus import run_prometheus
from amtp_obs.verify import Endpoints, Gate, ScriptFacts
from amtp_obs.verify_panels import Contradiction, panel_queries, scrape_interval

SERVICE = contract.VERIFY_SERVICE_NAME


def test_token_panels_must_equal_whole_verify_runs(tmp_path: Path) -> None:
    project = Project(REPO, {})
    facts = ScriptFacts.load(project.path(VERIFY_SCRIPT))
    per_run = {c: facts.tokens[c.instrument] for c in contract.TOKEN_COUNTERS}
    run_label = normalize_label(facts.run_id_attribute)
    now_ms = int(time.time() * 1000)
    base = {rules.SERVICE_LABEL: SERVICE, "llm_model": "m", "llm_provider": "p", "cluster": "c"}
    series = [
        # Two runs counted, split over two rule steps.
        (
            {"__name__": contract.TOTAL_TOKENS.increment_record, **base},
            [(now_ms - 20_000, per_run[contract.TOTAL_TOKENS]), (now_ms - 5_000, per_run[contract.TOTAL_TOKENS])],
        ),
        # One and a half runs: a lost or double-counted token.
        (
            {"__name__": contract.PROMPT_TOKENS.increment_record, **base},
            [(now_ms - 5_000, per_run[contract.PROMPT_TOKENS] * 1.5)],
        ),
        # (no completion increments: the rules have not read them yet)
    ]
    for run in ("verify-a", "verify-b"):
        labels = {"__name__": contract.TOTAL_TOKENS.prometheus_name, **base, run_label: run}
        series.append((labels, [(now_ms - 20_000, per_run[contract.TOTAL_TOKENS])]))

    with run_prometheus(tmp_path) as prom, httpx.Client(timeout=10) as client:
        remote_write(prom.url, series)
        assert scrape_interval(client, prom.url) == 15.0  # run_prometheus' global.scrape_interval

        endpoints = Endpoints(otlp_grpc="", health="", tempo="", prometheus=prom.url, grafana="")
        gate = Gate(project, endpoints, 10.0, client, facts=facts, trace_id="0" * 32, emitted_at=time.time() - 30)
        queries = {
            q.panel: q
            for q in panel_queries(project, gate.panel_range(), service=SERVICE, time_interval=15.0)
            if q.exact_total is not None and q.panel.endswith(" Tokens")
        }
        assert set(queries) == {"Total Tokens", "Prompt Tokens", "Completion Tokens"}

        ok, detail = gate.run_panel(queries["Total Tokens"])
        assert ok and detail.startswith(f"{2 * per_run[contract.TOTAL_TOKENS]} = 2 verify run(s)"), detail

        try:
            gate.run_panel(queries["Prompt Tokens"])
        except Contradiction as exc:
            assert "not a whole number of runs" in str(exc)
        else:
            raise AssertionError("1.5 runs of prompt tokens passed the panel check")

        ok, detail = gate.run_panel(queries["Completion Tokens"])
        assert not ok and "no series" in detail, detail
