"""LLM spend in USD: the price catalog, the Prometheus pricing rules rendered from it, budgets.

See docs/cost.md. ``catalog.yaml`` in this package is a symlink to
``infra/observability/pricing/catalog.yaml`` (one file; a wheel build copies its content).
"""
