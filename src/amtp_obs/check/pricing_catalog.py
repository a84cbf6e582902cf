"""``amtp-obs check``: the price catalog and budgets are valid, and the rendered pricing rules are current.

Self-contained (listed in amtp_obs.check.registry): one finding per fault, at the catalog line.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date
from pathlib import Path

from amtp_obs.check.framework import Context, Finding, YamlDoc, check, error, require_tool, run_tool
from amtp_obs.check.series import OPEN
from amtp_obs.check.shared import PROMTOOL
from amtp_obs.pricing import budgets as budgets_mod
from amtp_obs.pricing import catalog as catalog_mod
from amtp_obs.pricing import rules as rules_mod
from amtp_obs.pricing.budgets import Budgets
from amtp_obs.pricing.catalog import Catalog, CatalogError, ModelEntry, Price, Problem


def _findings(rel: str, doc: YamlDoc | None, problems: list[Problem]) -> Iterator[Finding]:
    for p in problems:
        line = doc.line(*p.path) if doc is not None else None
        yield error(p.render(), rel, line)


def _doc(ctx: Context, rel: str) -> YamlDoc | None:
    try:
        return ctx.yaml(rel)
    except Exception:  # the parse error itself is reported by the loader below
        return None


@check("pricing", "price catalog and budgets valid; pricing.rules.yml rendered from them and accepted by promtool")
def pricing(ctx: Context) -> Iterator[Finding]:
    ok = True
    for rel, parse in (
        (catalog_mod.CATALOG_FILE, catalog_mod.parse),
        (budgets_mod.BUDGETS_FILE, budgets_mod.parse),
    ):
        try:
            parse(ctx.read_text(rel))
        except CatalogError as exc:
            ok = False
            yield from _findings(rel, _doc(ctx, rel), exc.problems)
    if not ok:
        return
    expected = rules_mod.render_checkout(ctx.root)
    committed = (ctx.root / rules_mod.RULES_FILE).read_text() if ctx.exists(rules_mod.RULES_FILE) else None
    if committed != expected:
        what = "is missing" if committed is None else "is stale (the catalog or budgets changed since it was rendered)"
        yield error(f"{what}: run `amtp-obs pricing render`", rules_mod.RULES_FILE)
        return
    res = run_tool([require_tool(PROMTOOL), "check", "rules", rules_mod.RULES_FILE], cwd=ctx.root)
    if res.returncode != 0:
        yield error(f"promtool check rules failed: {res.output.splitlines()[-1:]}", rules_mod.RULES_FILE)


def evaluable_rule_files(ctx: Context, files: list[Path]) -> list[Path]:
    """``files`` with the pricing rules swapped for a rendering that prices the synthetic series.

    The dashboard's queries are evaluated on synthetic series (every open label ``sample``, time
    starting at 1970), which no real catalog entry prices: this copy prices provider and model
    ``sample`` from 1970 and gives service ``sample`` a budget, so the spend panels are tested
    through the same rule code as production rather than skipped.
    """
    out = []
    for path in files:
        if path.name != rules_mod.RULES_NAME:
            out.append(path)
            continue
        price = Price(effective_from=date(1970, 1, 1), input=1.0, cache_read=0.5, cache_write=1.25, output=2.0)
        entry = ModelEntry(provider=OPEN, model=OPEN, source="https://example.invalid/synthetic", prices=[price])
        synthetic = ctx.scratch / "synthetic-pricing" / path.name
        synthetic.parent.mkdir(exist_ok=True)
        synthetic.write_text(rules_mod.render(Catalog(currency="USD", models=[entry]), Budgets({OPEN: 100.0})))
        out.append(synthetic)
    return out
