"""What a 30-day token total costs at 10,000 short-lived agent processes a day (issue 9, Deliver §2).

    .venv/bin/python bench/accounting_cost.py                     # 30 days, 10,000 processes/day
    .venv/bin/python bench/accounting_cost.py --days 3 --runs 3   # smaller, quicker

Every short-lived process is its own series of ``llm_prompt_tokens_total`` (label
``service_instance_id``): its one cumulative value repeated at each 15 s scrape while the collector
keeps it (``metric_expiration: 5m``), then a stale marker. The accounting rule turns them into one
``llm:prompt_tokens:increment`` series per (cluster, service, provider, model): the process's tokens
at the step after its first sample, 0 at the other steps while any series of the group is live.

The script
1. draws the workload (seeded) and writes, per TSDB block window, OpenMetrics with the raw series and
   the rollups as the rules would have recorded them;
2. proves on a small workload with ``promtool test rules`` that these synthetic rollups equal what
   the real rules compute from the synthetic raw series (so the measurement measures the real thing);
3. builds blocks with ``promtool tsdb create-blocks-from openmetrics``;
4. starts the real ``prometheus`` on them and times the totals (raw, 15 s rollup, by service, the
   proposed hourly rollup), with the samples each query read (``stats=all``), median of ``--runs``.

Only the prompt-token class is generated: the other classes are series of the same shape, so each
panel's cost is the same again per class. Results go to artifacts/accounting-cost.json and
docs/accounting-cost.md quotes them.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TextIO

BENCH_DIR = Path(__file__).resolve().parent
if str(BENCH_DIR) not in sys.path:
    sys.path.insert(0, str(BENCH_DIR))

import httpx  # noqa: E402
from opentelemetry.sdk.version import __version__ as OTEL_SDK_VERSION  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn  # noqa: E402
from rich.table import Table  # noqa: E402

import harness  # noqa: E402
from amtp_obs import contract  # noqa: E402
from amtp_obs.accounting import rules  # noqa: E402
from amtp_obs.collector.prometheus_naming import normalize_label  # noqa: E402
from amtp_obs.durations import parse_duration  # noqa: E402
from amtp_obs.net import LOOPBACK, free_port  # noqa: E402
from amtp_obs.project import COLLECTOR_CONFIG, PROMETHEUS_CONFIG  # noqa: E402

ROOT = BENCH_DIR.parent
RESULTS_FILE = ROOT / "artifacts" / "accounting-cost.json"


def _production_cadence() -> tuple[int, int]:
    """(step, metric_expiration) in seconds: production's scrape interval, which must equal the rules' step."""
    proj = harness.project()
    scrape = int(parse_duration(str(proj.load_yaml(PROMETHEUS_CONFIG)["global"]["scrape_interval"])))
    step = int(parse_duration(rules.STEP))
    if scrape != step:
        raise SystemExit(
            f"the model assumes one scrape per accounting step; {PROMETHEUS_CONFIG}: {scrape}s, rules: {step}s"
        )
    exporter = proj.load_yaml(COLLECTOR_CONFIG)["exporters"][harness.EXPORTER_PROMETHEUS]
    return step, int(parse_duration(str(exporter["metric_expiration"])))


STEP_S, METRIC_EXPIRATION_S = _production_cadence()
"""Scrape interval = accounting step; how long the collector keeps exporting a finished process's series."""
HOUR_S = 3600
HOURLY_OFFSET_S = 60
"""The hourly rollup sums the 15 s increments one minute back, when they are surely written."""
START_EPOCH = 1_767_225_600  # 2026-01-01T00:00:00Z: a fixed origin, so runs are reproducible
TSDB_RANGES_H = (2, 6, 18, 54, 162, 486)
"""Prometheus' compaction ranges (2h x 3^n); a block window must be one of them for promtool."""

