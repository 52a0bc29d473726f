"""The jobs users run (driver side): teacher, supervised, acclimate, distill, cross-distill.

A job runs one or more stages (`job_stages`): `distill` without a teacher trains the teacher for
depth (unless `model.teacher.checkpoint` names one), trains the student alone (the no-KD
baseline, whose decoder DisDepth's ghost copies), acclimates the teacher, then distils. Models
pass from stage to stage as files, by kind (`pretrained` teacher, trained `student`, `acclimated`
teacher).

Everything a job can check is checked here, before any worker starts: the stage, the model
names, the shard set and its manifest, every model reference (kind, architecture against the
config, depth range). Then one MLflow run per job is opened (or continued, for
a job id seen before), the stages run on Ray Train (evaluating on the val split), and at the end
every exported model is evaluated once on the held-out test split: that report is logged
(`<stage>/test/<metric>`), printed and tagged on the registered versions, never used to select.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from kdplatform import atomic, storage
from kdplatform.config.loader import dump_config
from kdplatform.config.schema import ExperimentConfig, depthkd_home
from kdplatform.console import Log, StageProgress
from kdplatform.data.bundled import ensure_shards
from kdplatform.data.shards import read_manifest, sha256_file
from kdplatform.errors import CheckpointError, ConfigError, RegistryError
from kdplatform.eval.runner import evaluate_split
from kdplatform.locking import exclusive_lock
from kdplatform.metric_names import HEADLINE_METRICS
from kdplatform.raycluster import ensure_ray
from kdplatform.storage import Location
from kdplatform.tracking import model_registry
from kdplatform.tracking.datasets import log_dataset_input
from kdplatform.tracking.logger import RunLogger
from kdplatform.tracking.references import load_model_reference
from kdplatform.tracking.runs import JobRun, finish_job_run, open_job_run
from kdplatform.tracking.store import tracking_uri
from kdplatform.train.launcher import StageResult, check_cluster, run_stage
from kdplatform.train.profile import DataProfile, data_profile
from kdplatform.train.stages import STAGES
from kdplatform.train.strategy import check_strategy
from kdplatform.train.unlabeled import labels_frames, mixes_unlabeled, unlabeled_frames
from models.serialization import load_model, save_model
from models.teacher_weights import load_external_teacher
from models.zoo import arch_mismatch, check_model_names

# model file kinds (`arch["kind"]`) in error messages
KIND_NAMES = {
    "teacher": "a plain (not acclimated) teacher",
    "acclimated_teacher": "an acclimated teacher",
    "student": "a student",
}
# what each kind of model passed between stages is registered as: (model name key, alias)
REGISTERED_AS = {
    "pretrained": ("teacher_model", "pretrained"),
    "acclimated": ("teacher_model", "acclimated"),
    "student": ("student_model", "challenger"),
}


@dataclass
class JobContext:
    cfg: ExperimentConfig
    job: str
    shards: Location
    profile: DataProfile
    out_dir: Path
    stages: list[str] = field(default_factory=list)
    inputs: dict[str, Path] = field(default_factory=dict)  # model kind → file, given by config
    run: JobRun | None = None
    results: dict[str, StageResult] = field(default_factory=dict)
    test_metrics: dict[str, dict[str, float]] = field(default_factory=dict)  # stage → metrics
    registered: dict[str, str] = field(default_factory=dict)  # model kind → "name vN @alias"

    @property
    def has_test_split(self) -> bool:
        """Whether the shard set holds the held-out split of the final report."""
        return self.cfg.data.test_split in read_manifest(self.shards)["splits"]

    @property
    def kd_gain(self) -> float | None:
        """Relative test abs_rel reduction of the distilled student over the job's own no-KD
        baseline (> 0: KD helps); None unless the job ran and tested both."""
        kd, base = self.test_metrics.get("distill"), self.test_metrics.get("supervised")
        if not (kd and base and self.baseline_comparable):
            return None
        return 1 - kd["abs_rel"] / base["abs_rel"]

    @property
    def teacher_metrics(self) -> dict[str, float] | None:
        """Test metrics of the teacher the student learned from: the acclimated one where the
        job has one, else the depth teacher (trained here or given)."""
        return self.test_metrics.get("acclimate") or self.test_metrics.get("teacher")

    @property
    def gap_closed(self) -> float | None:
        """Share of the test abs_rel gap between the no-KD student and the teacher that
        distillation closed: (no-KD − distilled) / (no-KD − teacher); None unless all three
        were tested and the teacher is better than the no-KD student."""
        teacher = self.teacher_metrics
        if self.kd_gain is None or teacher is None:
            return None
        base = self.test_metrics["supervised"]["abs_rel"]
        if base <= teacher["abs_rel"]:
            return None
        return (base - self.test_metrics["distill"]["abs_rel"]) / (base - teacher["abs_rel"])

    @property
    def baseline_comparable(self) -> bool:
        """The no-KD student trained like the distilled one: same steps, optimizer, loss."""
        supervised, distill = self.cfg.supervised, self.cfg.distill
        return (supervised.steps, supervised.optim, supervised.loss) == (
            distill.steps,
            distill.optim,
            distill.loss,
        )


def resolve_shards(cfg: ExperimentConfig, *, progress: bool = True) -> Location:
    """The shard dir of `cfg.data`; bundled synthetic data is generated on first use."""
    return ensure_shards(cfg.data, depthkd_home(), progress=progress)


def acclimation_stages(cfg: ExperimentConfig) -> list[str]:
    """What acclimation needs first, then acclimation: a depth-trained teacher (unless
    `model.teacher.checkpoint` gives one or `acclimate.pretrain_teacher` is off) and, for a
    copied ghost, a trained student (unless `acclimate.ghost_from` gives one)."""
    stages = []
    if cfg.model.teacher.checkpoint is None and cfg.acclimate.pretrain_teacher:
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
        given = cfg.model.teacher.checkpoint or cfg.distill.teacher
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
    check_model_names(cfg.model.student.name, cfg.model.teacher.name)
    shards = resolve_shards(cfg, progress=progress)
    ctx = JobContext(
        cfg=cfg,
        job=job,
        shards=shards,
        profile=data_profile(cfg, shards),
        out_dir=depthkd_home() / "runs" / cfg.name,
        stages=job_stages(cfg, job),
    )
    ctx.inputs = resolve_inputs(ctx)
    return ctx


def _is_state_dict_file(ref: str) -> bool:
    """A local weights file that is not a depthkd model file (an external teacher)."""
    path = Path(ref).expanduser()
    if storage.is_remote(ref) or not path.is_file():
        return False
    if path.suffix == ".safetensors":
        return True
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # unreadable: load_model says why
        return False
    return not (isinstance(payload, dict) and "arch" in payload)


def _check_model(model: nn.Module, *, key: str, ref: str, kind: str, ctx: JobContext) -> None:
    """Raises the ConfigError naming `key` and what differs unless `model` is a `kind` for this
    config's architecture and depth range."""
    cfg = ctx.cfg
    arch = getattr(model, "arch", {}) or {}
    found = arch.get("kind", "unknown")
    if found != kind:
        fix = {
            ("teacher", "acclimated_teacher"): "acclimate it first: `depthkd acclimate "
            f"model.teacher.checkpoint={ref}`, then set distill.teacher to the result",
            ("acclimated_teacher", "teacher"): "it is already acclimated: set distill.teacher "
            "to it instead",
        }.get((found, kind))
        raise ConfigError(
            f"{key} {ref!r} holds {KIND_NAMES.get(found, found)}, where "
            f"{KIND_NAMES.get(kind, kind)} is needed",
            hint=fix,
        )
    if kind == "acclimated_teacher":
        problems = [f"student {p}" for p in arch_mismatch(arch["student"], cfg.model.student)]
        problems += [f"teacher {p}" for p in arch_mismatch(arch["config"], cfg.model.teacher)]
    else:
        target = cfg.model.teacher if kind == "teacher" else cfg.model.student
        problems = arch_mismatch(arch["config"], target)
    if float(arch.get("max_depth", 0)) != ctx.profile.max_depth:
        problems.append(f"max_depth: {arch.get('max_depth')!r} != {ctx.profile.max_depth!r}")
    if problems:
        what = (
            "acclimated for another student or teacher than"
            if kind == "acclimated_teacher"
            else f"a {kind} of another architecture than"
        )
        raise ConfigError(
            f"{key} {ref!r} is {what} this config describes: {'; '.join(problems)}",
            hint="use the model.* settings it was trained with, or train one for this config",
        )


