"""Where each Compose ``service:port`` lives when the stack runs as local processes.

A container port that Compose publishes resolves to ``127.0.0.1:<host port>`` (so ``OBS_*`` moves it
exactly as it moves the Docker deployment); any other container port gets a free loopback port,
chosen once and remembered in the state directory so that restarts keep the same addresses.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from amtp_obs.net import LOOPBACK, free_port, port_is_free
from amtp_obs.project import COMPOSE_FILE, PortMapping, Project

WILDCARD_HOSTS = frozenset({"", "0.0.0.0", "::", "[::]", "localhost", "127.0.0.1", "[::1]", "::1"})
"""Hosts that, inside a container's config, mean "this container itself"."""


class PortInUseError(Exception):
    """One or more ports the stack must bind are taken; the message names the variables that move them."""


@dataclass(frozen=True)
class Bind:
    """A loopback port one embedded service will listen on."""

    service: str
    container_port: int
    port: int
    mapping: PortMapping | None
    """The Compose ``ports:`` entry that publishes it, or None for an internal port."""

    def describe(self) -> str:
        if self.mapping is not None and self.mapping.variable:
            return (
                f"port {self.port} ({self.service}:{self.container_port}, moved by {self.mapping.variable}) "
                f"is already in use on {LOOPBACK}; set {self.mapping.variable} to a free port "
                f"(in the environment or .env)"
            )
        if self.mapping is not None:
            return (
                f"port {self.port} ({self.service}:{self.container_port}, fixed in {COMPOSE_FILE}: "
                f"{self.mapping.raw!r}) is already in use on {LOOPBACK}"
            )
        return (
            f"internal port {self.port} ({self.service}:{self.container_port}) is already in use "
            f"on {LOOPBACK}; run `amtp-obs up` again to choose another"
        )


@dataclass
class AddressResolver:
    """Maps ``(service, container_port)`` to a loopback port, publishing as Compose does."""

    project: Project
    internal: dict[str, int] = field(default_factory=dict)
    """``"service:port"`` -> loopback port for container ports Compose does not publish."""
    binds: dict[tuple[str, int], Bind] = field(default_factory=dict)
    """Ports each embedded service listens on, collected while rendering."""

    @classmethod
    def load(cls, project: Project, ports_file: Path | None) -> AddressResolver:
        """A resolver reusing internal ports recorded by a previous ``up`` (when still free)."""
        internal: dict[str, int] = {}
        if ports_file is not None and ports_file.is_file():
            try:
                recorded = json.loads(ports_file.read_text()).get("internal", {})
                internal = {str(k): int(v) for k, v in recorded.items()}
            except (ValueError, AttributeError, TypeError):
                internal = {}
        return cls(project, internal)

    def services(self) -> set[str]:
        return set(self.project.compose["services"])

    def published(self, service: str, container_port: int) -> PortMapping | None:
        if service not in self.services():
            return None  # a helper process of ours (e.g. the alerting Alertmanager): never published
        for pm in self.project.ports(service):
            if pm.container_port == container_port:
                return pm
        return None

    def _published_ports(self) -> set[int]:
        return {pm.host_port for pm in self.project.all_ports()}

    def port(self, service: str, container_port: int) -> int:
        """The loopback port standing in for ``service:container_port``."""
        pm = self.published(service, container_port)
        if pm is not None:
            return pm.host_port
        key = f"{service}:{container_port}"
        if key not in self.internal:
            taken = self._published_ports() | set(self.internal.values())
            self.internal[key] = free_port(taken)
        return self.internal[key]

    def listen(self, service: str, container_port: int) -> int:
        """Like :meth:`port`, and records that ``service`` binds it (for the port-taken check)."""
        port = self.port(service, container_port)
        self.binds[(service, container_port)] = Bind(
            service, container_port, port, self.published(service, container_port)
        )
        return port

    def refresh_internal(self) -> None:
        """Re-pick internal ports that something else took since they were recorded."""
        taken = self._published_ports()
        for key, port in list(self.internal.items()):
            if port in taken or not port_is_free(port):
                del self.internal[key]
                self.internal[key] = free_port(taken | set(self.internal.values()))

    def check_binds(self, services: set[str] | None = None) -> None:
        """Raise :class:`PortInUseError` naming every taken port before anything starts."""
        problems = [
            b.describe()
            for b in sorted(self.binds.values(), key=lambda b: (b.service, b.container_port))
            if (services is None or b.service in services) and not port_is_free(b.port)
        ]
        if problems:
            raise PortInUseError("\n".join(problems))

    def save(self, ports_file: Path) -> None:
        ports_file.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "internal": dict(sorted(self.internal.items())),
            "binds": {
                f"{b.service}:{b.container_port}": {
                    "port": b.port,
                    "variable": b.mapping.variable if b.mapping else None,
                }
                for b in self.binds.values()
            },
        }
        ports_file.write_text(json.dumps(doc, indent=2) + "\n")
