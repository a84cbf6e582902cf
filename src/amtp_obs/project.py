"""Where the stack's files live and what the Compose file says about ports and services.

Everything that needs a port, a service name or a config path reads it through :class:`Project`,
so that ``docker-compose.observability.yml`` and ``.env`` stay the single source of truth.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from amtp_obs import env

COMPOSE_FILE = "docker-compose.observability.yml"
ENV_EXAMPLE_FILE = ".env.example"
ENV_FILE = ".env"
OBS_DIR = Path("infra/observability")
COLLECTOR_CONFIG = OBS_DIR / "otel-collector-config.yaml"
TEMPO_CONFIG = OBS_DIR / "tempo.yaml"
PROMETHEUS_CONFIG = OBS_DIR / "prometheus.yml"
GRAFANA_PROVISIONING = OBS_DIR / "grafana" / "provisioning"
DATASOURCES_DIR = GRAFANA_PROVISIONING / "datasources"
DASHBOARDS_DIR = GRAFANA_PROVISIONING / "dashboards"
ALERTING_FILE = GRAFANA_PROVISIONING / "alerting" / "alerting.yaml"
VERIFY_SCRIPT = Path("apps/otel-verify/verify_trace.py")
WORKFLOWS_DIR = Path(".github/workflows")
BOOTSTRAP_SCRIPT = Path("infra/bootstrap.sh")

# Compose service names (the design's): read by the embedded stack and the checks.
SERVICE_COLLECTOR = "otel-collector"
SERVICE_TEMPO = "tempo"
SERVICE_PROMETHEUS = "amtp-prometheus"
SERVICE_GRAFANA = "grafana"
SERVICES = (SERVICE_COLLECTOR, SERVICE_TEMPO, SERVICE_PROMETHEUS, SERVICE_GRAFANA)


class ProjectError(Exception):
    """A project file is missing or malformed; the message says which and why."""


_VAR = re.compile(
    r"\$(?:(?P<escaped>\$)|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<named>[A-Za-z_][A-Za-z0-9_]*))"
)


def interpolate(text: str, variables: Mapping[str, str]) -> str:
    """Expand ``${VAR}``, ``${VAR:-default}``, ``${VAR-default}``, ``${VAR:?msg}`` and ``$$`` as Compose does."""

    def repl(m: re.Match[str]) -> str:
        if m.group("escaped"):
            return "$"
        name = m.group("braced") or m.group("named")
        op, arg = m.group("op"), m.group("arg") or ""
        value = variables.get(name)
        if op == ":-":
            return value if value else arg
        if op == "-":
            return value if value is not None else arg
        if op in (":?", "?"):
            if value is None or (op == ":?" and value == ""):
                raise ProjectError(f"required variable {name} is not set: {arg}")
            return value
        return value or ""

    return _VAR.sub(repl, text)


def variables_in(text: str) -> set[str]:
    """Names of all variables referenced by ``${...}``/``$VAR`` in ``text`` (``$$`` excluded)."""
    return {m.group("braced") or m.group("named") for m in _VAR.finditer(text) if not m.group("escaped")}


def parse_env_file(path: Path) -> dict[str, str]:
    """Read a ``KEY=VALUE`` file as Compose does (comments, blank lines, optional quotes)."""
    values: dict[str, str] = {}
    for lineno, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("export "):
            line = line[len("export ") :]
        if "=" not in line:
            raise ProjectError(f"{path}:{lineno}: expected KEY=VALUE, got {raw!r}")
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@dataclass(frozen=True)
class PortMapping:
    """One ``ports:`` entry of a Compose service, with the variable that moves it."""

    service: str
    container_port: int
    host_port: int
    host_ip: str | None
    variable: str | None
    default: int | None
    raw: str


_PORT_VAR = re.compile(r"^\$\{(?P<var>[A-Za-z_][A-Za-z0-9_]*):?-(?P<default>\d+)\}$")


def _parse_port(service: str, raw: str, variables: Mapping[str, str]) -> PortMapping:
    raw_s = str(raw)
    # Split on ':' outside ${...}.
    parts, depth, cur = [], 0, ""
    for ch in raw_s:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == ":" and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    parts.append(cur)
    if len(parts) == 2:
        host_ip, host, container = None, parts[0], parts[1]
    elif len(parts) == 3:
        host_ip, host, container = parts
    else:
        raise ProjectError(f"{COMPOSE_FILE}: service {service}: cannot read port mapping {raw_s!r}")
    m = _PORT_VAR.match(host)
    variable, default = (m.group("var"), int(m.group("default"))) if m else (None, None)
    try:
        host_port = int(interpolate(host, variables))
        container_port = int(container.split("/")[0])
    except ValueError as exc:
        raise ProjectError(f"{COMPOSE_FILE}: service {service}: bad port mapping {raw_s!r}: {exc}") from None
    return PortMapping(service, container_port, host_port, host_ip, variable, default, raw_s)


@dataclass
class Project:
    """A checkout of the stack: its root directory and the variables Compose would use."""

    root: Path
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @classmethod
    def discover(cls, start: Path | None = None, environ: Mapping[str, str] | None = None) -> Project:
        """Find the directory holding the Compose file: ``AMTP_OBS_PROJECT_DIR``, else upwards from ``start``."""
        environ = dict(os.environ if environ is None else environ)
        if env.AMTP_OBS_PROJECT_DIR in environ:
            root = Path(environ[env.AMTP_OBS_PROJECT_DIR]).resolve()
            if not (root / COMPOSE_FILE).is_file():
                raise ProjectError(f"{env.AMTP_OBS_PROJECT_DIR}={root} holds no {COMPOSE_FILE}")
            return cls(root, environ)
        here = (start or Path.cwd()).resolve()
        for candidate in (here, *here.parents):
            if (candidate / COMPOSE_FILE).is_file():
                return cls(candidate, environ)
        raise ProjectError(
            f"no {COMPOSE_FILE} in {here} or its parents; run from the project checkout "
            f"or set {env.AMTP_OBS_PROJECT_DIR}"
        )

    def path(self, rel: Path | str) -> Path:
        return self.root / rel

    @cached_property
    def variables(self) -> dict[str, str]:
        """``.env`` (if present) overlaid by the process environment, as Compose resolves them."""
        values: dict[str, str] = {}
        env_file = self.root / ENV_FILE
        if env_file.is_file():
            values.update(parse_env_file(env_file))
        values.update(self.environ)
        return values

    @cached_property
    def compose_text(self) -> str:
        path = self.root / COMPOSE_FILE
        try:
            return path.read_text()
        except OSError as exc:
            raise ProjectError(f"cannot read {path}: {exc}") from None

    @cached_property
    def compose(self) -> dict[str, Any]:
        """The Compose document, uninterpolated (strings keep their ``${...}``)."""
        try:
            doc = yaml.safe_load(self.compose_text)
        except yaml.YAMLError as exc:
            raise ProjectError(f"{COMPOSE_FILE}: invalid YAML: {exc}") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("services"), dict):
            raise ProjectError(f"{COMPOSE_FILE}: no services: mapping")
        return doc

    def service(self, name: str) -> dict[str, Any]:
        try:
            return self.compose["services"][name]
        except KeyError:
            raise ProjectError(f"{COMPOSE_FILE}: no service named {name!r}") from None

    def ports(self, service: str) -> list[PortMapping]:
        return [_parse_port(service, p, self.variables) for p in self.service(service).get("ports") or []]

    def all_ports(self) -> list[PortMapping]:
        return [pm for name in self.compose["services"] for pm in self.ports(name)]

    def host_port(self, service: str, container_port: int) -> int:
        """The host port that publishes ``service:container_port`` under the current variables."""
        for pm in self.ports(service):
            if pm.container_port == container_port:
                return pm.host_port
        raise ProjectError(f"{COMPOSE_FILE}: service {service} does not publish container port {container_port}")

    def port_variables(self) -> list[str]:
        """Every OBS_*-style variable that moves a published port, in compose order."""
        return [pm.variable for pm in self.all_ports() if pm.variable]

    def port_variable(self, variable: str) -> PortMapping:
        """The mapping moved by an OBS_* variable."""
        for pm in self.all_ports():
            if pm.variable == variable:
                return pm
        raise ProjectError(f"{COMPOSE_FILE}: no port mapping uses ${{{variable}}}")

    def port(self, variable: str) -> int:
        """Current host port for an OBS_* variable (its value, else the Compose default)."""
        return self.port_variable(variable).host_port

    def load_yaml(self, rel: Path | str) -> Any:
        path = self.root / rel
        try:
            return yaml.safe_load(path.read_text())
        except OSError as exc:
            raise ProjectError(f"cannot read {rel}: {exc}") from None
        except yaml.YAMLError as exc:
            raise ProjectError(f"{rel}: invalid YAML: {exc}") from None

    def dashboards(self) -> list[Path]:
        return sorted((self.root / DASHBOARDS_DIR).glob("*.json"))
