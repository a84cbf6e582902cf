"""tempo.yaml, parsed the way Tempo 2.4.1 reads it: strict keys, Go/Prometheus durations.

Tempo loads its config with ``yaml.UnmarshalStrict``, so a misspelt key stops it at startup. The
models below mirror the 2.4.1 keys this project uses plus the common documented ones, and reject
anything else with the dotted path of the offending key. Sections we do not run (querier,
memberlist, ...) are accepted as free-form mappings so that a file Tempo accepts is not refused.
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from amtp_obs.durations import parse_duration
from amtp_obs.net import split_endpoint

# --------------------------------------------------------------------------------------------
# Durations
# --------------------------------------------------------------------------------------------


def _duration(value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError("must be a duration string like 10s")
    if isinstance(value, (int, float)):
        if value == 0:
            return 0.0
        raise ValueError(f"must be a duration string like 10s, got the bare number {value}")
    if isinstance(value, str):
        return parse_duration(value)
    raise ValueError(f"must be a duration string like 10s, got {type(value).__name__}")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)


class _Loose(BaseModel):
    """A section whose full key set we do not pin: accepted and ignored beyond the named keys."""

    model_config = ConfigDict(extra="allow", populate_by_name=True, frozen=True)


def _durations(*names: str) -> Any:
    return field_validator(*names, mode="before")(lambda cls, v: _duration(v))


# --------------------------------------------------------------------------------------------
# server (dskit)
# --------------------------------------------------------------------------------------------


class ServerConfig(_Strict):
    http_listen_network: str = "tcp"
    http_listen_address: str = ""
    http_listen_port: int = 80
    http_listen_conn_limit: int = 0
    grpc_listen_network: str = "tcp"
    grpc_listen_address: str = ""
    grpc_listen_port: int = 9095
    grpc_listen_conn_limit: int = 0
    http_server_read_timeout: float = 30.0
    http_server_write_timeout: float = 30.0
    http_server_idle_timeout: float = 120.0
    graceful_shutdown_timeout: float = 30.0
    grpc_server_max_recv_msg_size: int = 4 * 1024 * 1024
    grpc_server_max_send_msg_size: int = 4 * 1024 * 1024
    grpc_server_max_concurrent_streams: int = 100
    log_level: str = "info"
    log_format: str = "logfmt"
    log_source_ips_enabled: bool = False
    register_instrumentation: bool = True
    http_path_prefix: str = ""

    _d = _durations(
        "http_server_read_timeout",
        "http_server_write_timeout",
        "http_server_idle_timeout",
        "graceful_shutdown_timeout",
    )

    @field_validator("http_listen_port", "grpc_listen_port")
    @classmethod
    def _port(cls, v: int) -> int:
        if not 0 <= v <= 65535:
            raise ValueError(f"port {v} is outside 0-65535")
        return v

    @field_validator("log_level")
    @classmethod
    def _level(cls, v: str) -> str:
        if v not in ("debug", "info", "warn", "error"):
            raise ValueError(f"unrecognized log level {v!r} (debug, info, warn, error)")
        return v


# --------------------------------------------------------------------------------------------
# distributor
# --------------------------------------------------------------------------------------------


def _endpoint(v: str) -> str:
    """A listen endpoint with a port; its host follows the embedded stack's one rule (amtp_obs.net)."""
    try:
        _, port = split_endpoint(v, default_port=-1)
    except ValueError:
        port = -1
    if port < 0 or any(c.isspace() for c in v):
        raise ValueError(f"endpoint {v!r} must be host:port (e.g. 0.0.0.0:4317)")
    return v


class OtlpGrpcProtocol(_Loose):
    endpoint: str = "0.0.0.0:4317"
    max_recv_msg_size_mib: int = 4

    _e = field_validator("endpoint")(lambda cls, v: _endpoint(v))


class OtlpHttpProtocol(_Loose):
    endpoint: str = "0.0.0.0:4318"

    _e = field_validator("endpoint")(lambda cls, v: _endpoint(v))


