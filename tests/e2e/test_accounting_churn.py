"""Acceptance (issue 9): token totals stay exact under process churn, right away and after staleness.

It starts from a used state, not a clean slate: first a history service's short-lived processes
export and exit while another history agent keeps working, and the whole embedded stack is
restarted twice on the same state directory (``amtp-obs down`` / ``up``), so Prometheus' TSDB, the
accounting rules' output and the trace store's WAL and blocks carry history across restarts, and
the working agent's series is seen before each restart and again after it. Then the churn workload
is what a fleet of agents does: many short-lived processes that export once and exit, a process
restarted with the same instance id (a counter reset), two replicas of one service, and a collector
killed with -9 and restarted while a long-lived agent keeps working. One ledger keeps every call's
usage, history and churn. The dashboard's stats and bar gauges and ``amtp-obs usage``, over a range
that includes the history, must equal the whole ledger to the token, first as soon as the rules
have read the data, then again after every raw series has gone stale (the collector's
``metric_expiration: 5m`` as configured, no shortcut).
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from amtp_obs import contract, env
from amtp_obs.accounting import rules
from amtp_obs.collector.prometheus_naming import normalize_label
from amtp_obs.durations import parse_duration
from amtp_obs.net import free_ports
from amtp_obs.pricing import rules as pricing
from amtp_obs.project import COLLECTOR_CONFIG, SERVICE_COLLECTOR, Project
from amtp_obs.stack.planning import ServicePlan
from amtp_obs.stack.state import Layout, records, stop_record
from amtp_obs.stack.supervisor import probe, spawn
from amtp_obs.testing.poll import eventually, last_value

pytestmark = [pytest.mark.e2e, pytest.mark.needs("prometheus")]

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "amtp_obs.cli"]
PORT_VARIABLES = tuple(Project(REPO, {}).port_variables())
RUN = secrets.token_hex(3)
HISTORY = f"churn-history-{RUN}"
HISTORY_LIVE = f"churn-history-live-{RUN}"
SHORT = f"churn-short-{RUN}"
RESTARTED = f"churn-restart-{RUN}"
REPLICAS = f"churn-replicas-{RUN}"
LONG = f"churn-long-{RUN}"
SERVICES = (HISTORY, HISTORY_LIVE, SHORT, RESTARTED, REPLICAS, LONG)
INSTANCE_LABEL = normalize_label("service.instance.id")
"""One process, one instance id (the SDK's default is a fresh uuid)."""
CLASSES = tuple(c.instrument for c in contract.ALL_TOKEN_COUNTERS)
STATS = (
    ("Total Tokens", "total_tokens"),
    ("Prompt Tokens", "prompt_tokens"),
    ("Completion Tokens", "completion_tokens"),
)
SETTLE_S = 90.0
"""Export (at exit or every 2 s) + scrape (5 s) + the rules' read delay and step (5 s each), with room."""

AGENT = textwrap.dedent(
    """
    import json, sys, time
    from amtp_obs.sdk import configure, llm_call, shutdown
    service, calls, pause, attrs = sys.argv[1], json.loads(sys.argv[2]), float(sys.argv[3]), json.loads(sys.argv[4])
    configure(service, metric_export_interval_ms=2000, resource_attributes=attrs or None)
    if calls is None:  # one call per line on stdin, until it closes
        calls = (json.loads(line) for line in sys.stdin)
    for model, usage in calls:
        with llm_call("openai", model) as call:
            call.set_usage(**usage)
        print("done", flush=True)
        time.sleep(pause)
    shutdown()
    """
)


def usage(prompt: int, completion: int, cache_read: int = 0, reasoning: int = 0) -> dict[str, int]:
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "cache_read_tokens": cache_read,
        "reasoning_tokens": reasoning,
    }


@dataclass
class Ledger:
    """Every call's usage per service and class, written as the agents make them."""

    tokens: dict[str, Counter[str]] = field(default_factory=dict)

    def add(self, service: str, u: dict[str, int]) -> None:
        c = self.tokens.setdefault(service, Counter())
        c["prompt_tokens"] += u["prompt_tokens"]
        c["completion_tokens"] += u["completion_tokens"]
        c["total_tokens"] += u["prompt_tokens"] + u["completion_tokens"]
        c["cache_read_tokens"] += u.get("cache_read_tokens", 0)
        c["reasoning_tokens"] += u.get("reasoning_tokens", 0)

    def total(self, cls: str) -> int:
        return sum(c[cls] for c in self.tokens.values())