def _resolve_model(
    ctx: JobContext, key: str, ref: str, kind: str, name: str, *, external: bool = False
) -> Path:
    """The model `ref` names, checked (`_check_model`), as a local file of this job."""
    path = Path(ref).expanduser()
    try:
        if external and _is_state_dict_file(ref):
            model = load_external_teacher(
                path, ctx.cfg.model.teacher, max_depth=ctx.profile.max_depth
            )
            external_file = True
        else:
            model, external_file = load_model_reference(ref), False
    except (CheckpointError, RegistryError) as exc:
        raise ConfigError(f"{key}: {exc}", hint=exc.hint) from exc
    _check_model(model, key=key, ref=ref, kind=kind, ctx=ctx)
    if not storage.is_remote(ref) and path.is_file() and not external_file:
        return path.resolve()
    return save_model(model, ctx.out_dir / "inputs" / name)


def resolve_inputs(ctx: JobContext) -> dict[str, Path]:
    """The models the config names for the job's stages, by kind, each checked on the driver:
    `model.teacher.checkpoint` (a depth teacher), `acclimate.ghost_from` (a trained student),
    `distill.teacher` (a teacher acclimated for this student and teacher)."""
    cfg, stages, inputs = ctx.cfg, set(ctx.stages), {}
    labels = "distill" in stages and labels_frames(cfg, "distill")
    if cfg.model.teacher.checkpoint and (
        stages & {"teacher", "acclimate", "cross_distill"} or labels
    ):
        inputs["pretrained"] = _resolve_model(
            ctx,
            "model.teacher.checkpoint",
            cfg.model.teacher.checkpoint,
            "teacher",
            "pretrained_teacher.pt",
            external=True,
        )
    if cfg.acclimate.ghost_from and "acclimate" in stages:
        inputs["student"] = _resolve_model(
            ctx, "acclimate.ghost_from", cfg.acclimate.ghost_from, "student", "ghost_student.pt"
        )
    if cfg.distill.teacher and (
        "cross_distill" in stages
        or ("distill" in stages and (cfg.distill.needs_teacher_online or labels))
    ):
        inputs["acclimated"] = _resolve_model(
            ctx, "distill.teacher", cfg.distill.teacher, "acclimated_teacher", "teacher.pt"
        )
    return inputs


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
    if "acclimate" in ctx.stages and "pretrained" not in ctx.inputs and "teacher" not in ctx.stages:
        log(
            "WARNING: acclimating an UNTRAINED teacher (no model.teacher.checkpoint and "
            "acclimate.pretrain_teacher=false): it has no depth accuracy to preserve, and the "
            "student learns from a teacher no better than itself"
        )
    logger = RunLogger(ctx.run, system_metrics_interval=None)  # workers sample their nodes
    logger.log_text(dump_config(cfg), "config.yaml")
    status = "FAILED"
    available = dict(ctx.inputs)
    try:
        _report_given_teachers(ctx, logger, log)
        for stage in ctx.stages:
            spec = STAGES.get(stage)
            log(
                f"[{stage}] {spec.title}: {spec.config(cfg).steps} steps on "
                f"{max(cfg.train.workers, 1)} worker(s), evaluating on {cfg.data.eval_split}"
            )
            inputs = {
                role: available[kind] for role, kind in spec.consumes.items() if kind in available
            }
            _check_same_inputs(ctx, stage, inputs)
            unlabeled = None
            if mixes_unlabeled(cfg, stage):
                teacher = available.get("acclimated") or available.get("pretrained")
                unlabeled = unlabeled_frames(
                    cfg, stage, ctx.shards, teacher=teacher, out_dir=ctx.out_dir, log=log
                )
                log_dataset_input(ctx.run.run_id, unlabeled, uri=ctx.run.tracking_uri)
            with progress.stage(stage) if progress else contextlib.nullcontext() as channel:
                result = run_stage(
                    cfg,
                    stage,
                    shards=ctx.shards,
                    profile=ctx.profile,
                    run=ctx.run,
                    inputs=inputs,
                    out_dir=ctx.out_dir / stage,
                    progress=channel,
                    unlabeled=unlabeled,
                )
            ctx.results[stage] = result
            available |= {spec.produces[role]: path for role, path in result.exports.items()}
            if ctx.has_test_split and result.exports:
                ctx.test_metrics[stage] = _test_report(ctx, result, logger, log)
            _register(ctx, result, final=stage == ctx.stages[-1])
        status = "FINISHED"
    finally:
        logger.close()
        finish_job_run(ctx.run, status=status)
    log(f"done in {time.perf_counter() - started:.0f} s")
    return ctx


