"""timm encoders as four-scale feature pyramids (1/4, 1/8, 1/16, 1/32), always NCHW.

Every student, teacher, ghost decoder, adapter and coupling unit sizes itself from
`Backbone.feature_info` (channels and reductions per scale), never from hard-coded channel lists.

* CNNs (`features_only`) give five scales from 1/2; the 1/2 map is dropped (it is computed on the
  way anyway, so selecting costs nothing).
* Swin gives NHWC maps; they are permuted to NCHW here. It is created with `strict_img_size=False`
  so any input size works (timm pads windows).
* Plain ViTs give one stride (the patch size) at every block; a DPT-style reassembly (Ranftl et
  al., "Vision Transformers for Dense Prediction") projects four evenly spaced blocks and resamples
  them to 1/4 … 1/32. ViTs use `dynamic_img_size`, so any input divisible by the patch size works.

`input_multiple` is the size every input side must divide into; `DepthModel` pads to it.

Weights come as a local `.safetensors`/`.pth` file (`depthkd.models.weights` fetches hub repos
and `s3://` objects to one first), read with `weights_only=True` and loaded strictly: a whole timm
model's state dict in timm's own layout, as timm's hub files hold (original Swin / ViT release
files are converted by loading them into timm once and saving its `state_dict()`).
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import timm
import torch
from torch import nn

from depthkd.errors import CheckpointError, ConfigError, RegistryError

PYRAMID_REDUCTIONS = (4, 8, 16, 32)
_VIT_PREFIXES = ("vit_", "deit_", "deit3_")
_SWIN_PREFIXES = ("swin",)


@dataclass(frozen=True)
class FeatureInfo:
    """Channels and reductions (input size / feature size) of the four pyramid scales."""

    channels: tuple[int, ...]
    reductions: tuple[int, ...] = PYRAMID_REDUCTIONS


def load_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Reads a local weights file (`.safetensors`, or a torch file loaded with weights_only=True).

    A checkpoint that wraps its weights in `state_dict` / `model` / `module` is unwrapped.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"weights file {path} does not exist")
    state: object
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt file, foreign pickle: say which file
        raise CheckpointError(f"cannot read weights file {path}: {exc}") from exc
    for key in ("state_dict", "model", "module"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise CheckpointError(f"weights file {path} does not hold a state dict of tensors")
    return state


def check_timm_name(name: str) -> None:
    """Raises RegistryError (with close matches) when timm has no model called `name`."""
    if timm.is_model(name):
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=3, cutoff=0.6)
    raise RegistryError(
        f"unknown backbone {name!r}: timm {timm.__version__} has no such model",
        hint=f"did you mean {', '.join(close)}?" if close else "see `timm.list_models()`",
    )


_SHOWN = 6  # keys listed per kind of mismatch


def _full_name(feature_key: str, full_keys: set[str]) -> str:
    """The key in the whole timm model of a `features_only` model's key: timm's feature wrappers
    hold the same modules, as `model.` (ViT, Swin getters) or with a flattened first
    `stages.0` → `stages_0` (feature lists)."""
    key = feature_key.removeprefix("model.")
    head, dot, rest = key.partition(".")
    stem, _, index = head.rpartition("_")
    if stem and index.isdigit() and f"{stem}.{index}{dot}{rest}" in full_keys:
        return f"{stem}.{index}{dot}{rest}"
    return key


def fit_report(
    features: nn.Module, state: dict[str, torch.Tensor], full: dict[str, torch.Tensor]
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The state dict for `features` taken from `state` (a whole timm model's keys), and what does
    not fit: `missing (n): …`, `unexpected (n): …`, `wrong shape (n): …`.

    Args:
        features: the `features_only` model to load.
        state: the weights file's tensors.
        full: the whole model's state dict (meta tensors do): which keys exist at all. A
            classifier or final layers that the feature model has no use for may be absent.
    """
    ours = features.state_dict()
    mapping = {key: _full_name(key, set(full)) for key in ours}
    missing = [name for name in mapping.values() if name not in state]
    unexpected = [key for key in state if key not in full]
    misshapen = [
        f"{name} {tuple(state[name].shape)} vs {tuple(ours[key].shape)}"
        for key, name in mapping.items()
        if name in state and state[name].shape != ours[key].shape
    ]
    loadable = {key: state[name] for key, name in mapping.items() if name in state}
    return loadable, mismatch_lines(missing, unexpected, misshapen)


def mismatch_lines(missing: list[str], unexpected: list[str], misshapen: list[str]) -> list[str]:
    """`missing (n): a, b, …` and the like for each non-empty list (a few keys each)."""
    return [
        f"{what} ({len(keys)}): {', '.join(keys[:_SHOWN])}{' …' if len(keys) > _SHOWN else ''}"
        for what, keys in (
            ("missing", missing),
            ("unexpected", unexpected),
            ("wrong shape", misshapen),
        )
        if keys
    ]


def _create_timm(name: str, weights: Path | None, **kwargs: Any) -> nn.Module:
    """A `features_only` timm model, random or with every tensor from `weights` (a whole timm
    model's state dict; the classifier may be left out). The load is strict: any key missing,
    left over or of another shape is an error that lists them, never a half-loaded encoder."""
    check_timm_name(name)
    model = _create_features(name, **kwargs)
    if weights is None:
        return model
    state = load_state_dict(weights)
    whole = {k: v for k, v in kwargs.items() if k != "out_indices"}
    with torch.device("meta"):  # names and shapes only, no memory
        full = timm.create_model(name, pretrained=False, **whole).state_dict()
    loadable, problems = fit_report(model, state, full)
    if problems:
        raise CheckpointError(
            f"weights file {weights} does not fit backbone {name}: {'; '.join(problems)}"[:2000],
            hint="weights hold a timm model's state dict (timm.create_model(name).state_dict(), "
            "timm's hub files) of this architecture and size",
        )
    model.load_state_dict(loadable, strict=True)
    return model


