"""Train-time augmentation of an rgb/depth pair (numpy, HWC), every op seedable.

Geometric ops (KB crop, rotation, random crop, CutFlip, flip) move rgb and depth together so they
stay aligned pixel for pixel; depth is only ever resampled with nearest neighbour so no depth value
is invented at object edges. Photometric ops touch rgb only.

CutFlip (URCDC-Depth): with probability p draw h uniformly in [lo·H, hi·H] and swap the top and
bottom bands: the bottom h rows move to the top (rgb and depth rolled together by h). It breaks
the prior that depth depends only on the image row, and runs after the crop, before the flip.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from depthkd.config.schema import AugmentConfig
from depthkd.data.constants import KB_CROP, NYU_SIZE
from depthkd.errors import DataError

Pair = tuple[np.ndarray, np.ndarray]  # rgb (H, W, 3), depth (H, W) float32 metres

# NYU frames carry the white border the NYU toolbox's undistortion leaves, with depth under it
# that the image does not support. BTS trains on rows 45:472, cols 43:608 of the 480×640 frame
# (`data.nyu_border_mask`); the sources whose frames have that border:
NYU_TRAIN_BOX = (45, 472, 43, 608)  # (top, bottom, left, right) at NYU_SIZE
NYU_BORDER_DATASETS = frozenset({"nyu", "nyu-mat"})


def kb_crop(rgb: np.ndarray, depth: np.ndarray) -> Pair:
    """KITTI benchmark crop: the bottom 352 rows and the centred 1216 columns."""
    height, width = depth.shape[:2]
    crop_h, crop_w = KB_CROP
    if height < crop_h or width < crop_w:
        raise DataError(f"KB crop needs at least {crop_h}x{crop_w}, got {height}x{width}")
    top, left = height - crop_h, (width - crop_w) // 2
    return rgb[top:, left : left + crop_w], depth[top:, left : left + crop_w]


def nyu_border_mask(depth: np.ndarray) -> np.ndarray:
    """`depth` with 0 (invalid) outside `NYU_TRAIN_BOX`, before any geometric op moves pixels.

    Frames of another size get the box in fractions of 480×640, shrunk to the pixels wholly
    inside it (top/left rounded up, bottom/right down): 240×320 keeps rows 23:236, cols 22:304.
    """
    height, width = depth.shape
    top, bottom, left, right = NYU_TRAIN_BOX
    sy, sx = height / NYU_SIZE[0], width / NYU_SIZE[1]
    top, left = int(np.ceil(top * sy)), int(np.ceil(left * sx))
    bottom, right = int(np.floor(bottom * sy)), int(np.floor(right * sx))
    out = np.zeros_like(depth)
    out[top:bottom, left:right] = depth[top:bottom, left:right]
    return out


def random_crop(
    rgb: np.ndarray, depth: np.ndarray, size: tuple[int, int], rng: np.random.Generator
) -> Pair:
    """A crop of `size` (height, width) at a uniformly random position."""
    height, width = depth.shape[:2]
    crop_h, crop_w = size
    if height < crop_h or width < crop_w:
        raise DataError(
            f"random crop {crop_h}x{crop_w} is larger than the image {height}x{width}",
            hint="lower data.augment.crop",
        )
    top = int(rng.integers(0, height - crop_h + 1))
    left = int(rng.integers(0, width - crop_w + 1))
    return rgb[top : top + crop_h, left : left + crop_w], depth[
        top : top + crop_h, left : left + crop_w
    ]


def rotate(rgb: np.ndarray, depth: np.ndarray, angle_deg: float) -> Pair:
    """Rotates about the centre; rgb bilinear, depth nearest; uncovered corners get depth 0."""
    rgb_out = Image.fromarray(rgb).rotate(angle_deg, resample=Image.Resampling.BILINEAR)
    if depth.ndim == 3:  # (H, W, C): per-pixel targets that move with the depth (confidence)
        channels = [_rotate_nearest(depth[..., c], angle_deg) for c in range(depth.shape[2])]
        return np.asarray(rgb_out), np.stack(channels, axis=-1)
    return np.asarray(rgb_out), _rotate_nearest(depth, angle_deg)


def _rotate_nearest(plane: np.ndarray, angle_deg: float) -> np.ndarray:
    image = Image.fromarray(np.ascontiguousarray(plane, dtype=np.float32), mode="F")
    return np.asarray(image.rotate(angle_deg, resample=Image.Resampling.NEAREST))


def cutflip(rgb: np.ndarray, depth: np.ndarray, h: int) -> Pair:
    """Moves the bottom `h` rows to the top (a vertical roll by h) in rgb and depth alike."""
    return np.roll(rgb, h, axis=0), np.roll(depth, h, axis=0)


def hflip(rgb: np.ndarray, depth: np.ndarray) -> Pair:
    """Mirrors rgb and depth left-right."""
    return rgb[:, ::-1], depth[:, ::-1]


def photometric(rgb: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """Random gamma, brightness and per-channel colour on a float image in [0, 1] (BTS style)."""
    gamma = rng.uniform(*cfg.gamma)
    brightness = rng.uniform(*cfg.brightness)
    colour = rng.uniform(*cfg.colour, size=3).astype(np.float32)
    return np.clip((rgb**gamma) * brightness * colour, 0.0, 1.0)


def augment(
    rgb: np.ndarray, depth: np.ndarray, cfg: AugmentConfig, rng: np.random.Generator
) -> Pair:
    """Applies the configured train-time ops in order.

    Args:
        rgb: uint8 (H, W, 3).
        depth: float32 (H, W) metres, 0 = invalid; or (H, W, C) with more per-pixel targets
            (a pseudo-label and its confidence), moved together.
        cfg: which ops run and their ranges.
        rng: the source of every random choice, so a seed reproduces the result.

    Returns:
        rgb float32 (h, w, 3) in [0, 1] and depth float32 (h, w), both contiguous.
    """
    if cfg.kb_crop:
        rgb, depth = kb_crop(rgb, depth)
    if cfg.rotation_deg > 0:
        rgb, depth = rotate(rgb, depth, float(rng.uniform(-cfg.rotation_deg, cfg.rotation_deg)))
    if cfg.crop is not None:
        rgb, depth = random_crop(rgb, depth, cfg.crop, rng)
    if rng.random() < cfg.cutflip_p:
        height = depth.shape[0]
        lo, hi = cfg.cutflip_range
        rgb, depth = cutflip(rgb, depth, int(rng.integers(int(lo * height), int(hi * height) + 1)))
    if rng.random() < cfg.hflip_p:
        rgb, depth = hflip(rgb, depth)
    image = rgb.astype(np.float32) / 255.0
    if rng.random() < cfg.photometric_p:
        image = photometric(image, cfg, rng)
    return np.ascontiguousarray(image), np.ascontiguousarray(depth)