COUNTER = contract.PROMPT_TOKENS
RAW = COUNTER.prometheus_name
RAW_FAMILY = RAW.removesuffix("_total")
INCREMENT = COUNTER.increment_record
HOURLY = "llm:prompt_tokens:increment_1h"
"""Proposed second-level rollup (this benchmark's proposal, not a rule the project records yet)."""
SPARSE = f"{INCREMENT}_sparse"
"""The increment rule with ``> 0`` (proposal): only the steps that account tokens, the same sums."""
PROVIDERS = ("openai", "anthropic")
HOURLY_EXPR = f"sum_over_time({INCREMENT}[59m59s999ms] offset {HOURLY_OFFSET_S}s)"
"""Windows (t-1h-1m, t-1m] at t = k x 1h tile time: each 15 s sample is summed exactly once."""


# ---------------------------------------------------------------------------------------------
# The workload
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    days: float = 30.0
    processes_per_day: int = 10_000
    services: int = 20
    models: int = 5
    seed: int = 9
    start: int = START_EPOCH
    series_samples: int = METRIC_EXPIRATION_S // STEP_S
    """Scrapes that see a short-lived process's value: the collector keeps it ``metric_expiration``."""

    @property
    def steps(self) -> int:
        """15 s steps in which processes start."""
        return max(1, round(self.days * 86_400 / STEP_S))

    @property
    def processes(self) -> int:
        return max(1, round(self.days * self.processes_per_day))

    @property
    def groups(self) -> int:
        return self.services * self.models

    @property
    def last_fine_step(self) -> int:
        """The last step at which the 15 s rule can record anything (the last process's last step)."""
        return self.steps - 1 + self.series_samples

    @property
    def hours(self) -> int:
        """Hourly evaluations needed so their windows cover every 15 s sample."""
        return math.ceil((self.last_fine_step * STEP_S + HOURLY_OFFSET_S) / HOUR_S)

    @property
    def end(self) -> int:
        """Query time: the last hourly evaluation, after all the work (epoch seconds)."""
        return self.start + self.hours * HOUR_S

    @property
    def range_s(self) -> int:
        """The totals' range: from the first sample to :attr:`end`, so it holds all the work."""
        return self.end - self.start

    def ts(self, step: int) -> int:
        return self.start + step * STEP_S


class Process(NamedTuple):
    first_step: int
    group: int
    tokens: int
    instance: str


@dataclass(frozen=True)
class Scrape:
    """Where the collector's series come from, read from prometheus.yml and the collector config."""

    job: str
    instance: str
    cluster: str


def collector_scrape() -> Scrape:
    """The scrape job whose target is the collector's prometheus exporter (its port in the collector config)."""
    proj = harness.project()
    endpoint = proj.load_yaml(COLLECTOR_CONFIG)["exporters"][harness.EXPORTER_PROMETHEUS]["endpoint"]
    port = str(endpoint).rsplit(":", 1)[1]
    for job in proj.load_yaml(PROMETHEUS_CONFIG)["scrape_configs"]:
        for sc in job.get("static_configs") or []:
            for target in sc.get("targets") or []:
                if str(target).rsplit(":", 1)[-1] == port:
                    return Scrape(job["job_name"], str(target), str((sc.get("labels") or {}).get("cluster", "")))
    raise SystemExit(f"no scrape job in {PROMETHEUS_CONFIG} targets the collector's prometheus exporter (:{port})")


def group_labels(w: Workload, scrape: Scrape, group: int) -> dict[str, str]:
    """The rollup's labels of one (service, model) group."""
    service, model = divmod(group, w.models)
    provider = PROVIDERS[model % len(PROVIDERS)]
    return dict(
        zip(rules.BY, (scrape.cluster, f"agent-{service:02d}", provider, f"{provider}-model-{model}"), strict=True)
    )


