"""``amtp-obs verify``: the end-to-end acceptance gate, for the embedded stack or a Compose deployment.

It does what the design's CI gate does (run ``verify_trace.py``, take the first ``[0-9a-f]{32}``,
poll Tempo's ``/api/traces/{id}``) and then checks what the gate never did: the spans and their
contract attributes, the token counters *of this run* in Prometheus, the span metrics, and that every
dashboard panel's query returns data. Every wait is bounded; polls use short intervals.
"""

from __future__ import annotations

import math
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from opentelemetry.sdk.resources import SERVICE_NAME
from rich.console import Console
from rich.table import Table

from amtp_obs import contract, env
from amtp_obs.accounting import rules
from amtp_obs.collector.prometheus_naming import normalize_label
from amtp_obs.grafana.timerange import TimeRange
from amtp_obs.junit import write_junit as write_junit_file
from amtp_obs.pricing import rules as pricing
from amtp_obs.pricing.catalog import packaged_pricer
from amtp_obs.project import COLLECTOR_CONFIG, VERIFY_SCRIPT, Project, ProjectError
from amtp_obs.steps import FAIL, SKIP, CheckFailed, Result, Skipped, run_side_by_side, run_step
from amtp_obs.tracejson import Span, spans_from_tempo_json
from amtp_obs.verify_panels import (
    Contradiction,
    PanelQuery,
    PanelQueryError,
    panel_queries,
    scrape_interval,
    whole_runs,
)
from amtp_obs.verify_script import ScriptFacts

TRACE_ID_RE = re.compile(r"[0-9a-f]{32}")
"""The design's extraction: ``grep -oE '[0-9a-f]{32}' | head -n 1``."""
LOOPBACK = "127.0.0.1"
POLL_INTERVAL_S = 0.5
SCRIPT_TIMEOUT_S = 30.0
TOTAL_WINDOW_MARGIN_S = 60
"""Seconds added before the emit: the rules read 15 s late and count in 15 s steps."""
TOKEN_ATTRIBUTE = {
    contract.PROMPT_TOKENS.instrument: contract.LLM_TOKENS_PROMPT,
    contract.COMPLETION_TOKENS.instrument: contract.LLM_TOKENS_COMPLETION,
    contract.TOTAL_TOKENS.instrument: contract.LLM_TOKENS_TOTAL,
}
"""Counter -> span attribute holding the same number for one call."""


@dataclass
class Endpoints:
    """Where the stack answers, from the OBS_* ports (embedded and Compose publish the same ones)."""

    otlp_grpc: str
    health: str
    tempo: str
    prometheus: str
    grafana: str

    @classmethod
    def from_project(cls, project: Project) -> Endpoints:
        path = "/"
        try:
            doc = project.load_yaml(COLLECTOR_CONFIG) or {}
            path = ((doc.get("extensions") or {}).get("health_check") or {}).get("path") or "/"
        except (ProjectError, AttributeError):
            pass
        return cls(
            otlp_grpc=f"http://{LOOPBACK}:{project.port(env.OBS_OTEL_GRPC_PORT)}",
            health=f"http://{LOOPBACK}:{project.port(env.OBS_OTEL_HEALTH_PORT)}{path}",
            tempo=f"http://{LOOPBACK}:{project.port(env.OBS_TEMPO_HTTP_PORT)}",
            prometheus=f"http://{LOOPBACK}:{project.port(env.OBS_PROMETHEUS_PORT)}",
            grafana=f"http://{LOOPBACK}:{project.port(env.OBS_GRAFANA_PORT)}",
        )


