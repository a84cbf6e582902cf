"""The check modules of ``amtp-obs check``, listed here and nowhere else, and the checks they define.

Order: the real validators first, then the cross-file rules no tool sees. A new check module is
added to :data:`MODULES`; a new check inside a listed module is found by its ``@check`` mark.
"""

from __future__ import annotations

from types import ModuleType

from amtp_obs.check import accounting, alerts, deployment, facts, pricing_catalog, queries, validators
from amtp_obs.check.framework import CheckSpec, spec_of

MODULES: tuple[ModuleType, ...] = (validators, queries, alerts, deployment, facts, accounting, pricing_catalog)


def collect(modules: tuple[ModuleType, ...] = MODULES) -> dict[str, CheckSpec]:
    """name -> spec of every check in ``modules``, in module order then definition order."""
    found: dict[str, CheckSpec] = {}
    for module in modules:
        for obj in vars(module).values():
            spec = spec_of(obj)
            if spec is None or getattr(obj, "__module__", None) != module.__name__:
                continue
            if spec.name in found:
                raise ValueError(f"duplicate check name {spec.name!r} ({module.__name__})")
            found[spec.name] = spec
    return found


REGISTRY: dict[str, CheckSpec] = collect()
