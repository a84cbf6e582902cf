"""The one polling helper tests and benchmarks wait with."""

from __future__ import annotations

import itertools

from amtp_obs.testing.poll import eventually, last_value


def test_returns_the_first_truthy_value() -> None:
    counter = itertools.count()
    assert eventually(lambda: [n for n in [next(counter)] if n >= 3], timeout=5, interval=0) == [3]


def test_gives_up_with_none_after_trying_at_the_deadline() -> None:
    calls = []
    assert eventually(lambda: calls.append(1), timeout=0.05, interval=0.01) is None
    assert len(calls) >= 2


def test_ignored_errors_count_as_not_yet_and_others_propagate() -> None:
    attempts = itertools.count()

    def flaky() -> bool:
        if next(attempts) < 2:
            raise ConnectionError("still starting")
        return True

    assert eventually(flaky, timeout=5, interval=0, ignore=(ConnectionError,)) is True
    try:
        eventually(lambda: 1 / 0, timeout=1)
    except ZeroDivisionError:
        pass
    else:
        raise AssertionError("an error not in ignore must propagate")
    assert last_value(lambda: 1 / 0).startswith("ZeroDivisionError")
