"""Training stages: what each one builds, trains and exports, and its pure per-batch step.

A stage supplies models and losses; the loop (`kdplatform.train.loop`) supplies everything else.
Each `*_step(batch, ...) -> dict[str, Tensor]` is pure (no Ray, no MLflow) and returns the total
`loss` plus every named term, so terms are logged one by one and steps test without a cluster.

* `acclimate`: teacher + ghost decoder; SILog on the ghost output and on the teacher's own head.
* `distill`: frozen acclimated teacher; `silog + α·attentive_kd + β·response_kd` on the student.
* `supervised`: the student alone with SILog (the no-KD baseline of the same student).
* `cross_distill`: URCDC's dual branch, supervised and pseudo-label steps alternating or summed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor, nn

from kdplatform.config.schema import ExperimentConfig, LossConfig, StageConfig
from kdplatform.registry import Registry
from kdplatform.train.profile import DataProfile
from models import losses
from models.depth_model import DepthModel
from models.ghost import AcclimatedTeacher
from models.urcdc import bypass_schedule
from models.zoo import build_acclimated_teacher, build_cross_distill, build_student

Batch = dict[str, Tensor]


def _supervised(depth: Tensor, batch: Batch, loss: LossConfig, min_depth: float) -> Tensor:
    return losses.silog_loss(
        depth,
        batch["depth"],
        batch["valid"],
        variance_focus=loss.variance_focus,
        min_depth=loss.min_depth or min_depth,
    )


def acclimate_step(
    model: nn.Module, batch: Batch, *, loss: LossConfig, teacher_weight: float, min_depth: float
) -> dict[str, Tensor]:
    out = model(batch["image"])
    terms = {
        "silog_ghost": _supervised(out.ghost_depth, batch, loss, min_depth),
        "silog_teacher": _supervised(out.depth, batch, loss, min_depth),
    }
    terms["loss"] = loss.silog * terms["silog_ghost"] + teacher_weight * terms["silog_teacher"]
    return terms


def supervised_step(
    model: nn.Module, batch: Batch, *, loss: LossConfig, min_depth: float
) -> dict[str, Tensor]:
    silog = _supervised(model(batch["image"]), batch, loss, min_depth)
    return {"silog": silog, "loss": loss.silog * silog}


def distill_step(
    student: nn.Module,
    teacher: AcclimatedTeacher,
    batch: Batch,
    *,
    loss: LossConfig,
    min_depth: float,
) -> dict[str, Tensor]:
    with torch.no_grad():
        target = teacher(batch["image"])
    out = student(batch["image"], return_features=True)
    terms = {
        "silog": _supervised(out.depth, batch, loss, min_depth),
        "attentive_kd": losses.attentive_kd_loss(
            out.features, target.features, tau=loss.attention_tau, attentive=loss.attentive
        ),
        "response_kd": losses.response_kd_loss(out.depth, target.depth, kind=loss.response_kind),
    }
    terms["loss"] = (
        loss.silog * terms["silog"]
        + loss.attentive_kd * terms["attentive_kd"]
        + loss.response_kd * terms["response_kd"]
    )
    return terms


def cross_distill_step(
    model: nn.Module,
    batch: Batch,
    *,
    loss: LossConfig,
    min_depth: float,
    phase: str,
    bypass: bool,
) -> dict[str, Tensor]:
    """One URCDC step. `phase` is "supervised" (SILog + confidence fit on both branches),
    "distill" (pseudo-labels both ways) or "both" (the summed variant)."""
    out = model(batch["image"], bypass=bypass)
    gt, valid = batch["depth"], batch["valid"] & (batch["depth"] > (loss.min_depth or min_depth))
    zero = out.student_depth.sum() * 0
    terms: dict[str, Tensor] = {}
    if phase in ("supervised", "both"):
        terms["silog_teacher"] = _supervised(out.teacher_depth, batch, loss, min_depth)
        terms["silog_student"] = _supervised(out.student_depth, batch, loss, min_depth)
        terms["confidence_fit"] = sum(
            losses.confidence_fit_loss(
                conf, depth, gt, valid, temperature=loss.confidence_temperature, weight=1.0
            )
            for conf, depth in (
                (out.teacher_confidence, out.teacher_depth),
                (out.student_confidence, out.student_depth),
            )
        )
    if phase in ("distill", "both"):
        cross = {"temperature": loss.confidence_temperature, "mode": loss.cross_mode}
        terms["cross_t2s"] = losses.cross_distillation_loss(
            out.teacher_depth,
            out.student_depth,
            gt,
            valid,
            source_confidence=out.teacher_confidence,
            **cross,
        )
        terms["cross_s2t"] = losses.cross_distillation_loss(
            out.student_depth,
            out.teacher_depth,
            gt,
            valid,
            source_confidence=out.student_confidence,
            **cross,
        )
    terms["loss"] = (
        loss.silog * (terms.get("silog_teacher", zero) + terms.get("silog_student", zero))
        + loss.confidence_fit * terms.get("confidence_fit", zero)
        + loss.cross * (terms.get("cross_t2s", zero) + terms.get("cross_s2t", zero))
    )
    return terms


@dataclass
class Stage:
    """What the loop trains in one stage.

    Attributes:
        name: stage name, also the registry key.
        cfg: the stage's section of the experiment config.
        model: the trainable module (wrapped by DDP / DeepSpeed in the loop).
        step: `(wrapped_model, batch, step_index) -> terms` for one micro-batch.
        predict: `(model, images) -> depth` used by evaluation (the unwrapped model).
        exports: `model -> {registered role: DepthModel}` written by the driver at the end.
        encoder_params: parameter ids that get `optim.backbone_lr_mult`.
        find_unused_parameters: DDP flag; True where some steps skip parts of the model.
        on_step: hook called before each optimizer step (schedules, freezing).
        eval_before: evaluate once before the first step (acclimation shows the teacher's own
            accuracy before and after, so preserved performance is visible).
    """

    name: str
    cfg: StageConfig
    model: nn.Module
    step: Callable[[nn.Module, Batch, int], dict[str, Tensor]]
    predict: Callable[[nn.Module, Tensor], Tensor]
    exports: Callable[[nn.Module], dict[str, DepthModel]]
    encoder_params: set[int] = field(default_factory=set)
    find_unused_parameters: bool = False
    on_step: Callable[[nn.Module, int], None] = lambda model, step: None
    eval_before: bool = False


StageBuilder = Callable[[ExperimentConfig, DataProfile, "Path | None"], Stage]
STAGES: Registry[StageBuilder] = Registry("stage")


def _encoder_ids(*models: DepthModel) -> set[int]:
    return {id(p) for m in models for p in m.backbone.parameters()}


@STAGES.register("acclimate")
def acclimate_stage(cfg: ExperimentConfig, profile: DataProfile, teacher: Path | None) -> Stage:
    model = build_acclimated_teacher(
        cfg.model.teacher, cfg.model.student, max_depth=profile.max_depth
    )
    stage_cfg = cfg.acclimate

    def freeze_ghost(module: nn.Module, step: int) -> None:
        if stage_cfg.freeze_ghost_after is not None and step == stage_cfg.freeze_ghost_after:
            for p in _unwrap(module).ghost.parameters():
                p.requires_grad_(False)

    return Stage(
        name="acclimate",
        cfg=stage_cfg,
        model=model,
        step=lambda m, batch, step: acclimate_step(
            m,
            batch,
            loss=stage_cfg.loss,
            teacher_weight=stage_cfg.teacher_loss,
            min_depth=profile.loss_min_depth,
        ),
        predict=lambda m, images: m(images).depth,
        exports=lambda m: {"teacher": m},
        encoder_params=_encoder_ids(model.teacher),
        # the ghost decoder may be frozen mid-run
        find_unused_parameters=stage_cfg.freeze_ghost_after is not None,
        on_step=freeze_ghost,
        eval_before=True,
    )


@STAGES.register("supervised")
def supervised_stage(cfg: ExperimentConfig, profile: DataProfile, teacher: Path | None) -> Stage:
    model = build_student(cfg.model.student, max_depth=profile.max_depth)
    return Stage(
        name="supervised",
        cfg=cfg.distill,
        model=model,
        step=lambda m, batch, step: supervised_step(
            m, batch, loss=cfg.distill.loss, min_depth=profile.loss_min_depth
        ),
        predict=lambda m, images: m(images),
        exports=lambda m: {"student": m},
        encoder_params=_encoder_ids(model),
    )


@STAGES.register("distill")
def distill_stage(cfg: ExperimentConfig, profile: DataProfile, teacher: Path | None) -> Stage:
    from models.serialization import load_model

    if teacher is None:
        raise ValueError("the distill stage needs an acclimated teacher checkpoint")
    # the student first: same seed, same init as the `supervised` baseline (a fair comparison)
    model = build_student(cfg.model.student, max_depth=profile.max_depth)
    frozen = load_model(teacher, expect="teacher")
    frozen.eval().requires_grad_(False)
    loss = cfg.distill.loss

    def step(m: nn.Module, batch: Batch, index: int) -> dict[str, Tensor]:
        if next(frozen.parameters()).device != batch["image"].device:
            frozen.to(batch["image"].device)
        return distill_step(m, frozen, batch, loss=loss, min_depth=profile.loss_min_depth)

    return Stage(
        name="distill",
        cfg=cfg.distill,
        model=model,
        step=step,
        predict=lambda m, images: m(images),
        exports=lambda m: {"student": m},
        encoder_params=_encoder_ids(model),
    )


@STAGES.register("cross_distill")
def cross_distill_stage(cfg: ExperimentConfig, profile: DataProfile, teacher: Path | None) -> Stage:
    stage_cfg = cfg.cross_distill
    model = build_cross_distill(
        cfg.model.teacher,
        cfg.model.student,
        max_depth=profile.max_depth,
        p_bypass=stage_cfg.p_bypass,
    )

    def step(m: nn.Module, batch: Batch, index: int) -> dict[str, Tensor]:
        p = _unwrap(m).p_bypass
        # drawn from (seed, step), not a global RNG: every rank takes the same branch
        draw = zlib.crc32(f"{cfg.seed}:{index}".encode()) / 2**32
        if stage_cfg.schedule == "sum":
            phase = "both"
        else:  # URCDC: even steps supervised, odd steps pseudo-label distillation
            phase = "supervised" if index % 2 == 0 else "distill"
        return cross_distill_step(
            m,
            batch,
            loss=stage_cfg.loss,
            min_depth=profile.loss_min_depth,
            phase=phase,
            bypass=draw < p,
        )

    def anneal(m: nn.Module, index: int) -> None:
        _unwrap(m).p_bypass = bypass_schedule(
            index, stage_cfg.steps, start=stage_cfg.p_bypass, anneal_from=stage_cfg.anneal_from
        )

    return Stage(
        name="cross_distill",
        cfg=stage_cfg,
        model=model,
        step=step,
        predict=lambda m, images: m(images, bypass=True).student_depth,
        exports=lambda m: {"student": m.export_student()},
        encoder_params=_encoder_ids(model.teacher, model.student),
        find_unused_parameters=True,
        on_step=anneal,
    )


def _unwrap(module: nn.Module) -> nn.Module:
    """The model inside a DDP / DeepSpeed wrapper."""
    return getattr(module, "module", module)
