"""The real validators: promtool, check-jsonschema, docker-compose, actionlint, yamllint, shellcheck.

Each runs the tool on the checkout's file and turns its output into findings at file:line; a tool
that is not installed makes its check a skip (amtp_obs.tools finds it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

from amtp_obs import project as proj
from amtp_obs.check.framework import Context, Finding, Skip, check, error, require_tool, run_tool, warning
from amtp_obs.check.shared import COLLECTOR, COMPOSE, PROM, PROMTOOL, TEMPO, tool_lines


@check("promtool-config", "promtool check config on prometheus.yml")
def promtool_config(ctx: Context) -> Iterator[Finding]:
    tool = require_tool(PROMTOOL)
    if not ctx.exists(PROM):
        yield error("file is missing", PROM)
        return
    res = run_tool([tool, "check", "config", str(ctx.root / PROM)], cwd=(ctx.root / PROM).parent)
    if res.returncode == 0:
        return
    for ln in tool_lines(res.output):
        if ln.startswith("Checking") or ln.startswith("SUCCESS"):
            continue
        m = re.match(r"line (\d+): (.*)", ln)
        if m:
            yield error(f"promtool check config: {m.group(2)}", PROM, int(m.group(1)))
        elif "FAILED" in ln and "unmarshal errors" in ln:
            continue
        else:
            yield error(f"promtool check config: {ln.removeprefix('FAILED: ')}", PROM)


@check("compose-schema", "check-jsonschema --builtin-schema vendor.compose-spec")
def compose_schema(ctx: Context) -> Iterator[Finding]:
    tool = require_tool("check-jsonschema")
    res = run_tool([tool, "--builtin-schema", "vendor.compose-spec", "-o", "text", COMPOSE], cwd=ctx.root)
    if res.returncode != 0:
        for ln in tool_lines(res.output):
            if ln.startswith("Schema validation errors") or ln.startswith("ok"):
                continue
            yield error(f"compose-spec schema: {ln}", COMPOSE)


@check("compose-config", "docker-compose config -q with .env.example")
def compose_config(ctx: Context) -> Iterator[Finding]:
    tool = require_tool("docker-compose")
    res = run_tool(
        [tool, "-f", COMPOSE, "--env-file", proj.ENV_EXAMPLE_FILE, "config", "-q"],
        cwd=ctx.root,
        env={"COMPOSE_PROJECT_NAME": "amtpcheck"},
    )
    if res.returncode != 0:
        for ln in tool_lines(res.output):
            yield error(f"docker-compose config: {ln}", COMPOSE)


@check("actionlint", "actionlint on .github/workflows (shellcheck on run: blocks when present)")
def actionlint(ctx: Context) -> Iterator[Finding]:
    tool = require_tool("actionlint")
    files = sorted(p.relative_to(ctx.root).as_posix() for p in (ctx.root / proj.WORKFLOWS_DIR).glob("*.y*ml"))
    if not files:
        raise Skip(f"no workflow files in {proj.WORKFLOWS_DIR}")
    res = run_tool([tool, "-no-color", "-oneline", *files], cwd=ctx.root)
    if res.returncode == 0:
        return
    for ln in tool_lines(res.output):
        m = re.match(r"(?P<f>[^:]+):(?P<l>\d+):\d+: (?P<msg>.*)", ln)
        if m:
            yield error(f"actionlint: {m.group('msg')}", m.group("f"), int(m.group("l")))
        else:
            yield error(f"actionlint: {ln}", proj.WORKFLOWS_DIR.as_posix())


def yaml_files(ctx: Context) -> list[str]:
    rels = [COMPOSE, COLLECTOR, TEMPO, PROM]
    for sub in (proj.GRAFANA_PROVISIONING, proj.WORKFLOWS_DIR):
        rels += sorted(p.relative_to(ctx.root).as_posix() for p in (ctx.root / sub).rglob("*.y*ml"))
    return [r for r in rels if (ctx.root / r).is_file()]


@check("yamllint", "yamllint -c .yamllint.yaml on the stack's YAML")
def yamllint(ctx: Context) -> Iterator[Finding]:
    tool = require_tool("yamllint")
    args = [tool, "-f", "parsable"]
    if (ctx.root / ".yamllint.yaml").is_file():
        args += ["-c", ".yamllint.yaml"]
    res = run_tool([*args, *yaml_files(ctx)], cwd=ctx.root)
    for ln in tool_lines(res.stdout):
        m = re.match(r"(?P<f>[^:]+):(?P<l>\d+):\d+: \[(?P<lvl>\w+)\] (?P<msg>.*)", ln)
        if m:
            make = error if m.group("lvl") == "error" else warning
            yield make(f"yamllint: {m.group('msg')}", m.group("f"), int(m.group("l")))
    if res.returncode not in (0, 1, 2):
        yield error(f"yamllint failed to run: {res.output[:300]}")


@check("shellcheck", "shellcheck infra/bootstrap.sh")
def shellcheck(ctx: Context) -> Iterator[Finding]:
    tool = require_tool("shellcheck")
    script = proj.BOOTSTRAP_SCRIPT.as_posix()
    if not ctx.exists(script):
        yield error("file is missing", script)
        return
    res = run_tool([tool, "-f", "gcc", script], cwd=ctx.root)
    for ln in tool_lines(res.stdout):
        m = re.match(r"(?P<f>[^:]+):(?P<l>\d+):\d+: (?P<lvl>\w+): (?P<msg>.*)", ln)
        if m:
            # shellcheck fails on any finding, notes included; so do we.
            yield error(f"shellcheck {m.group('lvl')}: {m.group('msg')}", m.group("f"), int(m.group("l")))
