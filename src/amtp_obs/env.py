"""Environment variable names, defined once (as ``opentelemetry.sdk.environment_variables`` does).

Defaults of the OBS_* ports live in ``docker-compose.observability.yml``; ``amtp-obs check`` proves
that every name here that compose uses is spelled the same there and in ``.env.example``.
"""

from typing import Final

# Standard OpenTelemetry SDK variables the SDK honours.
OTEL_SERVICE_NAME: Final = "OTEL_SERVICE_NAME"
OTEL_RESOURCE_ATTRIBUTES: Final = "OTEL_RESOURCE_ATTRIBUTES"
OTEL_EXPORTER_OTLP_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_ENDPOINT"
OTEL_EXPORTER_OTLP_PROTOCOL: Final = "OTEL_EXPORTER_OTLP_PROTOCOL"
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
OTEL_EXPORTER_OTLP_METRICS_ENDPOINT: Final = "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT"
OTEL_EXPORTER_OTLP_INSECURE: Final = "OTEL_EXPORTER_OTLP_INSECURE"
OTEL_METRIC_EXPORT_INTERVAL: Final = "OTEL_METRIC_EXPORT_INTERVAL"
OTEL_BSP_SCHEDULE_DELAY: Final = "OTEL_BSP_SCHEDULE_DELAY"
OTEL_SDK_DISABLED: Final = "OTEL_SDK_DISABLED"

# Host ports of the observability stack (design table "Host Ports & OBS_* Overrides").
OBS_OTEL_GRPC_PORT: Final = "OBS_OTEL_GRPC_PORT"
OBS_OTEL_HTTP_PORT: Final = "OBS_OTEL_HTTP_PORT"
OBS_OTEL_METRICS_PORT: Final = "OBS_OTEL_METRICS_PORT"
OBS_OTEL_HEALTH_PORT: Final = "OBS_OTEL_HEALTH_PORT"
OBS_OTEL_ZPAGES_PORT: Final = "OBS_OTEL_ZPAGES_PORT"
OBS_OTEL_PPROF_PORT: Final = "OBS_OTEL_PPROF_PORT"
"""Beyond the design's table: pprof is published too, on the host's loopback only."""
OBS_TEMPO_HTTP_PORT: Final = "OBS_TEMPO_HTTP_PORT"
OBS_TEMPO_GRPC_PORT: Final = "OBS_TEMPO_GRPC_PORT"
OBS_PROMETHEUS_PORT: Final = "OBS_PROMETHEUS_PORT"
OBS_GRAFANA_PORT: Final = "OBS_GRAFANA_PORT"

# Alert delivery: consumed by Grafana's alerting provisioning and by the embedded Alertmanager.
AMTP_SLACK_WEBHOOK_URL: Final = "AMTP_SLACK_WEBHOOK_URL"
AMTP_ALERT_EMAIL_ADDRESSES: Final = "AMTP_ALERT_EMAIL_ADDRESSES"

# Project-specific switches.
AMTP_OBS_STATE_DIR: Final = "AMTP_OBS_STATE_DIR"
"""Where the embedded stack keeps WAL, blocks, Prometheus data, logs and pids."""
AMTP_OBS_CAPTURE_CONTENT: Final = "AMTP_OBS_CAPTURE_CONTENT"
"""``true`` turns on prompt/response capture (off by default: content is never recorded otherwise)."""
AMTP_OBS_PROJECT_DIR: Final = "AMTP_OBS_PROJECT_DIR"
"""Directory holding docker-compose.observability.yml; default: searched upwards from the cwd."""

# Grafana SMTP settings (GF_<SECTION>_<KEY>): the alerting translation builds Alertmanager
# email_configs from the same values Grafana's email contact point would use.
GF_SMTP_HOST: Final = "GF_SMTP_HOST"
GF_SMTP_USER: Final = "GF_SMTP_USER"
GF_SMTP_PASSWORD: Final = "GF_SMTP_PASSWORD"
GF_SMTP_FROM_ADDRESS: Final = "GF_SMTP_FROM_ADDRESS"
GF_SMTP_STARTTLS_POLICY: Final = "GF_SMTP_STARTTLS_POLICY"

AMTP_OBS_ALERT_FOR: Final = "AMTP_OBS_ALERT_FOR"
"""Overrides every alert rule's ``for`` when the embedded stack translates alerting.yaml (e.g. ``10s``)."""

AMTP_OBS_SCRAPE_INTERVAL: Final = "AMTP_OBS_SCRAPE_INTERVAL"
"""How often the embedded Prometheus scrapes and the trace store pushes span metrics (default 5s; 15s = production)."""

CI: Final = "CI"
"""Set to ``true`` by CI runners: a test that would skip for a missing tool fails instead (amtp_obs.testing.tools)."""

AMTP_VERIFY_RUN_ID: Final = "AMTP_VERIFY_RUN_ID"
"""verify_trace.py's run id when ``--run-id`` is not given (resource attribute contract.VERIFY_RUN_ID)."""