class OtlpProtocols(_Strict):
    grpc: OtlpGrpcProtocol | None = None
    http: OtlpHttpProtocol | None = None

    @field_validator("grpc", "http", mode="before")
    @classmethod
    def _null_means_defaults(cls, v: Any) -> Any:
        # `grpc:` with no value enables the protocol with defaults, as in the collector.
        return {} if v is None else v


class OtlpReceiver(_Strict):
    protocols: OtlpProtocols = OtlpProtocols()


class Receivers(_Strict):
    otlp: OtlpReceiver | None = None
    jaeger: dict[str, Any] | None = None
    zipkin: dict[str, Any] | None = None
    opencensus: dict[str, Any] | None = None
    kafka: dict[str, Any] | None = None


class DistributorConfig(_Loose):
    receivers: Receivers = Receivers()
    log_received_spans: dict[str, Any] | None = None
    log_discarded_spans: dict[str, Any] | None = None
    forwarders: list[Any] | None = None
    extend_writes: bool = True


# --------------------------------------------------------------------------------------------
# ingester / compactor / storage
# --------------------------------------------------------------------------------------------


class IngesterConfig(_Strict):
    trace_idle_period: float = 10.0
    flush_check_period: float = 10.0
    max_block_duration: float = 30 * 60.0
    max_block_bytes: int = 500 * 1000 * 1000
    complete_block_timeout: float = 15 * 60.0
    concurrent_flushes: int = 4
    flush_op_timeout: float = 5 * 60.0
    override_ring_key: str | None = None
    lifecycler: dict[str, Any] | None = None

    _d = _durations(
        "trace_idle_period",
        "flush_check_period",
        "max_block_duration",
        "complete_block_timeout",
        "flush_op_timeout",
    )


class CompactionConfig(_Strict):
    block_retention: float = 336 * 3600.0
    compacted_block_retention: float = 3600.0
    compaction_window: float = 3600.0
    compaction_cycle: float = 30.0
    max_block_bytes: int = 100 * 1024 * 1024 * 1024
    max_compaction_objects: int = 6_000_000
    max_time_per_tenant: float = 5 * 60.0
    retention_concurrency: int = 10
    v2_in_buffer_bytes: int | None = None
    v2_out_buffer_bytes: int | None = None
    v2_prefetch_traces_count: int | None = None

    _d = _durations(
        "block_retention",
        "compacted_block_retention",
        "compaction_window",
        "compaction_cycle",
        "max_time_per_tenant",
    )


class CompactorConfig(_Loose):
    compaction: CompactionConfig = CompactionConfig()
    ring: dict[str, Any] | None = None


class WalConfig(_Strict):
    path: str = "/var/tempo/wal"
    v2_encoding: str = "snappy"
    search_encoding: str | None = None
    ingestion_time_range_slack: float = 120.0
    version: str | None = None

    _d = _durations("ingestion_time_range_slack")


class LocalBackendConfig(_Strict):
    path: str = ""


class BlockConfig(_Strict):
    bloom_filter_false_positive: float = 0.01
    bloom_filter_shard_size_bytes: int = 100 * 1024
    v2_index_downsample_bytes: int = 1024 * 1024
    v2_index_page_size_bytes: int = 250 * 1024
    v2_encoding: str = "zstd"
    search_encoding: str | None = None
    search_page_size_bytes: int | None = None
    version: str = "vParquet3"
    parquet_row_group_size_bytes: int = 100 * 1000 * 1000
    parquet_dedicated_columns: list[Any] | None = None

    @field_validator("v2_encoding")
    @classmethod
    def _encoding(cls, v: str) -> str:
        allowed = ("none", "gzip", "lz4-64k", "lz4-256k", "lz4-1M", "lz4", "snappy", "zstd", "s2")
        if v not in allowed:
            raise ValueError(f"unknown encoding {v!r} ({', '.join(allowed)})")
        return v

    @field_validator("bloom_filter_false_positive")
    @classmethod
    def _fp(cls, v: float) -> float:
        if not 0 < v < 1:
            raise ValueError("must be between 0 and 1")
        return v


