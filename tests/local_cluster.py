"""A real local Ray cluster, a pytest plugin of tests/conftest.py: job-submission tests send jobs
to it, and sweep tests run beside it (a second Ray on the machine). The nodes themselves come
from `depthkd.devcluster.ray_nodes`."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from depthkd.devcluster.ray_nodes import (  # noqa: F401  (re-exported for the tests)
    AUTH_MODE,
    RAY,
    VENV_BIN,
    LocalRayCluster,
    ray_head,
)
from tests.services import required

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def local_ray_cluster() -> Iterator[LocalRayCluster]:
    """A head node on free 127.0.0.1 ports with the job server; stopped (its group only) after."""
    with required(ray_head()) as cluster:
        yield cluster
