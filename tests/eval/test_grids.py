"""Depth grids: rows = samples, columns RGB | GT | prediction | abs-rel error."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depthkd.eval.grids import depth_grid

H, W = 10, 14


def _batch(n: int = 2) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    rgb = torch.rand(n, 3, H, W, generator=gen)
    gt = 1.0 + 8.0 * torch.rand(n, 1, H, W, generator=gen)
    gt[:, :, :3] = 0.0  # the top rows have no ground truth (sparse KITTI-like)
    return rgb, gt, gt.clamp(min=2.0)


def test_grid_shape_dtype_and_columns() -> None:
    rgb, gt, pred = _batch(3)
    grid = depth_grid(rgb, gt, pred, max_depth=10.0)
    assert grid.shape == (3 * H, 4 * W, 3) and grid.dtype == np.uint8
    first_rgb = grid[:H, :W].astype(np.float32) / 255
    np.testing.assert_allclose(first_rgb, rgb[0].permute(1, 2, 0).numpy(), atol=1 / 255)


def test_invalid_ground_truth_is_black_in_gt_and_error_columns() -> None:
    rgb, gt, pred = _batch()
    grid = depth_grid(rgb, gt, pred, max_depth=10.0)
    for row in range(2):
        top = slice(row * H, row * H + 3)
        assert (grid[top, W : 2 * W] == 0).all()  # GT
        assert (grid[top, 3 * W :] == 0).all()  # error
        assert grid[top, 2 * W : 3 * W].any()  # the prediction is there
        below = slice(row * H + 3, (row + 1) * H)
        assert grid[below, W : 2 * W].any(axis=-1).all()


def test_numpy_input_and_near_far_colours_differ() -> None:
    rgb = np.zeros((1, 3, 4, 4), np.float32)
    gt = np.full((1, 1, 4, 4), 1.0, np.float32)
    pred = np.full((1, 1, 4, 4), 9.0, np.float32)
    grid = depth_grid(rgb, gt, pred, max_depth=10.0)
    assert not np.array_equal(grid[0, 4], grid[0, 8])  # near GT vs far prediction


@pytest.mark.parametrize("bad", ["gt", "pred"])
def test_mismatched_shapes_are_rejected(bad: str) -> None:
    rgb, gt, pred = _batch()
    args = {"gt": gt, "pred": pred, bad: torch.zeros(2, 1, H + 1, W)}
    with pytest.raises(ValueError, match="expected gt and pred"):
        depth_grid(rgb, args["gt"], args["pred"], max_depth=10.0)


def test_non_positive_max_depth_is_rejected() -> None:
    with pytest.raises(ValueError, match="max_depth"):
        depth_grid(*_batch(), max_depth=0.0)
