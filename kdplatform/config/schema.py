"""Typed configuration of depthkd (pydantic v2).

Every model forbids unknown keys, so a typo is an error that names the key instead of a setting
that silently does nothing. Configs cross process boundaries (Ray workers) as plain dicts
(`cfg.model_dump(mode="json")`) and become typed again with `model_validate`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from depthkd.metric_names import METRIC_NAMES
from depthkd.storage import parse_location

# A local path (made absolute) or an `s3://bucket/prefix` URL: what a cluster's nodes share.
Location = Annotated[Path | str, BeforeValidator(parse_location)]


class StrictModel(BaseModel):
    """Base of every config section: unknown keys are errors, values are re-validated on set."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


def default_workers() -> int:
    """Processes for CPU-bound data work: the cores this process may use, at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(8, cores or 1))


def absolute_path(value: Path | None) -> Path | None:
    """`value` made absolute on the driver: Ray workers run in another directory."""
    return None if value is None else value.expanduser().resolve()


# Set on every node of a cluster whose nodes mount $DEPTHKD_HOME (and other local paths) from one
# shared filesystem; the default of train.shared_filesystem.
SHARED_FILESYSTEM_ENV = "DEPTHKD_SHARED_FILESYSTEM"


def model_reference(value: str | None) -> str | None:
    """A model reference as given (`name@alias`, run id, `s3://` URL), or made absolute when it
    is a file here: Ray workers, the recorded config and MLflow params outlive the directory."""
    if value is None or "://" in value:
        return value
    path = Path(value).expanduser()
    return str(path.resolve()) if path.exists() else value


# A model a config names (`name@alias`, run id, `s3://` URL or a local file, made absolute).
ModelReference = Annotated[str | None, AfterValidator(model_reference)]

HF_HUB_PREFIX = "hf-hub:"  # encoder weights in a Hugging Face model repo (timm's own spelling)


def weights_source(value: str | None) -> str | None:
    """Encoder weights as given (`s3://bucket/key`, `hf-hub:ORG/NAME[@REVISION]`) or a local file
    made absolute (Ray workers run in another directory)."""
    if value is None:
        return None
    if value.startswith(HF_HUB_PREFIX):
        repo = value.removeprefix(HF_HUB_PREFIX).split("@", 1)[0]
        if len(repo.split("/")) != 2 or not all(repo.split("/")):
            raise ValueError(f"{value!r}: expected hf-hub:ORG/NAME or hf-hub:ORG/NAME@REVISION")
        return value
    return str(parse_location(value))  # s3:// URLs as given, other schemes refused


# Where an encoder's weights come from: a local file, an `s3://` URL or a Hugging Face repo.
WeightsSource = Annotated[
    str | None,
    BeforeValidator(lambda value: str(value) if isinstance(value, Path) else value),
    AfterValidator(weights_source),
]


def depthkd_home() -> Path:
    """Root of all local state of the embedded default: `$DEPTHKD_HOME`, default `./.depthkd`."""
    return Path(os.environ.get("DEPTHKD_HOME", ".depthkd")).resolve()


class SynthConfig(StrictModel):
    """Procedural RGB-D data written in a real dataset's raw layout."""

    layout: Literal["kitti", "nyu"] = "nyu"
    n: int = Field(200, ge=1, description="number of frames, train + val + test")
    seed: int = 0
    height: int | None = Field(None, ge=16, description="frame height; native size if unset")
    width: int | None = Field(None, ge=16, description="frame width; native size if unset")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)
    val_fraction: float = Field(0.1, ge=0.0, lt=1.0, description="share of frames in val")
    unlabeled_n: int = Field(
        0, ge=0, description="extra RGB-only frames (depth never written), disjoint from the n"
    )


