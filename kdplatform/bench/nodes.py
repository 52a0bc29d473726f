"""Multi-node benchmark: the same supervised job with 1 worker on one node and with 2 workers on
2 nodes of the dev cluster (`depthkd.devcluster.cluster`: nodes sharing only S3 and the
tracking server), alternating, reading its shards from S3 and its checkpoints going to S3.

The figure is the job's global training throughput (`<stage>/train/samples_per_s`, the median of
the logged windows after the first, which includes start-up). On one machine the two nodes share
its cores: the ratio shows what the cross-node path (S3 streaming, gloo over TCP between nodes)
costs or gains there, not what a real second machine would add.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import yaml

from depthkd.data.shards import upload_shards
from depthkd.devcluster.cluster import WORKER_RESOURCE, DevCluster, dev_cluster, synthetic_shards
from depthkd.errors import DepthKDError

STAGE = "supervised"
EXPERIMENT = "bench-nodes"
SHAPES = {"1 worker on 1 node": 1, "2 workers on 2 nodes": 2}


@dataclass(frozen=True)
class NodesSettings:
    steps: int = 60
    rounds: int = 1
    frames: int = 120
    size: tuple[int, int] = (96, 128)
    batch_size: int = 4


def _job(settings: NodesSettings, name: str, shards: str, storage: str, workers: int) -> dict:
    return {
        "name": name,
        "data": {
            "shards": shards,
            "batch_size": settings.batch_size,
            "num_workers": 0,
            "shuffle_buffer": 16,
            "steps_per_epoch": 20,
            "augment": {"rotation_deg": 0, "crop": None},
        },
        "model": {"student": {"name": "mobilenetv2_050", "decoder_channels": [8, 8, 16, 16]}},
        "train": {
            "workers": workers,
            "resources": {WORKER_RESOURCE: 1},
            "placement": "STRICT_SPREAD" if workers > 1 else "PACK",
            "log_every": 5,
            "eval_every": settings.steps,
            "checkpoint_every": settings.steps,
            "storage": storage,
        },
        "eval": {"max_batches": 1},
        STAGE: {"steps": settings.steps},
        "tracking": {
            "experiment": EXPERIMENT,
            "system_metrics": False,
            "register_models": False,
        },
    }


def _samples_per_s(cluster: DevCluster, name: str) -> float:
    from depthkd.tracking.runs import job_metric_history

    key = f"{STAGE}/train/samples_per_s"
    values = job_metric_history(cluster.tracking.uri, EXPERIMENT, name, key)
    return statistics.median(values[1:])  # the first window includes start-up


def run_nodes_bench(work: Path, settings: NodesSettings, *, log=print) -> dict[str, Any]:
    """Starts the dev cluster under `work`, runs both shapes `rounds` times, returns figures."""
    figures: dict[str, list[float]] = {label: [] for label in SHAPES}
    with dev_cluster(work) as cluster:
        local = synthetic_shards(work, n=settings.frames, size=settings.size, shard_size=8)
        shards = f"{cluster.bucket}/shards"
        upload_shards(local, shards, progress=False)
        for round_index in range(settings.rounds):
            for label, workers in SHAPES.items():
                name = f"nodes-{workers}w-{round_index}"
                config = work / f"{name}.yaml"
                job = _job(settings, name, shards, f"{cluster.bucket}/ray_results", workers)
                config.write_text(yaml.safe_dump(job))
                log_file = work / f"{name}.log"
                with log_file.open("w") as out:
                    command = [sys.executable, "-m", "depthkd.cli.main", STAGE, "--quiet"]
                    rc = subprocess.call(
                        [*command, "--config", str(config)],
                        env=cluster.client_env(),
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                if rc:
                    raise DepthKDError(f"{label} failed (exit {rc}); see {log_file}")
                figures[label].append(_samples_per_s(cluster, name))
                log(f"nodes: {label}, round {round_index + 1}: {figures[label][-1]:.1f} samples/s")
    one, two = (statistics.median(v) for v in figures.values())
    return {
        "settings": asdict(settings),
        "samples_per_s": {label: statistics.median(v) for label, v in figures.items()},
        "passes": figures,
        "ratio_2_nodes_vs_1": two / one,
    }