class TraceStorageConfig(_Strict):
    backend: str = ""
    wal: WalConfig = WalConfig()
    local: LocalBackendConfig | None = None
    block: BlockConfig = BlockConfig()
    blocklist_poll: float = 300.0
    blocklist_poll_concurrency: int | None = None
    pool: dict[str, Any] | None = None
    search: dict[str, Any] | None = None
    cache: str | None = None
    background_cache: dict[str, Any] | None = None
    memcached: dict[str, Any] | None = None
    redis: dict[str, Any] | None = None
    s3: dict[str, Any] | None = None
    gcs: dict[str, Any] | None = None
    azure: dict[str, Any] | None = None

    _d = _durations("blocklist_poll")

    @field_validator("backend")
    @classmethod
    def _backend(cls, v: str) -> str:
        if v not in ("local", "s3", "gcs", "azure"):
            raise ValueError(f"unknown backend {v!r} (local, s3, gcs, azure)")
        return v


class StorageConfig(_Strict):
    trace: TraceStorageConfig


# --------------------------------------------------------------------------------------------
# metrics_generator
# --------------------------------------------------------------------------------------------

_DEFAULT_SPANMETRICS_BUCKETS = [0.002 * 2**i for i in range(14)]
_DEFAULT_SERVICE_GRAPH_BUCKETS = [0.1 * 2**i for i in range(8)]


class RegistryConfig(_Strict):
    collection_interval: float = 15.0
    stale_duration: float = 15 * 60.0
    max_label_name_length: int = 1024
    max_label_value_length: int = 2048
    external_labels: dict[str, str] = Field(default_factory=dict)

    _d = _durations("collection_interval", "stale_duration")

    @field_validator("collection_interval")
    @classmethod
    def _positive(cls, v: float) -> float:
        if v <= 0:
            raise ValueError("must be positive")
        return v


class RemoteWriteConfig(_Loose):
    url: str
    send_exemplars: bool = False
    headers: dict[str, str] = Field(default_factory=dict)
    name: str | None = None
    remote_timeout: float = 30.0

    _d = _durations("remote_timeout")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str) -> str:
        if not re.match(r"^https?://[^/\s]+", v):
            raise ValueError(f"remote_write url {v!r} must be an http(s):// URL")
        return v


class GeneratorStorageConfig(_Strict):
    path: str = ""
    wal: dict[str, Any] | None = None
    remote_write_flush_deadline: float = 60.0
    remote_write_add_org_id_header: bool = True
    remote_write: list[RemoteWriteConfig] = Field(default_factory=list)

    _d = _durations("remote_write_flush_deadline")


class SpanMetricsConfig(_Strict):
    histogram_buckets: list[float] = Field(default_factory=lambda: list(_DEFAULT_SPANMETRICS_BUCKETS))
    dimensions: list[str] = Field(default_factory=list)
    intrinsic_dimensions: dict[str, bool] = Field(default_factory=dict)
    filter_policies: list[Any] = Field(default_factory=list)
    dimension_mappings: list[Any] = Field(default_factory=list)
    enable_target_info: bool = False
    target_info_excluded_dimensions: list[str] = Field(default_factory=list)
    subprocessors: dict[str, bool] | None = None

    @field_validator("intrinsic_dimensions")
    @classmethod
    def _intrinsics(cls, v: dict[str, bool]) -> dict[str, bool]:
        bad = set(v) - set(INTRINSIC_DEFAULTS)
        if bad:
            raise ValueError(f"unknown intrinsic dimension(s) {sorted(bad)} ({', '.join(INTRINSIC_DEFAULTS)})")
        return v


INTRINSIC_DEFAULTS: dict[str, bool] = {
    "service": True,
    "span_name": True,
    "span_kind": True,
    "status_code": True,
    "status_message": False,
}


class ServiceGraphsConfig(_Strict):
    wait: float = 10.0
    max_items: int = 10_000
    workers: int = 10
    histogram_buckets: list[float] = Field(default_factory=lambda: list(_DEFAULT_SERVICE_GRAPH_BUCKETS))
    dimensions: list[str] = Field(default_factory=list)
    peer_attributes: list[str] | None = None
    enable_client_server_prefix: bool = False
    enable_messaging_system_latency_histogram: bool = False

    _d = _durations("wait")


