"""Alerting: the provisioned rules translate to Prometheus rules that promtool accepts and that fire as
meant; the notification policies translate to an Alertmanager config that amtool accepts and routes as meant.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from amtp_obs import alerting
from amtp_obs.check import promql, series
from amtp_obs.check.framework import Context, Finding, check, error, require_tool, run_tool
from amtp_obs.check.shared import (
    ALERTING,
    AMTOOL,
    PROM,
    PROMTOOL,
    line_in,
    model,
    promtool_failure,
    selector_findings,
    tool_lines,
    translation,
)
from amtp_obs.durations import parse_duration

SEVERITY_LABEL = "severity"
CRITICAL = "critical"
WARNING_SEVERITY = "warning"
PAGING_TYPES = ("email", "slack")
"""Contact-point types a critical alert must reach (NOTES §12); warnings go to chat only."""
CHAT_TYPES = ("slack",)


def _dump(path: Path, doc: Any) -> Path:
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def _seconds(text: str) -> int:
    """A rule's ``interval``/``for`` in whole seconds (promtool test steps); 0 when unreadable."""
    try:
        return math.ceil(parse_duration(text))
    except ValueError:
        return 0


@check("alert-rules", "alerting.yaml rules -> Prometheus rules: promtool check rules + firing test")
def alert_rules(ctx: Context) -> Iterator[Finding]:
    t = translation(ctx)
    m = model(ctx)
    doc = ctx.yaml(ALERTING)
    # Cross-file: what the rules query exists.
    for gi, group in enumerate((doc.data or {}).get("groups") or []):
        for ri, rule in enumerate(group.get("rules") or []):
            for qi, q in enumerate(rule.get("data") or []):
                expr = (q.get("model") or {}).get("expr")
                if q.get("datasourceUid") == alerting.EXPR_DATASOURCE or not isinstance(expr, str):
                    continue
                line = doc.line("groups", gi, "rules", ri, "data", qi, "model", "expr")
                try:
                    sels = promql.parse_selectors(expr)
                except promql.QueryError as exc:
                    yield error(f"rule {rule.get('uid')!r} query {q.get('refId')}: {exc}", ALERTING, line)
                    continue
                for sel in sels:
                    yield from selector_findings(m, sel, f"alert rule {rule.get('uid')!r}", ALERTING, line)
    for item in t.unsupported:
        if item.startswith("omitted:"):
            yield error(f"rule cannot be expressed in PromQL, so it is not verified: {item}", ALERTING)
    tool = require_tool(PROMTOOL)
    work = ctx.scratch / "alerts"
    work.mkdir(exist_ok=True)
    rules_file = _dump(work / "rules.yml", t.prometheus_rules)
    res = run_tool([tool, "check", "rules", rules_file.name], cwd=work)
    if res.returncode != 0:
        yield error(f"translated rules rejected by promtool check rules: {promtool_failure(res.output)}", ALERTING)
        return
    # Behaviour: every rule on `up` fires after `for` while its targets are down (or absent) and
    # stays silent while they are up.
    stripped = {
        "groups": [
            {**g, "rules": [{k: v for k, v in r.items() if k != "annotations"} for r in g["rules"]]}
            for g in t.prometheus_rules["groups"]
        ]
    }
    _dump(work / "rules_noann.yml", stripped)
    for group in stripped["groups"]:
        interval = _seconds(str(group.get("interval", "1m"))) or 60
        for rule in group["rules"]:
            sels = promql.parse_selectors(rule["expr"])
            if not sels or any(s.name != "up" for s in sels):
                continue
            line = line_in(ctx, ALERTING, f"title: {rule['alert']}")
            matching = [s for s in m.series if s.name == "up" and all(_matches(s.labels, sel) for sel in sels)]
            if not matching:
                yield error(
                    f"alert {rule['alert']!r}: its `up` selector matches no scrape job in {PROM}, "
                    "so it can never see the target it watches",
                    ALERTING,
                    line,
                )
                continue
            for_s = _seconds(str(rule.get("for", "0s")))
            late = for_s + 2 * interval
            early = max(interval, for_s - interval) if for_s > interval else None
            fire_labels = [
                {**{k: v for k, v in s.labels.items() if k != "__name__"}, **rule.get("labels", {})} for s in matching
            ]
            n = late // 15 + 4
            tests = []

            def scenario(value: int, _n: int = n, _matching: list[series.Series] = matching) -> list[dict[str, str]]:
                return [{"series": series.promtool_series(s.labels), "values": f"{value}x{_n}"} for s in _matching]

            down_tests = [
                {
                    "eval_time": f"{late}s",
                    "alertname": rule["alert"],
                    "exp_alerts": [{"exp_labels": lb} for lb in fire_labels],
                }
            ]
            if early is not None:
                down_tests.append({"eval_time": f"{early}s", "alertname": rule["alert"], "exp_alerts": []})
            tests.append({"interval": "15s", "input_series": scenario(0), "alert_rule_test": down_tests})
            tests.append(
                {
                    "interval": "15s",
                    "input_series": scenario(1),
                    "alert_rule_test": [{"eval_time": f"{late}s", "alertname": rule["alert"], "exp_alerts": []}],
                }
            )
            if "absent(" in rule["expr"]:
                absent_labels = {**sels[0].equalities(), **rule.get("labels", {})}
                tests.append(
                    {
                        "interval": "15s",
                        "input_series": [],
                        "alert_rule_test": [
                            {
                                "eval_time": f"{late}s",
                                "alertname": rule["alert"],
                                "exp_alerts": [{"exp_labels": absent_labels}],
                            }
                        ],
                    }
                )
            tfile = _dump(
                work / "alert.test.yml",
                {"rule_files": ["rules_noann.yml"], "evaluation_interval": f"{interval}s", "tests": tests},
            )
            res = run_tool([tool, "test", "rules", tfile.name], cwd=work)
            if res.returncode != 0:
                yield error(
                    f"alert {rule['alert']!r} does not behave: expected to fire after "
                    f"for={rule.get('for', '0s')} "
                    "while up==0 (or absent) and stay silent while up==1; "
                    f"promtool: {promtool_failure(res.output)}",
                    ALERTING,
                    line,
                )


