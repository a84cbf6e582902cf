"""Copies of the stack's config files with only addresses and paths rewritten for local processes.

The rules are generic, driven by the Compose file rather than by a list of keys:

* a string ``[scheme://]host:port[/path]`` whose host is a Compose service resolves through
  :class:`AddressResolver`; one whose host is a wildcard/loopback host (``0.0.0.0:4317``) is the
  service's own listen address and becomes ``127.0.0.1:<resolved port>``;
* an absolute path inside one of the service's Compose volumes lands where the volume would have
  put it: named volumes in ``<state>/volumes/<volume>/``, bind mounts in the checkout; an absolute
  path elsewhere under a key that names a file or directory (``*_path``, ``*_dir``, ``*_file``,
  ``rule_files``; not HTTP paths such as ``metrics_path`` or a ``path`` next to an ``endpoint``)
  goes under ``<state>/fs/<service>/``;
* Tempo's integer ``server.http_listen_port``/``grpc_listen_port`` get the resolved ports and a
  ``127.0.0.1`` listen address (their Compose equivalents are ``tempo:3200``/``tempo:9095``).

Nothing else in the documents changes, so the components parse and validate what production runs.
"""

from __future__ import annotations

import copy
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from amtp_obs.project import ProjectError
from amtp_obs.stack.addresses import LOOPBACK, WILDCARD_HOSTS, AddressResolver

_ADDRESS = re.compile(
    r"^(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)?(?P<host>\[[0-9A-Fa-f:.]*\]|[A-Za-z0-9_.-]*):(?P<port>\d{1,5})"
    r"(?P<rest>/\S*)?$"
)
_PATH_KEYS = re.compile(r"^(path|dir|directory|.*_path|.*_dir|.*_directory|.*_file)$")
_URL_PATH_KEYS = frozenset({"metrics_path", "traces_url_path", "metrics_url_path", "logs_url_path", "url_path"})
_ENDPOINT_KEYS = ("endpoint", "url", "address")

TEMPO_DEFAULT_HTTP_PORT = 80
"""Tempo's built-in ``server.http_listen_port`` default (research tempo.md §1)."""
TEMPO_DEFAULT_GRPC_PORT = 9095


@dataclass
class PathMapper:
    """Maps a container path of one service to a host path, following its Compose volumes."""

    project_root: Path
    state_dir: Path
    service: str
    volumes: list[tuple[str, str]]
    """(source, container target) pairs from the service's ``volumes:``."""
    rendered: dict[str, Path]
    """Container path -> rendered copy (the config files we rewrite ourselves)."""

    @classmethod
    def for_service(
        cls,
        compose: dict[str, Any],
        project_root: Path,
        state_dir: Path,
        service: str,
        rendered: dict[str, Path] | None = None,
    ) -> PathMapper:
        spec = compose["services"].get(service) or {}
        pairs: list[tuple[str, str]] = []
        for vol in spec.get("volumes") or []:
            if isinstance(vol, dict):
                src, target = str(vol.get("source", "")), str(vol.get("target", ""))
            else:
                parts = str(vol).split(":")
                if len(parts) < 2:
                    continue  # anonymous volume: nothing to map
                src, target = parts[0], parts[1]
            if target:
                pairs.append((src, target))
        # Longest target first, so /var/tempo/wal wins over /var/tempo.
        pairs.sort(key=lambda p: len(p[1]), reverse=True)
        return cls(project_root, state_dir, service, pairs, dict(rendered or {}))

    def mounted(self, container_path: str) -> bool:
        """Inside one of the service's volumes (so a path to data, never an HTTP path)."""
        p = PurePosixPath(container_path)
        return container_path in self.rendered or any(
            p == PurePosixPath(t) or PurePosixPath(t) in p.parents for _, t in self.volumes
        )

    def map(self, container_path: str) -> Path:
        if container_path in self.rendered:
            return self.rendered[container_path]
        p = PurePosixPath(container_path)
        for src, target in self.volumes:
            t = PurePosixPath(target)
            if p == t or t in p.parents:
                rest = p.relative_to(t)
                if src.startswith((".", "/", "~")):
                    base = (self.project_root / src).resolve() if not src.startswith("/") else Path(src)
                else:
                    base = self.state_dir / "volumes" / src
                return base / rest if str(rest) != "." else base
        return self.state_dir / "fs" / self.service / str(p).lstrip("/")