def raw_labels(w: Workload, scrape: Scrape, p: Process) -> dict[str, str]:
    """A process's series labels as Prometheus stores them (the exporter's job/instance become exported_*)."""
    g = group_labels(w, scrape, p.group)
    service, provider = g[rules.SERVICE_LABEL], g[normalize_label(contract.LLM_PROVIDER)]
    resource_and_point = {
        "service.instance.id": p.instance,
        contract.LLM_PROVIDER: provider,
        contract.LLM_MODEL: g[normalize_label(contract.LLM_MODEL)],
        contract.GEN_AI_SYSTEM: provider,
        "telemetry.sdk.language": "python",
        "telemetry.sdk.name": "opentelemetry",
        "telemetry.sdk.version": OTEL_SDK_VERSION,
    }
    return {
        rules.CLUSTER_LABEL: scrape.cluster,
        "job": scrape.job,
        "instance": scrape.instance,
        "exported_job": service,
        "exported_instance": p.instance,
        rules.SERVICE_LABEL: service,
        **{normalize_label(k): v for k, v in resource_and_point.items()},
    }


def processes(w: Workload) -> list[Process]:
    """Processes spread uniformly over the days, services and models; token counts 100..50,000."""
    rng = random.Random(w.seed)
    out = [
        Process(
            rng.randrange(w.steps),
            rng.randrange(w.groups),
            rng.randint(100, 50_000),
            str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        )
        for _ in range(w.processes)
    ]
    out.sort()
    return out


def increments(w: Workload, procs: Sequence[Process]) -> dict[int, dict[int, int]]:
    """group -> {step: value}: what the 15 s rule records.

    At evaluation step s the rule sees each series as it was at s-1 (``offset 15s``): a process
    first scraped at step f contributes its whole count at f+1 (no sample an hour before) and 0 at
    f+2 .. f+n, n being its samples; at f+n+1 its stale marker hides it. The group's sum exists while
    any of its series does.
    """
    out: dict[int, dict[int, int]] = {}
    n = w.series_samples
    for p in procs:
        steps = out.setdefault(p.group, {})
        for s in range(p.first_step + 1, p.first_step + n + 1):
            steps.setdefault(s, 0)
        steps[p.first_step + 1] += p.tokens
    return {g: dict(sorted(steps.items())) for g, steps in sorted(out.items())}


def sparse(fine: dict[int, dict[int, int]]) -> dict[int, dict[int, int]]:
    """What the increment rule records with ``> 0``: its non-zero samples only."""
    return {g: {s: v for s, v in steps.items() if v > 0} for g, steps in fine.items()}


def hourly(w: Workload, fine: dict[int, dict[int, int]]) -> dict[int, dict[int, int]]:
    """group -> {hour: value}: the hourly rule at t = start + h x 1h sums the 15 s samples in (t-61m, t-1m]."""
    per_hour = HOUR_S // STEP_S
    lag = HOURLY_OFFSET_S // STEP_S
    out: dict[int, dict[int, int]] = {}
    for g, steps in fine.items():
        hours: dict[int, int] = {}
        for s, v in steps.items():
            h = (s + lag - 1) // per_hour + 1  # smallest h with s <= h*per_hour - lag
            hours[h] = hours.get(h, 0) + v
        out[g] = hours
    return out


# ---------------------------------------------------------------------------------------------
# The rules, and the proof that the synthetic rollups are what they compute
# ---------------------------------------------------------------------------------------------


def rules_doc() -> dict[str, Any]:
    """The rule groups under test: the project's accounting group (amtp_obs.accounting.rules, what
    ``accounting.rules.yml`` holds) for this class, plus the proposals: the sparse variant in the
    same group and the hourly rollup in a group of its own (interval 1h)."""
    group = rules.rule_group([COUNTER])
    group["rules"].append({"record": SPARSE, "expr": f"({rules.increment_expr(RAW)}) > 0"})
    hourly_group = {
        "name": f"{rules.GROUP}-hourly",
        "interval": "1h",
        "rules": [{"record": HOURLY, "expr": HOURLY_EXPR}],
    }
    return {"groups": [group, hourly_group]}


def _selector(labels: dict[str, str]) -> str:
    return "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}"