@dataclass
class Stack:
    environ: dict[str, str]
    state: Path
    ports: dict[str, int]

    def cli(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, env=self.environ)

    def url(self, variable: str, path: str = "") -> str:
        return f"http://127.0.0.1:{self.ports[variable]}{path}"

    def agent(
        self, service: str, calls: list[tuple[str, dict[str, int]]] | None, pause: float = 0.0, **attrs: str
    ) -> Any:
        """An agent process making ``calls``; with None, one call per line written to its stdin."""
        return subprocess.Popen(
            [sys.executable, "-c", AGENT, service, json.dumps(calls), str(pause), json.dumps(attrs)],
            env=self.environ,
            stdin=subprocess.PIPE if calls is None else None,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def promql(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(self.url(env.OBS_PROMETHEUS_PORT, "/api/v1/query"), params={"query": expr}, timeout=10)
        r.raise_for_status()
        return list(r.json()["data"]["result"])

    def restart(self) -> str:
        """``amtp-obs down`` then ``up`` on the same state directory: the whole stack, history kept.

        Returns what ``down`` printed."""
        down = self.cli("down", "--state-dir", str(self.state))
        assert down.returncode == 0, down.stdout + down.stderr
        res = self.cli("up", "--state-dir", str(self.state))
        assert res.returncode == 0, res.stdout + res.stderr
        return down.stdout


class LiveAgent:
    """An agent process that keeps working (one call every ``pause`` s) until :meth:`finish`.

    It counts the calls it has made; :meth:`finish` lets it export its last values and exit, then
    writes them into the ledger.
    """

    def __init__(self, st: Stack, service: str, call: tuple[str, dict[str, int]], pause: float) -> None:
        self.service, self.call, self.pause = service, call, pause
        self.proc = st.agent(service, None)
        self.made = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._work, daemon=True)
        self._thread.start()

    def _work(self) -> None:
        while not self._stop.is_set():
            self.proc.stdin.write(json.dumps(self.call) + "\n")
            self.proc.stdin.flush()
            if self.proc.stdout.readline().strip() != "done":
                return
            self.made += 1
            self._stop.wait(self.pause)

    def finish(self, ledger: Ledger) -> None:
        self._stop.set()
        self._thread.join(30)
        _out, errs = self.proc.communicate(timeout=60)  # closes stdin: the agent shuts down
        assert self.proc.returncode == 0, errs
        assert self.made > 0
        for _ in range(self.made):
            ledger.add(self.service, self.call[1])


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    ports = dict(zip(PORT_VARIABLES, free_ports(len(PORT_VARIABLES)), strict=True))
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("OBS_", "OTEL_"))}
    environ.update({k: str(v) for k, v in ports.items()})
    environ[env.AMTP_OBS_PROJECT_DIR] = str(REPO)
    environ[env.OTEL_EXPORTER_OTLP_ENDPOINT] = f"http://127.0.0.1:{ports[env.OBS_OTEL_GRPC_PORT]}"
    environ["COLUMNS"] = "200"
    st = Stack(environ, tmp_path_factory.mktemp("churn") / "state", ports)
    res = st.cli("up", "--state-dir", str(st.state))
    assert res.returncode == 0, res.stdout + res.stderr
    try:
        yield st
    finally:
        st.cli("down", "--state-dir", str(st.state))


def run_to_end(st: Stack, ledger: Ledger, service: str, calls: list[tuple[str, dict[str, int]]], **attrs: str) -> None:
    proc = st.agent(service, calls, **attrs)
    _out, errs = proc.communicate(timeout=60)
    assert proc.returncode == 0, errs
    for _model, u in calls:
        ledger.add(service, u)


def restart_collector(st: Stack) -> None:
    """kill -9 the collector (its in-memory state is lost) and start the same command again."""
    layout = Layout(st.state)
    rec = next(r for r in records(layout) if r.service == SERVICE_COLLECTOR)
    os.kill(rec.pid, signal.SIGKILL)
    stop_record(rec, 5.0)  # reaps and confirms it is gone
    health = st.url(env.OBS_OTEL_HEALTH_PORT, "/")
    spawn(ServicePlan(SERVICE_COLLECTOR, rec.cmdline, None, health), layout, st.environ)
    assert eventually(lambda: probe(health)[0], 30.0), "collector did not come back"


def usage_report(st: Stack, by: str) -> dict[str, dict[str, float]]:
    res = st.cli("usage", "--since", "1h", "--by", by, "--json")
    assert res.returncode == 0, res.stderr
    doc = json.loads(res.stdout)
    return {row[by]: {c: row[c] for c in CLASSES} for row in doc["rows"]}