def _create_features(name: str, **kwargs: Any) -> nn.Module:
    try:
        return timm.create_model(name, features_only=True, **kwargs)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(
            f"backbone {name!r} cannot be built as a feature extractor: {exc}"
        ) from exc


def _timm_feature_info(body: nn.Module) -> timm.models.FeatureInfo:
    """The `feature_info` that timm sets on a `features_only` model (typed here: an attribute
    read through `nn.Module` is typed `Tensor | Module`)."""
    return cast(timm.models.FeatureInfo, body.feature_info)


class Backbone(nn.Module):
    """A timm CNN or Swin encoder that returns the 1/4 … 1/32 feature maps as NCHW tensors.

    Args:
        name: timm model name.
        weights: optional local weights file; None gives a random init.
        timm_kwargs: passed to `timm.create_model` (e.g. `drop_path_rate`, `embed_dim`).
    """

    def __init__(self, name: str, *, weights: Path | None = None, **timm_kwargs: Any) -> None:
        super().__init__()
        self.name = name
        if name.startswith(_SWIN_PREFIXES):
            timm_kwargs.setdefault("strict_img_size", False)
            # timm sizes windows for 224² input, where the 1/32 map is one window and never
            # shifts; at depth resolutions it spans several windows that must exchange context
            timm_kwargs.setdefault("always_partition", True)
        self.body = _create_timm(name, weights, **timm_kwargs)
        reductions = list(_timm_feature_info(self.body).reduction())
        missing = [r for r in PYRAMID_REDUCTIONS if r not in reductions]
        if missing:
            raise ConfigError(
                f"backbone {name!r} gives feature reductions {reductions}; a depth pyramid "
                f"needs {list(PYRAMID_REDUCTIONS)} (missing {missing})"
            )
        self._select = [reductions.index(r) for r in PYRAMID_REDUCTIONS]
        channels = _timm_feature_info(self.body).channels()
        self.feature_info = FeatureInfo(channels=tuple(channels[i] for i in self._select))
        self.input_multiple = PYRAMID_REDUCTIONS[-1]
        self._nhwc = str(getattr(self.body, "output_fmt", "NCHW")).endswith("NHWC")

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)
        feats = [feats[i] for i in self._select]
        if self._nhwc:
            feats = [f.permute(0, 3, 1, 2).contiguous() for f in feats]  # (B, C, H/r, W/r)
        return feats


class ViTBackbone(nn.Module):
    """A plain timm ViT with DPT-style reassembly into a 1/4 … 1/32 pyramid.

    Four evenly spaced blocks are read out (prefix tokens dropped, DPT's "ignore" readout),
    projected by 1×1 convs to `reassemble_channels` and resampled: ×4 and ×2 transposed convs,
    identity, and a stride-2 3×3 conv. With patch 16 that gives strides 4, 8, 16, 32.

    Args:
        name: timm ViT name.
        weights: optional local weights file.
        reassemble_channels: output channels per scale (DPT-Base uses 96, 192, 384, 768).
        timm_kwargs: passed to `timm.create_model`.
    """

    def __init__(
        self,
        name: str,
        *,
        weights: Path | None = None,
        reassemble_channels: tuple[int, int, int, int] | None = None,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        self.name = name
        check_timm_name(name)
        # timm's ViTs hold their blocks in one nn.Sequential
        full = timm.create_model(name, pretrained=False, num_classes=0, **timm_kwargs)
        depth = len(cast(nn.Sequential, full.blocks))
        del full  # not kept while the feature model is built
        blocks = tuple(round(depth * (i + 1) / 4) - 1 for i in range(4))
        self.body = _create_timm(
            name, weights, dynamic_img_size=True, out_indices=blocks, **timm_kwargs
        )
        self.patch = _timm_feature_info(self.body).reduction()[-1]
        if self.patch not in (8, 16, 32):
            raise ConfigError(
                f"backbone {name!r} has patch size {self.patch}; the DPT reassembly to strides "
                "4…32 needs a patch size of 8, 16 or 32"
            )
        width = _timm_feature_info(self.body).channels()[-1]
        out = reassemble_channels or (width // 4, width // 2, width, width)
        self.project = nn.ModuleList(nn.Conv2d(width, c, 1) for c in out)
        factors = [self.patch / r for r in PYRAMID_REDUCTIONS]  # 4, 2, 1, 1/2 for patch 16
        self.resample = nn.ModuleList(_resampler(c, f) for c, f in zip(out, factors, strict=True))
        self.feature_info = FeatureInfo(channels=tuple(out))
        self.input_multiple = math.lcm(self.patch, PYRAMID_REDUCTIONS[-1])

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = self.body(x)  # 4 × (B, width, H/patch, W/patch)
        return [rs(pj(f)) for f, pj, rs in zip(feats, self.project, self.resample, strict=True)]


def _resampler(channels: int, factor: float) -> nn.Module:
    if factor > 1:
        k = int(factor)
        return nn.ConvTranspose2d(channels, channels, kernel_size=k, stride=k)
    if factor == 1:
        return nn.Identity()
    return nn.Conv2d(channels, channels, kernel_size=3, stride=int(1 / factor), padding=1)


def build_backbone(
    name: str, *, weights: Path | None = None, **timm_kwargs: Any
) -> Backbone | ViTBackbone:
    """The pyramid encoder for timm model `name`: a ViT with reassembly or a CNN/Swin body."""
    cls = ViTBackbone if name.startswith(_VIT_PREFIXES) else Backbone
    return cls(name, weights=weights, **timm_kwargs)
