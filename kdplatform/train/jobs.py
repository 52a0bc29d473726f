"""The jobs users run (driver side): acclimate, distill, cross-distill, supervised.

Everything a job can check is checked here, before any worker starts: the stage, the shard set
and its manifest, the teacher reference. Then one MLflow run per job is opened (or continued, for
a job id seen before), the stages run on Ray Train (evaluating on the val split), and at the end
every exported model is evaluated once on the held-out test split: that report is logged
(`<stage>/test/<metric>`), printed and tagged on the registered versions, never used to select.
"""

from __future__ import annotations

import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from kdplatform import storage
from kdplatform.config.loader import dump_config
from kdplatform.config.schema import ExperimentConfig, depthkd_home
from kdplatform.data.bundled import ensure_shards
from kdplatform.data.shards import read_manifest
from kdplatform.errors import ConfigError
from kdplatform.eval.metrics import HEADLINE_METRICS
from kdplatform.eval.runner import evaluate_split
from kdplatform.locking import exclusive_lock
from kdplatform.storage import Location
from kdplatform.tracking import model_registry
from kdplatform.tracking.logger import RunLogger
from kdplatform.tracking.runs import JobRun, finish_job_run, open_job_run
from kdplatform.tracking.store import tracking_uri
from kdplatform.train.launcher import StageResult, check_cluster, ensure_ray, run_stage
from kdplatform.train.profile import DataProfile, data_profile
from kdplatform.train.stages import STAGES
from kdplatform.train.strategy import check_strategy
from models.serialization import load_model, save_model
from models.zoo import check_model_names


@dataclass
class JobContext:
    cfg: ExperimentConfig
    job: str
    shards: Location
    profile: DataProfile
    out_dir: Path
    run: JobRun | None = None
    results: dict[str, StageResult] = field(default_factory=dict)
    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # stage → metrics
    registered: dict[str, str] = field(default_factory=dict)

    @property
    def has_test_split(self) -> bool:
        """Whether the shard set holds the held-out split of the final report."""
        return self.cfg.data.test_split in read_manifest(self.shards)["splits"]


def resolve_shards(cfg: ExperimentConfig, *, progress: bool = True) -> Location:
    """The shard dir of `cfg.data`; bundled synthetic data is generated on first use."""
    return ensure_shards(cfg.data, depthkd_home(), progress=progress)


def prepare_job(cfg: ExperimentConfig, job: str, *, progress: bool = True) -> JobContext:
    """Validates everything a job needs before any worker starts."""
    if job not in STAGES:
        raise ConfigError(f"unknown stage {job!r}; known: {', '.join(STAGES.names())}")
    if (
        STAGES.get(job).needs_teacher
        and cfg.distill.teacher is None
        and not cfg.distill.acclimate_first
    ):
        raise ConfigError(
            "distill needs a teacher: set distill.teacher (name@alias, run id or checkpoint "
            "path) or distill.acclimate_first=true"
        )
    check_strategy(cfg.train)
    check_model_names(cfg.model.student.name, cfg.model.teacher.name)
    shards = resolve_shards(cfg, progress=progress)
    return JobContext(
        cfg=cfg,
        job=job,
        shards=shards,
        profile=data_profile(cfg, shards),
        out_dir=depthkd_home() / "runs" / cfg.name,
    )


def load_model_reference(ref: str, *, expect: str | None = None) -> nn.Module:
    """A model from a file exported by training (local or `s3://`), a registered model or a run
    id."""
    if storage.is_remote(ref):
        with tempfile.TemporaryDirectory(prefix="depthkd-model-") as scratch:
            path = storage.download_file(ref, Path(scratch) / "model.pt")
            return load_model(path, expect=expect)
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
    if not storage.is_remote(ref) and path.exists():
        return path.resolve()
    if getattr(model, "arch", {}).get("kind") != "acclimated_teacher":
        raise ConfigError(f"distill.teacher {ref!r} is not an acclimated teacher")
    return save_model(model, ctx.out_dir / "teacher.pt")


def run_job(ctx: JobContext, *, log: callable = print) -> JobContext:
    """Runs the job's stages in order, logs everything to one MLflow run and registers models.

    Two processes running one job id (the same config started twice) take turns: the second
    waits, then resumes the first one's job from its checkpoints.
    """
    lock = ctx.out_dir.parent / f".{ctx.cfg.name}.lock"
    with exclusive_lock(lock, message=f"job {ctx.cfg.name!r} runs in another process; waiting"):
        return _run_job(ctx, log=log)


