"""Collector configuration: Go-style durations, shared config blocks and whole-document validation.

The shared blocks mirror the collector 0.100.0 packages they come from (``confighttp.ServerConfig``,
``configgrpc.ServerConfig``/``ClientConfig``, ``configtls``, ``configretry``, exporterhelper's queue),
so the same keys are accepted and an unknown key is an error naming the component and the key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Self

import yaml
from pydantic import BeforeValidator, Field, ValidationError, model_validator

from amtp_obs import durations
from amtp_obs.collector.component import (
    EXTENSION,
    KIND_SECTIONS,
    ComponentID,
    ConfigError,
    Factories,
    StrictModel,
)

# ---------------------------------------------------------------------------------------------
# Durations
# ---------------------------------------------------------------------------------------------


def parse_duration(value: object) -> float:
    """Go ``time.ParseDuration`` (``1s``, ``500ms``, ``1h30m``) in seconds; integers are nanoseconds."""
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise ValueError(f"invalid duration {value!r}")
    if isinstance(value, int | float):
        return float(value) / 1e9
    return durations.parse_duration(value, long_units=False)


Duration = Annotated[float, BeforeValidator(parse_duration)]
"""A config duration, stored in seconds."""

# ---------------------------------------------------------------------------------------------
# Shared blocks
# ---------------------------------------------------------------------------------------------


class TLSSetting(StrictModel):
    """configtls.Config: what servers and clients share."""

    ca_file: str = ""
    ca_pem: str = ""
    cert_file: str = ""
    cert_pem: str = ""
    key_file: str = ""
    key_pem: str = ""
    min_version: str = ""
    max_version: str = ""
    reload_interval: Duration = 0.0
    include_system_ca_certs_pool: bool = False


class TLSServerSetting(TLSSetting):
    client_ca_file: str = ""
    client_ca_file_reload: bool = False


class TLSClientSetting(TLSSetting):
    insecure: bool = False
    insecure_skip_verify: bool = False
    server_name_override: str = ""


class CORSConfig(StrictModel):
    allowed_origins: list[str] = Field(default_factory=list)
    allowed_headers: list[str] = Field(default_factory=list)
    max_age: int = 0


class HTTPServerConfig(StrictModel):
    """``confighttp.ServerConfig`` (0.100.0)."""

    endpoint: str = ""
    tls: TLSServerSetting | None = None
    cors: CORSConfig | None = None
    auth: dict[str, Any] | None = None
    max_request_body_size: int = 0
    include_metadata: bool = False
    response_headers: dict[str, str] = Field(default_factory=dict)


def http_server_unsupported(cfg: HTTPServerConfig, where: str) -> list[str]:
    out = []
    if cfg.tls is not None:
        out.append(f"{where}.tls")
    if cfg.auth is not None:
        out.append(f"{where}.auth")
    return out


class KeepaliveServerConfig(StrictModel):
    server_parameters: dict[str, Any] | None = None
    enforcement_policy: dict[str, Any] | None = None


class GRPCServerConfig(StrictModel):
    """``configgrpc.ServerConfig`` (0.100.0)."""

    endpoint: str = ""
    transport: str = "tcp"
    tls: TLSServerSetting | None = None
    max_recv_msg_size_mib: int = 0
    max_concurrent_streams: int = 0
    read_buffer_size: int = 512 * 1024
    write_buffer_size: int = 0
    keepalive: KeepaliveServerConfig | None = None
    auth: dict[str, Any] | None = None
    include_metadata: bool = False


class RetryConfig(StrictModel):
    """``configretry.BackOffConfig``: exponential backoff with jitter, as cenkalti/backoff does."""

    enabled: bool = True
    initial_interval: Duration = 5.0
    randomization_factor: float = 0.5
    multiplier: float = 1.5
    max_interval: Duration = 30.0
    max_elapsed_time: Duration = 300.0

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.enabled:
            return self
        if self.initial_interval < 0:
            raise ValueError("'initial_interval' must be non-negative")
        if not 0 <= self.randomization_factor <= 1:
            raise ValueError("'randomization_factor' must be within [0, 1]")
        if self.multiplier < 0:
            raise ValueError("'multiplier' must be non-negative")
        if self.max_interval < 0:
            raise ValueError("'max_interval' must be non-negative")
        if self.max_elapsed_time < 0:
            raise ValueError("'max_elapsed' time must be non-negative")
        return self


class QueueConfig(StrictModel):
    """exporterhelper ``QueueSettings``: ``queue_size`` counts batches (requests), not spans."""

    enabled: bool = True
    num_consumers: int = 10
    queue_size: int = 1000
    storage: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.enabled:
            return self
        if self.queue_size <= 0:
            raise ValueError("queue size must be positive")
        if self.num_consumers <= 0:
            raise ValueError("number of queue consumers must be positive")
        return self


# ---------------------------------------------------------------------------------------------
# Service section
# ---------------------------------------------------------------------------------------------


class PipelineConfig(StrictModel):
    receivers: list[str] = Field(default_factory=list)
    processors: list[str] = Field(default_factory=list)
    exporters: list[str] = Field(default_factory=list)


class TelemetryLogs(StrictModel):
    level: str = "info"
    development: bool = False
    encoding: str = "console"
    disable_caller: bool = False
    disable_stacktrace: bool = False
    sampling: dict[str, Any] | None = None
    output_paths: list[str] = Field(default_factory=lambda: ["stderr"])
    error_output_paths: list[str] = Field(default_factory=lambda: ["stderr"])
    initial_fields: dict[str, Any] = Field(default_factory=dict)


class TelemetryMetrics(StrictModel):
    level: str = "normal"
    address: str = ":8888"
    readers: list[dict[str, Any]] | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        if self.level not in ("none", "basic", "normal", "detailed"):
            raise ValueError(f"unknown metrics level {self.level!r} (none, basic, normal, detailed)")
        return self


class TelemetryTraces(StrictModel):
    propagators: list[str] = Field(default_factory=list)
    processors: list[dict[str, Any]] = Field(default_factory=list)


class TelemetryConfig(StrictModel):
    logs: TelemetryLogs = Field(default_factory=TelemetryLogs)
    metrics: TelemetryMetrics = Field(default_factory=TelemetryMetrics)
    traces: TelemetryTraces = Field(default_factory=TelemetryTraces)
    resource: dict[str, str | None] = Field(default_factory=dict)


class ServiceConfig(StrictModel):
    extensions: list[str] = Field(default_factory=list)
    pipelines: dict[str, PipelineConfig | None] = Field(default_factory=dict)
    telemetry: TelemetryConfig = Field(default_factory=TelemetryConfig)


# ---------------------------------------------------------------------------------------------
# Whole document
# ---------------------------------------------------------------------------------------------

TOP_LEVEL = ("receivers", "processors", "exporters", "extensions", "connectors", "service")
SIGNAL_TYPES = ("traces", "metrics", "logs")


def format_validation_error(where: str, exc: ValidationError) -> list[str]:
    """One line per pydantic error: ``where: key.path: message``."""
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            out.append(f"{where}: unknown key {loc!r}" if loc else f"{where}: unknown key")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{where}: {loc}: {msg}" if loc else f"{where}: {msg}")
    return out


class ParsedConfig:
    """A validated document: component configs keyed by (kind, id) and the service section."""

    def __init__(self) -> None:
        self.components: dict[tuple[str, str], tuple[ComponentID, Any]] = {}
        self.service = ServiceConfig()


def parse_config(doc: object, factories: Factories) -> tuple[ParsedConfig, list[str]]:
    """Validate ``doc`` the way collector 0.100.0 does; returns the parsed config and the problems."""
    problems: list[str] = []
    parsed = ParsedConfig()
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        return parsed, ["configuration must be a mapping"]
    for key in doc:
        if key not in TOP_LEVEL:
            problems.append(f"unknown top-level key {key!r} (expected one of: {', '.join(TOP_LEVEL)})")
    if doc.get("connectors"):
        problems.append("connectors: not supported by the embedded collector")

    for kind, section in KIND_SECTIONS.items():
        block = doc.get(section) or {}
        if not isinstance(block, dict):
            problems.append(f"{section}: must be a mapping of component id to config")
            continue
        for raw_id, cfg in block.items():
            where = f"{section}::{raw_id}"
            try:
                cid = ComponentID.parse(raw_id)
            except ValueError as exc:
                problems.append(f"{section}: {exc}")
                continue
            factory = factories.get(kind, cid.type)
            if factory is None:
                known = ", ".join(factories.types(kind)) or "none"
                problems.append(
                    f'{where}: unknown type "{cid.type}" for {kind} (the embedded collector supports: {known})'
                )
                continue
            if cfg is not None and not isinstance(cfg, dict):
                problems.append(f"{where}: config must be a mapping, got {type(cfg).__name__}")
                continue
            try:
                model = factory.config_model.model_validate(cfg or {})
            except ValidationError as exc:
                problems.extend(format_validation_error(where, exc))
                continue
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            problems.extend(
                f"{where}: {setting}: not supported by the embedded collector" for setting in factory.unsupported(model)
            )
            parsed.components[(kind, str(cid))] = (cid, model)

    service_doc = doc.get("service")
    if service_doc is None:
        problems.append("service: missing (it must list at least one pipeline)")
        return parsed, problems
    try:
        parsed.service = ServiceConfig.model_validate(service_doc)
    except ValidationError as exc:
        problems.extend(format_validation_error("service", exc))
        return parsed, problems
    problems.extend(_validate_service(parsed, doc, factories))
    return parsed, problems


def _validate_service(parsed: ParsedConfig, doc: dict[str, Any], factories: Factories) -> list[str]:
    problems: list[str] = []
    svc = parsed.service
    defined = {
        (k, str(ComponentID.parse(i)))
        for k, s in KIND_SECTIONS.items()
        for i in (doc.get(s) or {})
        if isinstance(i, str) and _parses(i)
    }
    for ext in svc.extensions:
        if (EXTENSION, ext) not in defined:
            problems.append(f"service::extensions: references extension {ext!r} which is not configured")
    if svc.telemetry.metrics.readers:
        problems.append("service::telemetry::metrics::readers: not supported by the embedded collector (use address)")
    if not svc.pipelines:
        problems.append("service::pipelines: at least one pipeline is required")
    for pid, pipe in svc.pipelines.items():
        where = f"service::pipelines::{pid}"
        signal = pid.partition("/")[0]
        if signal not in SIGNAL_TYPES:
            problems.append(f"{where}: unknown pipeline type {signal!r} (traces, metrics, logs)")
            continue
        pipe = pipe or PipelineConfig()
        if not pipe.receivers:
            problems.append(f"{where}: must have at least one receiver")
        if not pipe.exporters:
            problems.append(f"{where}: must have at least one exporter")
        seen: set[str] = set()
        for proc in pipe.processors:
            if proc in seen:
                problems.append(f"{where}: references processor {proc!r} multiple times")
            seen.add(proc)
        for kind, ids in (
            ("receiver", pipe.receivers),
            ("processor", pipe.processors),
            ("exporter", pipe.exporters),
        ):
            for ref in ids:
                if (kind, ref) not in defined:
                    problems.append(f"{where}: references {kind} {ref!r} which is not configured")
                    continue
                entry = parsed.components.get((kind, ref))
                if entry is None:
                    continue  # its own problem is already reported
                factory = factories.get(kind, entry[0].type)
                if factory is not None and signal not in factory.signals:
                    problems.append(f"{where}: {kind} {ref!r} does not support {signal}")
    return problems


def _parses(raw: str) -> bool:
    try:
        ComponentID.parse(raw)
    except ValueError:
        return False
    return True


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a collector YAML file; a missing or malformed file is a :class:`ConfigError`."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError([f"cannot read {path}: {exc.strerror or exc}"]) from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError([f"{path}: invalid YAML: {exc}"]) from None
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError([f"{path}: top level must be a mapping"])
    return doc