@dataclass
class Renderer:
    """Rewrites one service's document: addresses through the resolver, paths through the mapper."""

    resolver: AddressResolver
    service: str
    paths: PathMapper

    def address(self, value: str) -> str:
        m = _ADDRESS.match(value)
        if not m:
            return value
        host, port = m.group("host"), int(m.group("port"))
        if host in self.resolver.services():
            new_port = self.resolver.port(host, port)
        elif host in WILDCARD_HOSTS:
            new_port = self.resolver.listen(self.service, port)
        else:
            return value
        return f"{m.group('scheme') or ''}{LOOPBACK}:{new_port}{m.group('rest') or ''}"

    def path(self, value: str) -> str:
        return str(self.paths.map(value)) if value.startswith("/") else value

    def is_fs_path(self, key: str, value: str, siblings: dict[str, Any]) -> bool:
        """A filesystem path: inside a mount of the service, or under a path-like key of no endpoint."""
        if not value.startswith("/"):
            return False
        if self.paths.mounted(value):
            return True
        if key in _URL_PATH_KEYS or any(k in siblings for k in _ENDPOINT_KEYS):
            return False  # an HTTP path such as health_check's `path: /` or `metrics_path`
        return bool(_PATH_KEYS.match(key))

    def walk(self, node: Any, key: str = "", siblings: dict[str, Any] | None = None) -> Any:
        if isinstance(node, dict):
            return {k: self.walk(v, str(k), node) for k, v in node.items()}
        if isinstance(node, list):
            if key == "rule_files":
                return [self.path(v) if isinstance(v, str) else v for v in node]
            return [self.walk(v, key, {}) for v in node]
        if isinstance(node, str):
            if self.is_fs_path(key, node, siblings or {}):
                return self.path(node)
            return self.address(node)
        return node


def _renderer(
    resolver: AddressResolver, state_dir: Path, service: str, rendered: dict[str, Path] | None = None
) -> Renderer:
    mapper = PathMapper.for_service(resolver.project.compose, resolver.project.root, state_dir, service, rendered)
    return Renderer(resolver, service, mapper)


def render_collector(doc: dict[str, Any], resolver: AddressResolver, state_dir: Path, service: str) -> dict[str, Any]:
    """The collector config with every endpoint on loopback and ``tempo:4317`` on Tempo's real port."""
    return _renderer(resolver, state_dir, service).walk(copy.deepcopy(doc))


def render_tempo(doc: dict[str, Any], resolver: AddressResolver, state_dir: Path, service: str) -> dict[str, Any]:
    """tempo.yaml: listen ports resolved, storage paths in the state dir, remote write to Prometheus."""
    out = _renderer(resolver, state_dir, service).walk(copy.deepcopy(doc))
    server = out.setdefault("server", {})
    if not isinstance(server, dict):
        raise ProjectError(f"tempo config: server must be a mapping, got {type(server).__name__}")
    for port_key, addr_key, default in (
        ("http_listen_port", "http_listen_address", TEMPO_DEFAULT_HTTP_PORT),
        ("grpc_listen_port", "grpc_listen_address", TEMPO_DEFAULT_GRPC_PORT),
    ):
        container_port = int(server.get(port_key, default))
        server[port_key] = resolver.listen(service, container_port)
        server[addr_key] = LOOPBACK
    return out


def render_prometheus_config(
    doc: dict[str, Any], resolver: AddressResolver, state_dir: Path, service: str
) -> dict[str, Any]:
    """prometheus.yml with scrape targets on the resolved addresses; job names and labels untouched."""
    return _renderer(resolver, state_dir, service).walk(copy.deepcopy(doc))


PROMETHEUS_DEFAULT_LISTEN = 9090


def compose_command(spec: dict[str, Any]) -> list[str]:
    """A Compose ``command:`` as an argv list (string form split like a shell would)."""
    command = spec.get("command") or []
    if isinstance(command, str):
        return shlex.split(command)
    return [str(c) for c in command]


@dataclass
class PrometheusArgs:
    argv: list[str]
    listen_port: int
    dropped: list[str]
    """Flags the local binary does not know, left out (with the reason shown by ``up``)."""


def prometheus_argv(
    binary: str,
    spec: dict[str, Any],
    resolver: AddressResolver,
    state_dir: Path,
    service: str,
    config_path: Path,
    known_flag: Callable[[str], bool],
) -> PrometheusArgs:
    """The compose command's flags for the local binary: paths and listen address rewritten."""
    mapper = PathMapper.for_service(resolver.project.compose, resolver.project.root, state_dir, service)
    argv: list[str] = [binary]
    dropped: list[str] = []
    listen_container_port = PROMETHEUS_DEFAULT_LISTEN
    saw_config = saw_storage = False
    for raw in compose_command(spec):
        if not raw.startswith("--"):
            dropped.append(raw)
            continue
        name, eq, value = raw[2:].partition("=")
        if name == "web.listen-address":
            m = _ADDRESS.match(value)
            if m:
                listen_container_port = int(m.group("port"))
            continue
        if not known_flag(name):
            dropped.append(raw)
            continue
        if name == "config.file":
            saw_config = True
            argv.append(f"--config.file={config_path}")
        elif eq and value.startswith("/"):
            saw_storage = saw_storage or name == "storage.tsdb.path"
            argv.append(f"--{name}={mapper.map(value)}")
        else:
            argv.append(raw)
    if not saw_config:
        argv.append(f"--config.file={config_path}")
    if not saw_storage:
        argv.append(f"--storage.tsdb.path={mapper.map('/prometheus')}")
    port = resolver.listen(service, listen_container_port)
    argv.append(f"--web.listen-address={LOOPBACK}:{port}")
    return PrometheusArgs(argv, port, dropped)
