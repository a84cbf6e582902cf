"""Run the provisioned Grafana alerting on the real Prometheus and the real Alertmanager binary.

``alerting.yaml`` is translated (:func:`amtp_obs.alerting.translate`) into a Prometheus rule file
and an Alertmanager config, both written into the state directory. Prometheus loads the rules and
sends to our Alertmanager (:func:`add_alerting` edits the rendered ``prometheus.yml``); the
Alertmanager delivers to the Slack webhook and SMTP server named by the same variables Compose
gives Grafana. Anything the translation cannot carry is returned and printed at start.

Alertmanager 0.25 does not say in its API that an alert is held back by a mute time interval,
so this module also evaluates the routing tree and time intervals the way Alertmanager does
(:func:`muted_by`); the dashboard uses it to show muted alerts as such.
"""

from __future__ import annotations

import calendar
import copy
import os
import re
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import httpx
import yaml

from amtp_obs import env
from amtp_obs.alerting.translate import TranslationError, translate
from amtp_obs.project import ALERTING_FILE, Project, ProjectError
from amtp_obs.shutdown import terminate
from amtp_obs.tools import find_tool, names_of

ALERTMANAGER_BINARIES = names_of("alertmanager")
"""Debian installs Alertmanager as ``prometheus-alertmanager``; upstream tarballs as ``alertmanager``."""
ALERTING_SUBDIR = "alerting"
RULES_FILE_NAME = "rules.yml"
ALERTMANAGER_CONFIG_NAME = "alertmanager.yml"
STORAGE_SUBDIR = "alertmanager-data"
READY_TIMEOUT = 20.0


class AlertingRuntimeError(Exception):
    """The alerting runtime cannot start; the message says what to fix."""


@dataclass
class AlertingFiles:
    """What :func:`prepare` wrote: the two configs, Alertmanager's storage, and what was not carried."""

    rules_file: Path
    alertmanager_config: Path
    storage_dir: Path
    unsupported: list[str] = field(default_factory=list)
    rules: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


def find_alertmanager() -> str:
    """Path of the Alertmanager binary, or a clear error saying how to install it."""
    path = find_tool("alertmanager")
    if path:
        return path
    raise AlertingRuntimeError(
        "no Alertmanager binary on PATH (looked for " + ", ".join(ALERTMANAGER_BINARIES) + "); "
        "install it, e.g. `apt-get install prometheus-alertmanager`"
    )


def prepare(
    project: Project,
    state_dir: Path,
    *,
    alerting_file: Path | None = None,
    variables: Mapping[str, str] | None = None,
    for_override: str | None = None,
    deliver: bool = True,
) -> AlertingFiles:
    """Translate alerting.yaml and write ``<state>/alerting/{rules.yml,alertmanager.yml}``.

    ``variables`` default to :attr:`Project.variables` (``.env`` overlaid by the environment);
    ``for_override`` defaults to ``AMTP_OBS_ALERT_FOR`` from those variables. ``deliver=False``
    keeps rules, routes and mute timings but gives every receiver no integration: alerts are
    evaluated, routed and shown, and nothing is sent (for a stack whose Slack/e-mail are unset).
    """
    values = dict(project.variables if variables is None else variables)
    if not deliver:
        # Placeholders only satisfy the translation's checks; the integrations are dropped below.
        values.setdefault(env.AMTP_SLACK_WEBHOOK_URL, "http://127.0.0.1/undelivered")
        values.setdefault(env.AMTP_ALERT_EMAIL_ADDRESSES, "undelivered@localhost")
    source = alerting_file or project.path(ALERTING_FILE)
    try:
        doc = yaml.safe_load(source.read_text())
    except OSError as exc:
        raise AlertingRuntimeError(f"cannot read {source}: {exc}") from None
    except yaml.YAMLError as exc:
        raise AlertingRuntimeError(f"{source}: invalid YAML: {exc}") from None
    override = for_override or values.get(env.AMTP_OBS_ALERT_FOR) or None
    try:
        result = translate(doc or {}, values, for_override=override)
    except TranslationError as exc:
        raise AlertingRuntimeError(f"{source}: {exc}") from None
    if not deliver:
        for receiver in result.alertmanager_config.get("receivers", []):
            for key in [k for k in receiver if k != "name"]:
                del receiver[key]
    out = state_dir / ALERTING_SUBDIR
    out.mkdir(parents=True, exist_ok=True)
    storage = state_dir / STORAGE_SUBDIR
    storage.mkdir(parents=True, exist_ok=True)
    rules_file, am_file = out / RULES_FILE_NAME, out / ALERTMANAGER_CONFIG_NAME
    header = f"# Generated from {source.name} by amtp_obs.alerting.runtime; edit the source, not this file.\n"
    _write_private(rules_file, header + yaml.safe_dump(result.prometheus_rules, sort_keys=False))
    _write_private(am_file, header + yaml.safe_dump(result.alertmanager_config, sort_keys=False))
    return AlertingFiles(
        rules_file,
        am_file,
        storage,
        list(result.unsupported),
        result.prometheus_rules,
        result.alertmanager_config,
    )


