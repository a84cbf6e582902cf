"""The price catalog (``infra/observability/pricing/catalog.yaml``): schema, validation, lookup.

Why one file: a price lives in exactly one place. Prometheus rules are rendered from it
(:mod:`amtp_obs.pricing.rules`) and the SDK reads the same file, shipped as package data, to put
``llm.cost.usd`` on spans. Nothing is downloaded at run time.

Matching is exact: a recorded ``llm.model`` is priced when it equals an entry's ``model`` or one of
its ``aliases`` (for the same provider). No prefix, regex or date-suffix guessing: an unmatched
model is *unpriced* and shown as such, never as free.
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Final, Protocol

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from amtp_obs import contract

CATALOG_FILE: Final = "infra/observability/pricing/catalog.yaml"
"""The catalog in the checkout (the package's ``amtp_obs/pricing/catalog.yaml`` is the same file)."""
PACKAGE_RESOURCE: Final = "catalog.yaml"
PER_TOKENS: Final = 1_000_000
"""Catalog prices are USD per this many tokens."""
PRICE_CLASSES: Final = ("input", "cache_read", "cache_write", "output")
"""Billing classes, in the order the rules and docs list them."""


class CatalogError(ValueError):
    """The catalog is invalid; ``problems`` holds one message per fault (``where: what``)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(p.render() for p in problems))


@dataclass(frozen=True)
class Problem:
    """One fault in the catalog: the key path (``models[3].prices[0].input``) and what is wrong."""

    path: tuple[str | int, ...]
    message: str

    @property
    def where(self) -> str:
        out = ""
        for step in self.path:
            out += f"[{step}]" if isinstance(step, int) else (f".{step}" if out else step)
        return out or "catalog"

    def render(self) -> str:
        return f"{self.where}: {self.message}"


class Price(BaseModel):
    """USD per 1M tokens, in force from ``effective_from`` (00:00 UTC) until the next entry."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    effective_from: date
    input: float = Field(ge=0)
    cache_read: float | None = Field(default=None, ge=0)
    cache_write: float | None = Field(default=None, ge=0)
    output: float = Field(ge=0)

    @field_validator("input", "cache_read", "cache_write", "output", mode="before")
    @classmethod
    def _number(cls, v: Any) -> Any:
        if isinstance(v, bool) or (v is not None and not isinstance(v, int | float)):
            raise ValueError("must be a number (USD per 1M tokens)")
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v

    @field_validator("effective_from", mode="before")
    @classmethod
    def _date(cls, v: Any) -> Any:
        if isinstance(v, datetime) or not isinstance(v, date | str):
            raise ValueError("must be a date (YYYY-MM-DD)")
        return v

    def per_million(self, cls_: str) -> float:
        """The USD per 1M tokens of one billing class, cache classes falling back to input."""
        value = getattr(self, cls_)
        return self.input if value is None else float(value)

    def per_token(self, cls_: str) -> float:
        """USD per token of a class, divided in decimal so 0.15 -> 1.5e-07 exactly as written."""
        return float(Decimal(repr(self.per_million(cls_))) / PER_TOKENS)

    @property
    def starts(self) -> float:
        """Unix seconds of ``effective_from`` 00:00 UTC."""
        return datetime.combine(self.effective_from, datetime.min.time(), tzinfo=UTC).timestamp()


class ModelEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    provider: str = Field(min_length=1)
    model: str = Field(min_length=1)
    aliases: list[str] = Field(default_factory=list)
    source: str = Field(pattern=r"^https?://\S+$")
    prices: list[Price] = Field(min_length=1)

    @property
    def names(self) -> tuple[str, ...]:
        """The model and its aliases: every ``llm.model`` value this entry prices."""
        return (self.model, *self.aliases)

    def price_at(self, when: datetime) -> Price | None:
        """The price in force at ``when`` (None before the first entry's date)."""
        ts = when.timestamp()
        current = None
        for p in self.prices:
            if p.starts <= ts:
                current = p
        return current


class Catalog(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    currency: str = Field(pattern=r"^USD$")
    models: list[ModelEntry] = Field(min_length=1)

    def entry(self, provider: str, model: str) -> ModelEntry | None:
        """The entry pricing ``model`` of ``provider`` by exact name or alias, else None."""
        for e in self.models:
            if e.provider == provider and model in e.names:
                return e
        return None

    def price_at(self, provider: str, model: str, when: datetime) -> Price | None:
        e = self.entry(provider, model)
        return e.price_at(when) if e is not None else None


@dataclass(frozen=True)
class LoadedCatalog:
    """A validated catalog and its version (content hash: what ``llm.cost.catalog`` records)."""

    catalog: Catalog
    version: str


def version_of(text: bytes) -> str:
    return "sha256:" + hashlib.sha256(text).hexdigest()[:12]


def _pydantic_problems(exc: ValidationError) -> Iterator[Problem]:
    for err in exc.errors():
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = "unknown key (allowed: see docs/cost.md)"
        elif err["type"] == "missing":
            msg = "is required"
        elif msg.startswith("Value error, "):
            msg = msg.removeprefix("Value error, ")
        elif err["type"] == "string_pattern_mismatch" and err["loc"][-1] == "source":
            msg = "must be the http(s) URL the price was read from"
        elif err["type"] == "string_pattern_mismatch" and err["loc"][-1] == "currency":
            msg = "must be USD (the only currency the rules and budgets use)"
        elif err["type"] == "greater_than_equal":
            msg = "must be >= 0"
        yield Problem(tuple(err["loc"]), msg)


def problems_of(data: Any) -> tuple[Catalog | None, list[Problem]]:
    """Validate parsed YAML: schema, dates ascending, no duplicate model or alias. All faults, in order."""
    try:
        cat = Catalog.model_validate(data)
    except ValidationError as exc:
        return None, list(_pydantic_problems(exc))
    problems: list[Problem] = []
    seen: dict[tuple[str, str], int] = {}
    for i, e in enumerate(cat.models):
        for j, name in enumerate(e.names):
            where: tuple[str | int, ...] = ("models", i, "model") if j == 0 else ("models", i, "aliases", j - 1)
            key = (e.provider, name)
            if key in seen:
                first = seen[key]
                if first == i:
                    problems.append(Problem(where, f"{name!r} is listed twice in this entry"))
                else:
                    problems.append(Problem(where, f"{e.provider} model {name!r} is already priced by models[{first}]"))
            else:
                seen[key] = i
        for k in range(1, len(e.prices)):
            if e.prices[k].effective_from <= e.prices[k - 1].effective_from:
                problems.append(
                    Problem(
                        ("models", i, "prices", k, "effective_from"),
                        f"{e.prices[k].effective_from} is not after the previous entry's "
                        f"{e.prices[k - 1].effective_from} (dates must ascend)",
                    )
                )
    return (cat if not problems else None), problems


def parse(text: bytes | str) -> LoadedCatalog:
    """Parse and validate catalog text; raises :class:`CatalogError` listing every fault."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        data = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else "catalog"
        raise CatalogError([Problem((where,), f"invalid YAML: {getattr(exc, 'problem', exc)}")]) from None
    cat, problems = problems_of(data)
    if cat is None:
        raise CatalogError(problems)
    return LoadedCatalog(cat, version_of(raw))


def load(path: Path | None = None) -> LoadedCatalog:
    """The catalog at ``path``, or the one shipped with the package (the checkout's file)."""
    if path is not None:
        return parse(path.read_bytes())
    return parse(resources.files(__package__).joinpath(PACKAGE_RESOURCE).read_bytes())


_PACKAGED: LoadedCatalog | None = None


def packaged() -> LoadedCatalog:
    """The package-data catalog, parsed once per process (the SDK prices every call with it)."""
    global _PACKAGED
    if _PACKAGED is None:
        _PACKAGED = load()
    return _PACKAGED


class UsageLike(Protocol):
    """What the SDK's ``Usage`` offers (a protocol, so pricing does not import the SDK)."""

    @property
    def prompt_tokens(self) -> int | None: ...
    @property
    def completion_tokens(self) -> int | None: ...
    @property
    def cache_read_tokens(self) -> int | None: ...
    @property
    def cache_creation_tokens(self) -> int | None: ...


Schedule = tuple[tuple[float, tuple[float, float, float, float]], ...]
"""(start unix seconds, USD per token for input, cache_read, cache_write, output), ascending."""


class Pricer:
    """Prices calls from one catalog. Per (provider, model) the dated per-token prices are worked
    out once, so pricing a call is a dict lookup and four multiplications (the SDK's hot path)."""

    def __init__(self, loaded: LoadedCatalog) -> None:
        self.version = loaded.version
        self._catalog = loaded.catalog
        self._schedules: dict[tuple[str, str], Schedule] = {}

    def _schedule(self, provider: str, model: str) -> Schedule:
        entry = self._catalog.entry(provider, model)
        if entry is None:
            return ()
        return tuple((p.starts, tuple(p.per_token(c) for c in PRICE_CLASSES)) for p in entry.prices)  # type: ignore[misc]

    def cost_usd(
        self,
        provider: str,
        model: str,
        *,
        prompt: int,
        completion: int,
        cache_read: int = 0,
        cache_creation: int = 0,
        when: float,
    ) -> float | None:
        """USD of one call ending at unix time ``when``; None when no price is in force (never 0)."""
        key = (provider, model)
        schedule = self._schedules.get(key)
        if schedule is None:
            if len(self._schedules) > 4096:  # model names from callers: bound the memo
                self._schedules.clear()
            schedule = self._schedules[key] = self._schedule(provider, model)
        current = None
        for start, prices in schedule:
            if start > when:
                break
            current = prices
        if current is None:
            return None
        p_in, p_read, p_write, p_out = current
        uncached = prompt - cache_read - cache_creation
        return uncached * p_in + cache_read * p_read + cache_creation * p_write + completion * p_out

    def span_attributes(self, provider: str, model: str, usage: UsageLike) -> dict[str, float | str]:
        """The SDK's cost hook: ``llm.cost.usd`` and ``llm.cost.catalog`` now, or nothing when unpriced."""
        if usage.prompt_tokens is None or usage.completion_tokens is None:
            return {}
        cost = self.cost_usd(
            provider,
            model,
            prompt=usage.prompt_tokens,
            completion=usage.completion_tokens,
            cache_read=usage.cache_read_tokens or 0,
            cache_creation=usage.cache_creation_tokens or 0,
            when=time.time(),
        )
        if cost is None:
            return {}
        return {contract.LLM_COST_USD: cost, contract.LLM_COST_CATALOG: self.version}


_PRICER: list[Pricer | None] = []


def packaged_pricer() -> Pricer | None:
    """The pricer of the package catalog, built on first use; None (no cost attributes) if the
    packaged catalog cannot be read, which ``amtp-obs check`` and the tests rule out in a release."""
    if not _PRICER:
        try:
            _PRICER.append(Pricer(packaged()))
        except (OSError, CatalogError):
            _PRICER.append(None)
    return _PRICER[0]
