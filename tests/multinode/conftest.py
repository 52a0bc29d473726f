"""A two-node cluster on one machine whose nodes share nothing but what a real cluster shares.

* an S3-compatible server (moto) and an `mlflow server` on a throwaway PostgreSQL, on 127.0.0.1;
* a Ray head and a second node (`ray start --address`), each with its own `--temp-dir`, its own
  `$DEPTHKD_HOME` and a custom resource (`depthkd_worker: 1`, so that two workers asking for it
  land on two nodes); both get the AWS environment, as pods get a Secret.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest

from tests import services
from tests.local_cluster import LocalRayCluster, ray_env, ray_head, ray_worker_node
from tests.services import required

BUCKET = "depthkd"
WORKER_RESOURCE = "depthkd_worker"


@dataclass(frozen=True)
class Scaleout:
    work: Path
    s3: services.S3Server
    bucket: str  # s3://depthkd
    tracking: services.TrackingServer
    postgres: services.Postgres
    head: LocalRayCluster
    homes: dict[str, Path]  # node role ("head", "worker") → its $DEPTHKD_HOME

    def client_env(self, home: Path) -> dict[str, str]:
        """Environment of a driver or CLI process on the head: this cluster, S3, the server."""
        return {
            **self.head.env,
            **self.s3.env,
            "RAY_ADDRESS": self.head.gcs_address,
            "MLFLOW_TRACKING_URI": self.tracking.uri,
            "DEPTHKD_HOME": str(home),
        }


@pytest.fixture(scope="module")
def scaleout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Scaleout]:
    work = tmp_path_factory.mktemp("scaleout")
    homes = {role: work / f"home-{role}" for role in ("head", "worker")}
    with contextlib.ExitStack() as stack:
        s3 = stack.enter_context(services.s3_server(work))
        pg = stack.enter_context(services.postgres(work))
        bucket = s3.create_bucket(BUCKET)
        tracking = stack.enter_context(services.tracking_server(work, pg, s3, bucket))
        node_env = {role: ray_env(**s3.env, DEPTHKD_HOME=str(home)) for role, home in homes.items()}
        head = stack.enter_context(
            required(ray_head(resources={WORKER_RESOURCE: 1, "node_head": 1}, env=node_env["head"]))
        )
        worker = ray_worker_node(
            head, resources={WORKER_RESOURCE: 1, "node_worker": 1}, env=node_env["worker"]
        )
        stack.enter_context(required(worker))
        # in-process S3 calls of the tests reach the same server
        stack.enter_context(mock.patch.dict(os.environ, s3.env))
        yield Scaleout(work, s3, bucket, tracking, pg, head, homes)