def _write_private(path: Path, text: str) -> None:
    """The Alertmanager config holds the Slack webhook URL and SMTP password: owner-only."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
    os.replace(tmp, path)


def report_unsupported(files: AlertingFiles, echo: Callable[[str], Any] = print) -> None:
    """Print every construct the translation could not carry: at start, never silently."""
    for item in files.unsupported:
        echo(f"warning: alerting: {item}")


def alertmanager_command(
    files: AlertingFiles,
    port: int,
    *,
    host: str = "127.0.0.1",
    binary: str | None = None,
    log_level: str | None = None,
) -> list[str]:
    """The command line that runs the real Alertmanager on our files, clustering off, loopback only.

    ``log_level=debug`` makes it log each notification a mute timing holds back (tests read that).
    """
    argv = [
        binary or find_alertmanager(),
        f"--config.file={files.alertmanager_config}",
        f"--storage.path={files.storage_dir}",
        f"--web.listen-address={host}:{port}",
        "--cluster.listen-address=",
    ]
    if log_level:
        argv.append(f"--log.level={log_level}")
    return argv


def add_alerting(
    prometheus_config: Mapping[str, Any], *, rule_files: Sequence[str | Path], alertmanagers: Sequence[str]
) -> dict[str, Any]:
    """A copy of a rendered prometheus.yml that loads ``rule_files`` and notifies ``alertmanagers``.

    ``alertmanagers`` are ``host:port`` targets. Call it on the config the embedded stack renders.
    """
    cfg = copy.deepcopy(dict(prometheus_config))
    existing = [str(x) for x in cfg.get("rule_files") or []]
    cfg["rule_files"] = existing + [str(f) for f in rule_files if str(f) not in existing]
    alerting = dict(cfg.get("alerting") or {})
    managers = list(alerting.get("alertmanagers") or [])
    managers.append({"static_configs": [{"targets": list(alertmanagers)}]})
    alerting["alertmanagers"] = managers
    cfg["alerting"] = alerting
    return cfg


class AlertmanagerProcess:
    """The real Alertmanager as a child process (own process group), for tests and embedding."""

    def __init__(
        self, files: AlertingFiles, port: int, log: Path, *, binary: str | None = None, log_level: str | None = None
    ) -> None:
        self.files, self.port, self.log_path = files, port, log
        self.argv = alertmanager_command(files, port, binary=binary, log_level=log_level)
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = READY_TIMEOUT) -> AlertmanagerProcess:
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            try:
                if httpx.get(self.url + "/-/ready", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-2000:]
        self.stop()
        raise AlertingRuntimeError(f"Alertmanager did not become ready on {self.url}:\n{tail}")

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None:
            terminate(self.proc, timeout)
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> AlertmanagerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def start_from_project(
    project: Project, state_dir: Path, port: int, echo: Callable[[str], Any] = print
) -> AlertmanagerProcess:
    """Prepare the files, print what was not carried, start Alertmanager and wait until it is ready."""
    try:
        files = prepare(project, state_dir)
    except ProjectError as exc:
        raise AlertingRuntimeError(str(exc)) from None
    report_unsupported(files, echo)
    return AlertmanagerProcess(files, port, state_dir / "alertmanager.log").start()


# -- Alertmanager's time-interval and routing semantics -----------------------------------------------

_WEEKDAYS = {name.lower(): i for i, name in enumerate(calendar.day_name)}  # monday=0 (Python)
_MONTHS = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MATCHER = re.compile(r"^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*(.*?)\s*$")


def _am_weekday(name: str) -> int:
    """Alertmanager numbers days sunday=0..saturday=6; names are case-insensitive."""
    try:
        return (_WEEKDAYS[name.strip().lower()] + 1) % 7
    except KeyError:
        raise ValueError(f"unknown weekday {name!r}") from None


def _ranges(items: Sequence[Any], parse: Callable[[str], int]) -> list[tuple[int, int]]:
    out = []
    for item in items:
        text = str(item)
        start, _, end = text.partition(":")
        lo = parse(start)
        hi = parse(end) if end else lo
        out.append((lo, hi))
    return out


def _minutes(text: str) -> int:
    m = re.fullmatch(r"(\d{2}):(\d{2})", str(text).strip())
    if not m or int(m.group(1)) > 24 or int(m.group(2)) > 59 or (int(m.group(1)) == 24 and int(m.group(2))):
        raise ValueError(f"invalid time {text!r}: expected HH:MM between 00:00 and 24:00")
    return int(m.group(1)) * 60 + int(m.group(2))


def _month(text: str) -> int:
    t = text.strip().lower()
    return int(t) if t.isdigit() else _MONTHS[t]


def time_interval_active(interval: Mapping[str, Any], at: datetime) -> bool:
    """Whether one Alertmanager ``time_interval`` entry covers ``at`` (every given field must match).

    ``times`` are [start, end) in minutes of the day; ``weekdays``/``months``/``years`` ranges are
    inclusive; negative ``days_of_month`` count from the month's end; ``location`` defaults to UTC.
    """
    location = interval.get("location") or "UTC"
    try:
        tz = UTC if location == "UTC" else ZoneInfo(str(location))
    except ZoneInfoNotFoundError:
        raise ValueError(f"unknown location {location!r}") from None
    t = at.astimezone(tz)
    if interval.get("times"):
        minute = t.hour * 60 + t.minute
        if not any(_minutes(r["start_time"]) <= minute < _minutes(r["end_time"]) for r in interval["times"]):
            return False
    if interval.get("weekdays"):
        day = (t.weekday() + 1) % 7
        if not any(lo <= day <= hi for lo, hi in _ranges(interval["weekdays"], _am_weekday)):
            return False
    if interval.get("days_of_month"):
        last = calendar.monthrange(t.year, t.month)[1]

        def dom(text: str) -> int:
            v = int(text)
            return last + v + 1 if v < 0 else v

        if not any(lo <= t.day <= hi for lo, hi in _ranges(interval["days_of_month"], dom)):
            return False
    if interval.get("months") and not any(lo <= t.month <= hi for lo, hi in _ranges(interval["months"], _month)):
        return False
    return not interval.get("years") or any(lo <= t.year <= hi for lo, hi in _ranges(interval["years"], int))


def named_interval_active(config: Mapping[str, Any], name: str, at: datetime) -> bool:
    """A named entry of ``time_intervals`` (or legacy ``mute_time_intervals``) is active if any part is."""
    for section in ("time_intervals", "mute_time_intervals"):
        for entry in config.get(section) or []:
            if entry.get("name") == name:
                return any(time_interval_active(ti, at) for ti in entry.get("time_intervals") or [])
    raise ValueError(f"time interval {name!r} is not defined")


def _parse_matcher(text: str) -> tuple[str, str, str]:
    m = _MATCHER.match(text)
    if not m:
        raise ValueError(f"invalid matcher {text!r}")
    name, op, value = m.groups()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
    return name, op, value


def labels_match(matchers: Sequence[tuple[str, str, str]], labels: Mapping[str, str]) -> bool:
    """Alertmanager's matcher semantics: ``(name, op, value)`` with =, !=, =~, !~ (regexes anchored);
    a missing label is the empty string."""
    for name, op, value in matchers:
        actual = labels.get(name, "")
        if op == "=" and actual != value:
            return False
        if op == "!=" and actual == value:
            return False
        if op in ("=~", "!~"):
            hit = re.fullmatch(value, actual) is not None
            if hit != (op == "=~"):
                return False
    return True


def _route_matches(route: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    checks: list[tuple[str, str, str]] = [_parse_matcher(m) for m in route.get("matchers") or []]
    checks += [(k, "=", str(v)) for k, v in (route.get("match") or {}).items()]
    checks += [(k, "=~", str(v)) for k, v in (route.get("match_re") or {}).items()]
    return labels_match(checks, labels)


def matching_routes(route: Mapping[str, Any], labels: Mapping[str, str]) -> list[Mapping[str, Any]]:
    """The routes that handle an alert: depth first; a matching child ends the search unless ``continue``."""
    if not _route_matches(route, labels):
        return []
    found: list[Mapping[str, Any]] = []
    for child in route.get("routes") or []:
        hits = matching_routes(child, labels)
        if hits:
            found.extend(hits)
            if not child.get("continue"):
                break
    return found or [route]


def muted_by(config: Mapping[str, Any], labels: Mapping[str, str], at: datetime) -> list[str]:
    """Names of the active mute intervals on every route handling the alert (empty unless all are muted)."""
    root = config.get("route") or {}
    names: list[str] = []
    for r in matching_routes(root, labels):
        if r is root:
            return []
        active = [n for n in r.get("mute_time_intervals") or [] if named_interval_active(config, n, at)]
        if not active:
            return []
        names.extend(n for n in active if n not in names)
    return names