class ProcessorConfig(_Strict):
    service_graphs: ServiceGraphsConfig = ServiceGraphsConfig()
    span_metrics: SpanMetricsConfig = SpanMetricsConfig()
    local_blocks: dict[str, Any] | None = None


class MetricsGeneratorConfig(_Strict):
    ring: dict[str, Any] | None = None
    processor: ProcessorConfig = ProcessorConfig()
    registry: RegistryConfig = RegistryConfig()
    storage: GeneratorStorageConfig = GeneratorStorageConfig()
    traces_storage: dict[str, Any] | None = None
    metrics_ingestion_time_range_slack: float = 30.0
    query_timeout: float | None = None
    override_ring_key: str | None = None

    _d = _durations("metrics_ingestion_time_range_slack")


# --------------------------------------------------------------------------------------------
# overrides (the scoped format, introduced in 2.3 and documented for 2.4)
# --------------------------------------------------------------------------------------------


class IngestionOverrides(_Strict):
    rate_strategy: str = "local"
    rate_limit_bytes: int = 15_000_000
    burst_size_bytes: int = 20_000_000
    max_traces_per_user: int = 10_000
    max_global_traces_per_user: int = 0

    @field_validator("rate_strategy")
    @classmethod
    def _strategy(cls, v: str) -> str:
        if v not in ("local", "global"):
            raise ValueError(f"unknown rate strategy {v!r} (local, global)")
        return v

    @field_validator("rate_limit_bytes", "burst_size_bytes", "max_traces_per_user", "max_global_traces_per_user")
    @classmethod
    def _non_negative(cls, v: int) -> int:
        if v < 0:
            raise ValueError("must not be negative")
        return v


class SpanMetricsOverrides(_Strict):
    histogram_buckets: list[float] | None = None
    dimensions: list[str] | None = None
    intrinsic_dimensions: dict[str, bool] | None = None
    filter_policies: list[Any] | None = None
    dimension_mappings: list[Any] | None = None
    enable_target_info: bool = False
    target_info_excluded_dimensions: list[str] | None = None


class ServiceGraphsOverrides(_Strict):
    histogram_buckets: list[float] | None = None
    dimensions: list[str] | None = None
    peer_attributes: list[str] | None = None
    enable_client_server_prefix: bool = False


class ProcessorOverrides(_Strict):
    service_graphs: ServiceGraphsOverrides = ServiceGraphsOverrides()
    span_metrics: SpanMetricsOverrides = SpanMetricsOverrides()
    local_blocks: dict[str, Any] | None = None


KNOWN_PROCESSORS = ("service-graphs", "span-metrics", "local-blocks")


class MetricsGeneratorOverrides(_Strict):
    ring_size: int = 0
    processors: list[str] = Field(default_factory=list)
    max_active_series: int = 0
    collection_interval: float = 0.0
    disable_collection: bool = False
    forwarder: dict[str, Any] | None = None
    processor: ProcessorOverrides = ProcessorOverrides()
    ingestion_time_range_slack: float = 0.0

    _d = _durations("collection_interval", "ingestion_time_range_slack")

    @field_validator("processors")
    @classmethod
    def _processors(cls, v: list[str]) -> list[str]:
        bad = [p for p in v if p not in KNOWN_PROCESSORS]
        if bad:
            raise ValueError(f"unknown processor(s) {bad} ({', '.join(KNOWN_PROCESSORS)})")
        return v


class CompactionOverrides(_Strict):
    block_retention: float = 0.0
    compaction_window: float = 0.0

    _d = _durations("block_retention", "compaction_window")


class GlobalOverrides(_Strict):
    max_bytes_per_trace: int = 5_000_000


class Overrides(_Strict):
    ingestion: IngestionOverrides = IngestionOverrides()
    read: dict[str, Any] | None = None
    compaction: CompactionOverrides = CompactionOverrides()
    metrics_generator: MetricsGeneratorOverrides = MetricsGeneratorOverrides()
    forwarders: list[str] | None = None
    global_: GlobalOverrides = Field(default=GlobalOverrides(), alias="global")
    storage: dict[str, Any] | None = None


