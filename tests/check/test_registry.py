"""The check registry is built from the modules it lists, not from whatever happened to be imported."""

from __future__ import annotations

import importlib
import pkgutil
import types

import pytest

import amtp_obs.check
from amtp_obs.check import registry
from amtp_obs.check.framework import Context, check, spec_of


def test_every_marked_check_lives_in_a_listed_module() -> None:
    listed = {m.__name__ for m in registry.MODULES}
    for info in pkgutil.iter_modules(amtp_obs.check.__path__, "amtp_obs.check."):
        module = importlib.import_module(info.name)
        marked = [n for n, obj in vars(module).items() if spec_of(obj) and obj.__module__ == info.name]
        if marked:
            assert info.name in listed, f"{info.name} defines checks {marked} but registry.MODULES omits it"


def test_registry_holds_each_listed_check_once_in_module_order() -> None:
    names = list(registry.REGISTRY)
    assert len(names) == len(set(names))
    first_of = [next(i for i, n in enumerate(names) if registry.REGISTRY[n].func.__module__ == m.__name__)
                for m in registry.MODULES]  # fmt: skip
    assert first_of == sorted(first_of)
    assert names[0] == "promtool-config"  # the real validators run first


def _module(name: str, *checks: tuple[str, str]) -> types.ModuleType:
    module = types.ModuleType(name)
    for check_name, func_name in checks:

        def func(ctx: Context) -> list[object]:
            return []

        func.__module__ = name
        setattr(module, func_name, check(check_name, "a test check")(func))
    return module


def test_collect_rejects_a_duplicate_name_and_ignores_imported_checks() -> None:
    a = _module("mod_a", ("one", "first"), ("two", "second"))
    assert list(registry.collect((a,))) == ["one", "two"]
    b = _module("mod_b", ("one", "again"))
    with pytest.raises(ValueError, match="duplicate check name 'one'"):
        registry.collect((a, b))
    c = _module("mod_c", ("three", "own"))
    c.imported = a.first  # a check imported from another module is that module's, not this one's
    assert list(registry.collect((c,))) == ["three"]
