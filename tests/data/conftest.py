"""The data tests build every bundled set themselves: no relocated copies from the session cache
(tests/conftest.py), since generating, preparing and verifying them is what they test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _bundled_from_cache() -> Iterator[None]:
    yield
