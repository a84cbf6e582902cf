"""Component model of the collector: ids, kinds, factories, consumers and errors.

Mirrors the OpenTelemetry Collector: every component is built by a factory for its ``type`` (the
factories are listed in :mod:`amtp_obs.collector.components`); an id is ``type`` or ``type/name``;
each factory owns a pydantic model of its config (``extra="forbid"``, keys as in collector 0.100.0)
so the real collector's YAML drives this one.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from amtp_obs.collector.signals import Signal
    from amtp_obs.collector.telemetry import SelfTelemetry

RECEIVER = "receiver"
PROCESSOR = "processor"
EXPORTER = "exporter"
EXTENSION = "extension"
KIND_SECTIONS = {
    RECEIVER: "receivers",
    PROCESSOR: "processors",
    EXPORTER: "exporters",
    EXTENSION: "extensions",
}

_TYPE_RE = re.compile(r"^[a-zA-Z][0-9a-zA-Z_]{0,62}$")


class ConfigError(Exception):
    """The configuration is invalid; ``problems`` lists every finding, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("invalid collector configuration:\n  " + "\n  ".join(problems))
        self.problems = problems


class ConsumerError(Exception):
    """Data was not accepted downstream; ``permanent`` errors must not be retried by the sender."""

    permanent: bool = False


class DataRefusedError(ConsumerError):
    """Temporary refusal (memory limiter): the receiver answers UNAVAILABLE / 503 so clients retry."""


class PermanentError(ConsumerError):
    permanent = True


class StrictModel(BaseModel):
    """Config model base: an unknown key is an error, as in the collector's mapstructure decoding."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, arbitrary_types_allowed=True)


@dataclass(frozen=True)
class ComponentID:
    type: str
    name: str = ""

    @classmethod
    def parse(cls, text: object) -> ComponentID:
        if not isinstance(text, str) or not text:
            raise ValueError(f"component id must be a non-empty string, got {text!r}")
        type_, _, name = text.partition("/")
        if not _TYPE_RE.match(type_):
            raise ValueError(f"invalid component type {type_!r} in id {text!r}")
        if "/" in text and (not name or any(c.isspace() for c in name)):
            raise ValueError(f"invalid component name in id {text!r}")
        return cls(type_, name)

    def __str__(self) -> str:
        return f"{self.type}/{self.name}" if self.name else self.type


class Consumer(Protocol):
    """Next hop of a pipeline. Raises :class:`ConsumerError` when the data is not accepted."""

    async def consume(self, signal: Signal, request: Any) -> None: ...


class Host:
    """What components see of the running collector: telemetry, listeners, pipeline layout."""

    def __init__(self, telemetry: SelfTelemetry) -> None:
        self.telemetry = telemetry
        self.listeners: dict[tuple[str, str], tuple[str, int]] = {}
        self.ready = False
        self.started_at = 0.0
        self.components: dict[tuple[str, str], Component] = {}
        self.pipelines: dict[str, dict[str, list[str]]] = {}
        self.extensions: list[str] = []

    def add_listener(self, component: str, protocol: str, address: tuple[str, int]) -> None:
        self.listeners[(component, protocol)] = address


class Component:
    """Base of every built component: ``start``/``shutdown`` are no-ops unless overridden."""

    kind: ClassVar[str] = ""
    counts_sent: ClassVar[bool] = False
    """Exporters that count ``otelcol_exporter_sent_*`` themselves (queue/retry); others are wrapped."""

    def __init__(self, cid: ComponentID, config: Any) -> None:
        self.id = cid
        self.config = config
        self.signals: set[str] = set()
        """Pipeline types this instance serves (set while the service wires pipelines)."""

    @property
    def label(self) -> str:
        return f"{KIND_SECTIONS[self.kind]}::{self.id}"

    async def start(self, host: Host) -> None:
        return None

    async def shutdown(self) -> None:
        return None


@dataclass
class Factory:
    """Builds one component type; ``signals`` lists the pipeline types it supports."""

    kind: str
    type: str
    config_model: type[StrictModel]
    create: Callable[[ComponentID, Any], Component]
    signals: tuple[str, ...] = ("traces", "metrics", "logs")
    unsupported: Callable[[Any], list[str]] = field(default=lambda cfg: [])
    """Settings valid in the real collector that this one cannot honour (start-up error)."""


class Factories:
    """The component factories one collector is built from, by kind and type (upstream's ``otelcol.Factories``).

    Made in one place, :func:`amtp_obs.collector.components.components`, and handed to config
    parsing and to the service: nothing registers itself on import.
    """

    def __init__(self, factories: Iterable[Factory]) -> None:
        self._by_key: dict[tuple[str, str], Factory] = {}
        for f in factories:
            if (f.kind, f.type) in self._by_key:
                raise ValueError(f"duplicate {f.kind} factory for type {f.type!r}")
            self._by_key[(f.kind, f.type)] = f

    def get(self, kind: str, type_: str) -> Factory | None:
        return self._by_key.get((kind, type_))

    def types(self, kind: str) -> list[str]:
        """The component types of ``kind`` these factories build, sorted."""
        return sorted(t for k, t in self._by_key if k == kind)
