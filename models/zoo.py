"""Registered students and teachers, and the builders that turn model config into modules.

A registered name fixes the timm encoder and any encoder arguments; everything else comes from the
config (`StudentConfig`, `TeacherConfig`). Any other timm name works too: CNNs as students,
Swin / ViT / ConvNeXt as teachers. `build_*` are the only places that assemble models, so a
checkpoint's `arch` (name + arguments) rebuilds exactly the model that wrote it.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import timm

from depthkd.config.schema import EncoderWeights, ModelConfig, StudentConfig, TeacherConfig
from depthkd.errors import CheckpointError, RegistryError
from depthkd.models.backbones import build_backbone
from depthkd.models.decoders import DPTDecoder, LGDecoder
from depthkd.models.depth_model import DepthModel
from depthkd.models.ghost import AcclimatedTeacher, GhostDecoder, TeacherModel
from depthkd.models.heads import DepthHead
from depthkd.models.hf_teachers import (
    ExternalDepthModel,
    HFDepthTeacher,
    hf_arch,
    hf_teacher_from_arch,
    metric_hf_teacher,
)
from depthkd.models.kinds import ModelKind
from depthkd.models.urcdc import CrossDistillModel
from depthkd.models.weights import (
    fetch_weights,
    fetch_with_deadline,
    pretrained_repo,
    weights_location,
)
from depthkd.registry import Registry


@dataclass(frozen=True)
class Encoder:
    """A registered encoder: the timm model it is, timm arguments, and the decoder default."""

    timm_name: str
    timm_kwargs: dict = field(default_factory=dict)
    decoder_width: int = 128


_Config = TypeVar("_Config", StudentConfig, TeacherConfig)

STUDENTS: Registry[Encoder] = Registry("student")
TEACHERS: Registry[Encoder] = Registry("teacher")

for _name in (
    "mobilenetv2_100",
    "mobilenetv2_050",
    "efficientnet_b0",
    "resnet18",
    "resnet34",
    "mobilenetv3_large_100",
    "ghostnet_100",
):
    STUDENTS.register(_name)(Encoder(_name))

TEACHERS.register("swin_tiny")(Encoder("swin_tiny_patch4_window7_224"))
TEACHERS.register("swin_base")(Encoder("swin_base_patch4_window7_224", decoder_width=256))
TEACHERS.register("vit_small_dpt")(Encoder("vit_small_patch16_224"))
TEACHERS.register("vit_base_dpt")(Encoder("vit_base_patch16_224", decoder_width=256))
TEACHERS.register("convnext_tiny")(Encoder("convnext_tiny"))
# Tiny teachers for tests and the laptop demo: real Swin / ViT code, a fraction of the width.
TEACHERS.register("swin_micro")(
    Encoder(
        "swin_tiny_patch4_window7_224",
        {"embed_dim": 32, "depths": (1, 1, 1, 1), "num_heads": (1, 2, 4, 8)},
        decoder_width=32,
    )
)
# The demo's teacher: four stages of two Swin blocks at 80 channels, 16 M parameters, about 4x
# the demo student's CPU latency at the demo's 80x256.
TEACHERS.register("swin_mini")(
    Encoder(
        "swin_tiny_patch4_window7_224",
        {"embed_dim": 80, "depths": (2, 2, 2, 2), "num_heads": (2, 4, 8, 16)},
        decoder_width=80,
    )
)
TEACHERS.register("vit_micro_dpt")(
    Encoder("vit_tiny_patch16_224", {"depth": 4, "embed_dim": 96, "num_heads": 3}, decoder_width=32)
)


def encoder_rows() -> list[tuple[str, str, str, str]]:
    """(role, name, timm model with its arguments, what `pretrained: true` loads) for every
    registered student and teacher: `depthkd models list` and docs/models.md."""
    rows = []
    for role, registry in (("student", STUDENTS), ("teacher", TEACHERS)):
        for name in registry.names():
            enc = registry.get(name)
            arguments = ", ".join(f"{k}={v}" for k, v in enc.timm_kwargs.items())
            timm_model = f"{enc.timm_name} ({arguments})" if arguments else enc.timm_name
            repo = pretrained_weights(enc)
            rows.append((role, name, timm_model, f"hf-hub:{repo}" if repo else "none"))
    return rows


def _encoder(registry: Registry[Encoder], name: str) -> Encoder:
    if name in registry:
        return registry.get(name)
    if timm.is_model(name):
        return Encoder(name)
    candidates = registry.names() + timm.list_models()
    close = difflib.get_close_matches(name, candidates, n=3, cutoff=0.6)
    raise RegistryError(
        f"unknown {registry.kind} {name!r}: neither registered ({', '.join(registry.names())}) "
        f"nor a timm {timm.__version__} model",
        hint=f"did you mean {', '.join(close)}?" if close else None,
    )


def check_model_names(student: str, teacher: str | None) -> None:
    """Raises RegistryError (with close matches) for a student or teacher name nothing builds:
    for the driver, before any worker would fail on it (None: a teacher not built by name)."""
    _encoder(STUDENTS, student)
    if teacher is not None:
        _encoder(TEACHERS, teacher)


def check_encoder_weights(cfg: ModelConfig) -> None:
    """Fetches the student's and teacher's encoder weights, if any, to this machine and loads
    them into their encoders: for the driver, so that a source that cannot be reached or does not
    fit fails here, within seconds, not in every worker.

    Raises:
        CheckpointError: naming `model.student` or `model.teacher` and what is wrong.
    """
    encoders: list[tuple[str, StudentConfig | TeacherConfig, Registry[Encoder]]]
    encoders = [("student", cfg.student, STUDENTS)]
    if cfg.teacher.source == "timm":
        encoders.append(("teacher", cfg.teacher, TEACHERS))
    for role, encoder, registry in encoders:
        enc = _encoder(registry, encoder.name)
        try:
            location = _weights_location(encoder, enc)
            if location is not None:
                path = fetch_with_deadline(location)
                build_backbone(enc.timm_name, weights=path, **enc.timm_kwargs)
        except CheckpointError as exc:
            raise CheckpointError(f"model.{role} ({encoder.name}): {exc}", hint=exc.hint) from None


def _weights_location(encoder: StudentConfig | TeacherConfig, enc: Encoder) -> str | None:
    if encoder.pretrained and enc.timm_kwargs:
        raise CheckpointError(
            f"{encoder.name} is timm's {enc.timm_name} at another size: no released weights fit",
            hint="drop pretrained, or pick a name `depthkd models list` shows with weights",
        )
    return weights_location(encoder, enc.timm_name)


def _encoder_weights(encoder: StudentConfig | TeacherConfig, enc: Encoder) -> Path | None:
    """The local file of `encoder`'s weights (fetched to this node), None: random init."""
    location = _weights_location(encoder, enc)
    return None if location is None else fetch_weights(location)


