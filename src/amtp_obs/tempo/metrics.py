"""The trace store's own ``/metrics``: operational ``tempo_*`` series, as Tempo's port 3200 exposes.

A private registry keeps several stores in one process (tests) from clashing and keeps these apart
from span metrics, which leave only by remote write (NOTES §7).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

TENANT = "single-tenant"
"""The tenant name Tempo uses when multitenancy is off."""

DISCARDED_SPANS = "tempo_discarded_spans"
"""Tempo 2.4.1 ``tempo_discarded_spans_total{reason, tenant}`` (modules/overrides/discarded_spans.go);
prometheus_client adds the ``_total``."""
# Its reasons, from modules/distributor/distributor.go at v2.4.1.
REASON_RATE_LIMITED = "rate_limited"
REASON_TRACE_TOO_LARGE = "trace_too_large"
REASON_LIVE_TRACES_EXCEEDED = "live_traces_exceeded"
REASON_INTERNAL_ERROR = "internal_error"
REASON_UNKNOWN_ERROR = "unknown_error"
GENERATOR_SPANS_DISCARDED = "tempo_metrics_generator_spans_discarded"
"""Tempo 2.4.1 ``tempo_metrics_generator_spans_discarded_total{tenant, reason}`` (modules/generator/instance.go)."""
PER_PUSH_REASONS = (REASON_LIVE_TRACES_EXCEEDED, REASON_TRACE_TOO_LARGE, REASON_UNKNOWN_ERROR)
"""Reasons Tempo's distributor records after every push to the ingesters, with 0 when nothing was
discarded, so these series exist from the first push on."""


class TempoMetrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.spans_received = Counter(
            "tempo_distributor_spans_received", "Spans accepted by the distributor", ["tenant"], registry=r
        )
        self.bytes_received = Counter(
            "tempo_distributor_bytes_received", "Bytes of accepted OTLP exports", ["tenant"], registry=r
        )
        self.push_requests = Counter(
            "tempo_distributor_push_requests",
            "OTLP export requests by result",
            ["tenant", "result"],
            registry=r,
        )
        self.discarded_spans = Counter(
            DISCARDED_SPANS, "The total number of samples that were discarded.", ["reason", "tenant"], registry=r
        )
        self.live_traces = Gauge(
            "tempo_ingester_live_traces", "Traces seen within trace_idle_period", ["tenant"], registry=r
        )
        self.traces_created = Counter("tempo_ingester_traces_created", "New trace ids ingested", ["tenant"], registry=r)
        self.blocks_flushed = Counter("tempo_ingester_blocks_flushed", "Blocks written from the WAL", registry=r)
        self.failed_flushes = Counter("tempo_ingester_failed_flushes", "Block writes that failed", registry=r)
        self.wal_replayed_records = Counter(
            "tempo_ingester_wal_replayed_records", "WAL records replayed at startup", registry=r
        )
        self.wal_torn_records = Counter(
            "tempo_ingester_wal_corrupt_records",
            "WAL records skipped at replay (torn or bad checksum)",
            registry=r,
        )
        self.corrupt_blocks = Counter(
            "tempodb_corrupt_blocks",
            "Blocks skipped at startup because their files are unreadable or inconsistent (moved aside)",
            registry=r,
        )
        self.corrupt_block_entries = Counter(
            "tempodb_corrupt_block_traces",
            "Trace entries of a block not served: past the end of a truncated data file or failing their checksum",
            registry=r,
        )
        self.storage_write_failures = Counter(
            "tempo_ingester_storage_write_failures",
            "Writes to the WAL or to blocks that failed (disk full, I/O error), by what was written",
            ["what"],
            registry=r,
        )
        self.storage_write_failing = Gauge(
            "tempo_ingester_storage_write_failing",
            "1 while the WAL or block writes fail (disk full, I/O error): exports are refused and /ready is 503",
            registry=r,
        )
        self.wal_fsyncs = Counter("tempo_ingester_wal_fsyncs", "WAL group commits (one fsync each)", registry=r)
        self.blocklist_length = Gauge("tempodb_blocklist_length", "Blocks on local storage", ["tenant"], registry=r)
        self.retention_deleted = Counter("tempodb_retention_deleted", "Blocks deleted by block_retention", registry=r)
        self.request_duration = Histogram(
            "tempo_request_duration_seconds",
            "HTTP API request latency",
            ["route", "status_code"],
            registry=r,
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
        )
        self.generator_spans = Counter(
            "tempo_metrics_generator_spans_received",
            "Spans seen by the metrics generator",
            ["tenant"],
            registry=r,
        )
        self.generator_spans_discarded = Counter(
            GENERATOR_SPANS_DISCARDED,
            "The total number of discarded spans received per tenant",
            ["tenant", "reason"],
            registry=r,
        )
        """Tempo 2.4.1 modules/generator/instance.go metricSpansDiscarded (``_total`` added on exposition)."""
        self.generator_active_series = Gauge(
            "tempo_metrics_generator_registry_active_series",
            "Series held by the generator registry",
            ["tenant"],
            registry=r,
        )
        self.remote_write_requests = Counter(
            "tempo_metrics_generator_remote_write_requests",
            "Remote-write requests by result",
            ["url", "result"],
            registry=r,
        )
        self.remote_write_samples = Counter(
            "tempo_metrics_generator_remote_write_samples", "Samples sent successfully", ["url"], registry=r
        )
        self.service_graph_expired_edges = Counter(
            "tempo_metrics_generator_processor_service_graphs_expired_edges",
            "Service-graph edges that expired without a pair",
            ["tenant"],
            registry=r,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