INPUTS_FILE = "inputs.json"  # per stage: sha256 of each input model it started from


def _check_same_inputs(ctx: JobContext, stage: str, inputs: dict[str, Path]) -> None:
    """A job id resumes every stage from its checkpoints; a stage whose input models changed
    since it started (a longer teacher, another checkpoint or ghost source) would quietly
    resume from the old ones, so that is refused here, before any worker starts."""
    record = ctx.out_dir / stage / INPUTS_FILE
    now = {role: sha256_file(path) for role, path in sorted(inputs.items())}
    if not record.is_file():
        atomic.write_json(record, now)
        return
    before = json.loads(record.read_text())
    if before != now:
        changed = sorted(r for r in before.keys() | now.keys() if before.get(r) != now.get(r))
        raise ConfigError(
            f"job {ctx.cfg.name!r}: stage {stage} was started from other input models "
            f"({', '.join(changed)} changed since; recorded in {record}), and resuming it would "
            "keep training from the old ones",
            hint="give the job a new name (name=...) to start it from the new models, or "
            "restore the settings it ran with",
        )


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
    ctx: JobContext, result: StageResult, logger: RunLogger, log: Log
) -> dict[str, float]:
    """The held-out test metrics of the stage's first exported model (after training: a report,
    not a selection); logged as `<stage>/test/<metric>` at the stage's last step."""
    role, path = next(iter(result.exports.items()))
    step = int(result.metrics.get("step", 0))
    return _report_model(ctx, result.stage, role, path, step, logger, log)


