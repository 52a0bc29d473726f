"""Training stages: what each one builds, trains and exports, and its pure per-batch step.

A stage supplies models and losses; the loop (`depthkd.train.loop`) supplies everything else.
Each `*_step(batch, ...) -> dict[str, Tensor]` is pure (no Ray, no MLflow) and returns the total
`loss` plus every named term, so terms are logged one by one and steps test without a cluster.

Each stage's objective is the weighted sum of the named terms in its config's `losses` mapping
(`weighted_objective`); only terms with a weight > 0 are computed.

* `teacher`: the teacher alone with SILog: a depth-trained teacher for acclimation to start from.
* `supervised`: the student alone with SILog (the no-KD baseline of the same student; its decoder
  and head are what DisDepth's ghost decoder copies).
* `acclimate`: depth-trained teacher + ghost decoder; SILog on the ghost output and on the
  teacher's own head. The ghost's copied decoder and head stay fixed (see `AcclimateConfig`).
* `distill`: frozen acclimated teacher; `silog + α·attentive_kd + β·response_kd` on the student,
  plus `pseudo_silog` on pseudo-labelled unlabeled frames mixed into each batch (cached labels:
  without attentive or response KD the teacher is not loaded at all).
* `cross_distill`: URCDC's dual branch, supervised and pseudo-label steps alternating or summed.

Models pass between stages as files (`inputs`, role → path): a stage's `consumes` names the
role each input plays for it and what it is (`pretrained` teacher, trained `student`,
`acclimated` teacher); its `produces` says what each exported role becomes for later stages.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import torch
from torch import Tensor, nn

from depthkd.config.schema import ExperimentConfig, LossConfig, StageConfig
from depthkd.models import losses
from depthkd.models.depth_model import DepthModel
from depthkd.models.ghost import AcclimatedTeacher, TeacherModel
from depthkd.models.hf_teachers import ExternalDepthModel
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import load_model
from depthkd.models.urcdc import CrossDistillModel, bypass_schedule
from depthkd.models.zoo import (
    build_acclimated_teacher,
    build_cross_distill,
    build_student,
    build_teacher,
)
from depthkd.registry import Registry
from depthkd.train.profile import DataProfile

_Model = TypeVar("_Model", bound=nn.Module)

Batch = dict[str, Tensor]


def weighted_objective(terms: dict[str, Tensor], weights: dict[str, float]) -> Tensor:
    """`Σ weight · term` over the stage's named terms: the one place a stage's loss is summed.

    Every key of `terms` must have a weight; a term with weight 0 is never computed (the steps
    only compute `active_losses()`), so it is exactly the same as leaving it out.
    """
    if not terms:
        raise ValueError("an objective needs at least one computed term")
    return sum(weights[name] * value for name, value in terms.items())  # type: ignore[return-value]


def _supervised(depth: Tensor, batch: Batch, loss: LossConfig, min_depth: float) -> Tensor:
    return losses.silog_loss(
        depth,
        batch["depth"],
        batch["valid"],
        variance_focus=loss.variance_focus,
        min_depth=loss.min_depth or min_depth,
    )


def _with_total(terms: dict[str, Tensor], weights: dict[str, float]) -> dict[str, Tensor]:
    return {**terms, "loss": weighted_objective(terms, weights)}


def acclimate_step(
    model: nn.Module,
    batch: Batch,
    *,
    weights: dict[str, float],
    loss: LossConfig,
    min_depth: float,
) -> dict[str, Tensor]:
    out = model(batch["image"])
    heads = {"silog_ghost": out.ghost_depth, "silog_teacher": out.depth}
    terms = {
        name: _supervised(depth, batch, loss, min_depth)
        for name, depth in heads.items()
        if name in weights
    }
    return _with_total(terms, weights)


def supervised_step(
    model: nn.Module,
    batch: Batch,
    *,
    weights: dict[str, float],
    loss: LossConfig,
    min_depth: float,
) -> dict[str, Tensor]:
    terms = {"silog": _supervised(model(batch["image"]), batch, loss, min_depth)}
    return _with_total(terms, weights)


def distill_step(
    student: nn.Module,
    teacher: AcclimatedTeacher | None,
    batch: Batch,
    *,
    weights: dict[str, float],
    loss: LossConfig,
    min_depth: float,
) -> dict[str, Tensor]:
    """`silog` on the GT, `attentive_kd` on the ghost-adapted teacher features, `response_kd` on
    the teacher's depth, `pseudo_silog` on the cached pseudo-labels of unlabeled rows; the
    teacher runs only when `attentive_kd` or `response_kd` is weighted (`teacher` may be None
    otherwise)."""
    uses_features = "attentive_kd" in weights
    out = student(batch["image"], return_features=uses_features)
    depth = out.depth if uses_features else out
    terms: dict[str, Tensor] = {}
    if "silog" in weights:
        terms["silog"] = _supervised(depth, batch, loss, min_depth)
    if "pseudo_silog" in weights:
        terms["pseudo_silog"] = losses.pseudo_label_loss(
            depth,
            batch["pseudo"],
            confidence=batch["confidence"] if loss.pseudo_confidence else None,
            ignore_top=loss.pseudo_ignore_top,
            variance_focus=loss.variance_focus,
            min_depth=loss.min_depth or min_depth,
        )
    if uses_features or "response_kd" in weights:
        assert teacher is not None, "attentive_kd and response_kd need the teacher"
        with torch.no_grad():
            target = teacher(batch["image"])
        if uses_features:
            terms["attentive_kd"] = losses.attentive_kd_loss(
                out.features,
                target.features,
                tau=loss.attention_tau,
                weights=loss.attention_weights,
                attentive=loss.attentive,
            )
        if "response_kd" in weights:
            terms["response_kd"] = losses.response_kd_loss(
                depth, target.depth, kind=loss.response_kind
            )
    return _with_total(terms, weights)


# URCDC phases: which terms each computes ("both" is the summed variant)
CROSS_PHASES = {
    "supervised": ("silog_teacher", "silog_student", "confidence_fit"),
    "distill": ("cross_t2s", "cross_s2t"),
}
CROSS_PHASES["both"] = CROSS_PHASES["supervised"] + CROSS_PHASES["distill"]


def cross_distill_step(
    model: nn.Module,
    batch: Batch,
    *,
    weights: dict[str, float],
    loss: LossConfig,
    min_depth: float,
    phase: str,
    bypass: bool,
) -> dict[str, Tensor]:
    """One URCDC step. `phase` is "supervised" (SILog + confidence fit on both branches),
    "distill" (pseudo-labels both ways) or "both" (the summed variant)."""
    out = model(batch["image"], bypass=bypass)
    gt, valid = batch["depth"], batch["valid"] & (batch["depth"] > (loss.min_depth or min_depth))
    wanted = [name for name in CROSS_PHASES[phase] if name in weights]
    branches = {
        "teacher": (out.teacher_depth, out.teacher_confidence),
        "student": (out.student_depth, out.student_confidence),
    }
    terms: dict[str, Tensor] = {}
    for name in wanted:
        if name.startswith("silog_"):
            depth, _ = branches[name.removeprefix("silog_")]
            terms[name] = _supervised(depth, batch, loss, min_depth)
        elif name == "confidence_fit":
            terms[name] = sum(  # type: ignore[assignment]
                losses.confidence_fit_loss(
                    conf, depth, gt, valid, temperature=loss.uncertainty_temperature, weight=1.0
                )
                for depth, conf in branches.values()
            )
        else:  # cross_t2s: the teacher's depth teaches the student, cross_s2t the reverse
            source, target = ("teacher", "student")[:: 1 if name == "cross_t2s" else -1]
            terms[name] = losses.cross_distillation_loss(
                branches[source][0],
                branches[target][0],
                gt,
                valid,
                source_confidence=branches[source][1],
                temperature=loss.uncertainty_temperature,
                mode=loss.cross_mode,
            )
    if not terms:  # every term of this phase has weight 0: a step that changes nothing
        return {"loss": out.student_depth.sum() * 0}
    return _with_total(terms, weights)


@dataclass
class Stage:
    """What the loop trains in one stage.

    Attributes:
        name: stage name, also the registry key.
        cfg: the stage's section of the experiment config.
        model: the trainable module (wrapped by DDP / DeepSpeed in the loop).
        step: `(wrapped_model, batch, step_index) -> terms` for one micro-batch.
        predict: `(model, images) -> depth` used by evaluation (the unwrapped model).
        exports: `model -> {registered role: model}` written by the driver at the end.
        encoder_params: parameter ids that get `optim.backbone_lr_mult`.
        find_unused_parameters: DDP flag; True where some steps skip parts of the model.
        on_step: hook called before each optimizer step (schedules, freezing).
        eval_before: evaluate once before the first step (acclimation shows the teacher's own
            accuracy before and after, so preserved performance is visible).
        unlabeled_ratio: frames without ground truth per labeled frame in each batch (the loop mixes
            them in from the job's pseudo-label shards); 0: labeled frames only.
    """

    name: str
    cfg: StageConfig
    model: nn.Module
    step: Callable[[nn.Module, Batch, int], dict[str, Tensor]]
    predict: Callable[[nn.Module, Tensor], Tensor]
    exports: Callable[[nn.Module], dict[str, nn.Module]]
    encoder_params: set[int] = field(default_factory=set)
    find_unused_parameters: bool = False
    on_step: Callable[[nn.Module, int], None] = lambda model, step: None
    eval_before: bool = False
    unlabeled_ratio: float = 0.0


StageBuilder = Callable[[ExperimentConfig, DataProfile, "dict[str, Path]"], Stage]


@dataclass(frozen=True)
class StageSpec:
    """A stage as jobs, the CLI and benchmarks see it.

    Attributes:
        name: registry key and Ray run suffix (`<job>-<name>`).
        title: one line for consoles.
        section: the `ExperimentConfig` attribute with the stage's steps, optimizer and losses.
        build: `(cfg, profile, inputs) -> Stage`, called in each worker; `inputs` maps the roles
            of `consumes` to local model files.
        consumes: input role → the `ModelKind` it takes; the job decides which of them it
            hands over (`jobs.job_stages`).
        produces: exported role → its `ModelKind`, for later stages and the registry.
    """

    name: str
    title: str
    section: str
    build: StageBuilder
    consumes: dict[str, ModelKind] = field(default_factory=dict)
    produces: dict[str, ModelKind] = field(default_factory=dict)

    def config(self, cfg: ExperimentConfig) -> StageConfig:
        """The stage's section of `cfg`."""
        return getattr(cfg, self.section)

    @property
    def needs_teacher(self) -> bool:
        """The stage distils from an acclimated teacher."""
        return ModelKind.ACCLIMATED_TEACHER in self.consumes.values()


STAGES: Registry[StageSpec] = Registry("stage")


def stage(
    name: str,
    title: str,
    *,
    consumes: dict[str, ModelKind] | None = None,
    produces: dict[str, ModelKind] | None = None,
) -> Callable:
    """Registers a stage builder under `name`; its config section has the same name."""

    def add(build: StageBuilder) -> StageBuilder:
        STAGES.register(name)(
            StageSpec(name, title, name, build, dict(consumes or {}), dict(produces or {}))
        )
        return build

    return add


def _encoder_ids(*models: TeacherModel) -> set[int]:
    return {id(p) for m in models for p in m.backbone.parameters()}


def _depth_stage(
    name: str,
    model: DepthModel,
    stage_cfg: StageConfig,
    profile: DataProfile,
    role: str,
    step: Callable[[nn.Module, Batch, int], dict[str, Tensor]] | None = None,
) -> Stage:
    """One `DepthModel` trained and exported as `role`; `step` defaults to its supervised
    objective alone (student baseline, teacher)."""
    weights = stage_cfg.active_losses()
    return Stage(
        name=name,
        cfg=stage_cfg,
        model=model,
        step=step
        or (
            lambda m, batch, index: supervised_step(
                m, batch, weights=weights, loss=stage_cfg.loss, min_depth=profile.loss_min_depth
            )
        ),
        predict=lambda m, images: m(images),
        exports=lambda m: {role: m},
        encoder_params=_encoder_ids(model),
    )


@stage(
    "teacher",
    "depth training of the teacher",
    consumes={"teacher": ModelKind.TEACHER},
    produces={"teacher": ModelKind.TEACHER},
)
def teacher_stage(cfg: ExperimentConfig, profile: DataProfile, inputs: dict[str, Path]) -> Stage:
    model = build_teacher(cfg.model.teacher, max_depth=profile.max_depth)
    _start_from_teacher(model, inputs)  # model.teacher.checkpoint: continue training it
    return _depth_stage("teacher", model, cfg.teacher, profile, "teacher")


def _start_from_teacher(teacher: DepthModel, inputs: dict[str, Path]) -> None:
    """Loads the depth-trained teacher of `inputs` into `teacher`, when there is one."""
    if "teacher" in inputs:
        teacher.load_state_dict(
            load_model(inputs["teacher"], expect=ModelKind.TEACHER).state_dict()
        )


def frozen_ghost_part(cfg: ExperimentConfig, module: AcclimatedTeacher, step: int) -> nn.Module:
    """What of the ghost decoder is fixed at `step`: a function of the stage and the step alone,
    so a resumed job is in the same state as one that never stopped."""
    accl = cfg.acclimate
    if accl.ghost == "copy" or (
        accl.freeze_ghost_after is not None and step >= accl.freeze_ghost_after
    ):
        return module.ghost.fixed_part()
    return nn.ModuleList()


def _fix(part: nn.Module) -> None:
    # eval mode too: BatchNorm in train mode would move the fixed part's running statistics
    part.eval().requires_grad_(False)


@stage(
    "acclimate",
    "teacher acclimation through the ghost decoder",
    consumes={"teacher": ModelKind.TEACHER, "ghost": ModelKind.STUDENT},
    produces={"teacher": ModelKind.ACCLIMATED_TEACHER},
)
def acclimate_stage(cfg: ExperimentConfig, profile: DataProfile, inputs: dict[str, Path]) -> Stage:
    given = load_model(inputs["teacher"], expect=ModelKind.TEACHER) if "teacher" in inputs else None
    model = build_acclimated_teacher(
        cfg.model.teacher,
        cfg.model.student,
        max_depth=profile.max_depth,
        teacher=given,
    )
    stage_cfg = cfg.acclimate
    if stage_cfg.ghost == "copy":
        if "ghost" not in inputs:
            raise ValueError("acclimate.ghost=copy needs the trained student to copy")
        model.ghost.copy_student(load_model(inputs["ghost"], expect=ModelKind.STUDENT))
    _fix(frozen_ghost_part(cfg, model, 0))  # before DDP wraps it: fixed weights never sync
    weights = stage_cfg.active_losses()

    def fix_ghost(module: nn.Module, step: int) -> None:
        # every step: the loop puts the whole model back in train mode after each evaluation
        _fix(frozen_ghost_part(cfg, _unwrap(module, AcclimatedTeacher), step))

    return Stage(
        name="acclimate",
        cfg=stage_cfg,
        model=model,
        step=lambda m, batch, step: acclimate_step(
            m, batch, weights=weights, loss=stage_cfg.loss, min_depth=profile.loss_min_depth
        ),
        predict=lambda m, images: m(images).depth,
        exports=lambda m: {"teacher": m},
        encoder_params=_encoder_ids(model.teacher),
        # a fresh ghost may be frozen mid-run, a head without a weighted term idles, and a
        # Hugging Face teacher holds parameters its depth never uses (DINOv2's mask token, a
        # fusion layer's unused residual block)
        find_unused_parameters=stage_cfg.freeze_ghost_after is not None
        or len(weights) < 2
        or isinstance(model.teacher, ExternalDepthModel),
        on_step=fix_ghost,
        eval_before=True,
    )


@stage("supervised", "student without KD (baseline)", produces={"student": ModelKind.STUDENT})
def supervised_stage(cfg: ExperimentConfig, profile: DataProfile, inputs: dict[str, Path]) -> Stage:
    model = build_student(cfg.model.student, max_depth=profile.max_depth)
    return _depth_stage("supervised", model, cfg.supervised, profile, "student")


@stage(
    "distill",
    "student distillation from the frozen teacher",
    consumes={"teacher": ModelKind.ACCLIMATED_TEACHER},
    produces={"student": ModelKind.STUDENT},
)
def distill_stage(cfg: ExperimentConfig, profile: DataProfile, inputs: dict[str, Path]) -> Stage:
    stage_cfg = cfg.distill
    online = stage_cfg.needs_teacher_online
    if online and "teacher" not in inputs:
        raise ValueError("attentive_kd and response_kd need an acclimated teacher checkpoint")
    # the student first: same seed, same init as the `supervised` baseline (a fair comparison)
    model = build_student(cfg.model.student, max_depth=profile.max_depth)
    frozen = load_model(inputs["teacher"], expect=ModelKind.ACCLIMATED_TEACHER) if online else None
    if frozen is not None:
        frozen.eval().requires_grad_(False)
    weights = stage_cfg.active_losses()

    def step(m: nn.Module, batch: Batch, index: int) -> dict[str, Tensor]:
        if frozen is not None and next(frozen.parameters()).device != batch["image"].device:
            frozen.to(batch["image"].device)
        return distill_step(
            m, frozen, batch, weights=weights, loss=stage_cfg.loss, min_depth=profile.loss_min_depth
        )

    built = _depth_stage("distill", model, stage_cfg, profile, "student", step)
    built.unlabeled_ratio = stage_cfg.unlabeled_ratio
    return built


@stage(
    "cross_distill",
    "URCDC cross-distillation",
    consumes={"teacher": ModelKind.TEACHER},
    produces={"student": ModelKind.STUDENT},
)
def cross_distill_stage(
    cfg: ExperimentConfig, profile: DataProfile, inputs: dict[str, Path]
) -> Stage:
    stage_cfg = cfg.cross_distill
    weights = stage_cfg.active_losses()
    model = build_cross_distill(
        cfg.model.teacher,
        cfg.model.student,
        max_depth=profile.max_depth,
        p_bypass=stage_cfg.p_bypass,
    )
    _start_from_teacher(model.teacher, inputs)

    def step(m: nn.Module, batch: Batch, index: int) -> dict[str, Tensor]:
        p = _unwrap(m, CrossDistillModel).p_bypass
        # drawn from (seed, step), not a global RNG: every rank takes the same branch
        draw = zlib.crc32(f"{cfg.seed}:{index}".encode()) / 2**32
        if stage_cfg.schedule == "sum":
            phase = "both"
        else:  # URCDC: even steps supervised, odd steps pseudo-label distillation
            phase = "supervised" if index % 2 == 0 else "distill"
        return cross_distill_step(
            m,
            batch,
            weights=weights,
            loss=stage_cfg.loss,
            min_depth=profile.loss_min_depth,
            phase=phase,
            bypass=draw < p,
        )

    def anneal(m: nn.Module, index: int) -> None:
        _unwrap(m, CrossDistillModel).p_bypass = bypass_schedule(
            index, stage_cfg.steps, start=stage_cfg.p_bypass, anneal_from=stage_cfg.anneal_from
        )

    return Stage(
        name="cross_distill",
        cfg=stage_cfg,
        model=model,
        step=step,
        predict=lambda m, images: m(images, bypass=True).student_depth,
        exports=lambda m: {"student": _unwrap(m, CrossDistillModel).export_student()},
        encoder_params=_encoder_ids(model.teacher, model.student),
        find_unused_parameters=True,
        on_step=anneal,
        unlabeled_ratio=stage_cfg.unlabeled_ratio,
    )


def _unwrap(module: nn.Module, cls: type[_Model]) -> _Model:
    """The `cls` model inside a DDP / DeepSpeed wrapper (or `module` itself)."""
    inner = getattr(module, "module", module)
    if not isinstance(inner, cls):
        raise TypeError(f"expected a {cls.__name__}, got {type(inner).__name__}")
    return inner
