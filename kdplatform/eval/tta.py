"""Flip test-time augmentation: none, mean, or the Monodepth edge blend.

`edge-blend` is Monodepth(v1)'s disparity post-processing, applied to depth as NeWCRFs does. We
follow nianticlabs/monodepth2 `evaluate_depth.py::batch_post_process_disparity` and
aliyun/NeWCRFs `newcrfs/utils.py::post_process_depth`:

    xs     = linspace(0, 1, W)
    l_mask = 1 − clip(20·(xs − 0.05), 0, 1)      # 1 on the leftmost 5 %, 0 beyond 10 %
    r_mask = flip(l_mask)
    out    = r_mask·d + l_mask·flip(d(flip(x))) + (1 − l_mask − r_mask)·mean

i.e. near the left border the flipped pass is used, near the right border the plain pass, and the
mean in between. The weights sum to 1 at every column.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch

from depthkd.errors import ConfigError

TTA_MODES = ("none", "mean", "edge-blend")
TTAMode = Literal["none", "mean", "edge-blend"]


def edge_blend_weights(
    width: int, *, device: torch.device | None = None, dtype: torch.dtype = torch.float32
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(l_mask, r_mask, mean_mask), each (W,): the weights of the flipped pass, the plain pass
    and their mean in the edge blend."""
    xs = torch.linspace(0.0, 1.0, width, device=device, dtype=dtype)
    l_mask = 1.0 - torch.clamp(20.0 * (xs - 0.05), 0.0, 1.0)
    r_mask = torch.flip(l_mask, dims=[0])
    return l_mask, r_mask, 1.0 - l_mask - r_mask


def _as_b1hw(depth: torch.Tensor, batch: int) -> torch.Tensor:
    if depth.dim() == 3:
        depth = depth.unsqueeze(1)
    if depth.dim() != 4 or depth.shape[0] != batch or depth.shape[1] != 1:
        raise ValueError(f"predict must return (B, 1, H, W) depth, got {tuple(depth.shape)}")
    return depth


def predict_with_flip(
    predict: Callable[[torch.Tensor], torch.Tensor],
    images: torch.Tensor,
    mode: TTAMode = "none",
) -> torch.Tensor:
    """Depth of `images` (B, 3, H, W) with flip test-time augmentation.

    Args:
        predict: the model, images (B, 3, H, W) → depth (B, 1, h, w) (or (B, h, w)).
        images: the batch.
        mode: "none" (one pass), "mean" (average with the flipped pass) or "edge-blend"
            (Monodepth / NeWCRFs post-processing, see the module docstring).

    Returns:
        Depth (B, 1, h, w) at the prediction's resolution.
    """
    if mode not in TTA_MODES:
        raise ConfigError(f"unknown flip TTA mode {mode!r}; valid: {', '.join(TTA_MODES)}")
    batch = images.shape[0]
    depth = _as_b1hw(predict(images), batch)  # (B, 1, h, w)
    if mode == "none":
        return depth
    # Two calls rather than one on a doubled batch: evaluation memory stays that of one pass.
    flipped_back = torch.flip(_as_b1hw(predict(torch.flip(images, dims=[3])), batch), dims=[3])
    mean = 0.5 * (depth + flipped_back)
    if mode == "mean":
        return mean
    l_mask, r_mask, m_mask = edge_blend_weights(
        depth.shape[-1], device=depth.device, dtype=depth.dtype
    )  # (w,) each, broadcast over (B, 1, h, w)
    return r_mask * depth + l_mask * flipped_back + m_mask * mean