@dataclass
class Gate:
    """State shared between the checks of one run."""

    project: Project
    endpoints: Endpoints
    timeout: float
    client: httpx.Client
    run_id: str = field(default_factory=lambda: f"verify-{uuid.uuid4().hex[:16]}")
    facts: ScriptFacts | None = None
    trace_id: str | None = None
    emitted_at: float | None = None
    spans: list[Span] = field(default_factory=list)
    results: list[Result] = field(default_factory=list)

    def poll(self, what: Callable[[], tuple[bool, str]], budget: float | None = None) -> str:
        """Call ``what`` every POLL_INTERVAL_S until it says done, or fail with its last detail."""
        deadline = time.monotonic() + (budget if budget is not None else self.timeout)
        while True:
            done, detail = what()
            if done:
                return detail
            if time.monotonic() >= deadline:
                raise CheckFailed(f"gave up after {budget if budget is not None else self.timeout:.0f} s: {detail}")
            time.sleep(POLL_INTERVAL_S)

    def prom_query(self, expr: str) -> list[dict[str, Any]]:
        r = self.client.get(f"{self.endpoints.prometheus}/api/v1/query", params={"query": expr})
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {}
        if r.status_code != 200 or body.get("status") != "success":
            raise CheckFailed(f"Prometheus rejected {expr!r}: HTTP {r.status_code} {body.get('error', r.text[:200])}")
        result = body["data"]["result"]
        return result if isinstance(result, list) else [{"value": result}]

    # -------------------------------------------------------------------------- checks
    def check_reachable(self) -> str:
        targets = {
            "collector health": self.endpoints.health,
            "tempo /ready": f"{self.endpoints.tempo}/ready",
            "prometheus /-/ready": f"{self.endpoints.prometheus}/-/ready",
            "grafana /api/health": f"{self.endpoints.grafana}/api/health",
        }

        def probe() -> tuple[bool, str]:
            bad = []
            for what, url in targets.items():
                try:
                    code = self.client.get(url).status_code
                except httpx.HTTPError as exc:
                    bad.append(f"{what} ({url}): {type(exc).__name__}")
                    continue
                if code != 200:
                    bad.append(f"{what} ({url}): HTTP {code}")
            return not bad, "; ".join(bad) or "all ready"

        return self.poll(probe, budget=min(self.timeout, 30.0))

    def check_emit(self) -> str:
        script = self.project.path(VERIFY_SCRIPT)
        if not script.is_file():
            raise CheckFailed(f"{VERIFY_SCRIPT} not found")
        self.facts = ScriptFacts.load(script)
        environ = dict(self.project.variables)
        environ[env.OTEL_EXPORTER_OTLP_ENDPOINT] = self.endpoints.otlp_grpc
        started = time.time()
        try:
            proc = subprocess.run(
                [sys.executable, str(script), "--run-id", self.run_id],
                capture_output=True,
                text=True,
                timeout=SCRIPT_TIMEOUT_S,
                env=environ,
            )
        except subprocess.TimeoutExpired:
            raise CheckFailed(f"{VERIFY_SCRIPT} did not finish within {SCRIPT_TIMEOUT_S:.0f} s") from None
        if proc.returncode != 0:
            raise CheckFailed(f"exit code {proc.returncode}: {(proc.stderr or proc.stdout).strip()[-400:]}")
        m = TRACE_ID_RE.search(proc.stdout)
        if not m:
            raise CheckFailed(f"no 32-hex trace id in its output: {proc.stdout.strip()[-300:]!r}")
        self.trace_id = m.group(0)
        self.emitted_at = started
        return f"trace {self.trace_id}, run id {self.run_id}"

    def check_tempo_trace(self) -> str:
        if not self.trace_id:
            raise Skipped("no trace id")
        url = f"{self.endpoints.tempo}/api/traces/{self.trace_id}"
        attempts = 0
        doc: dict[str, Any] = {}

        def fetch() -> tuple[bool, str]:
            nonlocal attempts, doc
            attempts += 1
            try:
                r = self.client.get(url)
            except httpx.HTTPError as exc:
                return False, f"{type(exc).__name__}"
            if r.status_code == 200:
                doc = r.json()
                return True, f"HTTP 200 after {attempts} attempt(s)"
            return False, f"HTTP {r.status_code}"

        detail = self.poll(fetch, budget=min(self.timeout, 60.0))
        self.spans = spans_from_tempo_json(doc)
        return detail + f", {len(self.spans)} span(s)"

    def check_spans(self) -> str:
        if not self.spans:
            raise Skipped("no trace")
        from amtp_obs.contract.validate import validate_span

        by_name = {s.name: s for s in self.spans}
        missing = [n for n in contract.LLM_SPAN_NAMES if n not in by_name]
        if missing:
            raise CheckFailed(f"missing span(s) {missing}; got {sorted(by_name)}")
        root = by_name[contract.SPAN_LLM_COMPLETION]
        problems = [v.message for v in validate_span(root.name, root.attributes, kind=root.kind)]
        for child in contract.LLM_SPAN_NAMES[1:]:
            if by_name[child].parent_span_id != root.span_id:
                problems.append(f"{child} is not a child of {root.name}")
        if any(s.trace_id != self.trace_id for s in self.spans):
            problems.append("a span has another trace id")
        assert self.facts is not None
        run_attr = self.facts.run_id_attribute
        if root.resource.get(run_attr) != self.run_id:
            problems.append(f"resource {run_attr}={root.resource.get(run_attr)!r}, want {self.run_id}")
        for counter, attr in TOKEN_ATTRIBUTE.items():
            sent = self.facts.tokens[counter]
            if root.attributes.get(attr) != sent:
                problems.append(f"{attr}={root.attributes.get(attr)!r}, the script sends {sent}")
        for key, value in collector_span_attributes(self.project).items():
            if root.attributes.get(key) != value:
                problems.append(f"collector attribute {key}={root.attributes.get(key)!r}, want {value!r}")
        if problems:
            raise CheckFailed("; ".join(problems))
        tokens = ", ".join(f"{k}={root.attributes[k]}" for k in TOKEN_ATTRIBUTE.values())
        return f"3 spans, contract attributes valid ({tokens})"

    def check_counters(self) -> str:
        if self.facts is None or not self.trace_id:
            raise Skipped("verify_trace.py did not run")
        label = normalize_label(self.facts.run_id_attribute)
        required = [normalize_label(a) for a in contract.REQUIRED_METRIC_ATTRIBUTES]
        want = {c.prometheus_name: self.facts.tokens[c.instrument] for c in contract.TOKEN_COUNTERS}

        def look() -> tuple[bool, str]:
            got, bad = {}, []
            for name, expected in want.items():
                series = self.prom_query(f'{name}{{{label}="{self.run_id}"}}')
                total = sum(float(s["value"][1]) for s in series)
                got[name] = total
                if not series:
                    bad.append(f"{name}: no series yet")
                elif total != expected:
                    bad.append(f"{name}={total:g}, want {expected}")
                else:
                    for s in series:
                        lacking = [lab for lab in required if lab not in s["metric"]]
                        if lacking:
                            bad.append(f"{name} lacks label(s) {lacking}")
            return not bad, "; ".join(bad) or ", ".join(f"{k}={v:g}" for k, v in got.items())

        return self.poll(look, budget=min(self.timeout, 45.0))

    def runs_seen(self, window: int) -> int:
        """How many verify runs Prometheus saw within ``window`` seconds (their run-id series)."""
        assert self.facts is not None
        run_label = normalize_label(self.facts.run_id_attribute)
        service = f'{{{rules.SERVICE_LABEL}="{contract.VERIFY_SERVICE_NAME}"}}'
        expr = (
            f"count(count by ({run_label}) (last_over_time("
            f"{contract.TOTAL_TOKENS.prometheus_name}{service}[{window}s])))"
        )
        return sum(int(float(s["value"][1])) for s in self.prom_query(expr))

    def check_total(self) -> str:
        """The exact-total path (accounting rules), as the dashboard's stats read it, counts this run.

        Other verify runs may fall inside the window, so the total must be this run's tokens plus a
        whole number of runs, never more runs than Prometheus saw; 0, a fraction or a double count fails.
        """
        if self.facts is None or not self.trace_id or self.emitted_at is None:
            raise Skipped("verify_trace.py did not run")
        per_run = self.facts.tokens[contract.TOTAL_TOKENS.instrument]
        service = f'{{{rules.SERVICE_LABEL}="{contract.VERIFY_SERVICE_NAME}"}}'

        def look() -> tuple[bool, str]:
            window = math.ceil(time.time() - self.emitted_at) + TOTAL_WINDOW_MARGIN_S
            expr = rules.total_expr(contract.TOTAL_TOKENS, selector=service, range_=f"{window}s")
            got = sum(float(s["value"][1]) for s in self.prom_query(expr))
            try:
                runs = whole_runs(got, per_run, self.runs_seen(window + TOTAL_WINDOW_MARGIN_S))
            except Contradiction as exc:
                raise CheckFailed(f"{expr} = {exc}") from None
            if runs is None:
                return False, f"{expr} = {got:g}, want {per_run} (this run) once the rules have read it"
            return True, f"{got:g} tokens = {runs} run(s) x {per_run} (exact total over {window} s)"

        return self.poll(look, budget=min(self.timeout, 60.0))

    def check_spend(self) -> str:
        """The run's USD through the pricing rules (docs/cost.md): its tokens x the catalog's price.

        Like the token total: this run's spend plus a whole number of other verify runs, never a
        fraction (a token priced twice or missed) and never 0 (an unpriced verify model).
        """
        if self.facts is None or not self.trace_id or self.emitted_at is None:
            raise Skipped("verify_trace.py did not run")
        pricer = packaged_pricer()
        per_run = None
        if pricer is not None:
            per_run = pricer.cost_usd(
                contract.VERIFY_PROVIDER,
                contract.VERIFY_MODEL,
                prompt=self.facts.tokens[contract.PROMPT_TOKENS.instrument],
                completion=self.facts.tokens[contract.COMPLETION_TOKENS.instrument],
                when=self.emitted_at,
            )
        if not per_run:
            raise CheckFailed(f"the price catalog has no price for {contract.VERIFY_MODEL}: verify cannot check spend")
        service = f'{{{rules.SERVICE_LABEL}="{contract.VERIFY_SERVICE_NAME}"}}'

        def look() -> tuple[bool, str]:
            window = math.ceil(time.time() - self.emitted_at) + TOTAL_WINDOW_MARGIN_S
            expr = f"sum(sum_over_time({pricing.COST}{service}[{window}s]))"
            got = sum(float(s["value"][1]) for s in self.prom_query(expr))
            runs = got / per_run
            if runs < 1 - 1e-9:
                return False, f"{expr} = {got:.9g} USD, want {per_run:.9g} (this run) once the rules have priced it"
            if abs(runs - round(runs)) > 1e-6:
                raise CheckFailed(f"{expr} = {got:.9g} USD: not a whole number of runs of {per_run:.9g} USD")
            return True, f"${got:.6f} = {round(runs)} run(s) x ${per_run:.6f} ({contract.VERIFY_MODEL}, catalog price)"

        return self.poll(look, budget=min(self.timeout, 75.0))

    def check_spanmetrics(self) -> str:
        if not self.spans:
            raise Skipped("no trace")
        service = self.spans[0].resource.get(SERVICE_NAME, "")
        expr = f'{contract.SPANMETRICS_CALLS}{{span_name="{contract.SPAN_LLM_COMPLETION}", service="{service}"}}'

        def look() -> tuple[bool, str]:
            series = self.prom_query(expr)
            total = sum(float(s["value"][1]) for s in series)
            return total > 0, f"{expr} = {total:g}" if series else f"{expr}: no series yet"

        return self.poll(look, budget=min(self.timeout, 45.0))

    def panel_range(self) -> TimeRange:
        """From just before the emit (or the last hour when nothing was emitted) to now."""
        end = datetime.now(UTC)
        if self.emitted_at is None:
            return TimeRange(end - timedelta(hours=1), end, "now-1h", "now")
        start = datetime.fromtimestamp(math.floor(self.emitted_at) - TOTAL_WINDOW_MARGIN_S, UTC)
        return TimeRange(start, end, str(int(start.timestamp() * 1000)), "now")

    def check_panels(self) -> list[Result]:
        """One result per panel target, polled together until each returns data or time runs out.

        The queries are Grafana's for a range starting just before the emit, the service variables
        set to the verify service and ``$__rate_interval`` from the running Prometheus' scrape
        interval (:func:`amtp_obs.verify_panels.scrape_interval` says why). A panel fails on no data,
        and an exact-total token panel also when its value is not a whole number of runs.
        """
        try:
            scrape = scrape_interval(self.client, self.endpoints.prometheus)
        except (httpx.HTTPError, ValueError, KeyError) as exc:
            raise CheckFailed(f"cannot read Prometheus' scrape interval: {exc}") from None

        def build() -> list[PanelQuery]:
            try:
                return panel_queries(
                    self.project, self.panel_range(), service=contract.VERIFY_SERVICE_NAME, time_interval=scrape
                )
            except PanelQueryError as exc:
                raise CheckFailed(str(exc)) from None

        queries = build()
        if not queries:
            raise CheckFailed("no panel queries found in the provisioned dashboards")
        start = time.monotonic()
        pending = {i: "not queried" for i in range(len(queries))}
        done: dict[int, Result] = {}
        deadline = start + min(self.timeout, 45.0)
        while pending:
            queries = build()  # the range ends now: $__range grows with every round
            for i in list(pending):
                q = queries[i]
                try:
                    ok, detail = self.run_panel(q)
                except Contradiction as exc:
                    done[i] = Result(self.panel_name(q), "fail", f"{q.query} = {exc}", time.monotonic() - start)
                    del pending[i]
                    continue
                except CheckFailed as exc:
                    ok, detail = False, str(exc)
                if ok:
                    done[i] = Result(self.panel_name(q), "pass", detail, time.monotonic() - start)
                    del pending[i]
                else:
                    pending[i] = detail
            if not pending or time.monotonic() >= deadline:
                break
            time.sleep(POLL_INTERVAL_S)
        for i, detail in pending.items():
            done[i] = Result(self.panel_name(queries[i]), "fail", f"no data: {detail}", time.monotonic() - start)
        return [done[i] for i in sorted(done)]

    @staticmethod
    def panel_name(q: PanelQuery) -> str:
        return f"panel {q.panel!r} ({q.ref})"

    def run_panel(self, q: PanelQuery) -> tuple[bool, str]:
        if q.kind == "prometheus":
            series = self.prom_query(q.query)
            if not series:
                return False, f"{q.query} returned no series"
            values = [s["value"][1] for s in series if "value" in s]
            counter = q.exact_total
            per_run = self.facts.tokens.get(counter.instrument) if self.facts and counter else None
            if counter is None or per_run is None or self.emitted_at is None:
                return True, f"{len(series)} series, e.g. {values[0] if values else '?'}"
            got = sum(float(v) for v in values)
            window = math.ceil(time.time() - self.emitted_at) + 2 * TOTAL_WINDOW_MARGIN_S
            runs = whole_runs(got, per_run, self.runs_seen(window))
            if runs is None:
                return False, f"{q.query} = {got:g}, want at least this run's {per_run}"
            return True, f"{got:g} = {runs} verify run(s) x {per_run} {counter.instrument}"
        r = self.client.get(f"{self.endpoints.tempo}/api/search", params={"q": q.query, "limit": 20})
        if r.status_code != 200:
            raise CheckFailed(f"Tempo /api/search rejected {q.query!r}: HTTP {r.status_code} {r.text[:200]}")
        traces = r.json().get("traces") or []
        if not traces:
            return False, f"TraceQL {q.query} found no traces"
        return True, f"TraceQL found {len(traces)} trace(s)"


