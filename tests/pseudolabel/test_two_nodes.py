"""The pass on two Ray nodes (dev-cluster style: `ray start` head + worker on this machine, 1 CPU
each): one labelling actor per node by default, and both nodes label frames.

The driver runs in a fresh process: after an earlier `ray.shutdown()` in the same process (the
other tests' embedded Ray), Ray Data 2.60 sometimes lost a new actor pool's first actor at
start-up ("all references to the actor were removed"), which a real driver never meets.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from depthkd.data.shards import verify_shards
from depthkd.devcluster.ray_nodes import AUTH_MODE, ray_env, ray_head, ray_worker_node
from tests.local_cluster import REPO_ROOT
from tests.pseudolabel.conftest import save_teacher, write_rgb_shards
from tests.services import required

pytestmark = [pytest.mark.ray, pytest.mark.multiproc]

DRIVER = """
import json, sys
from pathlib import Path
import ray
from depthkd.pseudolabel import label_shards

teacher, source, out, address = sys.argv[1:5]
ray.init(address=address, log_to_driver=False)
nodes = sorted(n["NodeID"] for n in ray.nodes() if n["Alive"])
report = label_shards(teacher, source, "unlabeled", Path(out), batch_size=2, progress=False)
print(json.dumps({"cluster": nodes, **report.to_dict()}))
"""


def test_actors_run_on_both_nodes(tmp_path: Path) -> None:
    source = write_rgb_shards(tmp_path / "source", shards=4, per_shard=6, sizes=[(32, 48)])
    teacher = save_teacher(tmp_path / "teacher.pt")
    with (
        required(ray_head(num_cpus=1)) as head,
        ray_worker_node(head, num_cpus=1, env=ray_env()),
    ):
        args = [str(teacher), str(source), str(tmp_path / "out"), head.gcs_address]
        done = subprocess.run(
            [sys.executable, "-c", DRIVER, *args],
            cwd=REPO_ROOT,
            env={**os.environ, "RAY_AUTH_MODE": AUTH_MODE, "RAY_USAGE_STATS_ENABLED": "0"},
            capture_output=True,
            text=True,
            timeout=600,
        )
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["actors"] == 2 and report["threads"] == 1
    assert sorted(report["nodes"]) == report["cluster"] and len(report["cluster"]) == 2
    assert sum(report["nodes"].values()) == 24
    assert verify_shards(tmp_path / "out", progress=False).ok
