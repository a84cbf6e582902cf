"""The collector's own metrics, named as collector 0.100.0 exposes them on ``:8888/metrics``.

0.100.0 uses the OTel Go Prometheus exporter without unit or counter suffixes and with the
``otelcol`` namespace, so counters have no ``_total`` (research collector.md §1). Values live in
a registry owned by one collector instance (never a process-global one).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable
from typing import Final

from amtp_obs.collector.expfmt import Labels, render_family

RECEIVER_ACCEPTED: Final = "otelcol_receiver_accepted_{noun}"
RECEIVER_REFUSED: Final = "otelcol_receiver_refused_{noun}"
PROCESSOR_ACCEPTED: Final = "otelcol_processor_accepted_{noun}"
PROCESSOR_REFUSED: Final = "otelcol_processor_refused_{noun}"
PROCESSOR_DROPPED: Final = "otelcol_processor_dropped_{noun}"
EXPORTER_SENT: Final = "otelcol_exporter_sent_{noun}"
EXPORTER_SEND_FAILED: Final = "otelcol_exporter_send_failed_{noun}"
EXPORTER_ENQUEUE_FAILED: Final = "otelcol_exporter_enqueue_failed_{noun}"
EXPORTER_QUEUE_SIZE: Final = "otelcol_exporter_queue_size"
EXPORTER_QUEUE_CAPACITY: Final = "otelcol_exporter_queue_capacity"
BATCH_SIZE_TRIGGER: Final = "otelcol_processor_batch_batch_size_trigger_send"
BATCH_TIMEOUT_TRIGGER: Final = "otelcol_processor_batch_timeout_trigger_send"
PROCESS_UPTIME: Final = "otelcol_process_uptime"
PROCESS_MEMORY_RSS: Final = "otelcol_process_memory_rss"
PROCESS_CPU_SECONDS: Final = "otelcol_process_cpu_seconds"

SERVICE_NAME: Final = "amtp-obs-collector"
"""Our ``service_name`` constant label (the real binary says ``otelcol-contrib``)."""

_HELP: dict[str, str] = {
    "otelcol_receiver_accepted": "Number of {noun} successfully pushed into the pipeline.",
    "otelcol_receiver_refused": "Number of {noun} that could not be pushed into the pipeline.",
    "otelcol_processor_accepted": "Number of {noun} successfully pushed into the next component in the pipeline.",
    "otelcol_processor_refused": "Number of {noun} that were rejected by the next component in the pipeline.",
    "otelcol_processor_dropped": "Number of {noun} that were dropped.",
    "otelcol_exporter_sent": "Number of {noun} successfully sent to destination.",
    "otelcol_exporter_send_failed": "Number of {noun} in failed attempts to send to destination.",
    "otelcol_exporter_enqueue_failed": "Number of {noun} failed to be added to the sending queue.",
    EXPORTER_QUEUE_SIZE: "Current size of the retry queue (in batches)",
    EXPORTER_QUEUE_CAPACITY: "Fixed capacity of the retry queue (in batches)",
    BATCH_SIZE_TRIGGER: "Number of times the batch was sent due to a size trigger",
    BATCH_TIMEOUT_TRIGGER: "Number of times the batch was sent due to a timeout trigger",
    PROCESS_UPTIME: "Uptime of the process",
    PROCESS_MEMORY_RSS: "Total physical memory (resident set size)",
    PROCESS_CPU_SECONDS: "Total CPU user and system time in seconds",
}

_GAUGES = {EXPORTER_QUEUE_SIZE, EXPORTER_QUEUE_CAPACITY, PROCESS_MEMORY_RSS}


def metric_name(template: str, noun: str) -> str:
    return template.format(noun=noun)


def _help_for(name: str) -> str:
    if name in _HELP:
        return _HELP[name]
    for prefix, text in _HELP.items():
        if name.startswith(prefix + "_"):
            return text.format(noun=name[len(prefix) + 1 :].replace("_", " "))
    return ""


def rss_bytes() -> int:
    """This process's resident set size from ``/proc/self/statm`` (0 where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


class SelfTelemetry:
    """Counters and gauges of one collector; rendered in Prometheus text format."""

    def __init__(self, level: str = "normal") -> None:
        self.level = level
        self.started = time.time()
        self.instance_id = str(uuid.uuid4())
        self.const_labels: Labels = (
            ("service_instance_id", self.instance_id),
            ("service_name", SERVICE_NAME),
            ("service_version", _version()),
        )
        self._values: dict[str, dict[Labels, float]] = {}
        self._callbacks: list[Callable[[], None]] = []

    def add(self, name: str, value: float, **labels: str) -> None:
        series = self._values.setdefault(name, {})
        key = tuple(sorted(labels.items()))
        series[key] = series.get(key, 0.0) + value

    def set(self, name: str, value: float, **labels: str) -> None:
        self._values.setdefault(name, {})[tuple(sorted(labels.items()))] = float(value)

    def get(self, name: str, **labels: str) -> float:
        """Sum of the series of ``name`` whose labels include ``labels`` (0 when none)."""
        self._refresh()
        want = set(labels.items())
        return sum(v for k, v in self._values.get(name, {}).items() if want <= set(k))

    def on_collect(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` before every read (gauges that are sampled, like queue size)."""
        self._callbacks.append(callback)

    def _refresh(self) -> None:
        self.set(PROCESS_UPTIME, time.time() - self.started)
        self.set(PROCESS_MEMORY_RSS, rss_bytes())
        t = os.times()
        self.set(PROCESS_CPU_SECONDS, t.user + t.system)
        for cb in self._callbacks:
            cb()

    def snapshot(self) -> dict[str, dict[Labels, float]]:
        self._refresh()
        return {name: dict(series) for name, series in self._values.items()}

    def render(self) -> str:
        self._refresh()
        out = []
        for name in sorted(self._values):
            series = self._values[name]
            samples = [
                (name, tuple(sorted(labels + self.const_labels)), value, None)
                for labels, value in sorted(series.items())
            ]
            mtype = "gauge" if name in _GAUGES else "counter"
            out.append(render_family(name, mtype, _help_for(name), samples))
        return "".join(out)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("amtp-obs")
    except Exception:
        return "0.0.0"