def _run_job(ctx: JobContext, *, log: callable) -> JobContext:
    cfg = ctx.cfg
    started = time.perf_counter()
    needs_teacher = STAGES.get(ctx.job).needs_teacher
    teacher = resolve_teacher(ctx) if needs_teacher else None
    log(f"ray: {ensure_ray()}")
    check_cluster(cfg, ctx.shards, tracking_uri())
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
        if needs_teacher and teacher is None:
            stages = ["acclimate", ctx.job]
        for stage in stages:
            spec = STAGES.get(stage)
            log(
                f"[{stage}] {spec.title}: {spec.config(cfg).steps} steps on "
                f"{max(cfg.train.workers, 1)} worker(s), evaluating on {cfg.data.eval_split}"
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
            if ctx.has_test_split and result.exports:
                ctx.test_metrics[stage] = _test_report(ctx, result, logger, log)
            _register(ctx, result)
        status = "FINISHED"
    finally:
        logger.close()
        finish_job_run(ctx.run, status=status)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return ctx


def split_metrics(metrics: dict[str, float], split: str) -> dict[str, float]:
    """`{metric: value}` of the `<split>/<metric>` entries of a stage's report."""
    prefix = f"{split}/"
    return {k.removeprefix(prefix): float(v) for k, v in metrics.items() if k.startswith(prefix)}


def registration_tags(
    cfg: ExperimentConfig,
    profile: DataProfile,
    *,
    stage: str,
    job: str,
    val_metrics: dict[str, float],
    test_metrics: dict[str, float],
) -> dict[str, str]:
    """The tags every registered version carries (jobs and sweeps alike): what it was trained
    for (`dataset` family, `protocol`), which split chose it and which one it is reported on,
    and those metrics. The promotion gate compares only versions whose dataset and protocol
    agree."""
    val, test = cfg.data.eval_split, cfg.data.test_split
    return {
        "dataset": profile.family,
        "protocol": profile.protocol,
        "selection_split": val,
        "report_split": test if test_metrics else "none",
        "stage": stage,
        "job": job,
        **{f"{val}/{k}": f"{v:.6g}" for k, v in val_metrics.items()},
        **{f"{test}/{k}": f"{v:.6g}" for k, v in test_metrics.items()},
    }


def _test_report(
    ctx: JobContext, result: StageResult, logger: RunLogger, log: callable
) -> dict[str, float]:
    """The held-out test metrics of the stage's first exported model (after training: a report,
    not a selection); logged as `<stage>/test/<metric>` at the stage's last step."""
    cfg = ctx.cfg
    role, path = next(iter(result.exports.items()))
    split = cfg.data.test_split
    sums = evaluate_split(
        load_model(path), ctx.shards, split, cfg.data, ctx.profile.protocol, tta=cfg.eval.tta
    )
    means = sums.means()
    step = int(result.metrics.get("step", 0))
    logger.log_metrics({f"{result.stage}/{split}/{k}": v for k, v in means.items()}, step)
    logger.flush()
    log(
        f"[{result.stage}] {role} on {split} ({ctx.profile.protocol}, {sums.n_images} images): "
        + ", ".join(f"{k} {means[k]:.4f}" for k in HEADLINE_METRICS)
    )
    return means


def _register(ctx: JobContext, result: StageResult) -> None:
    cfg = ctx.cfg
    names = {"teacher": cfg.tracking.teacher_model, "student": cfg.tracking.student_model}
    aliases = {"teacher": "acclimated", "student": "challenger"}
    for role, path in result.exports.items():
        model = load_model(path)
        uri = model_registry.log_depth_model(ctx.run, model, name=f"{result.stage}_{role}")
        if not cfg.tracking.register_models:
            continue
        tags = registration_tags(
            cfg,
            ctx.profile,
            stage=result.stage,
            job=cfg.name,
            val_metrics=split_metrics(result.metrics, cfg.data.eval_split),
            test_metrics=ctx.test_metrics.get(result.stage, {}),
        )
        version = model_registry.register_model(uri, names[role], alias=aliases[role], tags=tags)
        ctx.registered[role] = f"{names[role]} v{version} @{aliases[role]}"