def rule_test_doc(w: Workload, scrape: Scrape, rules_file: str) -> dict[str, Any]:
    """A ``promtool test rules`` file: the workload's raw series in, every recorded sample expected out.

    Each 15 s step (and each hour for the hourly rollup) is checked with ``last_over_time(x[1ms])``,
    which returns exactly the sample recorded at that instant, so a missing, extra or different
    sample anywhere fails the test.
    """
    procs = processes(w)
    fine = increments(w, procs)
    hours = hourly(w, fine)
    nonzero = sparse(fine)
    n = w.series_samples
    input_series = []
    for p in procs:
        values = ["_"] * p.first_step + [str(p.tokens)] * n + ["stale"]
        input_series.append({"series": RAW + _selector(raw_labels(w, scrape, p)), "values": " ".join(values)})

    def expected(name: str, series: dict[int, dict[int, int]], key: int) -> list[dict[str, Any]]:
        # last_over_time keeps the metric name in Prometheus 2.x.
        return [
            {"labels": name + _selector(group_labels(w, scrape, g)), "value": vals[key]}
            for g, vals in series.items()
            if key in vals
        ]

    tests: list[dict[str, Any]] = []
    for s in range(w.last_fine_step + 2):
        for name, series in ((INCREMENT, fine), (SPARSE, nonzero)):
            tests.append(
                {
                    "expr": f"last_over_time({name}[1ms])",
                    "eval_time": f"{s * STEP_S}s",
                    "exp_samples": expected(name, series, s),
                }
            )
    for h in range(1, w.hours + 1):
        tests.append(
            {
                "expr": f"last_over_time({HOURLY}[1ms])",
                "eval_time": f"{h * HOUR_S}s",
                "exp_samples": expected(HOURLY, hours, h),
            }
        )
    return {
        "rule_files": [rules_file],
        "evaluation_interval": f"{STEP_S}s",
        "tests": [{"interval": f"{STEP_S}s", "input_series": input_series, "promql_expr_test": tests}],
    }


RULE_CHECK_WORKLOAD = Workload(days=2.5 / 24, processes_per_day=24 * 24, services=2, models=2, seed=3)
"""Small enough for promtool (60 processes, 4 groups, 2.5 h): overlapping and back-to-back processes."""


def overlaps(w: Workload) -> int:
    """Pairs of processes of one group whose series overlap in time: the case a sum must not double count."""
    last: dict[int, int] = {}
    count = 0
    for p in processes(w):
        if p.first_step < last.get(p.group, -1):
            count += 1
        last[p.group] = max(last.get(p.group, -1), p.first_step + w.series_samples)
    return count


def check_rules(w: Workload, workdir: Path) -> dict[str, Any]:
    """Run ``promtool test rules``: the synthetic rollups must equal what the real rules compute."""
    workdir.mkdir(parents=True, exist_ok=True)
    harness.write_yaml(workdir / "rules.yml", rules_doc())
    harness.write_yaml(workdir / "test.yml", rule_test_doc(w, collector_scrape(), "rules.yml"))
    res = subprocess.run(
        [tool("promtool"), "test", "rules", "test.yml"], cwd=workdir, capture_output=True, text=True, timeout=600
    )
    if res.returncode != 0:
        raise SystemExit(
            "promtool test rules: the synthetic rollup differs from the rule's:\n"
            f"{res.stdout[-4000:]}{res.stderr[-2000:]}"
        )
    source = f"amtp_obs.accounting.rules ({rules.RULES_FILE}, group {rules.GROUP})"
    return {"increment_rule": source, "processes": w.processes, "groups": w.groups, "overlapping_pairs": overlaps(w)}


# ---------------------------------------------------------------------------------------------
# OpenMetrics and blocks
# ---------------------------------------------------------------------------------------------


def tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise SystemExit(f"`{name}` is not on PATH (Debian: apt-get install prometheus)")
    return found


