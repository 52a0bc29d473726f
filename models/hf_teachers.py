"""Teachers trained outside depthkd: Hugging Face `transformers` depth models behind one interface.

An `ExternalTeacher` is a module that returns depth and named feature maps. Its `forward` takes
an RGB batch `(B, 3, H, W)` in [0, 1] (it normalises inside, as `DepthModel` does) and returns an
`ExternalTeacherOutput`:

* `depth` `(B, 1, H, W)` at the input size, of the kind the class attribute `output` names:
  `"metric"` (metres), `"relative_disparity"` (affine-invariant inverse depth, MiDaS / Depth
  Anything style; 0 is infinitely far) or `"relative_depth"` (affine-invariant depth);
* `features` four maps, `FEATURE_NAMES` in that order, at strides 4, 8, 16 and 32 of the input:
  `(B, C_i, ceil(H / r), ceil(W / r))` with `C_i = feature_channels[i]`. `feature_info` gives the
  channels and reductions in the form the ghost decoder's adapters size themselves from.

A teacher with a decoder of its own (NeWCRFs, a MiDaS release, ...) is one small subclass: it
sets the two attributes, runs its network and hands depth and its four maps (finest first, any
size near the right stride) to `finish`, which resizes both to the contract above::

    class NeWCRFsTeacher(ExternalTeacher):
        output = "metric"
        feature_channels = (192, 384, 768, 1536)  # Swin-L stages

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net  # the original model, its weights loaded

        def forward(self, images: torch.Tensor) -> ExternalTeacherOutput:
            feats = self.net.backbone(normalise(images))  # four maps, strides 4 … 32
            depth = self.net.decoder(feats)  # (B, 1, H/4, W/4) metres
            return self.finish(depth, feats, images.shape[-2:])

`HFDepthTeacher` wraps a `transformers` depth model (`load_hf_teacher` reads one from a hub repo id
or a `save_pretrained` directory):

* Families: Depth Anything V1 / V2 (`DepthAnythingForDepthEstimation`, DINOv2 backbone), DPT
  (`DPTForDepthEstimation`: ViT, ViT-hybrid or a separate backbone) and ZoeDepth
  (`ZoeDepthForDepthEstimation`).
* Output kind, from the config: Depth Anything with `depth_estimation_type="metric"` and ZoeDepth
  are `"metric"`; Depth Anything's default relative head and DPT are `"relative_disparity"`
  (DPT's config cannot tell a MiDaS-style release from a metric fine-tune such as the DINOv2-DPT
  KITTI / NYU heads: pass `output="metric"` to `load_hf_teacher` for those).
* Input: normalised with the image processor's mean / std (and its rescale factor: our [0, 1] is
  its 0 … 255 times 1/255), then resized (bilinear) to the nearest multiple of `input_multiple`:
  the patch size (14 for DINOv2) for Depth Anything, twice the patch size for DPT and ZoeDepth
  (their fusion upsamples by exactly 2, so the stride-2·patch map must divide evenly). The
  processor's own resolution (518, 384 …) and ZoeDepth's reflect padding are not applied: the
  caller chooses the input size.
* Features: the neck's reassembled maps, the inputs of `neck.convs` (forward pre-hooks), at
  strides patch / 4, patch / 2, patch and 2 · patch of the resized input (3.5 … 28 for Depth
  Anything) with `neck_hidden_sizes` channels, resized to strides 4 … 32 of the original input.
  They are the pyramid the DPT decoder fuses, so they play the part `DepthModel`'s encoder pyramid
  does, and gradients reach the transformer through them.
* transformers' plain / hybrid-ViT DPT reshapes tokens to a square grid, and DPT-hybrid refuses
  inputs other than its `image_size`: pre-hooks on the neck (the real grid) and on the hybrid
  embeddings (`interpolate_pos_encoding`) let any size and aspect ratio through.
* Depth: the model's `predicted_depth`, resized (bilinear) back to the input size.
"""

from __future__ import annotations

import contextlib
import importlib
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NamedTuple, cast, get_args

import torch
from torch import nn

from depthkd.errors import CheckpointError
from depthkd.models.backbones import PYRAMID_REDUCTIONS, FeatureInfo
from depthkd.models.depth_model import DepthOutput
from depthkd.models.layers import resize_to