_LEGACY_OVERRIDE_KEYS = {
    "ingestion_rate_strategy",
    "ingestion_rate_limit_bytes",
    "ingestion_burst_size_bytes",
    "max_traces_per_user",
    "max_global_traces_per_user",
    "max_bytes_per_trace",
    "metrics_generator_processors",
    "block_retention",
    "max_search_duration",
    "metrics_generator_processor_span_metrics_enable_target_info",
}


class OverridesConfig(_Strict):
    defaults: Overrides = Overrides()
    per_tenant_override_config: str = ""
    per_tenant_override_period: float = 10.0
    user_configurable_overrides: dict[str, Any] | None = None

    _d = _durations("per_tenant_override_period")

    @model_validator(mode="before")
    @classmethod
    def _legacy(cls, data: Any) -> Any:
        if isinstance(data, dict):
            legacy = sorted(k for k in data if k in _LEGACY_OVERRIDE_KEYS)
            if legacy:
                raise ValueError(
                    f"inline (legacy) overrides {legacy} are deprecated and not supported here; "
                    "use the scoped format overrides.defaults.{ingestion,metrics_generator,...}"
                )
        return data


# --------------------------------------------------------------------------------------------
# the whole file
# --------------------------------------------------------------------------------------------


class UsageReportConfig(_Strict):
    reporting_enabled: bool = True
    backoff: dict[str, Any] | None = None


class TempoConfig(_Strict):
    target: str = "all"
    http_api_prefix: str = ""
    multitenancy_enabled: bool = False
    auth_enabled: bool | None = None
    stream_over_http_enabled: bool = False
    use_otel_tracer: bool = False
    autocomplete_filtering_enabled: bool = True
    server: ServerConfig = ServerConfig()
    internal_server: dict[str, Any] | None = None
    distributor: DistributorConfig = DistributorConfig()
    ingester_client: dict[str, Any] | None = None
    metrics_generator_client: dict[str, Any] | None = None
    querier: dict[str, Any] | None = None
    query_frontend: dict[str, Any] | None = None
    compactor: CompactorConfig = CompactorConfig()
    ingester: IngesterConfig = IngesterConfig()
    metrics_generator: MetricsGeneratorConfig = MetricsGeneratorConfig()
    storage: StorageConfig
    overrides: OverridesConfig = OverridesConfig()
    memberlist: dict[str, Any] | None = None
    usage_report: UsageReportConfig = UsageReportConfig()
    cache: dict[str, Any] | None = None

    @field_validator("target")
    @classmethod
    def _target(cls, v: str) -> str:
        if v not in ("all", "scalable-single-binary"):
            raise ValueError(f"target {v!r}: the embedded trace store runs only as a single binary (all)")
        return v

    @model_validator(mode="after")
    def _backend_paths(self) -> TempoConfig:
        trace = self.storage.trace
        if trace.backend == "local" and (trace.local is None or not trace.local.path):
            raise ValueError("storage.trace.local.path is required with backend: local")
        return self

    # -- effective settings (base config merged with overrides, as 2.4.1 does) --------------

    @property
    def generator_enabled(self) -> bool:
        """2.4.1 runs processors only with a storage path AND processors enabled in overrides."""
        return bool(self.metrics_generator.storage.path) and bool(self.overrides.defaults.metrics_generator.processors)

    @property
    def processors(self) -> set[str]:
        return set(self.overrides.defaults.metrics_generator.processors) if self.generator_enabled else set()

    def span_metrics(self) -> SpanMetricsConfig:
        """Base processor config with overrides applied.

        enable_target_info comes ONLY from the overrides: the 2.4.1 bug #2834, reproduced.
        """
        base = self.metrics_generator.processor.span_metrics
        ov = self.overrides.defaults.metrics_generator.processor.span_metrics
        update: dict[str, Any] = {"enable_target_info": ov.enable_target_info}
        for name in ("histogram_buckets", "dimensions", "intrinsic_dimensions", "filter_policies"):
            if getattr(ov, name):
                update[name] = getattr(ov, name)
        return base.model_copy(update=update)

    def service_graphs(self) -> ServiceGraphsConfig:
        base = self.metrics_generator.processor.service_graphs
        ov = self.overrides.defaults.metrics_generator.processor.service_graphs
        update: dict[str, Any] = {"enable_client_server_prefix": ov.enable_client_server_prefix}
        for name in ("histogram_buckets", "dimensions", "peer_attributes"):
            if getattr(ov, name):
                update[name] = getattr(ov, name)
        return base.model_copy(update=update)

    @property
    def block_retention(self) -> float:
        override = self.overrides.defaults.compaction.block_retention
        return override or self.compactor.compaction.block_retention

    @property
    def metrics_ingestion_slack(self) -> float:
        """The per-tenant override when set, else the generator's own (Tempo 2.4.1 instance.go updateSlack)."""
        override = self.overrides.defaults.metrics_generator.ingestion_time_range_slack
        return override or self.metrics_generator.metrics_ingestion_time_range_slack

    @property
    def collection_interval(self) -> float:
        return self.overrides.defaults.metrics_generator.collection_interval or (
            self.metrics_generator.registry.collection_interval
        )


