"""Every test here starts from a clean SDK (no OTEL_* variables, no global providers)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _clean_sdk(clean_sdk: None) -> Iterator[None]:
    yield