if TYPE_CHECKING:  # annotations only: importing this module does not load transformers
    from transformers import PretrainedConfig, PreTrainedModel

OutputKind = Literal["metric", "relative_disparity", "relative_depth"]
FEATURE_NAMES = tuple(f"stride{r}" for r in PYRAMID_REDUCTIONS)  # stride4 … stride32
# transformers' `model_type` of each supported family -> whether its fusion upsamples blindly by 2
# (so inputs are multiples of 2 · patch) rather than to the next map's size (multiples of patch)
_FAMILIES = {"depth_anything": False, "dpt": True, "zoedepth": True}
_HINT_EXTRA = "pip install 'depthkd[hf]'"


def pyramid_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """`(ceil(H / r), ceil(W / r))` for r = 4, 8, 16, 32: the feature sizes of a teacher's
    output for an `height × width` input (a stride-r conv stack gives the same)."""
    return [(math.ceil(height / r), math.ceil(width / r)) for r in PYRAMID_REDUCTIONS]


class ExternalTeacherOutput(NamedTuple):
    """Depth plus named feature maps (not `ghost.TeacherOutput`: that one holds a ghost's depth
    and the adapted pyramid of an acclimated teacher)."""

    depth: torch.Tensor  # (B, 1, H, W), of the teacher's `output` kind
    features: dict[str, torch.Tensor]  # FEATURE_NAMES -> (B, C_i, ceil(H/r), ceil(W/r))


class ExternalTeacher(nn.Module):
    """A module that returns depth and named feature maps for an RGB batch in [0, 1].

    Subclasses set `output` and `feature_channels` and implement `forward`, usually ending with
    `finish` (see the module docstring).
    """

    output: OutputKind
    feature_channels: tuple[int, int, int, int]
    feature_names: ClassVar[tuple[str, ...]] = FEATURE_NAMES

    @property
    def feature_info(self) -> FeatureInfo:
        """Channels and reductions of the four maps, as a `Backbone` reports them."""
        return FeatureInfo(self.feature_channels)

    def forward(self, images: torch.Tensor) -> ExternalTeacherOutput:
        raise NotImplementedError

    def finish(
        self,
        depth: torch.Tensor,
        maps: Sequence[torch.Tensor],
        size: tuple[int, int] | torch.Size,
    ) -> ExternalTeacherOutput:
        """Resizes `depth` `(B, 1, h, w)` to `size` and the four `maps` (finest first) to
        strides 4 … 32 of `size`, names them and checks their channels against
        `feature_channels`."""
        channels = tuple(m.shape[1] for m in maps)
        if channels != self.feature_channels:
            raise ValueError(
                f"{type(self).__name__} produced maps with channels {channels}, "
                f"declared {self.feature_channels}"
            )
        sizes = pyramid_sizes(*size)
        features = {
            name: resize_to(m, s)
            for name, m, s in zip(self.feature_names, maps, sizes, strict=True)
        }
        return ExternalTeacherOutput(resize_to(depth, size), features)


class _Tap:
    """A forward pre-hook that keeps a module's first input (a plain object, not a closure, so a
    deep copy of the teacher taps its own modules)."""

    def __init__(self) -> None:
        self.value: torch.Tensor | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> None:
        self.value = args[0]


