"""The dev cluster (`depthkd.devcluster.cluster`) for the multi-node tests: two Ray nodes that
share only an S3 server and a tracking server on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from depthkd.devcluster.cluster import DevCluster, dev_cluster
from tests.services import required


@pytest.fixture(scope="module")
def scaleout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevCluster]:
    with required(dev_cluster(tmp_path_factory.mktemp("scaleout"))) as cluster:
        yield cluster
