"""What the driver refuses before any worker starts, on the cluster it connected to."""

from __future__ import annotations

from pathlib import Path

import pytest

from depthkd.errors import ConfigError
from depthkd.train.launcher import check_cluster
from tests.train.helpers import tiny_config

pytestmark = pytest.mark.ray


def test_a_resource_no_node_offers_fails_on_the_driver(tmp_path: Path, embedded_ray) -> None:
    cfg = tiny_config(tmp_path, train={"workers": 1, "resources": {"depthkd_gpu_box": 1}})
    with pytest.raises(ConfigError, match=r"asks for 1 'depthkd_gpu_box' per worker, but the"):
        check_cluster(cfg, tmp_path / "shards", "sqlite:///x.db")
    # one node: local paths and a SQLite store are fine there
    check_cluster(tiny_config(tmp_path, train={"workers": 1}), tmp_path, "sqlite:///x.db")


def test_builtin_resources_are_not_custom_resources(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="CPU are set by cpus_per_worker"):
        tiny_config(tmp_path, train={"resources": {"CPU": 2}})