def _report_model(
    ctx: JobContext,
    stage: str,
    role: str,
    path: Path,
    step: int,
    logger: RunLogger,
    log: Log,
) -> dict[str, float]:
    cfg = ctx.cfg
    split = cfg.data.test_split
    sums = evaluate_split(
        load_model(path), ctx.shards, split, cfg.data, ctx.profile.protocol, tta=cfg.eval.tta
    )
    means = sums.means()
    logger.log_metrics({f"{stage}/{split}/{k}": v for k, v in means.items()}, step)
    logger.flush()
    log(
        f"[{stage}] {role} on {split} ({ctx.profile.protocol}, {sums.n_images} images): "
        + ", ".join(f"{k} {means[k]:.4f}" for k in HEADLINE_METRICS)
    )
    return means


# a teacher the config gives (not trained by the job) → the stage whose report it stands in for
GIVEN_TEACHERS = {"pretrained": "teacher", "acclimated": "acclimate"}


def _report_given_teachers(ctx: JobContext, logger: RunLogger, log: Log) -> None:
    """Test metrics of the teachers the config gives, so that the gap between student and
    teacher is measured in every job, on the same split and protocol."""
    for kind, stage in GIVEN_TEACHERS.items():
        if kind in ctx.inputs and stage not in ctx.stages and ctx.has_test_split:
            ctx.test_metrics[stage] = _report_model(
                ctx, stage, "teacher (given)", ctx.inputs[kind], 0, logger, log
            )


def _register(ctx: JobContext, result: StageResult, *, final: bool) -> None:
    """Logs the stage's exports to the run and registers the teachers and the job's final
    student (a baseline trained on the way, for the ghost decoder, is logged only)."""
    cfg = ctx.cfg
    produces = STAGES.get(result.stage).produces
    for role, path in result.exports.items():
        model = load_model(path)
        uri = model_registry.log_depth_model(ctx.run, model, name=f"{result.stage}_{role}")
        kind = produces[role]
        if not cfg.tracking.register_models or (kind == "student" and not final):
            continue
        name_key, alias = REGISTERED_AS[kind]
        name = getattr(cfg.tracking, name_key)
        tags = registration_tags(
            cfg,
            ctx.profile,
            stage=result.stage,
            job=cfg.name,
            val_metrics=split_metrics(result.metrics, cfg.data.eval_split),
            test_metrics=ctx.test_metrics.get(result.stage, {}),
        )
        version = model_registry.register_model(uri, name, alias=alias, tags=tags)
        ctx.registered[kind] = f"{name} v{version} @{alias}"