def dashboard(st: Stack, service: str | None = None) -> dict[str, list[tuple[str, float | None]]]:
    params = {"from": "now-1h", "to": "now"}
    if service:
        params["var-service_name"] = service
    r = httpx.get(
        st.url(env.OBS_GRAFANA_PORT, "/api/amtp/dashboards/llm-token-accounting/data"), params=params, timeout=30
    )
    r.raise_for_status()
    return {p["title"]: [(s["name"], s["value"]) for s in p.get("stats") or []] for p in r.json()["panels"]}


def mismatches(st: Stack, ledger: Ledger, services: tuple[str, ...] = SERVICES) -> list[str]:
    """Every place the project shows a total, compared with the ledger; empty when all agree."""
    bad: list[str] = []
    report = usage_report(st, "service")
    for service in services:
        got = report.get(service, {})
        for cls in CLASSES:
            want = ledger.tokens[service][cls]
            if got.get(cls, 0.0) != want:
                bad.append(f"usage {service} {cls}: {got.get(cls)} != {want}")
    panels = dashboard(st)
    by_service = dict(panels["Tokens by Service"])
    for service in services:
        if by_service.get(service) != ledger.tokens[service]["total_tokens"]:
            bad.append(
                f"Tokens by Service {service}: {by_service.get(service)} != {ledger.tokens[service]['total_tokens']}"
            )
    for service in services:
        one = dashboard(st, service)
        for title, cls in (
            ("Total Tokens", "total_tokens"),
            ("Prompt Tokens", "prompt_tokens"),
            ("Completion Tokens", "completion_tokens"),
        ):
            got_v = one[title][0][1] if one[title] else None
            if got_v != ledger.tokens[service][cls]:
                bad.append(f"{title} for {service}: {got_v} != {ledger.tokens[service][cls]}")
    return bad


def scraped_processes(st: Stack, service: str) -> int:
    """How many of the service's processes Prometheus has scraped (in the last hour, stale or not)."""
    seen = f'last_over_time({contract.TOTAL_TOKENS.prometheus_name}{{service_name="{service}"}}[1h])'
    res = st.promql(f"count(count by ({INSTANCE_LABEL}) ({seen}))")
    return int(float(res[0]["value"][1])) if res else 0


def live_series(st: Stack) -> int:
    expr = f'count({contract.TOTAL_TOKENS.prometheus_name}{{service_name=~"churn-.*-{RUN}"}})'
    res = st.promql(expr)
    return int(float(res[0]["value"][1])) if res else 0


def last_scraped(st: Stack, service: str) -> float:
    """When Prometheus last scraped a sample of the service's raw series (0 when it has none)."""
    res = st.promql(f'max(timestamp({contract.TOTAL_TOKENS.prometheus_name}{{service_name="{service}"}}))')
    return float(res[0]["value"][1]) if res else 0.0


def make_history(st: Stack, ledger: Ledger) -> None:
    """The used state: a history service's short-lived processes, and another history agent
    working across two restarts of the whole stack on the same state directory."""
    live = LiveAgent(st, HISTORY_LIVE, ("gpt-4o", usage(200, 80, cache_read=50, reasoning=20)), pause=1.0)
    processes = 0
    unscraped = []
    for restart in range(2):
        for i in range(3 - restart):
            run_to_end(st, ledger, HISTORY, [("gpt-4o-mini", usage(60 + i, 25)), ("gpt-4o", usage(90, 30 + i))])
            processes += 1
        assert eventually(lambda: last_scraped(st, HISTORY_LIVE) > 0, 30.0), "the working agent was never scraped"
        # The stack goes down right after the last process exits: the collector holds that export in
        # memory until Prometheus scrapes it (nobody exports it again), so `down` must wait for one
        # more scrape before it stops the collector, then let the rules count it (docs/accounting.md).
        unscraped.append(processes - scraped_processes(st, HISTORY))
        said = st.restart()
        assert "scrape: scraped what the collector holds" in said, said
        back = time.time()
        # History survives the restart to the token, and the working agent's series is scraped again.
        assert not mismatches(st, ledger, (HISTORY,)), mismatches(st, ledger, (HISTORY,))
        assert eventually(lambda back=back: last_scraped(st, HISTORY_LIVE) > back, 30.0)
    assert live.proc.poll() is None, "the working history agent must have lived through both restarts"
    live.finish(ledger)
    print(f"churn history: processes not yet scraped when `down` began: {unscraped}")


