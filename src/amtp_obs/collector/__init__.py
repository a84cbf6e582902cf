"""Embedded OpenTelemetry Collector: the project's collector YAML run without Docker.

``Collector.from_config(doc)`` / ``await c.start()`` / ``await c.shutdown()`` in process, or
``python -m amtp_obs.collector --config FILE`` in the foreground. ``validate_config(doc)``
lists problems the way collector 0.100.0 would report them. The component factories are listed in
:mod:`amtp_obs.collector.components`.
"""

from amtp_obs.collector.component import ConfigError
from amtp_obs.collector.components import components, validate_config
from amtp_obs.collector.service import TELEMETRY, Collector
from amtp_obs.httpserver import StartError

__all__ = ["TELEMETRY", "Collector", "ConfigError", "StartError", "components", "validate_config"]