def block_hours(w: Workload) -> int:
    """The largest compaction range Prometheus would build for this span (at most 486 h, as with a long retention)."""
    span_h = w.range_s / HOUR_S
    fitting = [r for r in TSDB_RANGES_H if r <= max(span_h, TSDB_RANGES_H[0])]
    return fitting[-1]


@dataclass
class Written:
    files: list[Path] = field(default_factory=list)
    raw_series: int = 0
    raw_samples: int = 0
    increment_series: int = 0
    increment_samples: int = 0
    sparse_samples: int = 0
    hourly_samples: int = 0
    bytes: int = 0
    tokens: int = 0


class WindowFiles:
    """One OpenMetrics file per block window: promtool then reads each file twice, not the whole data per block."""

    def __init__(self, directory: Path, window_s: int) -> None:
        self.directory, self.window_s = directory, window_s
        self.handles: dict[int, TextIO] = {}

    def for_ts(self, ts: int) -> TextIO:
        k = ts // self.window_s
        if k not in self.handles:
            self.handles[k] = (self.directory / f"window-{k}.om").open("w", buffering=1 << 20)
        return self.handles[k]

    def family(self, name: str, kind: str) -> None:
        for fh in self.handles.values():
            fh.write(f"# TYPE {name} {kind}\n")

    def close(self) -> list[Path]:
        paths = []
        for _, fh in sorted(self.handles.items()):
            fh.write("# EOF\n")
            fh.close()
            paths.append(Path(fh.name))
        return paths


def write_openmetrics(
    w: Workload, directory: Path, window_s: int, advance: Callable[[float], None] = lambda _: None
) -> Written:
    """Raw series, 15 s rollup and hourly rollup, per window file; ``advance`` gets the fraction done."""
    scrape = collector_scrape()
    procs = processes(w)
    out = Written(tokens=sum(p.tokens for p in procs))
    files = WindowFiles(directory, window_s)
    # Open every window up front so that each file gets each family's TYPE line before its samples.
    for ts in range(w.start, w.end + 1, window_s):
        files.for_ts(ts)
    files.for_ts(w.end)
    files.family(RAW_FAMILY, "counter")
    n = w.series_samples
    for i, p in enumerate(procs):
        prefix = f"{RAW}{_selector(raw_labels(w, scrape, p))} {p.tokens} "
        first, last = w.ts(p.first_step), w.ts(p.first_step + n - 1)
        if first // window_s == last // window_s:
            files.for_ts(first).write("".join(f"{prefix}{first + k * STEP_S}\n" for k in range(n)))
        else:
            for k in range(n):
                t = first + k * STEP_S
                files.for_ts(t).write(f"{prefix}{t}\n")
        out.raw_samples += n
        if i % 2000 == 0:
            advance(0.8 * i / len(procs))
    out.raw_series = len(procs)
    fine = increments(w, procs)
    files.family(INCREMENT, "gauge")
    for g, steps in fine.items():
        prefix = f"{INCREMENT}{_selector(group_labels(w, scrape, g))} "
        for s, v in steps.items():
            t = w.ts(s)
            files.for_ts(t).write(f"{prefix}{v} {t}\n")
        out.increment_series += 1
        out.increment_samples += len(steps)
    advance(0.9)
    files.family(SPARSE, "gauge")
    for g, steps in sparse(fine).items():
        prefix = f"{SPARSE}{_selector(group_labels(w, scrape, g))} "
        for s, v in steps.items():
            t = w.ts(s)
            files.for_ts(t).write(f"{prefix}{v} {t}\n")
        out.sparse_samples += len(steps)
    advance(0.95)
    files.family(HOURLY, "gauge")
    for g, hours in hourly(w, fine).items():
        prefix = f"{HOURLY}{_selector(group_labels(w, scrape, g))} "
        for h, v in hours.items():
            t = w.start + h * HOUR_S
            files.for_ts(t).write(f"{prefix}{v} {t}\n")
        out.hourly_samples += len(hours)
    out.files = files.close()
    out.bytes = sum(f.stat().st_size for f in out.files)
    advance(1.0)
    return out


