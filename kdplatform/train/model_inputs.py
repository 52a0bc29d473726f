"""The models a job is given (a teacher, an acclimated teacher, a ghost's student), resolved and
checked on the driver before any worker starts: kind, architecture against the config, depth
range."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from depthkd import storage
from depthkd.errors import CheckpointError, ConfigError, RegistryError
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import save_model
from depthkd.models.teacher_weights import load_external_teacher
from depthkd.models.zoo import arch_mismatch, build_given_teacher
from depthkd.tracking.references import load_model_reference
from depthkd.train.job_context import JobContext
from depthkd.train.unlabeled import labels_frames

# model file kinds (`arch["kind"]`) in error messages
KIND_NAMES = {
    ModelKind.TEACHER: "a plain (not acclimated) teacher",
    ModelKind.ACCLIMATED_TEACHER: "an acclimated teacher",
    ModelKind.STUDENT: "a student",
}


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


def _check_model(model: nn.Module, *, key: str, ref: str, kind: ModelKind, ctx: JobContext) -> None:
    """Raises the ConfigError naming `key` and what differs unless `model` is a `kind` for this
    config's architecture and depth range."""
    cfg = ctx.cfg
    arch = getattr(model, "arch", {}) or {}
    found = arch.get("kind", "unknown")
    if found != kind:
        fix = {
            (
                ModelKind.TEACHER,
                ModelKind.ACCLIMATED_TEACHER,
            ): "acclimate it first: `depthkd acclimate "
            f"model.teacher.checkpoint={ref}`, then set distill.teacher to the result",
            (
                ModelKind.ACCLIMATED_TEACHER,
                ModelKind.TEACHER,
            ): "it is already acclimated: set distill.teacher to it instead",
        }.get((found, kind))
        raise ConfigError(
            f"{key} {ref!r} holds {KIND_NAMES.get(found, found)}, where "
            f"{KIND_NAMES.get(kind, kind)} is needed",
            hint=fix,
        )
    if kind == ModelKind.ACCLIMATED_TEACHER:
        problems = [f"student {p}" for p in arch_mismatch(arch["student"], cfg.model.student)]
        problems += [f"teacher {p}" for p in arch_mismatch(arch["config"], cfg.model.teacher)]
    else:
        target = cfg.model.teacher if kind == ModelKind.TEACHER else cfg.model.student
        problems = arch_mismatch(arch["config"], target)
    if float(arch.get("max_depth", 0)) != ctx.profile.max_depth:
        problems.append(f"max_depth: {arch.get('max_depth')!r} != {ctx.profile.max_depth!r}")
    if problems:
        what = (
            "acclimated for another student or teacher than"
            if kind == ModelKind.ACCLIMATED_TEACHER
            else f"a {kind} of another architecture than"
        )
        raise ConfigError(
            f"{key} {ref!r} is {what} this config describes: {'; '.join(problems)}",
            hint="use the model.* settings it was trained with, or train one for this config",
        )


def _resolve_model(
    ctx: JobContext, key: str, ref: str, kind: ModelKind, name: str, *, external: bool = False
) -> Path:
    """The model `ref` names, checked (`_check_model`), as a local file of this job."""
    path = Path(ref).expanduser()
    model: nn.Module
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


def _hf_teacher_file(ctx: JobContext) -> Path:
    """The Hugging Face teacher `model.teacher.hf_id` names, read here (hub or directory) and
    written as a model file of this job: workers, the pseudo-label pass and acclimation load
    that file, which rebuilds it without the hub."""
    teacher_cfg = ctx.cfg.model.teacher
    try:
        model = build_given_teacher(teacher_cfg, max_depth=ctx.profile.max_depth)
    except CheckpointError as exc:
        raise ConfigError(f"model.teacher.hf_id: {exc}", hint=exc.hint) from exc
    return save_model(model, ctx.out_dir / "inputs" / "pretrained_teacher.pt")


def resolve_inputs(ctx: JobContext) -> dict[ModelKind, Path]:
    """The models the config names for the job's stages, by kind, each checked on the driver:
    `model.teacher.checkpoint` (a depth teacher), `acclimate.ghost_from` (a trained student),
    `distill.teacher` (a teacher acclimated for this student and teacher)."""
    cfg, stages = ctx.cfg, set(ctx.stages)
    inputs: dict[ModelKind, Path] = {}
    labels = "distill" in stages and labels_frames(cfg, "distill")
    wants_teacher = bool(stages & {"teacher", "acclimate", "cross_distill"} or labels)
    if cfg.model.teacher.source == "hf" and wants_teacher:
        inputs[ModelKind.TEACHER] = _hf_teacher_file(ctx)
    elif cfg.model.teacher.checkpoint and wants_teacher:
        inputs[ModelKind.TEACHER] = _resolve_model(
            ctx,
            "model.teacher.checkpoint",
            cfg.model.teacher.checkpoint,
            ModelKind.TEACHER,
            "pretrained_teacher.pt",
            external=True,
        )
    if cfg.acclimate.ghost_from and "acclimate" in stages:
        inputs[ModelKind.STUDENT] = _resolve_model(
            ctx,
            "acclimate.ghost_from",
            cfg.acclimate.ghost_from,
            ModelKind.STUDENT,
            "ghost_student.pt",
        )
    if cfg.distill.teacher and (
        "cross_distill" in stages
        or ("distill" in stages and (cfg.distill.needs_teacher_online or labels))
    ):
        inputs[ModelKind.ACCLIMATED_TEACHER] = _resolve_model(
            ctx, "distill.teacher", cfg.distill.teacher, ModelKind.ACCLIMATED_TEACHER, "teacher.pt"
        )
    return inputs
