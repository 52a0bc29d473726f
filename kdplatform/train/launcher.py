"""Driver side of a stage: connect to (or start) Ray, build the `TorchTrainer`, run it, hand back
the final metrics and exported models.

* `RAY_ADDRESS` set (as under `ray job submit`) → connect there; else a running local cluster is
  used when one is reachable; else an embedded Ray sized to this machine starts.
* The Ray run name is the job id plus the stage: running the same job id again resumes from the
  latest checkpoint in `train.storage` (default `$DEPTHKD_HOME/ray_results`).
* Every path crossing into workers is absolute: workers run in another directory.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from kdplatform.config.schema import ExperimentConfig, depthkd_home
from kdplatform.errors import DepthKDError
from kdplatform.tracking.runs import JobRun
from kdplatform.train.loop import WorkerJob, train_worker
from kdplatform.train.profile import DataProfile


@dataclass(frozen=True)
class StageResult:
    stage: str
    metrics: dict
    exports: dict[str, Path]  # role → exported model file (copied out of Ray storage)
    checkpoint: str | None


def ensure_ray() -> str:
    """Connects to the cluster this job belongs to or starts an embedded one; returns a label."""
    if ray.is_initialized():
        return "already connected"
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
        return f"cluster at {os.environ['RAY_ADDRESS']}"
    try:
        ray.init(address="auto", log_to_driver=True)
        return "running local cluster"
    except ConnectionError:
        ray.init(include_dashboard=False, log_to_driver=True)
        return f"embedded Ray ({int(ray.cluster_resources().get('CPU', 0))} CPUs)"


def storage_path(cfg: ExperimentConfig) -> Path:
    return cfg.train.storage or depthkd_home() / "ray_results"


def run_stage(
    cfg: ExperimentConfig,
    stage: str,
    *,
    shards: Path,
    profile: DataProfile,
    run: JobRun | None,
    teacher: Path | None = None,
    out_dir: Path,
) -> StageResult:
    """Runs one stage to completion (or resumes it) and copies its exported models to `out_dir`."""
    storage = storage_path(cfg)
    name = f"{cfg.name}-{stage}"
    job = WorkerJob(
        stage=stage,
        shards=str(Path(shards).resolve()),
        profile=profile.to_dict(),
        run=run.to_dict() if run else None,
        teacher=str(Path(teacher).resolve()) if teacher else None,
        job_dir=str(storage / name),
    )
    train = cfg.train
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"experiment": cfg.model_dump(mode="json"), "job": job.to_dict()},
        scaling_config=ScalingConfig(
            num_workers=train.workers,
            use_gpu=train.use_gpu,
            resources_per_worker={"CPU": train.cpus_per_worker} if train.workers else None,
        ),
        run_config=RunConfig(
            name=name,
            storage_path=str(storage),
            checkpoint_config=CheckpointConfig(num_to_keep=train.keep_checkpoints),
            failure_config=FailureConfig(max_failures=train.max_failures),
        ),
    )
    result = trainer.fit()
    if result.error:
        raise DepthKDError(f"stage {stage} failed: {result.error}")
    exports: dict[str, Path] = {}
    if result.checkpoint is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        with result.checkpoint.as_directory() as directory:
            for path in Path(directory).glob("export_*.pt"):
                role = path.stem.removeprefix("export_")
                target = out_dir / f"{role}.pt"
                shutil.copyfile(path, target.with_suffix(".tmp"))
                target.with_suffix(".tmp").replace(target)
                exports[role] = target
    return StageResult(
        stage=stage,
        metrics=dict(result.metrics or {}),
        exports=exports,
        checkpoint=result.checkpoint.path if result.checkpoint else None,
    )