class PrepareConfig(StrictModel):
    """Options of `depthkd data prepare`: one raw split to one set of shards."""

    dataset: str = Field(
        description="kitti | nyu | nyu-mat | folder; RGB only: images | video | kitti-raw"
    )
    root: Path = Field(
        description="raw dataset root (the .mat file for nyu-mat; a file, folder or glob pattern "
        "for images and video)"
    )
    split: str = Field(pattern=r"^[A-Za-z0-9_]+$", description="shard split name, e.g. train")
    out: Path
    split_file: Path | None = None
    gt_root: Path | None = Field(None, description="KITTI annotated-depth root (default: root)")
    shard_size: int = Field(1000, ge=1, description="samples per shard")
    workers: int = Field(default_factory=default_workers, ge=1)
    on_error: Literal["raise", "skip"] = "raise"
    force: bool = False
    depth_scale: float | None = Field(None, gt=0, description="folder: metres = value / scale")
    invalid_value: int = Field(0, ge=0, le=65535, description="folder: extra invalid depth value")
    focal: float | None = Field(
        None, gt=0, description="folder, images, video, kitti-raw: focal length in pixels"
    )
    subset: Literal["train", "test"] | None = Field(None, description="nyu-mat: index list")
    depth_field: Literal["rawDepths", "depths"] = "rawDepths"
    every: int | None = Field(
        None, ge=1, description="video: keep frames 0, every, 2*every, ... (default 10)"
    )
    right_camera: bool = Field(False, description="kitti-raw: also the image_03 frames")

    @field_validator("every", "right_camera")
    @classmethod
    def _one_dataset(cls, value: Any, info: ValidationInfo) -> Any:
        # An option that the chosen dataset would ignore is an error, not a silent no-op. The
        # defaults (None, False) pass, so a dumped config validates again.
        assert info.field_name is not None  # pydantic names the field it validates
        owner = {"every": "video", "right_camera": "kitti-raw"}[info.field_name]
        if value not in (None, False) and info.data.get("dataset") != owner:
            raise ValueError(f"only applies to --dataset {owner}")
        return value

    @field_validator("root", "out", "split_file", "gt_root", mode="before")
    @classmethod
    def _local(cls, value: Any) -> Any:
        # a URL (argparse's Path type already folded "s3://b" to "s3:/b")
        if value is not None and re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:/", str(value)):
            raise ValueError(
                "prepare reads and writes local files, not URLs: prepare into a directory, "
                "then `depthkd data upload DIR s3://bucket/prefix`"
            )
        return value

    @field_validator("root", "out", "split_file", "gt_root")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return absolute_path(value)


class AugmentConfig(StrictModel):
    """Train-time augmentation; geometric ops move rgb and depth together.

    Order: KB crop → rotation → random crop → CutFlip → horizontal flip → photometric.
    """

    kb_crop: bool = False
    rotation_deg: float = Field(0.0, ge=0.0, le=45.0, description="max |angle|, uniform")
    crop: tuple[int, int] | None = Field(None, description="random crop (height, width)")
    hflip_p: float = Field(0.5, ge=0.0, le=1.0)
    photometric_p: float = Field(0.5, ge=0.0, le=1.0)
    gamma: tuple[float, float] = (0.9, 1.1)
    brightness: tuple[float, float] = (0.9, 1.1)
    colour: tuple[float, float] = (0.9, 1.1)
    cutflip_p: float = Field(0.0, ge=0.0, le=1.0)
    cutflip_range: tuple[float, float] = (0.2, 0.8)

    @field_validator("gamma", "brightness", "colour", "cutflip_range")
    @classmethod
    def _ordered(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"must be (low, high) with 0 < low <= high, got {value}")
        return value

    @field_validator("cutflip_range")
    @classmethod
    def _fraction(cls, value: tuple[float, float]) -> tuple[float, float]:
        if value[1] > 1:
            raise ValueError(f"cut fractions must be at most 1, got {value}")
        return value

    @field_validator("crop")
    @classmethod
    def _positive_crop(cls, value: tuple[int, int] | None) -> tuple[int, int] | None:
        if value is not None and min(value) < 1:
            raise ValueError(f"crop must be (height, width) >= 1, got {value}")
        return value


# The bundled synthetic set's split of RGB-only frames (has_gt false; its depth is never written).
UNLABELED_SPLIT = "unlabeled"