def create_blocks(files: Sequence[Path], tsdb: Path, window_h: int, advance: Callable[[], None]) -> float:
    """promtool's backfill, one window file at a time (each makes one block); returns seconds taken."""
    t0 = time.monotonic()
    for f in files:
        res = subprocess.run(
            [
                tool("promtool"),
                "tsdb",
                "create-blocks-from",
                "openmetrics",
                "-q",
                f"--max-block-duration={window_h}h",
                str(f),
                str(tsdb),
            ],
            capture_output=True,
            text=True,
        )
        if res.returncode != 0:
            raise SystemExit(f"promtool create-blocks-from openmetrics {f.name} failed:\n{res.stderr[-3000:]}")
        f.unlink()  # the text is several times the block's size: free the disk as we go
        advance()
    return time.monotonic() - t0


# ---------------------------------------------------------------------------------------------
# Prometheus and the queries
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def prometheus(tsdb: Path, workdir: Path) -> Iterator[tuple[str, harness.Proc]]:
    """The real prometheus on the built blocks, loopback only; compaction off so the block layout stays as built."""
    config = harness.write_yaml(workdir / "prometheus.yml", {"global": {"evaluation_interval": f"{STEP_S}s"}})
    port = free_port()
    proc = harness.Proc(
        "prometheus",
        [
            tool("prometheus"),
            f"--config.file={config}",
            f"--storage.tsdb.path={tsdb}",
            "--storage.tsdb.retention.time=400d",
            # min = max block duration: the compactor has nothing to merge (as Thanos sidecars run it).
            "--storage.tsdb.min-block-duration=2h",
            "--storage.tsdb.max-block-duration=2h",
            f"--web.listen-address={LOOPBACK}:{port}",
        ],
        workdir / "prometheus.log",
        f"http://{LOOPBACK}:{port}/-/ready",
    )
    proc.start(timeout=120)
    try:
        yield f"http://{LOOPBACK}:{port}", proc
    finally:
        proc.stop()


@dataclass
class QueryResult:
    name: str
    promql: str
    value: float | None
    result_series: int
    samples_read: int | None
    peak_samples: int | None
    cold_ms: float
    warm_ms: list[float]
    eval_ms: list[float]
    cpu_ms: list[float]
    by: dict[str, float] = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.warm_ms) if self.warm_ms else self.cold_ms


def query(client: httpx.Client, url: str, promql: str, at: int) -> tuple[dict[str, Any], float]:
    t0 = time.perf_counter()
    res = client.get(f"{url}/api/v1/query", params={"query": promql, "time": at, "stats": "all"})
    elapsed = (time.perf_counter() - t0) * 1000
    body = res.json()
    if body.get("status") != "success":
        raise SystemExit(f"query failed: {promql}: {body.get('error')}")
    return body["data"], elapsed


def measure(
    client: httpx.Client, url: str, proc: harness.Proc, name: str, promql: str, at: int, runs: int
) -> QueryResult:
    """One cold run (first touch since start; blocks in the page cache), then ``runs`` warm ones.

    Besides wall time, the CPU time Prometheus spent (from /proc, 10 ms ticks): on two shared cores
    wall time measures the neighbours too, CPU time mostly the query.
    """
    data, cold = query(client, url, promql, at)
    warm, evals, cpu = [], [], []
    for _ in range(runs):
        cpu0 = proc.cpu_seconds() or 0.0
        d, ms = query(client, url, promql, at)
        cpu.append(((proc.cpu_seconds() or 0.0) - cpu0) * 1000)
        warm.append(ms)
        evals.append(float(d.get("stats", {}).get("timings", {}).get("evalTotalTime", 0.0)) * 1000)
    samples = data.get("stats", {}).get("samples", {})
    result = data["result"]
    by = {",".join(f"{k}={v}" for k, v in r["metric"].items()): float(r["value"][1]) for r in result}
    value = sum(by.values()) if result else None
    return QueryResult(
        name,
        promql,
        value,
        len(result),
        samples.get("totalQueryableSamples"),
        samples.get("peakSamples"),
        cold,
        warm,
        evals,
        cpu,
        by if len(result) > 1 else {},
    )