class _Grid:
    """A forward pre-hook on DPT's neck that fills in the patch grid where DPT passes None
    (plain and hybrid ViT), so the neck does not assume a square one."""

    def __init__(self) -> None:
        self.grid: tuple[int, int] | None = None

    def __call__(self, module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if len(args) == 3 and args[1] is None and self.grid is not None:
            return (args[0], *self.grid)
        return None


def _any_image_size(
    module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    """A forward pre-hook on DPT-hybrid's embeddings: they resize their position embeddings to
    any grid but refuse inputs other than `config.image_size` unless told to interpolate."""
    return args, {**kwargs, "interpolate_pos_encoding": True}


@contextlib.contextmanager
def _outside_inference_mode() -> Iterator[None]:
    """Under `torch.inference_mode`, runs the body in plain `no_grad` instead. transformers caches
    some index tensors per input size (BEiT's relative position index, in ZoeDepth); one made
    under inference mode makes every later forward with autograd at that size fail, in any model
    of the process, so an evaluation or preview would break the acclimation that follows."""
    if not torch.is_inference_mode_enabled():
        yield
        return
    with torch.inference_mode(False), torch.no_grad():
        yield


def output_kind(config: PretrainedConfig) -> OutputKind:
    """The depth kind a supported config's model predicts (rule in the module docstring)."""
    if config.model_type == "zoedepth":
        return "metric"
    if config.model_type == "depth_anything" and config.depth_estimation_type == "metric":
        return "metric"
    return "relative_disparity"


def patch_size(config: PretrainedConfig) -> int:
    """The ViT patch size of a supported config: its backbone's when it has a separate one (not
    for DPT-hybrid, whose `patch_size` is the grid stride of its BiT + ViT stem)."""
    backbone = config.backbone_config
    use_backbone = backbone is not None and not getattr(config, "is_hybrid", False)
    size = backbone.patch_size if use_backbone else config.patch_size
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def _three(values: float | Sequence[float]) -> list[float]:
    """A processor's mean or std as three values (a scalar applies to every channel)."""
    if isinstance(values, (int, float)):
        return [float(values)] * 3
    if len(values) != 3:
        raise ValueError(f"expected one mean / std per RGB channel, got {list(values)}")
    return [float(v) for v in values]


class HFDepthTeacher(ExternalTeacher):
    """A `transformers` depth-estimation model as an `ExternalTeacher`.

    Args:
        model: a `DepthAnythingForDepthEstimation`, `DPTForDepthEstimation` or
            `ZoeDepthForDepthEstimation`.
        image_mean: the image processor's normalisation mean, one value per RGB channel.
        image_std: its standard deviation.
        input_scale: what the processor's 0 … 255 input becomes before normalising divided by 255
            (1 when it rescales by 1/255, the usual case; 255 when it does not rescale).
        output: the depth kind; by default decided from the config (module docstring).
    """

    mean: torch.Tensor  # (1, 3, 1, 1) buffers, in the [0, 1] input's units
    std: torch.Tensor

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        input_scale: float = 1.0,
        output: OutputKind | None = None,
    ) -> None:
        super().__init__()
        config = model.config
        if config.model_type not in _FAMILIES:
            raise ValueError(f"unsupported depth model type {config.model_type!r}")
        self.model = model
        self.family: str = config.model_type
        self.output = output or output_kind(config)
        self.input_multiple = patch_size(config) * (2 if _FAMILIES[self.family] else 1)
        neck = model.get_submodule("neck")
        convs = cast(nn.ModuleList, neck.get_submodule("convs"))
        if len(convs) != len(PYRAMID_REDUCTIONS):
            raise ValueError(f"expected a neck with 4 scales, {config.model_type} has {len(convs)}")
        self.feature_channels = cast(
            tuple[int, int, int, int], tuple(cast(nn.Conv2d, c).in_channels for c in convs)
        )
        self._taps = [_Tap() for _ in convs]
        for conv, tap in zip(convs, self._taps, strict=True):
            conv.register_forward_pre_hook(tap)
        self._grid = _Grid()
        if self.family == "dpt":
            neck.register_forward_pre_hook(self._grid)
            if getattr(config, "is_hybrid", False):
                embeddings = model.get_submodule("dpt.embeddings")
                embeddings.register_forward_pre_hook(_any_image_size, with_kwargs=True)
        # folded into mean / std: (x · s − m) / σ = (x − m / s) / (σ / s)
        mean = torch.tensor(_three(image_mean), dtype=torch.float32) / input_scale
        std = torch.tensor(_three(image_std), dtype=torch.float32) / input_scale
        self.register_buffer("mean", mean.view(1, 3, 1, 1), False)
        self.register_buffer("std", std.view(1, 3, 1, 1), False)

    def model_input_size(self, height: int, width: int) -> tuple[int, int]:
        """The size an `height × width` input is resized to: each side to the nearest multiple
        of `input_multiple` (halves round up), at least one."""
        m = self.input_multiple
        return max(1, math.floor(height / m + 0.5)) * m, max(1, math.floor(width / m + 0.5)) * m

    def forward(self, images: torch.Tensor) -> ExternalTeacherOutput:
        """Depth `(B, 1, H, W)` and the four neck maps of an RGB batch in [0, 1]."""
        size = images.shape[-2:]
        pixels = resize_to((images - self.mean) / self.std, self.model_input_size(*size))
        patch = patch_size(self.model.config)
        self._grid.grid = (pixels.shape[-2] // patch, pixels.shape[-1] // patch)
        try:
            with _outside_inference_mode():
                depth = self.model(pixel_values=pixels).predicted_depth  # (B, h, w)
            maps = [tap.value for tap in self._taps]
        finally:  # the hooks hold no tensors between calls (pickling, memory)
            for tap in self._taps:
                tap.value = None
            self._grid.grid = None
        if any(m is None for m in maps):
            raise RuntimeError(f"the {self.family} neck did not run all four convs")
        return self.finish(depth.unsqueeze(1), cast(list[torch.Tensor], maps), size)


def load_hf_teacher(
    hf_id: str | Path, *, revision: str | None = None, output: OutputKind | None = None
) -> HFDepthTeacher:
    """The `transformers` depth model at `hf_id` (a hub repo id or a `save_pretrained`
    directory holding the model and its image processor) as an `HFDepthTeacher` in eval mode.

    Args:
        hf_id: hub repo id (`depth-anything/Depth-Anything-V2-Small-hf`) or local directory.
        revision: hub branch, tag or commit; None for the default branch.
        output: overrides the depth kind decided from the config (a metric DPT fine-tune).

    Raises:
        CheckpointError: transformers is missing, the model or processor cannot be read (missing
            directory, unknown repo, offline without a cached copy), it is no supported depth
            model, or its weights do not cover the model.
    """
    transformers = _import_transformers(hf_id)
    if output is not None and output not in get_args(OutputKind):
        raise CheckpointError(
            f"Hugging Face teacher {hf_id}: unknown output kind {output!r}",
            hint=f"one of {', '.join(get_args(OutputKind))}",
        )
    source = str(hf_id)
    config = _read(hf_id, "config", transformers.AutoConfig, source, revision=revision)
    _check_family(hf_id, config)
    model, info = _read(
        hf_id,
        "model",
        transformers.AutoModelForDepthEstimation,
        source,
        revision=revision,
        output_loading_info=True,
        dtype=torch.float32,  # a half-precision release runs on our float32 input
    )
    missing = sorted(info["missing_keys"])
    if missing:  # (misshapen weights already raised inside from_pretrained)
        shown = ", ".join(missing[:6]) + (" …" if len(missing) > 6 else "")
        raise CheckpointError(
            f"Hugging Face teacher {hf_id}: its weights leave {len(missing)} parameters of the "
            f"{config.model_type} model unset: {shown}",
            hint="the model.safetensors beside config.json was not written for that config",
        )
    processor = _read(
        hf_id, "image processor", transformers.AutoImageProcessor, source, revision=revision
    )
    do_rescale = getattr(processor, "do_rescale", True)
    scale = 255.0 * float(getattr(processor, "rescale_factor", 1 / 255)) if do_rescale else 255.0
    if getattr(processor, "do_normalize", True):
        mean, std = processor.image_mean, processor.image_std
    else:
        mean, std = [0.0] * 3, [1.0] * 3
    teacher = HFDepthTeacher(
        model, image_mean=mean, image_std=std, input_scale=scale, output=output
    )
    return teacher.eval()


def _import_transformers(hf_id: str | Path) -> Any:
    try:
        transformers = importlib.import_module("transformers")
    except ImportError:
        raise CheckpointError(
            f"cannot load Hugging Face teacher {hf_id}: the package transformers is not installed",
            hint=_HINT_EXTRA,
        ) from None
    # a job's console shows one line per event: no "Loading weights" bar per read
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _read(hf_id: str | Path, what: str, auto: Any, source: str, **kwargs: Any) -> Any:
    """`auto.from_pretrained(source, **kwargs)`, its errors as CheckpointError."""
    try:
        return auto.from_pretrained(source, **kwargs)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:  # RuntimeError: misshapen
        from huggingface_hub import is_offline_mode

        offline = is_offline_mode() and not Path(source).is_dir()
        hint = (
            "HF_HUB_OFFLINE is set and the repo is not in the local Hugging Face cache: run "
            "once with network access, or pass a directory written by save_pretrained"
            if offline
            else "pass a hub repo id of a depth-estimation model or a directory written by "
            "model.save_pretrained(dir) and image_processor.save_pretrained(dir)"
        )
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"cannot read the {what} of Hugging Face teacher {hf_id}: {first_line}", hint=hint
        ) from exc


def _check_family(hf_id: str | Path, config: PretrainedConfig) -> None:
    """Raises CheckpointError unless `config` is a depth-estimation model of a supported
    family (its saved `architectures`, when present, must be a `*ForDepthEstimation`)."""
    architectures = getattr(config, "architectures", None) or []
    supported = ", ".join(sorted(_FAMILIES))
    is_depth = not architectures or any(a.endswith("ForDepthEstimation") for a in architectures)
    if config.model_type not in _FAMILIES or not is_depth:
        what = "/".join(architectures) or config.model_type
        raise CheckpointError(
            f"Hugging Face teacher {hf_id} is a {what} model, not a supported depth-estimation "
            f"model (model types: {supported})",
            hint="use a *ForDepthEstimation checkpoint: Depth Anything (V1/V2), DPT or ZoeDepth",
        )


class ExternalDepthModel(nn.Module):
    """An `ExternalTeacher` where depthkd expects a teacher `DepthModel`: acclimation (the ghost
    decoder's adapters read `backbone.feature_info` and the four maps), the pseudo-label pass,
    evaluation and model files (`arch`). Depth is clamped to the job's range (`max_depth`), as
    depthkd's own heads bound theirs.
    """

    def __init__(self, teacher: ExternalTeacher, *, max_depth: float, arch: dict) -> None:
        super().__init__()
        self.backbone = teacher
        self._max_depth = float(max_depth)
        self.arch = dict(arch)

    @property
    def max_depth(self) -> float:
        return self._max_depth

    def forward(
        self, image: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | DepthOutput:
        """Depth `(B, 1, H, W)` in metres, or a `DepthOutput` with the four maps."""
        out = self.backbone(image)
        depth = out.depth.clamp(min=0.0, max=self._max_depth)
        return DepthOutput(depth, list(out.features.values())) if return_features else depth


def hf_arch(teacher: HFDepthTeacher) -> dict[str, Any]:
    """What rebuilds `teacher` without its hub repo or directory (a model file's `arch["hf"]`):
    the transformers config, the folded normalisation and the output kind."""
    return {
        "config": teacher.model.config.to_dict(),
        "mean": teacher.mean.flatten().tolist(),
        "std": teacher.std.flatten().tolist(),
        "output": teacher.output,
    }


def hf_teacher_from_arch(hf: dict[str, Any]) -> HFDepthTeacher:
    """The teacher `hf_arch` describes, randomly initialised: its model file's state follows."""
    transformers = _import_transformers("a model file's teacher")
    config = transformers.AutoConfig.for_model(**hf["config"])
    model = transformers.AutoModelForDepthEstimation.from_config(config)
    return HFDepthTeacher(
        model, image_mean=hf["mean"], image_std=hf["std"], output=hf["output"]
    ).eval()


def metric_hf_teacher(hf_id: str) -> HFDepthTeacher:
    """`load_hf_teacher` for `model.teacher.hf_id` (`ORG/NAME@REVISION` or a directory), metric
    models only.

    Raises:
        CheckpointError: as `load_hf_teacher`, or the model predicts relative depth.
    """
    repo, _, revision = hf_id.partition("@") if not Path(hf_id).is_dir() else (hf_id, "", "")
    teacher = load_hf_teacher(repo, revision=revision or None)
    if teacher.output != "metric":
        raise CheckpointError(
            f"Hugging Face teacher {hf_id} predicts {teacher.output.replace('_', ' ')}: jobs take "
            "metric teachers so far (aligning a relative teacher to each frame's ground truth is "
            "not wired into the stages yet)",
            hint="use a metric model: ZoeDepth, or a Depth Anything metric model "
            "(depth_estimation_type: metric)",
        )
    return teacher
