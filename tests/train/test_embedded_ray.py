"""The embedded Ray a job starts when no cluster is given, with a second Ray on the machine.

Ray's own processes must find their cluster through the State API without an address (Ray
Train's placement-group clean-up does, for every Tune trial stopped early); with two Ray
instances on one machine that lookup used to fail and a sweep's trials lost their CPUs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.local_cluster import REPO_ROOT

pytestmark = [pytest.mark.ray, pytest.mark.multiproc]

PROBE = """
import json, os
import ray
from ray.util.state import list_actors
from depthkd.raycluster import ensure_ray

label = ensure_ray(log_to_driver=False)

@ray.remote(num_cpus=0)
class Probe:
    def look(self):
        # what Ray Train's PlacementGroupCleaner does: the State API with no address given
        return os.environ.get("RAY_ADDRESS"), len(list_actors(filters=[("state", "=", "ALIVE")]))

probe = Probe.remote()
address, alive = ray.get(probe.look.remote())
print(json.dumps({
    "label": label,
    "gcs": ray.get_runtime_context().gcs_address,
    "worker_address": address,
    "alive": alive,
    "driver_env": os.environ.get("RAY_ADDRESS"),
}))
"""


def test_embedded_ray_processes_find_their_own_cluster_beside_another(local_ray_cluster) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_GCS_SERVER_PORT")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE],
        cwd=REPO_ROOT,
        env=env | {"RAY_USAGE_STATS_ENABLED": "0"},
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["label"].startswith("embedded Ray")
    assert seen["gcs"] != local_ray_cluster.gcs_address  # its own, not the other cluster
    # Ray's processes know which one is theirs (its GCS port, on loopback)
    assert seen["worker_address"] == f"127.0.0.1:{seen['gcs'].rsplit(':', 1)[1]}"
    assert seen["alive"] >= 1  # and the State API answers there (the probe actor itself)
    assert seen["driver_env"] is None  # the driver's environment is as it was
