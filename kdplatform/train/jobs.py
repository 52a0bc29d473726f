"""The jobs users run (driver side): acclimate, distill, cross-distill.

Everything a job can check is checked here, before any worker starts: the stage, the shard set
and its manifest, the teacher reference. Then one MLflow run per job is opened (or continued, for
a job id seen before), the stages run on Ray Train, and the results are logged and registered.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from kdplatform.config.loader import dump_config
from kdplatform.config.schema import ExperimentConfig, depthkd_home
from kdplatform.data.bundled import ensure_shards
from kdplatform.data.shards import split_entry
from kdplatform.errors import ConfigError, DataError
from kdplatform.tracking import model_registry
from kdplatform.tracking.logger import RunLogger
from kdplatform.tracking.runs import JobRun, finish_job_run, open_job_run
from kdplatform.train.launcher import StageResult, ensure_ray, run_stage
from kdplatform.train.profile import DataProfile, data_profile
from kdplatform.train.stages import STAGES
from kdplatform.train.strategy import check_strategy
from models.serialization import load_model, save_model

JOBS = ("acclimate", "distill", "cross_distill", "supervised")


@dataclass
class JobContext:
    cfg: ExperimentConfig
    job: str
    shards: Path
    profile: DataProfile
    out_dir: Path
    run: JobRun | None = None
    results: dict[str, StageResult] = field(default_factory=dict)
    registered: dict[str, str] = field(default_factory=dict)


def resolve_shards(cfg: ExperimentConfig, *, progress: bool = True) -> Path:
    """The shard dir of `cfg.data`; bundled synthetic data is generated on first use."""
    if cfg.data.shards is None:
        return ensure_shards(cfg.data, depthkd_home(), progress=progress)
    for split in (cfg.data.train_split, cfg.data.eval_split):
        entry = split_entry(cfg.data.shards, split)  # DataError: no manifest / no such split
        if entry["num_samples"] == 0:
            raise DataError(f"split {split!r} in {cfg.data.shards} has no samples")
    return cfg.data.shards


def prepare_job(cfg: ExperimentConfig, job: str, *, progress: bool = True) -> JobContext:
    """Validates everything a job needs before any worker starts."""
    if job not in JOBS:
        raise ConfigError(f"unknown stage {job!r}; known: {', '.join(JOBS)}")
    for name in JOBS:
        STAGES.get(name)  # all stages registered
    if job == "distill" and cfg.distill.teacher is None and not cfg.distill.acclimate_first:
        raise ConfigError(
            "distill needs a teacher: set distill.teacher (name@alias, run id or checkpoint "
            "path) or distill.acclimate_first=true"
        )
    check_strategy(cfg.train)
    shards = resolve_shards(cfg, progress=progress)
    return JobContext(
        cfg=cfg,
        job=job,
        shards=shards,
        profile=data_profile(cfg, shards),
        out_dir=depthkd_home() / "runs" / cfg.name,
    )


def load_model_reference(ref: str, *, expect: str | None = None) -> nn.Module:
    """A model from a file exported by training, a registered model or a run id."""
    path = Path(ref).expanduser()
    if path.exists():
        return load_model(path, expect=expect)
    return model_registry.load_registered_model(model_registry.resolve_model_reference(ref))


def resolve_teacher(ctx: JobContext) -> Path | None:
    """A local file with the acclimated teacher named by `distill.teacher`, or None."""
    ref = ctx.cfg.distill.teacher
    if ref is None:
        return None
    path = Path(ref).expanduser()
    model = load_model_reference(ref, expect="teacher")  # fails on the driver, not in workers
    if path.exists():
        return path.resolve()
    if getattr(model, "arch", {}).get("kind") != "acclimated_teacher":
        raise ConfigError(f"distill.teacher {ref!r} is not an acclimated teacher")
    return save_model(model, ctx.out_dir / "teacher.pt")


def run_job(ctx: JobContext, *, log: callable = print) -> JobContext:
    """Runs the job's stages in order, logs everything to one MLflow run and registers models."""
    cfg = ctx.cfg
    started = time.perf_counter()
    teacher = resolve_teacher(ctx) if ctx.job == "distill" else None
    log(f"ray: {ensure_ray()}")
    ctx.run = open_job_run(
        experiment=cfg.tracking.experiment, job_id=cfg.name, tags={"depthkd.job": ctx.job}
    )
    log(
        f"mlflow: run {ctx.run.run_id} ({'continued' if ctx.run.resumed else 'new'}) at "
        f"{ctx.run.tracking_uri}"
    )
    logger = RunLogger(ctx.run, system_metrics_interval=None)  # workers sample their nodes
    logger.log_text(dump_config(cfg), "config.yaml")
    status = "FAILED"
    try:
        stages = [ctx.job]
        if ctx.job == "distill" and teacher is None:
            stages = ["acclimate", "distill"]
        for stage in stages:
            log(
                f"[{stage}] {STAGE_TITLES[stage]}: {_steps(cfg, stage)} steps on "
                f"{max(cfg.train.workers, 1)} worker(s)"
            )
            result = run_stage(
                cfg,
                stage,
                shards=ctx.shards,
                profile=ctx.profile,
                run=ctx.run,
                teacher=teacher,
                out_dir=ctx.out_dir / stage,
            )
            ctx.results[stage] = result
            if "teacher" in result.exports:
                teacher = result.exports["teacher"]
            _register(ctx, result)
        status = "FINISHED"
    finally:
        logger.close()
        finish_job_run(ctx.run, status=status)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return ctx


STAGE_TITLES = {
    "acclimate": "teacher acclimation through the ghost decoder",
    "distill": "student distillation from the frozen teacher",
    "supervised": "student without KD (baseline)",
    "cross_distill": "URCDC cross-distillation",
}


def _steps(cfg: ExperimentConfig, stage: str) -> int:
    section = {"supervised": "distill"}.get(stage, stage)
    return getattr(cfg, section).steps


def _register(ctx: JobContext, result: StageResult) -> None:
    cfg = ctx.cfg
    names = {"teacher": cfg.tracking.teacher_model, "student": cfg.tracking.student_model}
    aliases = {"teacher": "acclimated", "student": "challenger"}
    for role, path in result.exports.items():
        model = load_model(path)
        uri = model_registry.log_depth_model(ctx.run, model, name=f"{result.stage}_{role}")
        if not cfg.tracking.register_models:
            continue
        metrics = {k: v for k, v in result.metrics.items() if k.startswith("eval/")}
        version = model_registry.register_model(
            uri,
            names[role],
            alias=aliases[role],
            tags={
                "protocol": ctx.profile.protocol,
                "stage": result.stage,
                "job": cfg.name,
                **{k.removeprefix("eval/"): f"{v:.6g}" for k, v in metrics.items()},
            },
        )
        ctx.registered[role] = f"{names[role]} v{version} @{aliases[role]}"