class DataConfig(StrictModel):
    """Where the shards are and how the loader streams them."""

    shards: Location | None = Field(
        None,
        description="prepared shard dir or s3:// prefix; unset: the bundled synthetic set",
    )
    synthetic: SynthConfig = SynthConfig()
    train_split: str = "train"
    eval_split: str = Field(
        "val", description="split of training-time evaluation, early stopping and selection"
    )
    test_split: str = Field("test", description="held-out split of the final report only")
    batch_size: int = Field(
        8, ge=1, description="labeled frames per step on each rank (global: × train.workers)"
    )
    eval_batch_size: int = Field(4, ge=1, description="frames per evaluation batch on each rank")
    num_workers: int = Field(2, ge=0, description="loader processes per rank")
    shuffle_buffer: int = Field(256, ge=0)
    steps_per_epoch: int = Field(50, ge=1, description="batches per rank per epoch")
    eval_kb_crop: bool = Field(False, description="KB-crop eval frames (KITTI kb-cropped protocol)")
    nyu_border_mask: bool = Field(
        False,
        description="training: NYU depth is invalid outside BTS's box [45:472, 43:608] of the "
        "480x640 frame (the white border; scaled for other sizes); other datasets unchanged",
    )
    augment: AugmentConfig = AugmentConfig()
    unlabeled: Location | None = Field(
        None,
        description="RGB-only shard dir or s3:// prefix of unlabeled frames (`depthkd data "
        "prepare --dataset images|video|kitti-raw`); unset: the bundled set's unlabeled split "
        "when data.shards is unset and data.synthetic.unlabeled_n > 0, else the labeled "
        "training frames themselves (the teacher's dense depth on them)",
    )
    unlabeled_split: str | None = Field(
        None,
        description=f"split of data.unlabeled / data.pseudo_labels; unset: {UNLABELED_SPLIT!r}, "
        "or data.train_split when the job has no unlabeled frames",
    )
    pseudo_labels: Location | None = Field(
        None,
        description="pseudo-label shards written by `depthkd pseudo-label`; unset: a job that "
        "mixes in unlabeled frames labels data.unlabeled with its own teacher first",
    )

    @property
    def has_unlabeled_frames(self) -> bool:
        """Whether frames without ground truth are given: `unlabeled`, `pseudo_labels` or the
        bundled set's unlabeled split."""
        bundled = self.shards is None and self.synthetic.unlabeled_n > 0
        return bool(self.unlabeled or self.pseudo_labels or bundled)

    @property
    def source(self) -> str:
        """What a job trains and reports on: the set it generates itself (`shards` unset) or
        shards a user prepared. Registered versions carry it; the gate judges a challenger only
        on data of its own kind."""
        return "bundled-synthetic" if self.shards is None else "prepared-shards"

    @property
    def pseudo_split(self) -> str:
        """The split a job pseudo-labels and mixes in: `unlabeled_split`, else the unlabeled
        split, else (no unlabeled frames given) the labeled training split."""
        if self.unlabeled_split is not None:
            return self.unlabeled_split
        return UNLABELED_SPLIT if self.has_unlabeled_frames else self.train_split


class EncoderWeights(StrictModel):
    """Where an encoder's starting weights come from (docs/models.md: weights); unset: random."""

    pretrained: bool = Field(
        False, description="timm's default pretrained weights of the encoder, from its hub repo"
    )
    weights: WeightsSource = Field(
        None,
        description="encoder weights in timm's layout: a .safetensors/.pth file, s3:// URL or "
        "hf-hub:ORG/NAME[@REVISION]",
    )

    @model_validator(mode="after")
    def _one_source(self) -> EncoderWeights:
        if self.pretrained and self.weights is not None:
            raise ValueError("set pretrained or weights, not both: they name two starting points")
        return self


class StudentConfig(EncoderWeights):
    """The CNN student: a registered name (`depthkd models list`) or any timm CNN name."""

    name: str = "mobilenetv2_100"
    decoder_channels: tuple[int, int, int, int] = Field(
        (32, 48, 64, 96), description="LG decoder width at 1/4, 1/8, 1/16, 1/32"
    )
    lg_global: bool = Field(True, description="False: LG blocks without the global path")
    lg_reduction: int = Field(4, ge=1)

    @field_validator("decoder_channels")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if min(value) < 1:
            raise ValueError("decoder widths must be positive")
        return value


