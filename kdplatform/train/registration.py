"""Registering a job's models in the MLflow registry, with the tags every version carries (what it
was trained for, which split chose it and which one it is reported on)."""

from __future__ import annotations

from pathlib import Path

from depthkd import storage
from depthkd.config.schema import ExperimentConfig
from depthkd.data.shards import sha256_file
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import load_model, model_arch
from depthkd.models.zoo import WEIGHT_SOURCE_KEYS
from depthkd.tracking import model_registry
from depthkd.train.job_context import JobContext
from depthkd.train.launcher import StageResult
from depthkd.train.profile import DataProfile
from depthkd.train.reports import split_metrics
from depthkd.train.stages import STAGES

# what each kind of model passed between stages is registered as: (model name key, alias)
REGISTERED_AS = {
    ModelKind.TEACHER: ("teacher_model", "pretrained"),
    ModelKind.ACCLIMATED_TEACHER: ("acclimated_model", "newest"),
    ModelKind.STUDENT: ("student_model", "challenger"),
}


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
        "data_source": cfg.data.source,
        "selection_split": val,
        "report_split": test if test_metrics else "none",
        "stage": stage,
        "job": job,
        **{f"{val}/{k}": f"{v:.6g}" for k, v in val_metrics.items()},
        **{f"{test}/{k}": f"{v:.6g}" for k, v in test_metrics.items()},
    }


LICENCE_NOT_STATED = "not stated"


def teacher_tags(cfg: ExperimentConfig, teacher: Path | None) -> dict[str, str]:
    """Tags naming the teacher a model learnt from: the reference the config gives, the sha256
    of the model file the stage used and the licence the config declares for it."""
    given = cfg.distill.teacher or cfg.model.teacher.given
    tags = {
        "teacher": given or f"{cfg.model.teacher.name} (trained by this job)",
        "teacher_licence": cfg.model.teacher.licence or _registered_licence(cfg.distill.teacher),
    }
    if teacher is not None:
        tags["teacher_sha256"] = sha256_file(teacher)
    return tags


def _registered_licence(reference: str | None) -> str:
    """The licence a registered teacher's version carries (an acclimated teacher keeps the one
    of the teacher it came from), else `LICENCE_NOT_STATED`."""
    if reference is None or Path(reference).exists() or storage.is_remote(reference):
        return LICENCE_NOT_STATED
    tags = model_registry.registered_tags(reference)
    return tags.get("teacher_licence", LICENCE_NOT_STATED)


def model_card(kind: ModelKind, arch: dict, tags: dict[str, str]) -> str:
    """The version's description in the registry: what it is, its teacher, its data and splits,
    its metrics with the protocol (Markdown, as MLflow's UI renders it)."""
    config = arch.get("config", {})
    what = {
        ModelKind.STUDENT: "CNN student",
        ModelKind.TEACHER: "depth teacher",
        ModelKind.ACCLIMATED_TEACHER: f"teacher acclimated for student {tags.get('student')}",
    }[kind]
    val, test = tags["selection_split"], tags["report_split"]

    def metrics(split: str) -> str:
        shown = [
            f"{m} {tags[f'{split}/{m}']}"
            for m in ("abs_rel", "rmse", "d1")
            if f"{split}/{m}" in tags
        ]
        return ", ".join(shown) or "not measured"

    lines = [
        f"**depthkd {what}**: `{config.get('name')}`, trained by job `{tags['job']}` "
        f"(stage `{tags['stage']}`), depth up to {arch.get('max_depth')} m.",
        "",
        f"* data: {tags['dataset']} ({tags['data_source']}); chosen on `{val}`, reported on "
        f"`{test}` under the {tags['protocol']} protocol",
        f"* {val}: {metrics(val)}",
        f"* {test} ({tags['protocol']}): {metrics(test)}" if test != "none" else f"* {test}: none",
    ]
    if "teacher" in tags:
        sha = f", sha256 {tags['teacher_sha256'][:16]}…" if "teacher_sha256" in tags else ""
        lines.append(f"* teacher: `{tags['teacher']}`{sha}; licence: {tags['teacher_licence']}")
    return "\n".join(lines)


def fitted_student_tags(student_arch: dict) -> dict[str, str]:
    """Tags naming the student an acclimated teacher was fitted to, field by field of its config
    (where its weights came from aside): `distill.teacher` takes it only for a student of that
    architecture."""

    def text(value: object) -> str:
        if isinstance(value, list | tuple):
            return ",".join(map(str, value))
        return str(value).lower() if isinstance(value, bool) else str(value)

    tags = {"student": student_arch["name"]}
    tags |= {
        f"student_{key}": text(value)
        for key, value in student_arch.items()
        if key != "name" and key not in WEIGHT_SOURCE_KEYS
    }
    return tags


def register_stage(
    ctx: JobContext, result: StageResult, *, final: bool, teacher: Path | None = None
) -> None:
    """Logs the stage's exports to the run and registers the teachers and the job's final
    student (a baseline trained on the way, for the ghost decoder, is logged only).

    Args:
        teacher: the teacher model file the stage learnt from, if it had one.
    """
    cfg = ctx.cfg
    assert ctx.run is not None  # the job opens its run before the first stage
    produces = STAGES.get(result.stage).produces
    for role, path in result.exports.items():
        model = load_model(path)
        uri = model_registry.log_depth_model(ctx.run, model, name=f"{result.stage}_{role}")
        kind = produces[role]
        if not cfg.tracking.register_models or (kind == ModelKind.STUDENT and not final):
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
        if kind == ModelKind.ACCLIMATED_TEACHER:  # its ghost decoder is shaped for one student
            tags |= fitted_student_tags(model_arch(model)["student"])
        if teacher is not None or kind != ModelKind.STUDENT:
            tags |= teacher_tags(cfg, teacher)
        version = model_registry.register_model(
            uri, name, alias=alias, tags=tags, description=model_card(kind, model_arch(model), tags)
        )
        ctx.registered[kind] = f"{name} v{version} @{alias}"
