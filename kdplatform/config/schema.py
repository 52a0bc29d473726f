"""Typed configuration of depthkd (pydantic v2).

Every model forbids unknown keys, so a typo is an error that names the key instead of a setting
that silently does nothing. Configs cross process boundaries (Ray workers) as plain dicts
(`cfg.model_dump(mode="json")`) and become typed again with `model_validate`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


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


def depthkd_home() -> Path:
    """Root of all local state of the embedded default: `$DEPTHKD_HOME`, default `./.depthkd`."""
    return Path(os.environ.get("DEPTHKD_HOME", ".depthkd")).resolve()


class SynthConfig(StrictModel):
    """Procedural RGB-D data written in a real dataset's raw layout."""

    layout: Literal["kitti", "nyu"] = "nyu"
    n: int = Field(200, ge=1, description="number of frames, train + test")
    seed: int = 0
    height: int | None = Field(None, ge=16, description="frame height; native size if unset")
    width: int | None = Field(None, ge=16, description="frame width; native size if unset")
    test_fraction: float = Field(0.2, ge=0.0, lt=1.0)


class PrepareConfig(StrictModel):
    """Options of `depthkd data prepare`: one raw split to one set of shards."""

    dataset: str = Field(description="kitti | nyu | nyu-mat | folder")
    root: Path = Field(description="raw dataset root (the .mat file for nyu-mat)")
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
    focal: float | None = Field(None, gt=0, description="folder: focal length in pixels")
    subset: Literal["train", "test"] | None = Field(None, description="nyu-mat: index list")
    depth_field: Literal["rawDepths", "depths"] = "rawDepths"

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


class DataConfig(StrictModel):
    """Where the shards are and how the loader streams them."""

    shards: Path | None = Field(
        None,
        description="prepared shard dir; unset: the bundled synthetic set in DEPTHKD_HOME",
    )
    synthetic: SynthConfig = SynthConfig()
    train_split: str = "train"

    @field_validator("shards")
    @classmethod
    def _absolute_shards(cls, value: Path | None) -> Path | None:
        return absolute_path(value)

    eval_split: str = "test"
    batch_size: int = Field(8, ge=1)
    eval_batch_size: int = Field(4, ge=1)
    num_workers: int = Field(2, ge=0, description="loader processes per rank")
    shuffle_buffer: int = Field(256, ge=0)
    steps_per_epoch: int = Field(50, ge=1, description="batches per rank per epoch")
    eval_kb_crop: bool = Field(False, description="KB-crop eval frames (KITTI kb-cropped protocol)")
    augment: AugmentConfig = AugmentConfig()