def pretrained_weights(enc: Encoder) -> str | None:
    """The hub repo that `pretrained: true` loads for a registered encoder (timm's default
    weights), None where none fits."""
    return None if enc.timm_kwargs else pretrained_repo(enc.timm_name)


def build_student(cfg: StudentConfig, *, max_depth: float) -> DepthModel:
    """The CNN student: pyramid encoder + LG decoder + `max_depth·sigmoid` head."""
    enc = _encoder(STUDENTS, cfg.name)
    backbone = build_backbone(enc.timm_name, weights=_encoder_weights(cfg, enc), **enc.timm_kwargs)
    decoder = LGDecoder(
        backbone.feature_info.channels,
        cfg.decoder_channels,
        use_global=cfg.lg_global,
        reduction=cfg.lg_reduction,
    )
    head = DepthHead(decoder.out_channels, max_depth=max_depth)
    arch = {
        "kind": ModelKind.STUDENT.value,
        "config": cfg.model_dump(mode="json"),
        "max_depth": max_depth,
    }
    return DepthModel(backbone, decoder, head, arch=arch)


def build_given_teacher(cfg: TeacherConfig, *, max_depth: float) -> TeacherModel:
    """The teacher `cfg` describes: the Hugging Face depth model `cfg.hf_id` names
    (`source: hf`), else `build_teacher`'s."""
    if cfg.source == "hf":
        assert cfg.hf_id is not None  # the config's validator
        return _hf_teacher(metric_hf_teacher(cfg.hf_id), cfg, max_depth=max_depth)
    return build_teacher(cfg, max_depth=max_depth)


def build_teacher(cfg: TeacherConfig, *, max_depth: float) -> DepthModel:
    """The transformer teacher: pyramid encoder + DPT decoder + `max_depth·sigmoid` head."""
    enc = _encoder(TEACHERS, cfg.name)
    backbone = build_backbone(enc.timm_name, weights=_encoder_weights(cfg, enc), **enc.timm_kwargs)
    decoder = DPTDecoder(
        backbone.feature_info.channels, width=cfg.decoder_width or enc.decoder_width
    )
    head = DepthHead(decoder.out_channels, max_depth=max_depth)
    arch = {
        "kind": ModelKind.TEACHER.value,
        "config": teacher_arch_config(cfg),
        "max_depth": max_depth,
    }
    return DepthModel(backbone, decoder, head, arch=arch)


def _hf_teacher(
    teacher: HFDepthTeacher, cfg: TeacherConfig, *, max_depth: float
) -> ExternalDepthModel:
    arch = {
        "kind": ModelKind.TEACHER.value,
        "config": teacher_arch_config(cfg),
        "max_depth": max_depth,
        "hf": hf_arch(teacher),  # a model file rebuilds it without the hub or the directory
    }
    return ExternalDepthModel(teacher, max_depth=max_depth, arch=arch)


def teacher_arch_config(cfg: TeacherConfig) -> dict:
    """What of `cfg` a model file keeps: the architecture, not where its weights came from nor
    under which licence."""
    return cfg.model_dump(mode="json", exclude={"checkpoint", "key_map", "licence"})


# where an encoder's starting weights came from: not architecture
WEIGHT_SOURCE_KEYS = frozenset(EncoderWeights.model_fields)


