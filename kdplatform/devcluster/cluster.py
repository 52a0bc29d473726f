"""Two Ray nodes on one machine that share nothing but what a real cluster shares.

* an S3-compatible server (moto) and `depthkd tracking-server` on a throwaway PostgreSQL, all on
  127.0.0.1;
* a Ray head and a second node (`ray start --address`), each with its own `--temp-dir`, its own
  `$DEPTHKD_HOME` and the custom resource `depthkd_worker: 1` (two workers asking for it land on
  two nodes); both get the AWS environment, as pods get a Secret.

Used by the multi-node tests (`make multinode`) and `depthkd bench nodes`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from depthkd.config.schema import PrepareConfig
from depthkd.data.shards import prepare_shards
from depthkd.data.sources import build_source
from depthkd.data.sources.synthetic import write_synthetic
from depthkd.devcluster import services
from depthkd.devcluster.ray_nodes import LocalRayCluster, ray_env, ray_head, ray_worker_node
from depthkd.environ import patched_environ

BUCKET = "depthkd"
WORKER_RESOURCE = "depthkd_worker"
ROLES = ("head", "worker")


@dataclass(frozen=True)
class DevCluster:
    work: Path
    s3: services.S3Server
    bucket: str  # s3://depthkd
    tracking: services.TrackingServer
    postgres: services.Postgres
    head: LocalRayCluster
    homes: dict[str, Path]  # node role ("head", "worker") → its $DEPTHKD_HOME

    def client_env(self) -> dict[str, str]:
        """Environment of a driver or CLI process on the head: this cluster, S3, the server."""
        return {
            **self.head.env,
            **self.s3.env,
            "RAY_ADDRESS": self.head.gcs_address,
            "MLFLOW_TRACKING_URI": self.tracking.uri,
            "DEPTHKD_HOME": str(self.homes["head"]),
        }


@contextlib.contextmanager
def dev_cluster(work: Path, *, cpus_per_node: int = 2) -> Iterator[DevCluster]:
    """Starts every service and both nodes under `work`; stops exactly those afterwards. While
    the block runs, this process's AWS environment points at the S3 server."""
    homes = {role: work / f"home-{role}" for role in ROLES}
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(services.s3_server(work))
        pg = stack.enter_context(services.postgres(work))
        bucket = s3.create_bucket(BUCKET)
        tracking = stack.enter_context(services.tracking_server(work, pg, s3, bucket))
        env = {role: ray_env(**s3.env, DEPTHKD_HOME=str(home)) for role, home in homes.items()}
        head = stack.enter_context(
            ray_head(
                num_cpus=cpus_per_node,
                resources={WORKER_RESOURCE: 1},
                env=env["head"],
            )
        )
        stack.enter_context(
            ray_worker_node(
                head,
                num_cpus=cpus_per_node,
                resources={WORKER_RESOURCE: 1},
                env=env["worker"],
            )
        )
        stack.enter_context(patched_environ(s3.env))
        yield DevCluster(work, s3, bucket, tracking, pg, head, homes)


def synthetic_shards(
    work: Path, *, n: int = 40, size: tuple[int, int] = (64, 96), shard_size: int = 3
) -> Path:
    """NYU-like synthetic train/val/test shards of `shard_size` samples under `work/shards`
    (small shards: every rank gets some of each split to evaluate)."""
    raw, out = work / "raw", work / "shards"
    height, width = size
    write_synthetic("nyu", raw, n, 0, val_fraction=0.2, height=height, width=width, progress=False)
    for split in ("train", "val", "test"):
        cfg = PrepareConfig(
            dataset="nyu",
            root=raw / "sync",
            split_file=raw / "splits" / f"{split}.txt",
            split=split,
            out=out,
            shard_size=shard_size,
            workers=1,
        )
        prepare_shards(cfg, build_source(cfg), progress=False)
    return out
