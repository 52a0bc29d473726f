"""One torch thread per evaluation test.

These tests run metrics on single images; intra-op threads gain nothing there, and on a busy
2-core machine OpenMP's spin-waiting made the suite 3x slower. The previous count is restored.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