def collector_span_attributes(project: Project) -> dict[str, Any]:
    """insert/upsert actions of the collector's attributes processors in the traces pipelines."""
    try:
        doc = project.load_yaml(COLLECTOR_CONFIG) or {}
    except ProjectError:
        return {}
    procs = doc.get("processors") or {}
    pipelines = (doc.get("service") or {}).get("pipelines") or {}
    out: dict[str, Any] = {}
    for pid, pipe in pipelines.items():
        if pid.split("/")[0] != "traces":
            continue
        for proc_id in (pipe or {}).get("processors") or []:
            if proc_id.split("/")[0] != "attributes":
                continue
            for action in (procs.get(proc_id) or {}).get("actions") or []:
                if action.get("action") in ("insert", "upsert") and "value" in action:
                    out[action["key"]] = action["value"]
    return out


def run_checks(gate: Gate) -> list[Result]:
    """The design's gate in order, then the Prometheus-side checks side by side.

    Counters wait for a scrape and span metrics for a generator push (15 s intervals each); run
    one after the other, those waits add up, so the three Prometheus checks poll concurrently.
    """
    sequential: list[tuple[str, Callable[[], Any]]] = [
        ("stack reachable", gate.check_reachable),
        ("verify_trace.py emits a trace", gate.check_emit),
        ("trace found in Tempo", gate.check_tempo_trace),
        ("spans carry the contract", gate.check_spans),
    ]
    concurrent: list[tuple[str, Callable[[], Any]]] = [
        ("token counters of this run in Prometheus", gate.check_counters),
        ("exact token total (accounting rules)", gate.check_total),
        ("spend of this run in USD (pricing rules)", gate.check_spend),
        ("span metrics for llm.completion", gate.check_spanmetrics),
        ("dashboard panels return data", gate.check_panels),
    ]
    for name, fn in sequential:
        results = run_step(name, fn)
        gate.results.extend(results)
        if name == "stack reachable" and results[0].status == FAIL:
            gate.results.extend(Result(n, SKIP, "stack not reachable", 0.0) for n, _ in sequential[1:] + concurrent)
            return gate.results
    gate.results.extend(run_side_by_side(concurrent))
    return gate.results


