"""The price catalog: the committed file, the package copy, validation with one message per fault."""

from __future__ import annotations

import copy
import shutil
import subprocess
import sys
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path

import pytest
import yaml

from amtp_obs import contract, demo
from amtp_obs.pricing import budgets, catalog, rules
from amtp_obs.pricing.catalog import CatalogError

REPO = Path(__file__).resolve().parents[2]


def test_package_data_is_the_checkout_catalog() -> None:
    packaged = resources.files("amtp_obs.pricing").joinpath("catalog.yaml").read_bytes()
    assert packaged == (REPO / catalog.CATALOG_FILE).read_bytes()
    assert catalog.packaged().version == catalog.version_of(packaged)


def test_committed_catalog_is_valid_and_covers_the_vendors() -> None:
    cat = catalog.load(REPO / catalog.CATALOG_FILE).catalog
    assert len(cat.models) >= 25
    assert {e.provider for e in cat.models} == {contract.PROVIDER_OPENAI, contract.PROVIDER_ANTHROPIC}
    for e in cat.models:
        assert e.source.startswith("https://"), e.model
        assert all(p.effective_from.year >= 2023 for p in e.prices), e.model
    now = datetime.now(UTC)
    assert cat.price_at(contract.VERIFY_PROVIDER, contract.VERIFY_MODEL, now) is not None
    for spec in demo.SERVICES.values():
        provider = {"openai": contract.PROVIDER_OPENAI, "anthropic": contract.PROVIDER_ANTHROPIC}.get(spec["kind"])
        if provider is None:
            continue  # the in-process router's models are deliberately unpriced
        for model in spec["models"]:
            assert cat.price_at(provider, model, now) is not None, model


def test_aliases_match_exactly_and_prices_follow_dates() -> None:
    cat = catalog.load(REPO / catalog.CATALOG_FILE).catalog
    assert cat.entry("openai", "gpt-4o-mini-2024-07-18") is cat.entry("openai", "gpt-4o-mini")
    assert cat.entry("openai", "gpt-4o-mini-2099-01-01") is None  # a date suffix is no alias
    assert cat.entry("anthropic", "gpt-4o-mini") is None  # the provider is part of the key
    o3 = cat.entry("openai", "o3")
    assert o3 is not None and len(o3.prices) == 2
    before = o3.price_at(datetime(2025, 6, 9, 23, 59, 59, tzinfo=UTC))
    after = o3.price_at(datetime(2025, 6, 10, tzinfo=UTC))
    assert before is not None and after is not None and before.input > after.input
    assert o3.price_at(datetime(2025, 4, 15, tzinfo=UTC)) is None


GOOD = """
currency: USD
models:
  - provider: openai
    model: a
    aliases: [a-1]
    source: https://example.invalid/a
    prices:
      - {effective_from: 2024-01-01, input: 1, output: 2}
      - {effective_from: 2024-02-01, input: 1, cache_read: 0.5, output: 2}
"""


@pytest.mark.parametrize(
    ("bad", "where", "message"),
    [
        ("input: 1, output: 2}\n      - {effective_from: 2024-02-01", "models[0].prices[1].effective_from", "ascend"),
        ("cache_read: 0.5", "models[0].prices[1].cache_read", ">= 0"),
        ("source: https://example.invalid/a", "models[0].source", "URL"),
        ("aliases: [a-1]", "models[0].aliases[0]", "listed twice"),
        ("currency: USD", "currency", "USD"),
        ("input: 1, output: 2}", "models[0].prices[0].price", "unknown key"),
        ("input: 1, output: 2}", "models[0].prices[0].output", "required"),
        ("input: 1, output: 2}", "models[0].prices[0].input", "number"),
    ],
)
def test_each_fault_gets_one_clear_message(bad: str, where: str, message: str) -> None:
    replacements = {
        "models[0].prices[1].effective_from": GOOD.replace("2024-02-01", "2024-01-01"),
        "models[0].prices[1].cache_read": GOOD.replace("cache_read: 0.5", "cache_read: -0.5"),
        "models[0].source": GOOD.replace("https://example.invalid/a", "somewhere"),
        "models[0].aliases[0]": GOOD.replace("aliases: [a-1]", "aliases: [a]"),
        "currency": GOOD.replace("currency: USD", "currency: EUR"),
        "models[0].prices[0].price": GOOD.replace("input: 1, output: 2}", "input: 1, output: 2, price: 3}"),
        "models[0].prices[0].output": GOOD.replace("input: 1, output: 2}", "input: 1}"),
        "models[0].prices[0].input": GOOD.replace("input: 1, output: 2}", "input: cheap, output: 2}"),
    }
    with pytest.raises(CatalogError) as err:
        catalog.parse(replacements[where])
    problems = err.value.problems
    assert len(problems) == 1, [p.render() for p in problems]
    assert problems[0].where == where
    assert message in problems[0].message


