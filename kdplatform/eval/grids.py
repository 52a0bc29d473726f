"""Colour-mapped depth grids for eye-balling a model (logged during training by the tracking
layer, drawn into previews by `depthkd.eval.preview`).

One row per sample: RGB | ground truth | prediction | abs-rel error. Depth uses a fixed scale
[0, max_depth] and the error a fixed scale [0, ABS_REL_RANGE], so grids of different steps compare
at a glance. Pixels without ground truth are black in the GT and error columns.
"""

from __future__ import annotations

from typing import Any

import matplotlib
import numpy as np

DEPTH_CMAP = "magma_r"  # near = bright, far = dark
ERROR_CMAP = "inferno"
ABS_REL_RANGE = 0.5  # abs-rel at or above this saturates the error colour map


def depth_grid(rgb: Any, gt: Any, pred: Any, *, max_depth: float) -> np.ndarray:
    """The grid image of a batch as uint8 `(N·H, 4·W, 3)`.

    Args:
        rgb: images `(N, 3, H, W)` in [0, 1] (torch tensor or numpy array).
        gt: ground truth `(N, 1, H, W)` in metres, 0 (or non-finite) = invalid.
        pred: predicted depth `(N, 1, H, W)` in metres.
        max_depth: depth mapped to the far end of the colour map.
    """
    if max_depth <= 0:
        raise ValueError(f"max_depth must be positive, not {max_depth}")
    rgb_np, gt_np, pred_np = (_as_numpy(x) for x in (rgb, gt, pred))
    n, _, height, width = rgb_np.shape
    if gt_np.shape != (n, 1, height, width) or pred_np.shape != (n, 1, height, width):
        raise ValueError(
            f"expected gt and pred of shape {(n, 1, height, width)} for rgb {rgb_np.shape}, "
            f"got {gt_np.shape} and {pred_np.shape}"
        )
    depth_cmap = matplotlib.colormaps[DEPTH_CMAP]
    error_cmap = matplotlib.colormaps[ERROR_CMAP]
    rows = []
    for i in range(n):
        image = np.clip(rgb_np[i].transpose(1, 2, 0), 0.0, 1.0)  # (H, W, 3)
        g, p = gt_np[i, 0], np.nan_to_num(pred_np[i, 0], nan=0.0, posinf=max_depth)  # (H, W)
        valid = np.isfinite(g) & (g > 0)
        safe_gt = np.where(valid, g, 1.0)
        gt_rgb = depth_cmap(np.clip(np.where(valid, g, 0.0) / max_depth, 0.0, 1.0))[..., :3]
        gt_rgb[~valid] = 0.0
        pred_rgb = depth_cmap(np.clip(p / max_depth, 0.0, 1.0))[..., :3]
        abs_rel = np.abs(p - safe_gt) / safe_gt
        err_rgb = error_cmap(np.clip(abs_rel / ABS_REL_RANGE, 0.0, 1.0))[..., :3]
        err_rgb[~valid] = 0.0
        rows.append(np.concatenate([image, gt_rgb, pred_rgb, err_rgb], axis=1))  # (H, 4W, 3)
    grid = np.concatenate(rows, axis=0)  # (N·H, 4·W, 3)
    return np.round(grid * 255.0).astype(np.uint8)


def _as_numpy(x: Any) -> np.ndarray:
    """A float32 numpy copy of a torch tensor (any device) or array-like."""
    if hasattr(x, "detach"):
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=np.float32)