def write_junit(results: list[Result], path: Path) -> None:
    write_junit_file(results, path, suite="amtp-obs verify", classname="amtp_obs.verify")


def report(results: list[Result], console: Console) -> None:
    table = Table(title="amtp-obs verify", title_justify="left")
    for col in ("check", "result", "detail", "duration"):
        table.add_column(col)
    style = {"pass": "[green]PASS[/green]", "fail": "[red]FAIL[/red]", "skip": "[yellow]SKIP[/yellow]"}
    for r in results:
        table.add_row(r.name, style[r.status], r.detail, f"{r.duration:.1f} s")
    console.print(table)


def run_verify(project: Project, *, junit: Path | None, timeout: float, console: Console) -> int:
    """Run every check, print the report, write JUnit if asked; 0 when everything passed."""
    try:
        endpoints = Endpoints.from_project(project)
    except ProjectError as exc:
        console.print(f"[red]error:[/red] {exc}")
        return 2
    with httpx.Client(timeout=5.0) as client:
        gate = Gate(project, endpoints, timeout, client)
        results = run_checks(gate)
    report(results, console)
    if junit is not None:
        write_junit(results, junit)
        console.print(f"JUnit report: {junit}")
    failed = [r for r in results if r.status != "pass"]
    console.print(
        f"[red]verify failed: {len(failed)} of {len(results)} checks did not pass[/red]"
        if failed
        else f"[green]verify passed: {len(results)} checks[/green]"
    )
    return 1 if failed else 0
