"""The jobs users run (driver side): teacher, supervised, acclimate, distill, cross-distill.

A job runs one or more stages (`job_stages`): `distill` without a teacher trains the teacher for
depth (unless `model.teacher.checkpoint` names one), trains the student alone (the no-KD
baseline, whose decoder DisDepth's ghost copies), acclimates the teacher, then distils. Models
pass from stage to stage as files, by kind (`pretrained` teacher, trained `student`, `acclimated`
teacher).

Everything a job can check is checked here, before any worker starts: the stage, the model
names, the shard set and its manifest, every model reference (`model_inputs`: kind, architecture
against the config, depth range). Then one MLflow run per job is opened (or continued, for a job
id seen before), the stages run on Ray Train (evaluating on the val split), every exported model
is evaluated once on the held-out test split (`reports`: logged as `<stage>/test/<metric>`,
printed, never used to select) and registered with those figures as tags (`registration`).
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path

from depthkd.config.loader import dump_config
from depthkd.config.schema import ExperimentConfig, depthkd_home
from depthkd.console import Log, StageProgress
from depthkd.data.bundled import ensure_shards
from depthkd.errors import ConfigError
from depthkd.locking import exclusive_lock
from depthkd.models.kinds import ModelKind
from depthkd.models.zoo import check_encoder_weights, check_model_names
from depthkd.raycluster import ensure_ray
from depthkd.storage import Location
from depthkd.tracking.datasets import log_dataset_input
from depthkd.tracking.logger import RunLogger
from depthkd.tracking.runs import RunEndStatus, finish_job_run, open_job_run
from depthkd.tracking.store import tracking_uri
from depthkd.train.job_context import JobContext
from depthkd.train.launcher import StageResult, check_cluster, run_stage
from depthkd.train.model_inputs import resolve_inputs
from depthkd.train.profile import data_profile
from depthkd.train.registration import register_stage
from depthkd.train.reports import report_given_teachers, test_report
from depthkd.train.stage_records import (
    check_same_inputs,
    finished_result,
    record_finished,
    stage_settings,
)
from depthkd.train.stages import STAGES
from depthkd.train.strategy import check_strategy
from depthkd.train.unlabeled import labels_frames, mixes_unlabeled, unlabeled_frames


def resolve_shards(cfg: ExperimentConfig, *, progress: bool = True) -> Location:
    """The shard dir of `cfg.data`; bundled synthetic data is generated on first use."""
    return ensure_shards(cfg.data, depthkd_home(), progress=progress)


# stages that train the teacher's own depth head or couple it to the student (URCDC)
HF_TEACHER_CANNOT = ("teacher", "cross_distill")


def acclimation_stages(cfg: ExperimentConfig) -> list[str]:
    """What acclimation needs first, then acclimation: a depth-trained teacher (unless
    `model.teacher.checkpoint` gives one or `acclimate.pretrain_teacher` is off) and, for a
    copied ghost, a trained student (unless `acclimate.ghost_from` gives one)."""
    stages = []
    if cfg.model.teacher.given is None and cfg.acclimate.pretrain_teacher:
        stages.append("teacher")
    if cfg.acclimate.ghost == "copy" and cfg.acclimate.ghost_from is None:
        stages.append("supervised")
    return [*stages, "acclimate"]


def job_stages(cfg: ExperimentConfig, job: str) -> list[str]:
    """The stages job `job` runs under `cfg`, in order.

    A distillation whose terms all read stored targets (ground truth, cached pseudo-labels)
    needs no acclimated teacher: only a depth teacher to label the unlabeled frames (trained
    first unless `model.teacher.checkpoint` names one, and not at all when `data.pseudo_labels`
    is given) and the no-KD student it is compared with.
    """
    if job == "acclimate":
        return acclimation_stages(cfg)
    if job == "distill" and not cfg.distill.needs_teacher_online:
        given = cfg.model.teacher.given or cfg.distill.teacher
        trains_teacher = labels_frames(cfg, "distill") and given is None
        return ["teacher"] * trains_teacher + ["supervised", job]
    if STAGES.get(job).needs_teacher and cfg.distill.teacher is None:
        return [*acclimation_stages(cfg), job]
    return [job]


def prepare_job(cfg: ExperimentConfig, job: str, *, progress: bool = True) -> JobContext:
    """Validates everything a job needs before any worker starts."""
    if job not in STAGES:
        raise ConfigError(f"unknown stage {job!r}; known: {', '.join(STAGES.names())}")
    if (
        STAGES.get(job).needs_teacher
        and cfg.distill.needs_teacher_online
        and cfg.distill.teacher is None
        and not cfg.distill.acclimate_first
    ):
        raise ConfigError(
            "distill needs a teacher: set distill.teacher (name@alias, run id or checkpoint "
            "path) or distill.acclimate_first=true"
        )
    check_strategy(cfg.train)
    teacher = cfg.model.teacher
    check_model_names(cfg.model.student.name, teacher.name if teacher.source == "timm" else None)
    check_encoder_weights(cfg.model)
    stages = job_stages(cfg, job)
    # a teacher from outside is taken as it comes: acclimated, never trained anew or coupled
    if teacher.source == "hf" and (trained := [s for s in stages if s in HF_TEACHER_CANNOT]):
        raise ConfigError(
            f"job {job!r} runs {', '.join(trained)} on its teacher, which a Hugging Face teacher "
            "(model.teacher.hf_id) does not take",
            hint="distil from it (depthkd distill), acclimating it first; or use a timm teacher",
        )
    shards = resolve_shards(cfg, progress=progress)
    ctx = JobContext(
        cfg=cfg,
        job=job,
        shards=shards,
        profile=data_profile(cfg, shards),
        out_dir=depthkd_home() / "runs" / cfg.name,
        stages=stages,
    )
    ctx.inputs = resolve_inputs(ctx)
    return ctx


def run_job(
    ctx: JobContext, *, log: Log = print, progress: StageProgress | None = None
) -> JobContext:
    """Runs the job's stages in order, logs everything to one MLflow run and registers models.

    Two processes running one job id (the same config started twice) take turns: the second
    waits, then resumes the first one's job from its checkpoints.

    Args:
        log: where the job's own lines go.
        progress: shows each stage while it runs (a `JobConsole`); None: the workers' lines only.
    """
    lock = ctx.out_dir.parent / f".{ctx.cfg.name}.lock"
    waiting = f"job {ctx.cfg.name!r} runs in another process; waiting"
    with exclusive_lock(lock, message=waiting, announce=log):
        return _run_job(ctx, log=log, progress=progress)


def _run_job(ctx: JobContext, *, log: Log, progress: StageProgress | None) -> JobContext:
    cfg = ctx.cfg
    started = time.perf_counter()
    log(f"ray: {ensure_ray()}")
    check_cluster(cfg, ctx.shards, tracking_uri())
    ctx.run = open_job_run(
        experiment=cfg.tracking.experiment, job_id=cfg.name, tags={"depthkd.job": ctx.job}
    )
    log(
        f"mlflow: run {ctx.run.run_id} ({'continued' if ctx.run.resumed else 'new'}) at "
        f"{ctx.run.tracking_uri}"
    )
    if (
        "acclimate" in ctx.stages
        and ModelKind.TEACHER not in ctx.inputs
        and "teacher" not in ctx.stages
    ):
        log(
            "WARNING: acclimating an UNTRAINED teacher (no model.teacher.checkpoint or hf_id, and "
            "acclimate.pretrain_teacher=false): it has no depth accuracy to preserve, and the "
            "student learns from a teacher no better than itself"
        )
    logger = RunLogger(ctx.run, system_metrics_interval=None)  # workers sample their nodes
    logger.log_text(dump_config(cfg), "config.yaml")
    status: RunEndStatus = "FAILED"
    available = dict(ctx.inputs)
    try:
        report_given_teachers(ctx, logger, log)
        for stage in ctx.stages:
            spec = STAGES.get(stage)
            steps = spec.config(cfg).steps
            log(
                f"[{stage}] {spec.title}: {steps} steps on "
                f"{max(cfg.train.workers, 1)} worker(s), evaluating on {cfg.data.eval_split}"
            )
            inputs = {
                role: available[kind] for role, kind in spec.consumes.items() if kind in available
            }
            folder = ctx.out_dir / stage
            check_same_inputs(folder, cfg.name, stage, inputs)
            settings = stage_settings(cfg, spec.config(cfg), ctx.shards)
            result = finished_result(folder, stage, steps=steps, settings=settings)
            if result is None:
                result = _run_stage(ctx, stage, inputs, available, log=log, progress=progress)
                record_finished(
                    folder, result, steps=steps, roles=set(spec.produces), settings=settings
                )
            else:
                log(f"[{stage}] finished before (step {steps}): taken from {folder}")
            ctx.results[stage] = result
            available |= {spec.produces[role]: path for role, path in result.exports.items()}
            if ctx.has_test_split and result.exports:
                ctx.test_metrics[stage] = test_report(ctx, result, logger, log)
            # the teacher it learnt from: online, or through the pseudo-labels it wrote
            teacher = inputs.get("teacher") or (
                available.get(ModelKind.TEACHER) if labels_frames(cfg, stage) else None
            )
            register_stage(ctx, result, final=stage == ctx.stages[-1], teacher=teacher)
        status = "FINISHED"
    finally:
        logger.close()
        finish_job_run(ctx.run, status=status)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return ctx


def _run_stage(
    ctx: JobContext,
    stage: str,
    inputs: dict[str, Path],
    available: dict[ModelKind, Path],
    *,
    log: Log,
    progress: StageProgress | None,
) -> StageResult:
    """Runs (or resumes) `stage` on Ray Train, first labelling the frames it mixes in."""
    cfg, run = ctx.cfg, ctx.run
    assert run is not None  # opened by _run_job before any stage
    unlabeled = None
    if mixes_unlabeled(cfg, stage):
        teacher = available.get(ModelKind.ACCLIMATED_TEACHER) or available.get(ModelKind.TEACHER)
        unlabeled = unlabeled_frames(
            cfg, stage, ctx.shards, teacher=teacher, out_dir=ctx.out_dir, log=log
        )
        log_dataset_input(run.run_id, unlabeled, uri=run.tracking_uri)
    with progress.stage(stage) if progress else contextlib.nullcontext() as channel:
        return run_stage(
            cfg,
            stage,
            shards=ctx.shards,
            profile=ctx.profile,
            run=run,
            inputs=inputs,
            out_dir=ctx.out_dir / stage,
            progress=channel,
            unlabeled=unlabeled,
        )