def queries(w: Workload) -> list[tuple[str, str, int]]:
    """(name, PromQL, evaluation time) of every measured query."""
    r, by = f"{w.range_s}s", (rules.SERVICE_LABEL,)
    live_at = w.ts(w.steps - 1)
    return [
        ("raw total", f"sum(last_over_time({RAW}[{r}]))", w.end),
        ("raw total by service", f"sum by ({by[0]}) (last_over_time({RAW}[{r}]))", w.end),
        ("rollup total (15 s)", rules.total_expr(COUNTER, range_=r), w.end),
        ("rollup total by service (15 s)", rules.total_expr(COUNTER, range_=r, by=by), w.end),
        ("sparse rollup total (15 s, > 0)", f"sum(sum_over_time({SPARSE}[{r}]))", w.end),
        ("sparse rollup by service", f"sum by ({by[0]}) (sum_over_time({SPARSE}[{r}]))", w.end),
        ("hourly rollup total", f"sum(sum_over_time({HOURLY}[{r}]))", w.end),
        ("hourly rollup by service", f"sum by ({by[0]}) (sum_over_time({HOURLY}[{r}]))", w.end),
        ("raw series that ever existed", f"count(last_over_time({RAW}[{r}]))", w.end),
        ("rollup series", f"count(last_over_time({INCREMENT}[{r}]))", w.end),
        ("live raw series at the last process start", f"count({RAW})", live_at),
    ]


def live_series_expected(w: Workload, procs: Sequence[Process], at_step: int, visible_steps: int) -> int:
    """Series an instant query sees at ``at_step`` when each stays visible ``visible_steps`` from its first sample."""
    return sum(1 for p in procs if p.first_step <= at_step < p.first_step + visible_steps)


# ---------------------------------------------------------------------------------------------
# The whole run
# ---------------------------------------------------------------------------------------------


def run(w: Workload, runs: int, workdir: Path, console: Console, *, check: bool = True) -> dict[str, Any]:
    out: dict[str, Any] = {"workload": asdict(w) | {"processes": w.processes, "range_s": w.range_s, "end": w.end}}
    if check:
        with console.status("promtool test rules: synthetic rollups vs the real rules"):
            t0 = time.monotonic()
            out["rule_check"] = check_rules(RULE_CHECK_WORKLOAD, workdir / "rule-check")
            out["rule_check"]["seconds"] = round(time.monotonic() - t0, 1)
        console.print(f"[green]rule check passed[/] ({out['rule_check']})")
    window_h = block_hours(w)
    om_dir, tsdb = workdir / "openmetrics", workdir / "tsdb"
    om_dir.mkdir(parents=True, exist_ok=True)
    tsdb.mkdir(parents=True, exist_ok=True)
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}%"),
        TimeElapsedColumn(),
        console=console,
    )
    with progress:
        gen = progress.add_task("OpenMetrics: raw series and rollups", total=1.0)
        t0 = time.monotonic()
        written = write_openmetrics(w, om_dir, window_h * HOUR_S, lambda f: progress.update(gen, completed=f))
        gen_s = time.monotonic() - t0
        blocks = progress.add_task(f"promtool blocks ({window_h} h windows)", total=len(written.files))
        promtool_s = create_blocks(written.files, tsdb, window_h, lambda: progress.advance(blocks))
    tsdb_bytes = sum(f.stat().st_size for f in tsdb.rglob("*") if f.is_file())
    out["data"] = asdict(written) | {
        "files": len(written.files),
        "generate_s": round(gen_s, 1),
        "promtool_s": round(promtool_s, 1),
        "block_hours": window_h,
        "tsdb_bytes": tsdb_bytes,
    }
    results: list[QueryResult] = []
    with prometheus(tsdb, workdir) as (url, proc), httpx.Client(timeout=300) as client:
        qs = queries(w)
        task = progress.add_task("queries", total=len(qs))
        with progress:
            for name, promql, at in qs:
                results.append(measure(client, url, proc, name, promql, at, runs))
                progress.advance(task)
    out["queries"] = [
        asdict(r) | {"median_ms": r.median_ms, "median_cpu_ms": statistics.median(r.cpu_ms) if r.cpu_ms else None}
        for r in results
    ]
    procs = processes(w)
    out["live_expected"] = {
        "production (stale marker after the last scrape)": live_series_expected(
            w, procs, w.steps - 1, w.series_samples
        ),
        "these blocks (no stale markers: 5 min lookback)": live_series_expected(
            w, procs, w.steps - 1, w.series_samples - 1 + METRIC_EXPIRATION_S // STEP_S + 1
        ),
    }
    return out