class TeacherConfig(EncoderWeights):
    """The transformer teacher: a registered name or a timm Swin / ViT / ConvNeXt name.

    `checkpoint` starts it from a full depth teacher (encoder, decoder and head): a model file
    exported by depthkd (`depthkd teacher`), a registered one (`depthkd-teacher@pretrained`), a
    run id, or an external state dict whose keys `key_map` renames onto ours (docs/training.md).
    """

    name: str = "swin_tiny"
    source: Literal["timm", "hf"] = Field(
        "timm",
        description="timm: a registered or timm encoder with depthkd's DPT decoder; hf: the "
        "Hugging Face depth model hf_id names (Depth Anything, DPT, ZoeDepth)",
    )
    hf_id: str | None = Field(
        None,
        description="source hf: a hub repo id (ORG/NAME, ORG/NAME@REVISION) or a directory "
        "written by save_pretrained",
    )
    decoder_width: int | None = Field(None, ge=8, description="DPT decoder width; registry default")
    checkpoint: ModelReference = Field(
        None,
        description="depth-trained teacher: model file (a relative one in a config file is "
        "looked up beside that file first), s3:// URL, name@alias, run id or a state dict "
        "(.pt/.pth/.safetensors) with key_map",
    )
    key_map: dict[str, str] = Field(
        {},
        description="external state dict: key prefix → ours (backbone., decoder., head.), "
        "longest prefix first; a prefix mapped to '' is dropped",
    )
    licence: str | None = Field(
        None,
        description="the teacher's licence as its model card states it (an SPDX id, e.g. "
        "apache-2.0, cc-by-nc-4.0): tagged on every student it teaches, judged by the gate",
    )

    @model_validator(mode="after")
    def _key_map_needs_checkpoint(self) -> TeacherConfig:
        if self.key_map and self.checkpoint is None:
            raise ValueError("key_map renames the keys of model.teacher.checkpoint, which is unset")
        return self

    @model_validator(mode="after")
    def _hf_needs_its_id(self) -> TeacherConfig:
        if (self.source == "hf") != (self.hf_id is not None):
            raise ValueError("source hf and hf_id go together: hf_id names the Hugging Face model")
        if self.source == "hf":
            given = [k for k in ("checkpoint", "weights", "pretrained") if getattr(self, k)]
            if given:
                raise ValueError(f"a Hugging Face teacher brings its own weights: drop {given}")
        return self

    @property
    def given(self) -> str | None:
        """The depth-trained teacher the config gives, as a reference (None: none, a job trains
        or acclimates one from the encoder): `checkpoint`, or `hf:<hf_id>`."""
        return f"hf:{self.hf_id}" if self.source == "hf" else self.checkpoint

    @field_validator("hf_id")
    @classmethod
    def _local_directory_absolute(cls, value: str | None) -> str | None:
        """A local directory made absolute (Ray workers run elsewhere); a repo id as given."""
        if value is not None and Path(value).expanduser().is_dir():
            return str(Path(value).expanduser().resolve())
        return value


class ModelConfig(StrictModel):
    """Student, teacher and the depth range their heads cover."""

    max_depth: float | None = Field(
        None, gt=0, description="depth head range in metres; unset: the dataset's cap (80 / 10)"
    )
    student: StudentConfig = StudentConfig()
    teacher: TeacherConfig = TeacherConfig()


class OptimConfig(StrictModel):
    """Optimizer and poly learning-rate schedule with linear warm-up (BTS / NeWCRFs style)."""

    name: Literal["adamw", "adam"] = "adamw"
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(1e-2, ge=0)
    backbone_lr_mult: float = Field(1.0, gt=0, description="encoder lr = lr × this")
    warmup_steps: int = Field(0, ge=0)
    poly_power: float = Field(0.9, ge=0)
    end_lr_ratio: float = Field(0.01, ge=0, le=1, description="final lr = lr × this")


