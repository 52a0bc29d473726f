"""Training and evaluation streams: exact batch counts, metric depth, exactly-once evaluation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from depthkd.config.schema import AugmentConfig, DataConfig
from depthkd.data.loader import collate, eval_loader, train_loader
from depthkd.data.sources.synthetic import write_synthetic
from depthkd.errors import DataError
from tests.conftest import prepare


@pytest.fixture(scope="module")
def kitti_shards(tmp_path_factory):
    """Synthetic KITTI-like shards: 16 train frames, 5 test frames, one without GT."""
    tmp = tmp_path_factory.mktemp("kitti")
    synth = write_synthetic(
        "kitti", tmp / "raw", 21, seed=1, height=40, width=96, test_fraction=0.25, progress=False
    )
    for split, listed in (("train", synth.train_split), ("test", synth.test_split)):
        prepare(
            tmp,
            dataset="kitti",
            root=synth.root,
            gt_root=synth.gt_root,
            split_file=listed,
            split=split,
            shard_size=3,
        )
    return tmp / "shards", synth


@pytest.mark.parametrize("workers", [0, 2])
def test_train_epoch_has_exact_batch_count(kitti_shards, workers):
    shards, _ = kitti_shards
    cfg = DataConfig(
        batch_size=3,
        num_workers=workers,
        steps_per_epoch=7,
        shuffle_buffer=8,
        augment=AugmentConfig(crop=(32, 64), cutflip_p=0.5, rotation_deg=1.0),
    )
    batches = list(train_loader(shards, "train", cfg, seed=0))
    assert len(batches) == 7
    for batch in batches:
        assert batch["image"].shape == (3, 3, 32, 64) and batch["image"].dtype == torch.float32
        assert batch["depth"].shape == (3, 1, 32, 64) and batch["depth"].dtype == torch.float32
        assert batch["image"].min() >= 0.0 and batch["image"].max() <= 1.0
        assert batch["depth"].max() <= 80.0 + 1e-3
        assert torch.equal(batch["valid"], batch["depth"] > 0)


def test_train_stream_is_reproducible_per_epoch(kitti_shards):
    shards, _ = kitti_shards
    cfg = DataConfig(
        batch_size=2,
        num_workers=0,
        steps_per_epoch=4,
        shuffle_buffer=4,
        augment=AugmentConfig(crop=(32, 64)),
    )
    keys = [
        [b["key"] for b in train_loader(shards, "train", cfg, seed=5, epoch=e)] for e in (0, 0, 1)
    ]
    assert keys[0] == keys[1]
    assert keys[0] != keys[2]


def test_eval_sees_every_sample_once_with_keys(kitti_shards):
    shards, synth = kitti_shards
    cfg = DataConfig(eval_batch_size=2, num_workers=2)
    keys = [k for b in eval_loader(shards, "test", cfg, rank=0, world_size=1) for k in b["key"]]
    assert len(keys) == len(set(keys)) == synth.n_test
    no_gt = [
        b for b in eval_loader(shards, "test", cfg, rank=0, world_size=1) if not b["has_gt"].all()
    ]
    assert no_gt and not no_gt[0]["valid"][~no_gt[0]["has_gt"]].any()


def test_eval_rank_split_is_exactly_once_over_uneven_shards(kitti_shards):
    shards, synth = kitti_shards  # 5 test samples in shards of 3 + 2
    cfg = DataConfig(eval_batch_size=4, num_workers=0)
    per_rank = [
        [k for b in eval_loader(shards, "test", cfg, rank=r, world_size=3) for k in b["key"]]
        for r in range(3)
    ]
    assert [len(k) for k in per_rank] == [3, 2, 0]
    assert len({k for ks in per_rank for k in ks}) == synth.n_test


def test_crop_larger_than_frames_is_an_error_with_a_hint(kitti_shards):
    shards, _ = kitti_shards
    cfg = DataConfig(
        batch_size=2, num_workers=0, steps_per_epoch=1, augment=AugmentConfig(crop=(64, 64))
    )
    with pytest.raises(DataError, match="random crop 64x64 is larger than the image 40x96") as info:
        list(train_loader(shards, "train", cfg, seed=0))
    assert "data.augment.crop" in info.value.hint


def test_batching_mixed_sizes_says_how_to_fix():
    samples = [
        {
            "key": f"k{i}",
            "rgb": np.zeros((h, 8, 3), np.uint8),
            "depth": np.zeros((h, 8), np.float32),
            "focal": 1.0,
            "has_gt": True,
        }
        for i, h in enumerate((4, 6))
    ]
    with pytest.raises(DataError, match=r"different sizes \[\(4, 8\), \(6, 8\)\]") as info:
        collate(samples)
    assert "data.augment.crop" in info.value.hint


def test_missing_manifest_is_an_error(tmp_path):
    with pytest.raises(DataError, match="not a prepared shard dir"):
        train_loader(tmp_path, "train", DataConfig(), seed=0)
