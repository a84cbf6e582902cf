"""Embedded trace store speaking Grafana Tempo 2.4.1's API, configured by infra/observability/tempo.yaml.

``python -m amtp_obs.tempo --config tempo.yaml`` runs it in the foreground; tests and the embedded
stack use :class:`TempoApp` (``await start()`` / ``await shutdown()``) or :class:`TempoThread`.
"""

from amtp_obs.tempo.app import StartError, TempoApp, TempoThread
from amtp_obs.tempo.config import ConfigError, TempoConfig, config_warnings, load_config, validate_config
from amtp_obs.tempo.store import TraceStore

__all__ = [
    "ConfigError",
    "StartError",
    "TempoApp",
    "TempoConfig",
    "TempoThread",
    "TraceStore",
    "config_warnings",
    "load_config",
    "validate_config",
]
