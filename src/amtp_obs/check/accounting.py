"""Checks of the accounting rules: current, valid for the real promtool, and timed safely."""

from __future__ import annotations

from collections.abc import Iterator

from amtp_obs.accounting import rules
from amtp_obs.check.framework import Context, FileProblem, Finding, check, error, require_tool, run_tool
from amtp_obs.durations import parse_duration

PROM = "infra/observability/prometheus.yml"
COLLECTOR_JOB = "otel-collector"
PROMETHEUS_DEFAULT_SCRAPE_TIMEOUT = "10s"
MIN_RETENTION_DAYS = 35
"""A 30-day total and a month-to-date budget need more than a month of samples."""
COMPOSE = "docker-compose.observability.yml"


@check("accounting-rules", "accounting rules: rendered from the contract, promtool-valid, read after scrapes commit")
def accounting_rules(ctx: Context) -> Iterator[Finding]:
    try:
        committed = ctx.read_text(rules.RULES_FILE)
    except FileProblem:
        yield error("file is missing: run `amtp-obs accounting render`", rules.RULES_FILE)
        return
    if committed != rules.render():
        yield error("stale: it differs from what `amtp-obs accounting render` writes", rules.RULES_FILE)
    tool = require_tool("promtool")
    res = run_tool([tool, "check", "rules", str(ctx.root / rules.RULES_FILE)], cwd=ctx.root)
    if res.returncode != 0:
        yield error(f"promtool check rules: {res.output.splitlines()[-1]}", rules.RULES_FILE)
    prom = ctx.mapping(PROM)
    default_timeout = (prom.get("global") or {}).get("scrape_timeout", PROMETHEUS_DEFAULT_SCRAPE_TIMEOUT)
    for job in prom.get("scrape_configs") or []:
        if job.get("job_name") != COLLECTOR_JOB:
            continue
        timeout = str(job.get("scrape_timeout", default_timeout))
        if parse_duration(timeout) > parse_duration(rules.DELAY):
            yield error(
                f"job {COLLECTOR_JOB}: scrape_timeout {timeout} exceeds the accounting rules' read delay "
                f"{rules.DELAY}: a slow scrape's samples could be committed after the step that should count them",
                PROM,
            )
    compose_text = ctx.read_text(COMPOSE)
    for line in compose_text.splitlines():
        if "--storage.tsdb.retention.time=" in line:
            value = line.split("=", 1)[1].strip().strip("'\"")
            if parse_duration(value) < MIN_RETENTION_DAYS * 86400:
                yield error(
                    f"Prometheus retention {value} is shorter than {MIN_RETENTION_DAYS}d: 30-day totals and "
                    "month-to-date budgets would silently lose their oldest days",
                    COMPOSE,
                )
