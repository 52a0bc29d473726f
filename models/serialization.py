"""The self-describing model file: `{"arch": ..., "state_dict": ..., "meta": ...}` (nanoGPT style).

`arch` holds the kind and builder arguments (`DepthModel.arch`, `AcclimatedTeacher.arch`), so the
file rebuilds its model with no YAML; `meta` holds facts about how it was trained that inference
needs, such as `input_size` (the (height, width) of the frames it was evaluated on). A loaded
model carries `meta` as an attribute, so it survives a reload and re-save. Written atomically,
read with `weights_only=True`. Training exports, registry artifacts and the MLflow pyfunc all use
it.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

import torch
from torch import nn

from depthkd import atomic
from depthkd.errors import CheckpointError, RegistryError
from depthkd.models.kinds import ModelKind

if TYPE_CHECKING:  # annotations only: the models are imported where a file is loaded
    from depthkd.models.depth_model import DepthModel
    from depthkd.models.ghost import AcclimatedTeacher, TeacherModel

_PREFIXES = ("module.", "_orig_mod.")


def unwrap(model: nn.Module) -> nn.Module:
    """The bare model inside DDP / DeepSpeed (`.module`) and `torch.compile` (`._orig_mod`)."""
    while True:
        inner = getattr(model, "module", None) or getattr(model, "_orig_mod", None)
        if not isinstance(inner, nn.Module):
            return model
        model = inner


def clean_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """State dict keys without DDP (`module.`) / torch.compile (`_orig_mod.`) prefixes."""
    cleaned = {}
    for key, value in state.items():
        while key.startswith(_PREFIXES):
            key = key.split(".", 1)[1]
        cleaned[key] = value
    return cleaned


def model_arch(model: nn.Module) -> dict[str, Any]:
    """The `arch` (kind and builder arguments) of a (possibly wrapped) model built by
    `models.zoo`; a CheckpointError for any other model."""
    bare = unwrap(model)
    arch = getattr(bare, "arch", None)
    if not isinstance(arch, dict) or not arch.get("kind"):
        raise CheckpointError(
            f"{type(bare).__name__} has no arch; cannot export it",
            hint="export models built by depthkd.models.zoo (build_student, build_teacher, ...)",
        )
    return arch


def model_payload(model: nn.Module, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """`{"arch", "state_dict", "meta"}` of a (possibly wrapped) model built by `models.zoo`, on
    the CPU; `meta` updates the model's own `meta` attribute (if any)."""
    arch = model_arch(model)
    bare = unwrap(model)
    state = {k: v.detach().cpu() for k, v in clean_state_dict(bare.state_dict()).items()}
    return {"arch": arch, "state_dict": state, "meta": {**model_meta(bare), **(meta or {})}}


def model_meta(model: nn.Module) -> dict[str, Any]:
    """The `meta` a loaded model carries (empty for a model built in this process)."""
    return dict(getattr(unwrap(model), "meta", None) or {})


def save_model(model: nn.Module, path: Path, *, meta: dict[str, Any] | None = None) -> Path:
    """Writes `model_payload(model, meta)` to `path` atomically."""
    buffer = io.BytesIO()
    torch.save(model_payload(model, meta), buffer)
    atomic.write_bytes(Path(path), buffer.getvalue())
    return Path(path)


def _half(tensor: torch.Tensor) -> torch.Tensor:
    """float16 where it holds the values (BatchNorm variances can exceed its 65504)."""
    if tensor.dtype != torch.float32:
        return tensor
    half = tensor.half()
    return half if torch.isfinite(half).all() else tensor


def save_half(src: Path, dst: Path) -> Path:
    """Writes a copy of the model file `src` to `dst` with its float32 tensors in float16 (those
    whose values it holds): half the bytes, for a file shipped in a repository. `load_model`
    loads it back in float32 (depth changes by float16 rounding only).

    Raises:
        CheckpointError: `src` is not a readable model file.
    """
    model = load_model(src)
    payload = model_payload(model)
    payload["state_dict"] = {k: _half(v) for k, v in payload["state_dict"].items()}
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    atomic.write_bytes(Path(dst), buffer.getvalue())
    return Path(dst)


# the kind a file must hold decides the class it rebuilds to (`models.zoo.build_from_arch`)
@overload
def load_model(
    path: Path, *, expect: Literal[ModelKind.ACCLIMATED_TEACHER], source: str | None = None
) -> AcclimatedTeacher: ...
@overload
def load_model(
    path: Path, *, expect: Literal[ModelKind.STUDENT], source: str | None = None
) -> DepthModel: ...
@overload
def load_model(
    path: Path, *, expect: Literal[ModelKind.TEACHER], source: str | None = None
) -> TeacherModel: ...
@overload
def load_model(
    path: Path,
    *,
    expect: ModelKind | Collection[ModelKind] | None = None,
    source: str | None = None,
) -> TeacherModel | AcclimatedTeacher: ...
def load_model(
    path: Path,
    *,
    expect: ModelKind | Collection[ModelKind] | None = None,
    source: str | None = None,
) -> TeacherModel | AcclimatedTeacher:
    """Rebuilds the model of a file written by `save_model` and loads its state, in eval mode.

    Args:
        path: the model file.
        expect: the kind (or kinds) the file must hold, exactly: a plain teacher is not an
            acclimated one, nor the other way round.
        source: what to call the file in errors (a registry reference it was downloaded for).

    Raises:
        CheckpointError: unreadable file, no arch / state_dict, wrong kind, or a mismatch.
    """
    from depthkd.models.zoo import build_from_arch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"model file {path} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read model file {path}: {exc}") from exc
    if not isinstance(payload, dict) or not {"arch", "state_dict"} <= payload.keys():
        raise CheckpointError(f"{path} is not a depthkd model file (no arch / state_dict)")
    arch = payload["arch"]
    kind = arch.get("kind", "") if isinstance(arch, dict) else ""
    wanted = {expect} if isinstance(expect, str) else set(expect or ())
    if wanted and kind not in wanted:
        raise CheckpointError(
            f"{source or path} holds a model of kind {kind or 'unknown'!r}, not "
            + " or ".join(repr(str(k)) for k in sorted(wanted))
        )
    try:
        model = build_from_arch(arch)
        model.load_state_dict(clean_state_dict(payload["state_dict"]))
    except (KeyError, ValueError, RuntimeError, RegistryError) as exc:
        raise CheckpointError(f"{path} does not rebuild its model (arch {arch!r}): {exc}") from exc
    meta = payload.get("meta") or {}
    # torch annotates Module.__setattr__ for tensors and modules only; any value is accepted
    model.meta = dict(meta) if isinstance(meta, dict) else {}  # type: ignore[assignment]
    return model.eval()
