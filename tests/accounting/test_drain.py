"""`down`'s wait for the rules (amtp_obs.accounting.drain): how far a rule group has surely read.

The end-to-end proof is tests/e2e/test_accounting_churn.py (restarts lose nothing); these pin the
arithmetic it rests on, on groups as Prometheus' /api/v1/rules shows them.
"""

from __future__ import annotations

from datetime import UTC, datetime

from amtp_obs.accounting import drain

T = 1_800_000_000.0  # a recent Unix time


def _group(interval: float, queries: list[str], last: float | None = T) -> dict[str, object]:
    when = "0001-01-01T00:00:00Z" if last is None else datetime.fromtimestamp(last, UTC).isoformat()
    return {"interval": interval, "lastEvaluation": when, "rules": [{"query": q} for q in queries]}


def test_read_point_is_the_last_complete_evaluation_minus_the_read_delay() -> None:
    group = _group(5, ["sum(x offset 5s)", "sum(y offset 15s)"])
    assert drain._read_delay(group) == 5.0  # the smallest offset its rules read with
    # lastEvaluation may be an evaluation under way: only the one an interval earlier surely finished.
    assert drain.read_point(group) == T - 5 - 5


def test_a_recorded_sample_tells_the_evaluation_time_exactly() -> None:
    group = _group(5, ["sum(x offset 5s)"])
    assert drain.read_point(group, recorded=T - 1) == T - 1 - 5
    # A sample newer than lastEvaluation may come from the evaluation under way: not trusted.
    assert drain.read_point(group, recorded=T + 1) == T - 5 - 5
    # An older sample than one interval back changes nothing.
    assert drain.read_point(group, recorded=T - 60) == T - 5 - 5


def test_no_evaluation_yet_and_bad_groups_have_no_read_point() -> None:
    assert drain.read_point(_group(5, ["x"], last=None)) is None
    assert drain.read_point({"interval": "not a number", "lastEvaluation": "x"}) is None
    assert drain._read_delay(_group(5, ["sum(x)"])) == 0.0  # no offset: reads as it goes
