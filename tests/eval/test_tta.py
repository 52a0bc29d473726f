"""Flip test-time augmentation: mean, edge blend, and their agreement on equivariant models."""

from __future__ import annotations

import pytest
import torch

from depthkd.errors import ConfigError
from depthkd.eval.tta import TTA_MODES, edge_blend_weights, predict_with_flip


def _equivariant(images: torch.Tensor) -> torch.Tensor:
    # Depends on each pixel only (and a left-right symmetric row term): predict(flip(x)) equals
    # flip(predict(x)).
    w = images.shape[-1]
    sym = (torch.arange(w) - (w - 1) / 2).abs()  # symmetric about the centre
    return 1.0 + images.mean(dim=1, keepdim=True) + 0.01 * sym  # (B, 1, H, W)


def _left_biased(images: torch.Tensor) -> torch.Tensor:
    # Depth grows left to right regardless of content: NOT flip-equivariant.
    b, _, h, w = images.shape
    return torch.linspace(1.0, 2.0, w).expand(b, 1, h, w).clone()


@pytest.mark.parametrize("mode", TTA_MODES)
def test_flip_equivariant_model_gives_the_same_output_in_every_mode(mode):
    images = torch.rand(2, 3, 8, 40)
    plain = _equivariant(images)
    out = predict_with_flip(_equivariant, images, mode)
    assert out.shape == (2, 1, 8, 40)
    torch.testing.assert_close(out, plain)


def test_mean_and_edge_blend_on_a_biased_model():
    images = torch.rand(1, 3, 4, 41)
    d = _left_biased(images)
    back = torch.flip(_left_biased(torch.flip(images, dims=[3])), dims=[3])
    mean = predict_with_flip(_left_biased, images, "mean")
    torch.testing.assert_close(mean, 0.5 * (d + back))
    blend = predict_with_flip(_left_biased, images, "edge-blend")
    # Leftmost column: l_mask = 1, so the flipped-back pass; rightmost: the plain pass;
    # centre column (x = 0.5): the mean.
    torch.testing.assert_close(blend[..., 0], back[..., 0])
    torch.testing.assert_close(blend[..., -1], d[..., -1])
    torch.testing.assert_close(blend[..., 20], mean[..., 20])


@pytest.mark.parametrize("width", [1, 2, 21, 640])
def test_edge_blend_weights_sum_to_one(width):
    l_mask, r_mask, m_mask = edge_blend_weights(width, dtype=torch.float64)
    torch.testing.assert_close(l_mask + r_mask + m_mask, torch.ones(width, dtype=torch.float64))
    assert bool((l_mask >= 0).all() and (r_mask >= 0).all())
    if width >= 21:
        # xs = linspace(0, 1, W): l_mask = 1 − clip(20·(x − 0.05), 0, 1) is 1 up to x = 0.05,
        # 0 from x = 0.1 on; so the mean weight is 1 in the middle of the frame.
        assert l_mask[0] == 1.0 and l_mask[-1] == 0.0 and r_mask[-1] == 1.0
        assert m_mask[width // 2] == 1.0


def test_unknown_mode_is_a_config_error():
    with pytest.raises(ConfigError, match="none, mean, edge-blend"):
        predict_with_flip(_equivariant, torch.rand(1, 3, 4, 4), "median")  # type: ignore[arg-type]
