"""Geometric augmentations keep rgb and depth aligned; CutFlip rolls both by h in [0.2H, 0.8H]."""

from __future__ import annotations

import numpy as np
import pytest

from depthkd.config.schema import AugmentConfig
from depthkd.data import augment as aug

H, W = 64, 96
GEOMETRY_ONLY = {"hflip_p": 0.0, "photometric_p": 0.0}


def coordinate_pair() -> tuple[np.ndarray, np.ndarray]:
    """rgb holds each pixel's (y, x) in R and G; depth holds 1 + y·W + x."""
    y, x = np.mgrid[0:H, 0:W]
    rgb = np.stack([y, x, np.zeros_like(y)], axis=-1).astype(np.uint8)
    return rgb, (1 + y * W + x).astype(np.float32)


def assert_aligned(image: np.ndarray, depth: np.ndarray) -> None:
    """Every pixel's depth is the depth of the source pixel its rgb came from."""
    coords = np.rint(image * 255).astype(int)
    np.testing.assert_array_equal(depth, 1 + coords[..., 0] * W + coords[..., 1])


@pytest.mark.parametrize("seed", range(5))
def test_crop_cutflip_flip_keep_alignment(seed):
    rgb, depth = coordinate_pair()
    cfg = AugmentConfig(crop=(40, 56), cutflip_p=1.0, hflip_p=0.5, photometric_p=0.0)
    image, out = aug.augment(rgb, depth, cfg, np.random.default_rng(seed))
    assert image.shape == (40, 56, 3) and out.shape == (40, 56)
    assert_aligned(image, out)


def test_cutflip_rolls_by_h_in_range():
    rgb, depth = coordinate_pair()
    cfg = AugmentConfig(cutflip_p=1.0, **GEOMETRY_ONLY)
    shifts = set()
    for seed in range(200):
        image, out = aug.augment(rgb, depth, cfg, np.random.default_rng(seed))
        h = (H - int(out[0, 0] - 1) // W) % H  # the top row was source row H - h
        np.testing.assert_array_equal(out, np.roll(depth, h, axis=0))
        np.testing.assert_array_equal(out[:h], depth[H - h :])  # bottom band now on top
        assert_aligned(image, out)
        shifts.add(h)
    assert min(shifts) >= int(0.2 * H) and max(shifts) <= int(0.8 * H)
    assert len(shifts) > 20  # h is drawn, not fixed


def test_cutflip_probability_zero_never_flips():
    rgb, depth = coordinate_pair()
    cfg = AugmentConfig(cutflip_p=0.0, **GEOMETRY_ONLY)
    for seed in range(20):
        _, out = aug.augment(rgb, depth, cfg, np.random.default_rng(seed))
        np.testing.assert_array_equal(out, depth)


def test_rotation_uses_nearest_for_depth_and_stays_aligned():
    # 8x8 blocks: bilinear rgb and nearest depth agree away from block edges.
    y, x = np.mgrid[0:H, 0:W] // 8
    rgb = np.stack([y * 20, x * 20, np.zeros_like(y)], axis=-1).astype(np.uint8)
    depth = (1 + y * 100 + x).astype(np.float32)
    image, out = aug.rotate(rgb, depth, 5.0)
    image = image.astype(np.float32) / 255
    valid = out > 0
    assert set(np.unique(out[valid])) <= set(np.unique(depth))  # no invented depth values
    assert (~valid).any()  # corners rotated in are invalid, not zero-depth ground truth
    block = np.rint(image * 255 / 20).astype(int)
    agree = (1 + block[..., 0] * 100 + block[..., 1]) == out
    assert agree[valid].mean() > 0.9


def test_kb_crop_takes_bottom_rows_and_centre_columns():
    rgb = np.zeros((375, 1242, 3), np.uint8)
    depth = np.arange(375 * 1242, dtype=np.float32).reshape(375, 1242)
    _, out = aug.kb_crop(rgb, depth)
    assert out.shape == (352, 1216)
    assert out[0, 0] == depth[375 - 352, (1242 - 1216) // 2]


def test_crop_larger_than_image_is_a_clear_error():
    from depthkd.errors import DataError

    rgb, depth = coordinate_pair()
    with pytest.raises(DataError, match=r"random crop 80x56 is larger than the image 64x96"):
        aug.augment(rgb, depth, AugmentConfig(crop=(80, 56)), np.random.default_rng(0))


def test_same_seed_same_result_and_photometric_touches_rgb_only():
    rgb, depth = coordinate_pair()
    cfg = AugmentConfig(crop=(32, 32), rotation_deg=2.5, cutflip_p=0.5, photometric_p=1.0)
    a = aug.augment(rgb, depth, cfg, np.random.default_rng(7))
    b = aug.augment(rgb, depth, cfg, np.random.default_rng(7))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    plain = AugmentConfig(photometric_p=0.0, hflip_p=0.0)
    bright = AugmentConfig(photometric_p=1.0, hflip_p=0.0, brightness=(1.5, 1.5))
    image0, depth0 = aug.augment(rgb, depth, plain, np.random.default_rng(0))
    image1, depth1 = aug.augment(rgb, depth, bright, np.random.default_rng(0))
    np.testing.assert_array_equal(depth0, depth1)
    assert image1.mean() > image0.mean()
