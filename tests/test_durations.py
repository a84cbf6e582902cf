"""One duration grammar for the collector's, Tempo's and Prometheus' config values."""

from __future__ import annotations

import pytest

from amtp_obs.durations import parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("10s", 10),
        ("30m", 1800),
        ("72h", 259200),
        ("1h30m", 5400),
        ("500ms", 0.5),
        ("250us", 0.00025),
        ("1.5s", 1.5),
        ("15d", 1296000),
        ("1w", 604800),
        ("-2m", -120),
        ("0", 0),
        (" 5s ", 5),
    ],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "5", "5 seconds", "1x", "s", "1h-5m"])
def test_bad_durations_name_the_value(text: str) -> None:
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration(text)


def test_go_grammar_has_no_days() -> None:
    # Go's time.ParseDuration (the collector) refuses 'd'; Prometheus and Tempo's retention accept it.
    with pytest.raises(ValueError, match="invalid duration '1d'"):
        parse_duration("1d", long_units=False)
    assert parse_duration("1d") == 86400
