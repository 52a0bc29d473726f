"""Named evaluation protocols: which pixels count, how predictions are clamped and aligned.

Two KITTI conventions are in use and give different numbers for the same predictions:

* **full-frame** (BTS `utils/eval_with_pngs.py --do_kb_crop --garg_crop`): a 352×1216 KB-crop
  prediction is pasted back into a zero canvas of the ground truth's full size at the KB-crop
  offset, and the Garg (or Eigen) crop is taken as fractions of the full ground-truth size.
* **kb-cropped** (NeWCRFs / URCDC-Depth / AdaBins online eval): the ground truth is cut to the KB
  crop first and the Garg crop is taken as fractions of the 352×1216 cut.

Evaluators over frames (`depthkd.eval.runner`, training-time evaluation and `depthkd evaluate`)
feed the model what the protocol expects: under the full-frame protocols the KB crop of a full
KITTI frame (`model_input_box`), whose prediction is then pasted back.

So the protocol is an explicit, named setting (`kitti-garg-full`, `kitti-garg-kbcrop`,
`kitti-eigen`, `nyu-eigen`) and every printed result names it. Crop fractions and boxes live here
and nowhere else; dataset caps, scales and the KB crop size come from `depthkd.data.constants`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from depthkd.data.constants import (
    KB_CROP,
    KITTI_DEPTH_SCALE,
    KITTI_MAX_DEPTH,
    NYU_DEPTH_SCALE,
    NYU_MAX_DEPTH,
    NYU_SIZE,
)
from depthkd.errors import DataError
from depthkd.eval.metrics import ArrayLike, compute_metrics
from depthkd.metric_names import METRIC_NAMES
from depthkd.registry import Registry

# Crops as (top, bottom, left, right) fractions of the ground truth's own size, truncated with int()
# exactly as BTS / Monodepth2 do (so 375×1242 gives rows 153:371, cols 44:1197 for Garg).
GARG_CROP = (0.40810811, 0.99189189, 0.03594771, 0.96405229)
EIGEN_CROP = (0.3324324, 0.91351351, 0.0359477, 0.96405229)
# NYU Eigen crop in pixels of the native 480×640 frame: rows 45:471, cols 41:601.
NYU_EIGEN_BOX = (45, 471, 41, 601)
DEFAULT_MIN_DEPTH = 1e-3

CropName = Literal["garg", "eigen", "nyu-eigen"]
DEPTH_SCALES = {"kitti": KITTI_DEPTH_SCALE, "nyu": NYU_DEPTH_SCALE}


@dataclass(frozen=True)
class Protocol:
    """One evaluation protocol.

    Attributes:
        name: registry name, printed with every result.
        dataset: "kitti" or "nyu"; chooses the default PNG depth scale.
        max_depth: predictions are clamped to it and ground truth must be below it (metres).
        min_depth: predictions are clamped to it and ground truth must be above it (metres).
        crop: evaluation crop (None: the whole frame).
        kb_crop_gt: cut the ground truth to the KB crop (bottom 352 rows, centred 1216 columns)
            before anything else; a full-size prediction is cut the same way (kb-cropped style).
        paste_kb: a KB-crop-sized prediction on a larger ground truth is pasted into a zero
            canvas at the KB-crop offset (full-frame style).
        description: one line for tables and `--help`.
    """

    name: str
    dataset: Literal["kitti", "nyu"]
    max_depth: float
    min_depth: float = DEFAULT_MIN_DEPTH
    crop: CropName | None = None
    kb_crop_gt: bool = False
    paste_kb: bool = False
    description: str = ""

    @property
    def depth_scale(self) -> float:
        """Default PNG depth scale of the dataset (metres = value / scale)."""
        return DEPTH_SCALES[self.dataset]


PROTOCOLS: Registry[Protocol] = Registry("evaluation protocol")


def _register(protocol: Protocol) -> None:
    PROTOCOLS.register(protocol.name)(protocol)


_register(
    Protocol(
        name="kitti-garg-full",
        dataset="kitti",
        max_depth=KITTI_MAX_DEPTH,
        crop="garg",
        paste_kb=True,
        description="KITTI, Garg crop on the full GT frame, KB-crop predictions pasted back, "
        "as BTS eval_with_pngs",
    )
)
_register(
    Protocol(
        name="kitti-garg-kbcrop",
        dataset="kitti",
        max_depth=KITTI_MAX_DEPTH,
        crop="garg",
        kb_crop_gt=True,
        description="KITTI, GT cut to the 352x1216 KB crop, then Garg crop of the cut, "
        "as NeWCRFs/URCDC/AdaBins",
    )
)
_register(
    Protocol(
        name="kitti-eigen",
        dataset="kitti",
        max_depth=KITTI_MAX_DEPTH,
        crop="eigen",
        paste_kb=True,
        description="KITTI, Eigen crop on the full GT frame, KB-crop predictions pasted back",
    )
)
_register(
    Protocol(
        name="nyu-eigen",
        dataset="nyu",
        max_depth=NYU_MAX_DEPTH,
        crop="nyu-eigen",
        description="NYU Depth V2, Eigen crop [45:471, 41:601] of the 480x640 frame "
        "(scaled for other frame sizes)",
    )
)


def get_protocol(protocol: Protocol | str) -> Protocol:
    """The protocol itself, or the registered one of that name (RegistryError lists the names)."""
    return protocol if isinstance(protocol, Protocol) else PROTOCOLS.get(protocol)


def crop_box(crop: CropName, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of `crop` on a ground truth of size height × width."""
    if crop == "nyu-eigen":
        if (height, width) == NYU_SIZE:
            return NYU_EIGEN_BOX
        # frames at another resolution (e.g. half-size): the same box in fractions of the frame
        top, bottom, left, right = NYU_EIGEN_BOX
        sy, sx = height / NYU_SIZE[0], width / NYU_SIZE[1]
        return int(top * sy), int(bottom * sy), int(left * sx), int(right * sx)
    f_top, f_bottom, f_left, f_right = {"garg": GARG_CROP, "eigen": EIGEN_CROP}[crop]
    return int(f_top * height), int(f_bottom * height), int(f_left * width), int(f_right * width)


