"""Driver side of a stage: check the cluster, build the `TorchTrainer`, run it, hand back the
final metrics and exported models.

* Ray is joined or started by `depthkd.raycluster.ensure_ray`.
* The Ray run name is the job id plus the stage: running the same job id again resumes from the
  latest checkpoint in `train.storage` (default `$DEPTHKD_HOME/ray_results`).
* Every path crossing into workers is absolute: workers run in another directory.
* `train.storage=s3://...` (what a multi-node cluster needs: nodes share no disk) goes to Ray as
  a pyarrow S3 filesystem with the endpoint of the AWS environment; the input models (teacher,
  student to copy) then travel to the workers as objects under that storage, not driver paths.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.train import CheckpointConfig, FailureConfig, RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from depthkd import storage
from depthkd.config.schema import ExperimentConfig, TrainConfig, depthkd_home
from depthkd.console import WORKER_ENV
from depthkd.errors import ConfigError, DepthKDError
from depthkd.models.weights import is_local_file
from depthkd.tracking.runs import JobRun
from depthkd.tracking.store import uses_server_artifacts
from depthkd.train.loop import WorkerJob, train_worker
from depthkd.train.profile import DataProfile
from depthkd.train.unlabeled import mixes_unlabeled

# Ray Train's controller polls its workers every 2 s by default, and a stage waits on those polls
# to see its workers start and finish: about 5 s of every stage, most of a short one. A poll is one
# small actor call per worker. Ray hands the driver's setting to the controller; a user's own wins.
HEALTH_CHECK_ENV = "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S"
HEALTH_CHECK_INTERVAL_S = "0.5"


@dataclass(frozen=True)
class StageResult:
    stage: str
    metrics: dict
    exports: dict[str, Path]  # role → exported model file (copied out of Ray storage)
    checkpoint: str | None
    seconds: float  # wall time of the stage: worker start-up, training, evaluation, export


def latest_export(root: Path, run_name: str, role: str) -> Path | None:
    """The exported `role` model of the newest checkpoint of Ray run `run_name` in local `root`.

    For runs whose driver may be gone before it copied the export (a Tune trial is ended as soon
    as its last evaluation reaches the scheduler).
    """
    exports = sorted((root / run_name).glob(f"checkpoint_*/export_{role}.pt"))
    return exports[-1] if exports else None


def _worker_resources(train: TrainConfig) -> dict[str, float]:
    resources = {"CPU": train.cpus_per_worker, **train.resources}
    if train.use_gpu:
        resources["GPU"] = train.gpus_per_worker
    return resources


def check_cluster(cfg: ExperimentConfig, shards: storage.Location, tracking: str) -> None:
    """Fails on the driver, before any worker starts, when the connected cluster cannot run `cfg`.

    * A custom resource in `train.resources` that no node offers would leave the workers
      waiting forever.
    * On a cluster of several nodes every node must reach the checkpoints, the shards and the
      tracking store: Ray refuses head-local checkpoint storage (ray #37177), a worker on another
      node cannot read the driver's files, and a SQLite file takes no writers from other nodes.
      Local paths pass only with `train.shared_filesystem` (NFS, a ReadWriteMany volume).
    """
    if cfg.train.workers == 0:  # local mode: everything runs in this process
        return
    offered = ray.cluster_resources()
    for name, amount in cfg.train.resources.items():
        if offered.get(name, 0) < amount:
            raise ConfigError(
                f"train.resources asks for {amount:g} {name!r} per worker, but the cluster offers "
                f"{offered.get(name, 0):g}",
                hint=f"start nodes with `ray start --resources '{{\"{name}\": 1}}'`, or drop it",
            )
    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    if nodes < 2:
        return
    local = {
        key: value
        for key, value in (("train.storage", storage_path(cfg)), ("data.shards", shards))
        if not storage.is_remote(value)
    }
    if local and not cfg.train.shared_filesystem:
        named = ", ".join(f"{key}={value}" for key, value in local.items())
        raise ConfigError(
            f"this Ray cluster has {nodes} nodes, but {named} is a path on this machine only",
            hint="put them where every node reaches them: train.storage=s3://bucket/ray_results, "
            "data.shards=s3://bucket/shards (`depthkd data upload`), or set "
            "train.shared_filesystem=true if every node mounts these paths",
        )
    if not uses_server_artifacts(tracking):
        raise ConfigError(
            f"this Ray cluster has {nodes} nodes, but the tracking store {tracking} is a file "
            "on this machine only",
            hint="run `depthkd tracking-server` and set MLFLOW_TRACKING_URI=http://host:port",
        )


def storage_path(cfg: ExperimentConfig) -> storage.Location:
    return cfg.train.storage or depthkd_home() / "ray_results"


def _ray_storage(root: storage.Location) -> dict[str, Any]:
    """`RunConfig` storage arguments for a local path or an `s3://` URL."""
    if not storage.is_remote(root):
        return {"storage_path": str(root)}
    filesystem, path = storage.arrow_filesystem(str(root))
    return {"storage_path": path, "storage_filesystem": filesystem}


def _checkpoint_location(checkpoint: Any, root: storage.Location) -> str | None:
    """Where a result's checkpoint lives, as a path or an `s3://` URL (Ray gives `bucket/key`)."""
    if checkpoint is None:
        return None
    return f"{storage.S3_SCHEME}{checkpoint.path}" if storage.is_remote(root) else checkpoint.path


def _inputs_for_workers(inputs: dict[str, Path], job_dir: storage.Location) -> dict[str, str]:
    """Where workers read the input models: the driver's files, or copies next to the job's
    checkpoints in remote storage (workers on other nodes cannot see the driver's disk)."""
    if not storage.is_remote(job_dir):
        return {role: str(Path(path).resolve()) for role, path in inputs.items()}
    placed = {}
    for role, path in inputs.items():
        placed[role] = str(storage.join(job_dir, f"{role}.pt"))
        storage.upload_file(Path(path), placed[role])
    return placed


def _weights_for_workers(cfg: ExperimentConfig, job_dir: storage.Location) -> ExperimentConfig:
    """`cfg` with local encoder weight files put next to the job's checkpoints when those are in
    remote storage: workers on other nodes cannot see the driver's disk (hub repos and `s3://`
    objects every node fetches itself)."""
    if not storage.is_remote(job_dir):
        return cfg
    model = cfg.model
    for role in ("student", "teacher"):
        encoder = getattr(model, role)
        if not is_local_file(encoder.weights):
            continue
        placed = str(storage.join(job_dir, f"{role}-weights{Path(encoder.weights).suffix}"))
        storage.upload_file(Path(encoder.weights), placed)
        model = model.model_copy(update={role: encoder.model_copy(update={"weights": placed})})
    return cfg.model_copy(update={"model": model})


def _absolute(location: storage.Location) -> str:
    """A local path made absolute (workers change directory); an `s3://` URL as it is."""
    return str(location if storage.is_remote(location) else Path(location).resolve())


def run_stage(
    cfg: ExperimentConfig,
    stage: str,
    *,
    shards: storage.Location,
    profile: DataProfile,
    run: JobRun | None,
    inputs: dict[str, Path] | None = None,
    out_dir: Path,
    run_name: str | None = None,
    callbacks: Sequence[Any] = (),
    progress: str | None = None,
    unlabeled: storage.Location | None = None,
) -> StageResult:
    """Runs one stage to completion (or resumes it) and copies its exported models to `out_dir`.

    Args:
        inputs: input role → model file (`StageSpec.consumes`).
        run_name: Ray run name (the resume key); default `<job>-<stage>`.
        callbacks: Ray Train callbacks (a Tune trial passes its report forwarder).
        progress: the address of the driver's progress channel (`JobConsole.stage`), if any.
        unlabeled: the shards of frames without ground truth that a stage with
            `unlabeled_ratio > 0` mixes in (`depthkd.train.unlabeled`).

    Raises:
        ConfigError: the stage mixes in frames without ground truth and none were given.
    """
    if unlabeled is None and mixes_unlabeled(cfg, stage):
        raise ConfigError(
            f"{stage}.unlabeled_ratio > 0 but the stage was given no frames without ground truth",
            hint="run it as a job (`depthkd distill`), which prepares them, or set "
            "data.pseudo_labels",
        )
    started = time.perf_counter()
    root = storage_path(cfg)
    name = run_name or f"{cfg.name}-{stage}"
    job_dir = storage.join(root, name)
    job = WorkerJob(
        stage=stage,
        shards=_absolute(shards),
        profile=profile.to_dict(),
        run=run.to_dict() if run else None,
        inputs=_inputs_for_workers(inputs or {}, job_dir),
        job_dir=str(job_dir),
        progress=progress,
        unlabeled=None if unlabeled is None else _absolute(unlabeled),
    )
    train = cfg.train
    os.environ.setdefault(HEALTH_CHECK_ENV, HEALTH_CHECK_INTERVAL_S)
    experiment = _weights_for_workers(cfg, job_dir).model_dump(mode="json")
    trainer = TorchTrainer(
        train_worker,
        train_loop_config={"experiment": experiment, "job": job.to_dict()},
        scaling_config=ScalingConfig(
            num_workers=train.workers,
            use_gpu=train.use_gpu,
            resources_per_worker=_worker_resources(train) if train.workers else None,
            placement_strategy=train.placement,
        ),
        # mypy sees Ray Train v1's RunConfig; v2's, the one used at run time, has worker_runtime_env
        run_config=RunConfig(  # type: ignore[call-arg]
            name=name,
            **_ray_storage(root),
            checkpoint_config=CheckpointConfig(num_to_keep=train.keep_checkpoints),
            failure_config=FailureConfig(max_failures=train.max_failures),
            callbacks=list(callbacks) or None,
            worker_runtime_env={"env_vars": dict(WORKER_ENV)},  # worker prints once, not twice
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
        checkpoint=_checkpoint_location(result.checkpoint, root),
        seconds=time.perf_counter() - started,
    )