def test_totals_are_exact_under_churn_and_after_staleness(stack: Stack) -> None:
    ledger = Ledger()
    started = time.monotonic()
    make_history(stack, ledger)
    history_s = time.monotonic() - started
    # A long-lived agent working across a collector kill -9 and restart.
    long_calls = [("gpt-4o", usage(300, 120, cache_read=100, reasoning=40)) for _ in range(40)]
    long_agent = stack.agent(LONG, long_calls, pause=1.0)
    # Ten short-lived processes, two calls each, exporting once at exit; the collector is killed
    # and restarted between the fifth and the sixth (the first five's series vanish with it).
    for i in range(10):
        calls = [("gpt-4o-mini", usage(100, 50)), ("gpt-4o-mini", usage(100 + i, 50, cache_read=i))]
        run_to_end(stack, ledger, SHORT, calls)
        if i == 4:
            assert long_agent.poll() is None, "the long-lived agent must still be working"
            # The collector's prometheus exporter holds a finished process's last export in memory
            # until Prometheus scrapes it: a kill in that window (one scrape interval) loses it, as
            # the real exporter does (docs/accounting.md). The ledger counts what was scraped.
            assert eventually(lambda: scraped_processes(stack, SHORT) == 5, 30.0)
            restart_collector(stack)
    # Two replicas of one service at once, each its own series.
    replicas = [stack.agent(REPLICAS, [("gpt-4o", usage(70, 30))] * 3, pause=0.5) for _ in range(2)]
    # A process restarted with the same instance id: the counter resets within one series.
    # The second run must come after the first one's export was scraped, or the two are one value.
    instance = {"service.instance.id": f"fixed-{RUN}"}
    run_to_end(stack, ledger, RESTARTED, [("gpt-4o", usage(500, 200))], **instance)
    first = f'{contract.TOTAL_TOKENS.prometheus_name}{{service_name="{RESTARTED}"}} == 700'
    assert eventually(lambda: bool(stack.promql(first)), 30.0)
    time.sleep(6)  # a few more scrapes at the embedded cadence (5 s) see 700 before the reset
    run_to_end(stack, ledger, RESTARTED, [("gpt-4o", usage(40, 10))], **instance)
    for r in replicas:
        _, errs = r.communicate(timeout=60)
        assert r.returncode == 0, errs
        for _ in range(3):
            ledger.add(REPLICAS, usage(70, 30))
    _out, errs = long_agent.communicate(timeout=120)
    assert long_agent.returncode == 0, errs
    for _m, u in long_calls:
        ledger.add(LONG, u)

    assert eventually(lambda: not mismatches(stack, ledger), SETTLE_S, interval=3.0), last_value(
        lambda: mismatches(stack, ledger)
    )
    live_before = live_series(stack)
    # One series per process still in the collector: 5 short ones after its restart, 2 replicas,
    # the long agent and the restarted pair's one shared series (the history went with the kill).
    assert live_before >= 5 + 2 + 1 + 1, live_before

    # Wait for staleness as configured: the collector drops a series metric_expiration after its
    # last update, then Prometheus marks it stale. Positive evidence: no raw series is left.
    expiration = parse_duration(
        Project(REPO, {}).load_yaml(COLLECTOR_CONFIG)["exporters"]["prometheus"].get("metric_expiration", "5m")
    )
    assert eventually(lambda: live_series(stack) == 0, expiration + 120.0, interval=5.0), live_series(stack)
    assert not mismatches(stack, ledger), mismatches(stack, ledger)
    # The design's live-counter stat would now read nothing at all; increase() never counted the
    # short-lived processes' single samples. Both are why docs/accounting.md exists.
    naive = stack.promql(f'sum({contract.TOTAL_TOKENS.prometheus_name}{{service_name=~"churn-.*-{RUN}"}})')
    assert not naive
    total = rules.total_expr(contract.TOTAL_TOKENS, selector=f'{{service_name=~"churn-.*-{RUN}"}}', range_="1h")
    assert float(stack.promql(total)[0]["value"][1]) == ledger.total("total_tokens")
    # What the pricing rules priced a step later is the same ledger (input + cache + output classes).
    billable = f'sum(sum_over_time({pricing.BILLABLE}{{service_name=~"churn-.*-{RUN}"}}[1h]))'
    assert float(stack.promql(billable)[0]["value"][1]) == ledger.total("total_tokens")
    print(
        f"churn: ledger { ({c: ledger.total(c) for c in CLASSES}) }; live series {live_before} -> 0 after staleness;"
        f" history and two restarts took {history_s:.0f} s"
    )
