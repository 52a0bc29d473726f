"""The pass on two Ray nodes (dev-cluster style: `ray start` head + worker on this machine, 1 CPU
each): one labelling actor per node by default, and both nodes label frames."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray

from kdplatform.data.shards import verify_shards
from kdplatform.devcluster.ray_nodes import AUTH_MODE, ray_env, ray_head, ray_worker_node
from kdplatform.pseudolabel import label_shards
from tests.pseudolabel.conftest import SPLIT, save_teacher, write_rgb_shards
from tests.services import required

pytestmark = [pytest.mark.ray, pytest.mark.multiproc]


def test_actors_run_on_both_nodes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = write_rgb_shards(tmp_path / "source", shards=4, per_shard=6, sizes=[(32, 48)])
    teacher = save_teacher(tmp_path / "teacher.pt")
    monkeypatch.setenv("RAY_AUTH_MODE", AUTH_MODE)  # as the nodes were started
    with (
        required(ray_head(num_cpus=1)) as head,
        ray_worker_node(head, num_cpus=1, env=ray_env()),
    ):
        ray.init(address=head.gcs_address, log_to_driver=False)
        try:
            nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
            report = label_shards(
                teacher, source, SPLIT, tmp_path / "out", batch_size=2, progress=False
            )
        finally:
            ray.shutdown()
    assert report.actors == 2 and report.threads == 1
    assert set(report.nodes) == nodes and len(nodes) == 2
    assert sum(report.nodes.values()) == 24
    assert verify_shards(tmp_path / "out", progress=False).ok