def test_duplicates_across_entries_and_every_fault_listed() -> None:
    doc = yaml.safe_load(GOOD)
    doc["models"].append({**copy.deepcopy(doc["models"][0]), "model": "b", "aliases": ["a-1"]})
    doc["models"].append({**copy.deepcopy(doc["models"][0]), "model": "a", "aliases": []})
    doc["models"][0]["prices"][0]["output"] = -1
    with pytest.raises(CatalogError) as err:
        catalog.parse(yaml.safe_dump(doc))
    # pydantic faults come first and stop the cross-entry checks; fix them and the rest appear.
    assert [p.where for p in err.value.problems] == ["models[0].prices[0].output"]
    doc["models"][0]["prices"][0]["output"] = 2
    with pytest.raises(CatalogError) as err:
        catalog.parse(yaml.safe_dump(doc))
    assert [p.where for p in err.value.problems] == ["models[1].aliases[0]", "models[2].model"]


def test_budgets_validation() -> None:
    assert budgets.parse("currency: USD\nmonthly_usd:\n  svc: 10\n").services == {"svc": 10.0}
    with pytest.raises(CatalogError) as err:
        budgets.parse("currency: USD\nmonthly_usd:\n  svc: -1\n  other: lots\n")
    assert [p.where for p in err.value.problems] == ["monthly_usd.svc", "monthly_usd.other"]


def _copy(tmp_path: Path) -> Path:
    for rel in ("docker-compose.observability.yml", ".env.example", "infra"):
        src = REPO / rel
        if src.is_dir():
            shutil.copytree(src, tmp_path / rel)
        else:
            shutil.copy2(src, tmp_path / rel)
    return tmp_path


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "amtp_obs.cli", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        env={"PATH": "/usr/bin:/bin"},
    )


def test_committed_rules_are_rendered_from_the_catalog() -> None:
    assert (REPO / rules.RULES_FILE).read_text() == rules.render_checkout(REPO)


def test_check_fails_on_a_stale_render_and_on_a_bad_catalog(tmp_path: Path) -> None:
    root = _copy(tmp_path)
    ok = _cli("check", "--only", "pricing", "--project-dir", str(root), cwd=root)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    cat = root / catalog.CATALOG_FILE
    cat.write_text(cat.read_text().replace("input: 0.15\n", "input: 0.16\n", 1))
    stale = _cli("check", "--only", "pricing", "--project-dir", str(root), cwd=root)
    assert stale.returncode == 1 and "is stale" in stale.stdout and "amtp-obs pricing render" in stale.stdout
    assert _cli("pricing", "render", "--check", "--project-dir", str(root), cwd=root).returncode == 1
    assert _cli("pricing", "render", "--project-dir", str(root), cwd=root).returncode == 0
    assert _cli("check", "--only", "pricing", "--project-dir", str(root), cwd=root).returncode == 0
    cat.write_text(cat.read_text().replace("output: 0.60", "output: -0.60", 1))
    bad = _cli("check", "--only", "pricing", "--project-dir", str(root), cwd=root)
    assert bad.returncode == 1
    line = next(x for x in bad.stdout.splitlines() if "must be >= 0" in x)
    assert line.startswith(f"{catalog.CATALOG_FILE}:")
    n = int(line.split(":")[1])
    assert "output: -0.60" in cat.read_text().splitlines()[n - 1]
    assert "Traceback" not in bad.stdout + bad.stderr


def test_embedded_stack_prices_at_its_cadence(tmp_path: Path) -> None:
    """The embedded Prometheus gets the pricing rules re-rendered at its collection interval, so cost
    follows the accounting increments within seconds; the production file is untouched."""
    from amtp_obs.project import SERVICE_PROMETHEUS, Project
    from amtp_obs.stack import cadence
    from amtp_obs.stack.planning import plan
    from amtp_obs.stack.state import Layout

    project = Project(REPO, {})
    interval = cadence.interval_from(project.variables)
    assert interval != rules.STEP
    cfg = plan(project, Layout(tmp_path)).get(SERVICE_PROMETHEUS).config_path
    assert cfg is not None
    files = [Path(f) for f in yaml.safe_load(cfg.read_text())["rule_files"]]
    [priced] = [f for f in files if f.name == rules.RULES_NAME]
    assert priced.read_text() == rules.render_checkout(REPO, step=interval)
    groups = {g["name"]: g["interval"] for g in yaml.safe_load(priced.read_text())["groups"]}
    assert groups[rules.GROUP_PRICING] == interval
    assert (REPO / rules.RULES_FILE).read_text() == rules.render_checkout(REPO)


def test_committed_budgets_cover_the_demo_and_the_verify_probe() -> None:
    """make run shows Budget Used for the demo services; verify's panel check needs its own budget."""
    services = budgets.load(REPO / budgets.BUDGETS_FILE).services
    assert set(demo.SERVICES) | {contract.VERIFY_SERVICE_NAME} <= set(services)
