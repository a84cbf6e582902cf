"""Exact token accounting: the Prometheus rules that make totals exact, and ``amtp-obs usage``.

See docs/accounting.md for the design, its precision bound and its series cost.
"""
