"""The components this collector is built with, listed in one place (upstream's ``components.go``).

Config parsing and the service take the :class:`~amtp_obs.collector.component.Factories` made
here; a new component type is one factory in its module and one line below.
"""

from __future__ import annotations

from typing import Any

from amtp_obs.collector import (
    exporter_debug,
    exporter_otlp,
    exporter_prometheus,
    extensions,
    processors,
    receiver_otlp,
)
from amtp_obs.collector.component import Factories
from amtp_obs.collector.config import parse_config


def components() -> Factories:
    """Every receiver, processor, exporter and extension the embedded collector supports."""
    return Factories(
        [
            receiver_otlp.FACTORY,
            processors.MEMORY_LIMITER_FACTORY,
            processors.ATTRIBUTES_FACTORY,
            processors.BATCH_FACTORY,
            exporter_otlp.FACTORY,
            exporter_prometheus.FACTORY,
            exporter_debug.FACTORY,
            extensions.HEALTH_CHECK_FACTORY,
            extensions.ZPAGES_FACTORY,
            extensions.PPROF_FACTORY,
        ]
    )


def validate_config(doc: Any) -> list[str]:
    """Problems with a collector config document for these components (empty when it can run)."""
    return parse_config(doc, components())[1]