def _matches(labels: Mapping[str, str], sel: promql.Selector) -> bool:
    for label, op, value in sel.matchers:
        have = labels.get(label, "")
        ok = {
            "=": have == value,
            "!=": have != value,
            "=~": re.fullmatch(value, have) is not None,
            "!~": re.fullmatch(value, have) is None,
        }[op]
        if not ok:
            return False
    return True


@check("alert-routing", "notification policies -> Alertmanager: amtool check-config + routes test")
def alert_routing(ctx: Context) -> Iterator[Finding]:
    tool = require_tool(AMTOOL)
    t = translation(ctx)
    doc = ctx.mapping(ALERTING)
    work = ctx.scratch / "am"
    work.mkdir(exist_ok=True)
    cfg = _dump(work / "alertmanager.yml", t.alertmanager_config)
    res = run_tool([tool, "check-config", cfg.name], cwd=work)
    if res.returncode != 0:
        detail = re.findall(r"FAILED: (.*)", res.output)
        msg = "; ".join(d.strip() for d in detail) or promtool_failure(res.output)
        hint = ""
        if "root route must not have any mute time intervals" in msg:
            hint = " (move mute_time_intervals from the root policy to every child route, NOTES §13)"
        yield error(f"amtool check-config rejects the translated notification policies: {msg}{hint}", ALERTING)
        return
    kinds: dict[str, str] = {}
    for cp in doc.get("contactPoints") or []:
        for r in cp.get("receivers") or []:
            kinds[str(cp.get("name"))] = str(r.get("type"))
    paging = sorted(n for n, k in kinds.items() if k in PAGING_TYPES)
    chat = sorted(n for n, k in kinds.items() if k in CHAT_TYPES)
    line = line_in(ctx, ALERTING, "policies:")
    for sev, expected in ((CRITICAL, paging), (WARNING_SEVERITY, chat)):
        if not expected:
            continue
        res = run_tool(
            [
                tool,
                "config",
                "routes",
                "test",
                "--config.file",
                cfg.name,
                f"--verify.receivers={','.join(expected)}",
                f"{SEVERITY_LABEL}={sev}",
            ],
            cwd=work,
        )
        got = next((ln for ln in tool_lines(res.output) if not ln.startswith("WARNING")), "")
        if res.returncode != 0:
            yield error(
                f"an alert with {SEVERITY_LABEL}={sev} reaches [{got}] but must reach [{','.join(expected)}] "
                "(a child route with continue: true does not make the parent's receiver fire, NOTES §12)",
                ALERTING,
                line,
            )
    # Mute timings: every child route carries every mute timing (they are not inherited, NOTES §13).
    names = [str(mt.get("name")) for mt in doc.get("muteTimes") or []]
    root = (doc.get("policies") or [{}])[0]

    def walk(node: Mapping[str, Any], path: str) -> Iterator[Finding]:
        for i, child in enumerate(node.get("routes") or []):
            cpath = f"{path}.routes[{i}]"
            missing = [n for n in names if n not in (child.get("mute_time_intervals") or [])]
            if missing:
                yield error(
                    f"policy route {cpath} (receiver {child.get('receiver', 'inherited')}) lacks "
                    "mute timing(s) "
                    f"{', '.join(missing)}: mute timings are not inherited, so its notifications go "
                    "out anyway",
                    ALERTING,
                    ctx.yaml(ALERTING).line("policies", 0, *_route_path(cpath)),
                )
            yield from walk(child, cpath)

    yield from walk(root, "policies[0]")


def _route_path(path: str) -> list[str | int]:
    out: list[str | int] = []
    for m in re.finditer(r"routes\[(\d+)\]", path):
        out += ["routes", int(m.group(1))]
    return out