class LossConfig(StrictModel):
    """Settings of the loss terms (their weights are the stage's `losses` mapping)."""

    variance_focus: float = Field(0.85, ge=0, le=1, description="SILog λ")
    min_depth: float | None = Field(
        None, gt=0, description="GT threshold of the supervised loss; unset: 1 m KITTI, 0.1 m NYU"
    )
    attention_tau: float = Field(1.0, gt=0, description="τ: attentive-KD attention temperature")
    attention_weights: tuple[float, float, float, float] = Field(
        (1.0, 1.0, 1.0, 1.0), description="attentive-KD weight per scale, 1/4 … 1/32"
    )
    attentive: bool = Field(True, description="False: uniform feature KD (ablation)")
    response_kind: Literal["l1", "log_l1", "silog"] = "log_l1"
    pseudo_ignore_top: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="pseudo_silog: share of each image's worst pixels ignored (Depth Anything V2)",
    )
    pseudo_confidence: bool = Field(
        True, description="pseudo_silog: weight pixels by the teacher's confidence (if it has one)"
    )
    cross_mode: Literal["urcdc", "rectified"] = "urcdc"
    uncertainty_temperature: float = Field(0.2, gt=0, description="URCDC T_u (URCDC: 1/T_u = 5)")

    @field_validator("attention_weights")
    @classmethod
    def _non_negative(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if min(value) < 0 or max(value) == 0:
            raise ValueError(f"per-scale weights must be >= 0 and not all 0, got {value}")
        return value


# Every loss term a stage can compute, by stage; each stage's default objective. One home for the
# term names: the steps in `depthkd.train.stages` compute exactly the terms of its mapping.
LOSS_TERMS: dict[str, dict[str, float]] = {
    "teacher": {"silog": 1.0},
    "acclimate": {"silog_ghost": 1.0, "silog_teacher": 1.0},
    "distill": {"silog": 1.0, "attentive_kd": 1.0, "response_kd": 0.5, "pseudo_silog": 0.0},
    "supervised": {"silog": 1.0},
    "cross_distill": {
        "silog_teacher": 1.0,
        "silog_student": 1.0,
        "confidence_fit": 0.5,
        "cross_t2s": 0.1,
        "cross_s2t": 0.1,
    },
}


# Terms that run the teacher during training (its features or depth on each batch); the others
# read stored targets (ground truth, or the cached pseudo-labels of `depthkd pseudo-label`).
TEACHER_ONLINE_TERMS = frozenset({"attentive_kd", "response_kd"})


def check_losses(stage: str, value: object) -> dict[str, float]:
    """The `losses` mapping of `stage`, checked: known terms, weights >= 0, one of them > 0."""
    if not isinstance(value, dict):
        raise ValueError(f"must be a mapping of loss term to weight, got {value!r}")
    available = LOSS_TERMS[stage]
    checked: dict[str, float] = {}
    for term, weight in value.items():
        if term not in available:
            elsewhere = sorted(s for s, terms in LOSS_TERMS.items() if term in terms)
            if elsewhere:
                raise ValueError(
                    f"loss term {term!r} is not available to the {stage} stage (it belongs to "
                    f"{', '.join(elsewhere)}); {stage} terms: {', '.join(available)}"
                )
            raise ValueError(f"unknown loss term {term!r}; {stage} terms: {', '.join(available)}")
        if isinstance(weight, bool) or not isinstance(weight, int | float) or weight < 0:
            raise ValueError(f"loss term {term!r}: weight must be a number >= 0, got {weight!r}")
        checked[str(term)] = float(weight)
    if not any(checked.values()):
        raise ValueError(
            f"needs at least one term with a weight > 0; {stage} terms: {', '.join(available)}"
        )
    return checked


def _objective(stage: str) -> Any:
    """The `losses` field of `stage`'s section, defaulting to its standard objective."""
    return Field(
        default_factory=lambda: dict(LOSS_TERMS[stage]),
        description=f"loss term → weight; terms: {', '.join(LOSS_TERMS[stage])}",
    )


class StageConfig(StrictModel):
    """One training stage: how long, its optimizer, its objective and the loss settings.

    `losses` maps term name to weight: the objective is their weighted sum and every term is
    logged under its name. In a file the mapping is the whole objective (a term left out is not
    computed); a dotted override (`distill.losses.response_kd=0.2`) changes one term of it. A
    weight of 0 is the same as leaving the term out.
    """

    STAGE: ClassVar[str]

    steps: int = Field(200, ge=1, description="optimizer steps")
    optim: OptimConfig = OptimConfig()
    losses: dict[str, float]
    loss: LossConfig = LossConfig()

    @field_validator("losses", mode="before")
    @classmethod
    def _check_losses(cls, value: object) -> dict[str, float]:
        return check_losses(cls.STAGE, value)

    def active_losses(self) -> dict[str, float]:
        """The terms with a weight > 0: the ones the stage computes."""
        return {term: weight for term, weight in self.losses.items() if weight > 0}


class TeacherStageConfig(StageConfig):
    """Supervised depth training of the teacher (`depthkd teacher`), before acclimation."""

    STAGE: ClassVar[str] = "teacher"
    losses: dict[str, float] = _objective("teacher")


class AcclimateConfig(StageConfig):
    """Teacher acclimation (DisDepth): the depth-trained teacher learns to feed the student's
    decoder through per-scale adapters.

    `ghost: copy` (DisDepth, the default): the ghost decoder and head are a copy of a trained
    student's, fixed for the whole stage (eval mode, no gradients); only the teacher and the
    adapters train. The student comes from `ghost_from`, else the job trains it first (the
    `supervised` stage, which is also the no-KD baseline). `ghost: fresh`: a new trainable ghost
    decoder (ablation), frozen from step `freeze_ghost_after` on when that is set.
    """

    STAGE: ClassVar[str] = "acclimate"
    losses: dict[str, float] = _objective("acclimate")
    optim: OptimConfig = OptimConfig(backbone_lr_mult=0.1)
    ghost: Literal["copy", "fresh"] = Field(
        "copy", description="copy: a trained student's decoder, fixed; fresh: trainable (ablation)"
    )
    ghost_from: ModelReference = Field(
        None,
        description="ghost: copy: the trained student (model file, s3:// URL, name@alias, run "
        "id); unset: the job trains the student first (supervised stage)",
    )
    pretrain_teacher: bool = Field(
        True,
        description="no model.teacher.checkpoint: train the teacher for depth first (teacher "
        "stage); false acclimates an untrained teacher (warned)",
    )
    freeze_ghost_after: int | None = Field(
        None, ge=0, description="ghost: fresh: freeze its decoder from this step on (None: never)"
    )

    @model_validator(mode="after")
    def _ghost_options(self) -> AcclimateConfig:
        if self.ghost == "copy" and self.freeze_ghost_after is not None:
            raise ValueError("freeze_ghost_after applies to ghost: fresh (a copied ghost is fixed)")
        if self.ghost == "fresh" and self.ghost_from is not None:
            raise ValueError("ghost_from applies to ghost: copy")
        return self


def _unlabeled_ratio(frames: str) -> Any:
    """The field of a stage that mixes frames without ground truth into its batches."""
    return Field(
        0.0,
        ge=0,
        le=16,
        description=f"{frames} per labeled frame in every batch (round(batch_size × ratio) of "
        "them); 0: labeled frames only",
    )


class DistillConfig(StageConfig):
    """Student distillation from a frozen acclimated teacher."""

    STAGE: ClassVar[str] = "distill"
    losses: dict[str, float] = _objective("distill")
    teacher: ModelReference = Field(
        None,
        description="acclimated teacher: registry name@alias, run id, checkpoint path or s3:// URL",
    )
    acclimate_first: bool = Field(True, description="no teacher given: run acclimation first")
    unlabeled_ratio: float = _unlabeled_ratio("pseudo-labelled unlabeled frames")

    @property
    def needs_teacher_online(self) -> bool:
        """Whether a weighted term runs the teacher on each batch (else it is not loaded)."""
        return bool(TEACHER_ONLINE_TERMS & set(self.active_losses()))

    @model_validator(mode="after")
    def _pseudo_needs_unlabeled(self) -> DistillConfig:
        pseudo = self.losses.get("pseudo_silog", 0) > 0
        if pseudo and self.unlabeled_ratio == 0:
            raise ValueError(
                "losses.pseudo_silog needs unlabeled frames in the batches: set "
                "distill.unlabeled_ratio > 0 (e.g. 1.0)"
            )
        if self.unlabeled_ratio > 0 and not (pseudo or self.needs_teacher_online):
            raise ValueError(
                "distill.unlabeled_ratio > 0 mixes in frames without ground truth, but no "
                "weighted term uses them: weight pseudo_silog, attentive_kd or response_kd"
            )
        return self


class SupervisedConfig(StageConfig):
    """The student alone with its supervised loss: the no-KD baseline."""

    STAGE: ClassVar[str] = "supervised"
    losses: dict[str, float] = _objective("supervised")


class CrossDistillConfig(StageConfig):
    """URCDC mode: both branches trained jointly."""

    STAGE: ClassVar[str] = "cross_distill"
    losses: dict[str, float] = _objective("cross_distill")
    p_bypass: float = Field(0.05, ge=0, le=1, description="coupling bypass probability at start")
    anneal_from: float = Field(0.5, ge=0, le=1, description="fraction of training, then to 1")
    schedule: Literal["alternate", "sum"] = "alternate"
    unlabeled_ratio: float = _unlabeled_ratio(
        "unlabeled frames (taught only by the other branch's confident pixels: "
        "loss.cross_mode=rectified)"
    )

    @model_validator(mode="after")
    def _unlabeled_needs_rectified(self) -> CrossDistillConfig:
        if self.unlabeled_ratio == 0:
            return self
        if self.loss.cross_mode != "rectified":
            raise ValueError(
                "cross_distill.unlabeled_ratio > 0 needs cross_distill.loss.cross_mode=rectified: "
                "URCDC's own mode weights only pixels with ground truth, so frames without any "
                "would teach nothing"
            )
        if not {"cross_t2s", "cross_s2t"} & set(self.active_losses()):
            raise ValueError(
                "cross_distill.unlabeled_ratio > 0 mixes in frames without ground truth, but no "
                "weighted term uses them: weight cross_t2s or cross_s2t"
            )
        return self


class EvalConfig(StrictModel):
    protocol: str | None = Field(
        None, description="unset: nyu-eigen for NYU, kitti-garg-kbcrop for KITTI"
    )
    tta: Literal["none", "mean", "edge-blend"] = "none"
    max_batches: int | None = Field(None, ge=1, description="per rank; unset: the whole split")


class TrainConfig(StrictModel):
    """Settings every stage shares: cluster shape, precision, cadence, storage, failures."""

    BUILTIN_RESOURCES: ClassVar[tuple[str, ...]] = ("CPU", "GPU", "memory", "object_store_memory")

    workers: int = Field(1, ge=0, description="Ray Train workers; 0 runs in the driver (tests)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
    gpus_per_worker: float = Field(1.0, gt=0, description="with use_gpu; fractions share a GPU")
    resources: dict[str, float] = Field(
        {}, description="custom Ray resources per worker, e.g. {depthkd_worker: 1}: node pinning"
    )
    placement: Literal["PACK", "SPREAD", "STRICT_PACK", "STRICT_SPREAD"] = Field(
        "PACK", description="Ray placement of the workers; STRICT_SPREAD: one per node"
    )
    shared_filesystem: bool = Field(
        default_factory=lambda: os.environ.get(SHARED_FILESYSTEM_ENV, "").lower() in ("1", "true"),
        description="local paths are on a filesystem every node mounts (NFS, ReadWriteMany); "
        f"default: ${SHARED_FILESYSTEM_ENV} (a property of the deployment)",
    )
    strategy: Literal["ddp", "deepspeed"] = "ddp"
    zero_stage: int = Field(2, ge=0, le=3, description="DeepSpeed ZeRO stage")
    amp: Literal["off", "bf16", "fp16"] = "off"
    accumulate: int = Field(1, ge=1, description="micro-batches per optimizer step")
    grad_clip: float | None = Field(1.0, gt=0)
    log_every: int = Field(10, ge=1)
    eval_every: int = Field(100, ge=1)
    checkpoint_every: int = Field(50, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    max_failures: int = Field(0, ge=-1, description="worker-group restarts; -1: unlimited")
    storage: Location | None = Field(
        None, description="Ray storage (s3:// for multi-node); unset: $DEPTHKD_HOME/ray_results"
    )
    fail_at_step: int | None = Field(
        None, ge=1, description="test hook: rank 0 kills itself at this step on the first attempt"
    )

    @field_validator("resources")
    @classmethod
    def _custom_only(cls, value: dict[str, float]) -> dict[str, float]:
        builtin = sorted(set(value) & set(cls.BUILTIN_RESOURCES))
        if builtin:
            raise ValueError(
                f"{', '.join(builtin)} are set by cpus_per_worker / gpus_per_worker, not resources"
            )
        if any(amount <= 0 for amount in value.values()):
            raise ValueError(f"resource amounts must be positive, got {value}")
        return value


class TrackingConfig(StrictModel):
    experiment: str = "depthkd"
    register_models: bool = Field(True, description="register the job's teachers and student")
    student_model: str = "depthkd-student"
    teacher_model: str = Field("depthkd-teacher", description="depth teachers (@pretrained)")
    acclimated_model: str = Field(
        "depthkd-acclimated-teacher",
        description="acclimated teachers (@newest); each fits one student, named in its tags",
    )
    system_metrics: bool = True


class LatencyBudget(StrictModel):
    """A deployment budget: the model's median CPU latency at batch 1 and this size."""

    height: int = Field(ge=16)
    width: int = Field(ge=16)
    ms: float = Field(gt=0, description="most milliseconds a forward pass may take")


class PromotionConfig(StrictModel):
    """The gate in front of `<student_model>@champion` (`depthkd promote`).

    Both models are evaluated now, on the same shard set, split and protocol. Relative amounts:
    0.01 is 1 %. Metrics where higher is better (d1, d2, d3) are handled as such.
    """

    metric: str = Field("abs_rel", description="the metric the challenger must win on")
    margin: float = Field(0.01, ge=0.0, lt=1.0, description="relative win needed on `metric`")
    guards: dict[str, float] = Field(
        default_factory=lambda: {"rmse": 0.02, "d1": 0.02},
        description="metric -> most relative regression tolerated",
    )
    floor: dict[str, float] = Field(
        default_factory=lambda: {"abs_rel": 1.0, "d1": 0.1},
        description="sanity floor of a first challenger (no champion): worst value accepted",
    )
    split: str | None = Field(None, description="split the gate evaluates on (default: test)")
    budget: LatencyBudget | None = None
    retries: int = Field(
        2, ge=0, description="comparisons again when the champion moved during one"
    )
    allow_noncommercial_teacher: bool = Field(
        False,
        description="promote a student whose teacher's licence is non-commercial (cc-by-nc-*)",
    )

    @model_validator(mode="after")
    def _known_metrics(self) -> PromotionConfig:
        named = {"promotion.metric": [self.metric]} | {
            f"promotion.{section}": list(getattr(self, section)) for section in ("guards", "floor")
        }
        for where, names in named.items():
            if unknown := [n for n in names if n not in METRIC_NAMES]:
                raise ValueError(
                    f"{where}: unknown metric {', '.join(unknown)} "
                    f"(known: {', '.join(METRIC_NAMES)})"
                )
        if negative := [k for k, v in self.guards.items() if v < 0]:
            raise ValueError(f"promotion.guards: negative tolerance for {', '.join(negative)}")
        return self


class ExperimentConfig(StrictModel):
    """One experiment, one file: data, models, the stages and how they are tracked."""

    name: str = Field("demo", pattern=r"^[A-Za-z0-9_.-]+$", description="job id; reuse resumes")
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    teacher: TeacherStageConfig = TeacherStageConfig()
    acclimate: AcclimateConfig = AcclimateConfig()
    distill: DistillConfig = DistillConfig()
    supervised: SupervisedConfig = SupervisedConfig()
    cross_distill: CrossDistillConfig = CrossDistillConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
    promotion: PromotionConfig = Field(default_factory=PromotionConfig)
    allow_test_selection: bool = Field(
        False, description="permit evaluating, early-stopping or selecting on the test split"
    )

    @model_validator(mode="after")
    def _cross_distill_has_unlabeled_frames(self) -> ExperimentConfig:
        if self.cross_distill.unlabeled_ratio > 0 and not self.data.has_unlabeled_frames:
            raise ValueError(
                "cross_distill.unlabeled_ratio > 0 needs frames without ground truth: set "
                "data.unlabeled (RGB-only shards), data.pseudo_labels, or "
                "data.synthetic.unlabeled_n for the bundled set"
            )
        return self

    @model_validator(mode="after")
    def _honest_selection(self) -> ExperimentConfig:
        if self.data.eval_split == self.data.test_split and not self.allow_test_selection:
            raise ValueError(
                f"data.eval_split is the test split {self.data.test_split!r}: training-time "
                "evaluation, early stopping and selection must read val (set data.eval_split: "
                "val), or say allow_test_selection: true"
            )
        return self
