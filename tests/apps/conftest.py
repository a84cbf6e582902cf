from __future__ import annotations

from collections.abc import Iterator

import pytest

from amtp_obs.testing.otlp_sink import OtlpSink


@pytest.fixture
def sink() -> Iterator[OtlpSink]:
    with OtlpSink() as s:
        yield s