def report(out: dict[str, Any], console: Console) -> None:
    d = out["data"]
    console.print(
        f"raw: {d['raw_series']:,} series, {d['raw_samples']:,} samples; "
        f"15 s rollup: {d['increment_series']} series, {d['increment_samples']:,} samples; "
        f"sparse: {d['sparse_samples']:,} samples; hourly: {d['hourly_samples']:,} samples; "
        f"ground truth {d['tokens']:,} tokens"
    )
    console.print(
        f"OpenMetrics {d['bytes'] / 2**20:,.0f} MiB in {d['generate_s']} s; promtool {d['promtool_s']} s "
        f"({d['files']} blocks of {d['block_hours']} h); TSDB {d['tsdb_bytes'] / 2**20:,.0f} MiB"
    )
    table = Table(title="queries (instant, at the end of the range)")
    columns = ("query", "value", "series out", "samples read", "cold ms", "warm median ms", "warm range ms", "CPU ms")
    for col in columns:
        table.add_column(col, justify="right" if col != "query" else "left")
    for q in out["queries"]:
        warm = q["warm_ms"] or [q["cold_ms"]]
        table.add_row(
            q["name"],
            f"{q['value']:,.0f}" if q["value"] is not None else "-",
            str(q["result_series"]),
            f"{q['samples_read']:,}" if q["samples_read"] is not None else "-",
            f"{q['cold_ms']:,.0f}",
            f"{q['median_ms']:,.0f}",
            f"{min(warm):,.0f}-{max(warm):,.0f}",
            f"{q['median_cpu_ms']:,.0f}" if q["median_cpu_ms"] is not None else "-",
        )
    console.print(table)
    console.print(f"live series expected: {out['live_expected']}")


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--days", type=float, default=30.0)
    ap.add_argument("--processes-per-day", type=int, default=10_000)
    ap.add_argument("--services", type=int, default=20)
    ap.add_argument("--models", type=int, default=5)
    ap.add_argument("--seed", type=int, default=9)
    ap.add_argument("--runs", type=int, default=5, help="warm runs per query (after one cold run)")
    ap.add_argument("--workdir", type=Path, help="keep the files here (default: a temporary directory, removed)")
    ap.add_argument("--skip-rule-check", action="store_true", help="do not run the promtool rule proof first")
    ap.add_argument("--json", type=Path, default=RESULTS_FILE, help="where to write the results")
    args = ap.parse_args(argv)
    if min(args.days, args.processes_per_day, args.services, args.models, args.runs) <= 0:
        ap.error("--days, --processes-per-day, --services, --models and --runs must be positive")
    w = Workload(args.days, args.processes_per_day, args.services, args.models, args.seed)
    console = Console(width=None if sys.stdout.isatty() else 160)
    with contextlib.ExitStack() as stack:
        workdir = args.workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="acct-cost-")))
        out = run(w, args.runs, workdir, console, check=not args.skip_rule_check)
    report(out, console)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(out, indent=2))
    console.print(f"results: {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