class StudentConfig(StrictModel):
    """The CNN student: a registered name (`depthkd models list`) or any timm CNN name."""

    name: str = "mobilenetv2_100"
    weights: Path | None = Field(None, description="local encoder weights (.safetensors/.pth)")
    decoder_channels: tuple[int, int, int, int] = Field(
        (32, 48, 64, 96), description="LG decoder width at 1/4, 1/8, 1/16, 1/32"
    )
    lg_global: bool = Field(True, description="False: LG blocks without the global path")
    lg_reduction: int = Field(4, ge=1)

    @field_validator("weights")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return absolute_path(value)

    @field_validator("decoder_channels")
    @classmethod
    def _positive(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if min(value) < 1:
            raise ValueError("decoder widths must be positive")
        return value


class TeacherConfig(StrictModel):
    """The transformer teacher: a registered name or a timm Swin / ViT / ConvNeXt name."""

    name: str = "swin_tiny"
    weights: Path | None = Field(None, description="local encoder weights (.safetensors/.pth)")
    decoder_width: int | None = Field(None, ge=8, description="DPT decoder width; registry default")

    @field_validator("weights")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return absolute_path(value)


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
    """Weights and settings of the named loss terms; each term is logged on its own."""

    silog: float = Field(1.0, ge=0, description="supervised SILog weight")
    variance_focus: float = Field(0.85, ge=0, le=1)
    min_depth: float | None = Field(
        None, gt=0, description="GT threshold of the supervised loss; unset: 1 m KITTI, 0.1 m NYU"
    )
    attentive_kd: float = Field(1.0, ge=0, description="α: attentive feature KD weight")
    attention_tau: float = Field(1.0, gt=0, description="τ: attention temperature")
    attentive: bool = Field(True, description="False: uniform feature KD (ablation)")
    response_kd: float = Field(0.5, ge=0, description="β: student vs teacher depth")
    response_kind: Literal["l1", "log_l1", "silog"] = "log_l1"
    cross: float = Field(0.1, ge=0, description="URCDC pseudo-label weight")
    cross_mode: Literal["urcdc", "rectified"] = "urcdc"
    confidence_temperature: float = Field(0.2, gt=0, description="T_u (URCDC: 1/T_u = 5)")
    confidence_fit: float = Field(0.5, ge=0)


class StageConfig(StrictModel):
    """One training stage: how long, its optimizer and its losses."""

    steps: int = Field(200, ge=1, description="optimizer steps")
    optim: OptimConfig = OptimConfig()
    loss: LossConfig = LossConfig()


class AcclimateConfig(StageConfig):
    """Teacher acclimation: teacher encoder at a low lr, adapters and ghost decoder."""

    optim: OptimConfig = OptimConfig(backbone_lr_mult=0.1)
    teacher_loss: float = Field(1.0, ge=0, description="SILog weight on the teacher's own head")
    freeze_ghost_after: int | None = Field(
        None, ge=0, description="freeze the ghost decoder after this many steps (None: never)"
    )


class DistillConfig(StageConfig):
    """Student distillation from a frozen acclimated teacher."""

    teacher: str | None = Field(
        None, description="acclimated teacher: registry name@alias, run id or checkpoint path"
    )
    acclimate_first: bool = Field(True, description="no teacher given: run acclimation first")


class CrossDistillConfig(StageConfig):
    """URCDC mode: both branches trained jointly."""

    p_bypass: float = Field(0.05, ge=0, le=1, description="coupling bypass probability at start")
    anneal_from: float = Field(0.5, ge=0, le=1, description="fraction of training, then to 1")
    schedule: Literal["alternate", "sum"] = "alternate"


class EvalConfig(StrictModel):
    protocol: str | None = Field(
        None, description="unset: nyu-eigen for NYU, kitti-garg-kbcrop for KITTI"
    )
    tta: Literal["none", "mean", "edge-blend"] = "none"
    max_batches: int | None = Field(None, ge=1, description="per rank; unset: the whole split")


class TrainConfig(StrictModel):
    """Settings every stage shares: cluster shape, precision, cadence, storage, failures."""

    workers: int = Field(1, ge=0, description="Ray Train workers; 0 runs in the driver (tests)")
    use_gpu: bool = False
    cpus_per_worker: float = Field(1.0, gt=0)
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
    storage: Path | None = Field(None, description="Ray storage; unset: $DEPTHKD_HOME/ray_results")
    fail_at_step: int | None = Field(
        None, ge=1, description="test hook: rank 0 kills itself at this step on the first attempt"
    )

    @field_validator("storage")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        return absolute_path(value)


class TrackingConfig(StrictModel):
    experiment: str = "depthkd"
    register_models: bool = Field(True, description="register acclimated teacher and student")
    student_model: str = "depthkd-student"
    teacher_model: str = "depthkd-teacher"
    system_metrics: bool = True


class ExperimentConfig(StrictModel):
    """One experiment, one file: data, models, the stages and how they are tracked."""

    name: str = Field("demo", pattern=r"^[A-Za-z0-9_.-]+$", description="job id; reuse resumes")
    seed: int = 0
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    acclimate: AcclimateConfig = AcclimateConfig()
    distill: DistillConfig = DistillConfig()
    cross_distill: CrossDistillConfig = CrossDistillConfig()
    eval: EvalConfig = EvalConfig()
    tracking: TrackingConfig = TrackingConfig()