def arch_mismatch(arch_config: dict, cfg: StudentConfig | TeacherConfig) -> list[str]:
    """`key: file value != config value` for each architecture setting of a model file's
    `arch_config` that differs from `cfg` (encoder weight sources are not architecture)."""
    ours = (
        teacher_arch_config(cfg) if isinstance(cfg, TeacherConfig) else cfg.model_dump(mode="json")
    )
    fields = type(cfg).model_fields
    # a key a file written before it existed lacks holds that key's default
    theirs = {key: arch_config.get(key, fields[key].get_default()) for key in ours}
    return [
        f"{key}: {theirs[key]!r} != {value!r}"
        for key, value in ours.items()
        if key not in WEIGHT_SOURCE_KEYS and theirs[key] != value
    ]


def build_ghost_decoder(
    teacher: TeacherModel, student_cfg: StudentConfig, *, student_channels: tuple[int, ...]
) -> GhostDecoder:
    """A ghost decoder with the student's decoder configuration, fed by `teacher`'s pyramid.

    `student_channels` are the student encoder's channels (`feature_info.channels`), which the
    adapters map the teacher's pyramid onto.
    """
    return GhostDecoder(
        teacher.backbone.feature_info.channels,
        student_channels,
        student_cfg.decoder_channels,
        max_depth=teacher.max_depth,
        use_global=student_cfg.lg_global,
        reduction=student_cfg.lg_reduction,
    )


def build_acclimated_teacher(
    teacher_cfg: TeacherConfig,
    student_cfg: StudentConfig,
    *,
    max_depth: float,
    teacher: TeacherModel | None = None,
) -> AcclimatedTeacher:
    """Teacher + ghost decoder shaped for the student that `student_cfg` describes.

    Args:
        teacher: the depth teacher to acclimate (a given one); default: built from `teacher_cfg`.
    """
    if teacher is None:
        teacher = build_given_teacher(teacher_cfg, max_depth=max_depth)
    channels = student_feature_channels(student_cfg)
    ghost = build_ghost_decoder(teacher, student_cfg, student_channels=channels)
    arch = {
        "kind": ModelKind.ACCLIMATED_TEACHER.value,
        "config": teacher_arch_config(teacher_cfg),
        "student": student_cfg.model_dump(mode="json"),
        "max_depth": max_depth,
    }
    if "hf" in teacher.arch:
        arch["hf"] = teacher.arch["hf"]
    return AcclimatedTeacher(teacher, ghost, arch=arch)


def build_cross_distill(
    teacher_cfg: TeacherConfig,
    student_cfg: StudentConfig,
    *,
    max_depth: float,
    p_bypass: float = 0.05,
) -> CrossDistillModel:
    """URCDC's dual branch from the teacher and student configs."""
    return CrossDistillModel(
        build_teacher(teacher_cfg, max_depth=max_depth),
        build_student(student_cfg, max_depth=max_depth),
        p_bypass=p_bypass,
    )


def student_feature_channels(cfg: StudentConfig) -> tuple[int, ...]:
    """The student encoder's pyramid channels, read from timm's feature_info (random init)."""
    enc = _encoder(STUDENTS, cfg.name)
    return build_backbone(enc.timm_name, **enc.timm_kwargs).feature_info.channels


def build_from_arch(arch: dict[str, Any]) -> TeacherModel | AcclimatedTeacher:
    """Rebuilds (random init) the model a checkpoint's `arch` describes; load its state after.

    Encoder weight sources named in the arch are not read again: the checkpoint's state replaces
    them, and the source may not be reachable where the checkpoint is loaded.

    Raises:
        KeyError, ValueError: an arch without its configs or max_depth, or an invalid config.
        RegistryError: an unknown kind.
    """
    kind = arch.get("kind")
    if kind == ModelKind.STUDENT:
        return build_student(
            _arch_config(arch, "config", StudentConfig), max_depth=arch["max_depth"]
        )
    if kind == ModelKind.TEACHER and "hf" in arch:
        cfg = _arch_config(arch, "config", TeacherConfig)
        return _hf_teacher(hf_teacher_from_arch(arch["hf"]), cfg, max_depth=arch["max_depth"])
    if kind == ModelKind.TEACHER:
        return build_teacher(
            _arch_config(arch, "config", TeacherConfig), max_depth=arch["max_depth"]
        )
    if kind == ModelKind.ACCLIMATED_TEACHER:
        teacher_cfg = _arch_config(arch, "config", TeacherConfig)
        return build_acclimated_teacher(
            teacher_cfg,
            _arch_config(arch, "student", StudentConfig),
            max_depth=arch["max_depth"],
            teacher=_hf_teacher(
                hf_teacher_from_arch(arch["hf"]), teacher_cfg, max_depth=arch["max_depth"]
            )
            if "hf" in arch
            else None,
        )
    raise RegistryError(f"unknown model kind {kind!r} in checkpoint arch")


def _arch_config(arch: dict[str, Any], key: str, cls: type[_Config]) -> _Config:
    """`arch[key]` validated as `cls`, its encoder weight source left out."""
    return cls.model_validate({**arch[key], "weights": None, "pretrained": False})
