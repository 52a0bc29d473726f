"""`data.nyu_border_mask`: NYU training depth is invalid under the white border (BTS's box
[45:472, 43:608] of 480×640, scaled), masked in the frame's own pixels before augmentation moves
them; evaluation and other datasets are untouched."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depthkd.config.schema import AugmentConfig, DataConfig
from depthkd.data.augment import nyu_border_mask
from depthkd.data.loader import eval_loader, train_loader
from depthkd.data.sources.synthetic import write_synthetic
from tests.conftest import prepare

H, W = 240, 320  # the bundled synthetic NYU size: box rows 23:236 (22.5 → 23), cols 22:304


def _shards(tmp, layout: str, height: int, width: int):
    synth = write_synthetic(
        layout, tmp / "raw", 6, seed=3, height=height, width=width, progress=False
    )
    for split, listed in (("train", synth.train_split), ("test", synth.test_split)):
        prepare(
            tmp,
            dataset=layout,
            root=synth.root,
            gt_root=synth.gt_root,
            split_file=listed,
            split=split,
            shard_size=2,
        )
    return tmp / "shards"


@pytest.fixture(scope="module")
def nyu_shards(tmp_path_factory):
    return _shards(tmp_path_factory.mktemp("nyu"), "nyu", H, W)


def _batches(shards, *, mask: bool, hflip_p: float = 0.0, split: str = "train") -> list[dict]:
    cfg = DataConfig(
        batch_size=2,
        num_workers=0,
        steps_per_epoch=3,
        shuffle_buffer=4,
        nyu_border_mask=mask,
        augment=AugmentConfig(hflip_p=hflip_p, photometric_p=0.0),
    )
    if split != "train":
        return list(eval_loader(shards, split, cfg))
    return list(train_loader(shards, split, cfg, seed=0))


def _box(top: int, bottom: int, left: int, right: int, shape=(H, W)) -> torch.Tensor:
    box = torch.zeros(shape, dtype=torch.bool)
    box[top:bottom, left:right] = True
    return box


def test_border_is_invalid_and_the_inside_unchanged(nyu_shards) -> None:
    off, on = _batches(nyu_shards, mask=False), _batches(nyu_shards, mask=True)
    box = _box(23, 236, 22, 304)
    for plain, masked in zip(off, on, strict=True):
        assert plain["key"] == masked["key"]
        assert bool(plain["valid"][..., ~box].any())  # synthetic depth is there under the border
        assert not bool(masked["valid"][..., ~box].any())
        assert torch.equal(masked["valid"][..., box], plain["valid"][..., box])
        assert torch.equal(masked["depth"][..., box], plain["depth"][..., box])
        assert torch.equal(masked["valid"], masked["depth"] > 0)


def test_mask_is_taken_before_the_flip(nyu_shards) -> None:
    # the box is not symmetric (43 px left, 32 px right at 640): a flipped frame has it mirrored
    mirrored = _box(23, 236, W - 304, W - 22)
    off, on = (_batches(nyu_shards, mask=mask, hflip_p=1.0) for mask in (False, True))
    for plain, masked in zip(off, on, strict=True):
        assert torch.equal(masked["valid"], plain["valid"] & mirrored)


def test_evaluation_frames_are_not_masked(nyu_shards) -> None:
    off = _batches(nyu_shards, mask=False, split="test")
    on = _batches(nyu_shards, mask=True, split="test")
    assert all(torch.equal(a["valid"], b["valid"]) for a, b in zip(off, on, strict=True))


def test_other_datasets_are_not_masked(tmp_path) -> None:
    shards = _shards(tmp_path, "kitti", 48, 96)
    off, on = _batches(shards, mask=False), _batches(shards, mask=True)
    assert all(torch.equal(a["depth"], b["depth"]) for a, b in zip(off, on, strict=True))


def test_native_frames_use_the_bts_box() -> None:
    out = nyu_border_mask(np.ones((480, 640), np.float32))
    assert np.array_equal(out > 0, _box(45, 472, 43, 608, (480, 640)).numpy())