def kb_crop_offsets(height: int, width: int) -> tuple[int, int]:
    """(top, left) of the KB crop: the bottom 352 rows and the centred 1216 columns."""
    return height - KB_CROP[0], (width - KB_CROP[1]) // 2


def model_input_box(protocol: Protocol | str, height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) of a height × width frame that the model sees under `protocol`.

    Full-frame KITTI protocols (`paste_kb`) predict on the KB crop, as BTS's offline evaluation
    does; `evaluate_image` pastes that prediction back into a zero canvas of the full ground truth,
    so pixels of the evaluation crop outside the KB crop count as prediction 0 (clamped to
    `min_depth`), as in BTS. Every other protocol, and frames smaller than the KB crop, are seen
    whole.
    """
    kb_h, kb_w = KB_CROP
    if not get_protocol(protocol).paste_kb or height < kb_h or width < kb_w:
        return 0, height, 0, width
    top, left = kb_crop_offsets(height, width)
    return top, top + kb_h, left, left + kb_w


def _to_2d(x: ArrayLike, what: str, where: str) -> torch.Tensor:
    t = torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray) else x
    # Accept (H, W), (1, H, W) and (1, 1, H, W): one image, however the caller batched it.
    while t.dim() > 2 and t.shape[0] == 1:
        t = t[0]
    if t.dim() != 2:
        raise DataError(f"{where}{what} must be one (H, W) depth map, got shape {tuple(t.shape)}")
    return t.to(torch.float64)


def _align(
    pred: torch.Tensor, gt: torch.Tensor, protocol: Protocol, where: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """Brings prediction and ground truth to one frame as the protocol prescribes."""
    kb_h, kb_w = KB_CROP
    gt_h, gt_w = gt_shape = tuple(gt.shape)
    pred_shape = tuple(pred.shape)
    big_enough = gt_h >= kb_h and gt_w >= kb_w
    if protocol.kb_crop_gt:
        if not big_enough:
            raise DataError(
                f"{where}ground truth {gt_shape} is smaller than the KB crop {KB_CROP} "
                f"that protocol {protocol.name!r} cuts"
            )
        top, left = kb_crop_offsets(gt_h, gt_w)
        if pred_shape == gt_shape:
            pred = pred[top : top + kb_h, left : left + kb_w]
        gt = gt[top : top + kb_h, left : left + kb_w]
    elif protocol.paste_kb and gt_shape == KB_CROP:
        raise DataError(
            f"{where}ground truth is already KB-cropped {gt_shape}, but protocol "
            f"{protocol.name!r} evaluates on the full frame",
            hint="use kitti-garg-kbcrop for KB-cropped ground truth",
        )
    elif protocol.paste_kb and big_enough and pred_shape == KB_CROP != gt_shape:
        top, left = kb_crop_offsets(gt_h, gt_w)
        canvas = pred.new_zeros(gt_shape)  # zeros outside the KB crop, as BTS does
        canvas[top : top + kb_h, left : left + kb_w] = pred
        pred = canvas
    if pred.shape != gt.shape:
        accepted = f"{gt_shape}"
        if protocol.kb_crop_gt or (protocol.paste_kb and big_enough):
            accepted += f" or the KB crop {KB_CROP}"
        raise DataError(
            f"{where}prediction {pred_shape} does not fit ground truth {gt_shape} "
            f"under protocol {protocol.name!r}: expected {accepted}",
            hint="resize predictions to the ground-truth size before writing them",
        )
    return pred, gt


def evaluate_image(
    pred: ArrayLike, gt: ArrayLike | None, protocol: Protocol | str, *, where: str = ""
) -> dict[str, float] | None:
    """The metrics of one image under `protocol`, or None when it has nothing to evaluate.

    Args:
        pred: predicted depth in metres, (H, W) (leading singleton dims are dropped), at the
            ground truth's size or, where the protocol allows it, at the KB-crop size.
        gt: ground-truth depth in metres (0, NaN or inf = invalid), or None for an image without
            ground truth (KITTI's `None` lines).
        protocol: a `Protocol` or its registered name.
        where: prefix for error messages, e.g. the file name.

    Returns:
        A dict keyed by `METRIC_NAMES`, or None when there is no ground truth or no valid pixel
        inside the crop; the caller counts such an image as skipped.

    Raises:
        DataError: when the sizes cannot be reconciled under the protocol.
    """
    proto = get_protocol(protocol)
    if gt is None:
        return None
    prefix = f"{where}: " if where else ""
    p, g = _align(
        _to_2d(pred, "prediction", prefix), _to_2d(gt, "ground truth", prefix), proto, prefix
    )
    # Clamp after the KB paste (as NeWCRFs does) so that the zero canvas never reaches log();
    # inf → max and NaN → min, as the reference code does.
    p = torch.nan_to_num(p, nan=proto.min_depth, posinf=proto.max_depth, neginf=proto.min_depth)
    p = p.clamp(proto.min_depth, proto.max_depth)
    valid = torch.isfinite(g) & (g > proto.min_depth) & (g < proto.max_depth)
    if proto.crop is not None:
        top, bottom, left, right = crop_box(proto.crop, *g.shape)
        in_crop = torch.zeros_like(valid)
        in_crop[top:bottom, left:right] = True
        valid &= in_crop
    if not bool(valid.any()):
        return None
    return compute_metrics(p[valid], g[valid])


def format_table(protocol_name: str, means: dict[str, float], n_images: int, n_skipped: int) -> str:
    """A small text table of the mean metrics that always names the protocol."""
    desc = PROTOCOLS.get(protocol_name).description if protocol_name in PROTOCOLS else ""
    header = f"protocol: {protocol_name}" + (f" ({desc})" if desc else "")
    counts = (
        f"images: {n_images} evaluated, {n_skipped} skipped (no ground truth or no valid pixel)"
    )
    names = "  ".join(f"{name:>8}" for name in METRIC_NAMES)
    values = "  ".join(f"{means[name]:8.4f}" for name in METRIC_NAMES)
    return "\n".join([header, counts, names, values])