class ConfigError(Exception):
    """The config cannot be used; ``errors`` holds one message per problem, each naming its key path."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def _loc(loc: tuple[Any, ...]) -> str:
    parts = []
    for p in loc:
        if isinstance(p, int):
            parts.append(f"[{p}]")
        else:
            name = "global" if p == "global_" else str(p)
            parts.append(("." if parts else "") + name)
    return "".join(parts) or "<root>"


def _format(exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        path = _loc(tuple(err["loc"]))
        if err["type"] == "extra_forbidden":
            out.append(f"{path}: unknown key (not a Tempo 2.4.1 setting here)")
        elif err["type"] == "missing":
            out.append(f"{path}: required key is missing")
        else:
            msg = err["msg"].removeprefix("Value error, ")
            out.append(f"{path}: {msg}")
    return out


def load_config(doc: Any) -> TempoConfig:
    """Parse a loaded tempo.yaml document; raise :class:`ConfigError` listing every problem."""
    if not isinstance(doc, dict):
        raise ConfigError(["<root>: the config must be a YAML mapping"])
    try:
        return TempoConfig.model_validate(doc)
    except ValidationError as exc:
        raise ConfigError(_format(exc)) from None


def validate_config(doc: Any) -> list[str]:
    """Problems that would stop Tempo 2.4.1 (or us) from starting with this document; empty when fine."""
    try:
        load_config(doc)
    except ConfigError as exc:
        return exc.errors
    return []


def config_warnings(doc: Any) -> list[str]:
    """Settings Tempo accepts but that do not do what they seem to (NOTES §5); empty when none."""
    try:
        cfg = load_config(doc)
    except ConfigError:
        return []
    out: list[str] = []
    gen = cfg.metrics_generator
    ov = cfg.overrides.defaults.metrics_generator
    if ov.processors and not gen.storage.path:
        out.append(
            "overrides.defaults.metrics_generator.processors is set but "
            "metrics_generator.storage.path is not: the metrics generator stays off"
        )
    if gen.storage.path and not ov.processors:
        out.append(
            "metrics_generator.storage.path is set but "
            "overrides.defaults.metrics_generator.processors is empty: no processor runs"
        )
    if gen.processor.span_metrics.enable_target_info and not ov.processor.span_metrics.enable_target_info:
        out.append(
            "metrics_generator.processor.span_metrics.enable_target_info is ignored by Tempo 2.4.1 "
            "(issue 2834); set overrides.defaults.metrics_generator.processor.span_metrics.enable_target_info"
        )
    if cfg.server.http_listen_port == 80 and "http_listen_port" not in (doc.get("server") or {}):
        out.append("server.http_listen_port is not set: Tempo 2.4.1 then listens on port 80, not 3200")
    return out
