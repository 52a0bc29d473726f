"""Real KITTI and NYU frames survive prepare → shard → loader exactly."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from depthkd.config.schema import DataConfig
from depthkd.data.loader import eval_loader
from depthkd.data.shards import read_manifest, read_tar, shard_paths, verify_shards
from tests.conftest import KITTI_DRIVE, build_kitti_tree, build_nyu_tree, prepare


def _loaded(shards, split):
    cfg = DataConfig(eval_batch_size=1, num_workers=0)
    return {b["key"][0]: b for b in eval_loader(shards, split, cfg, rank=0, world_size=1)}


@pytest.mark.parametrize("nested", [False, True], ids=["bts-flat-gt", "newcrfs-date-nested-gt"])
def test_kitti_round_trip_is_exact(realdata, tmp_path, nested):
    raw, gt, split = build_kitti_tree(realdata, tmp_path, nested=nested)
    report = prepare(
        tmp_path,
        dataset="kitti",
        root=raw,
        gt_root=gt,
        split_file=split,
        split="test",
        shard_size=2,
    )
    assert (report.num_samples, report.num_shards) == (4, 2)
    entry = read_manifest(tmp_path / "shards")["splits"]["test"]
    assert entry["num_without_gt"] == 1

    stored = {
        k: v for p in shard_paths(tmp_path / "shards", "test") for k, v in read_tar(p).items()
    }
    batches = _loaded(tmp_path / "shards", "test")
    for frame in ("0000000005", "0000000050", "0000000100"):
        key = f"kitti/{KITTI_DRIVE}/{frame}"
        rgb_src = raw / "2011_09_28" / KITTI_DRIVE / "image_02" / "data" / f"{frame}.png"
        assert stored[key]["rgb.png"] == rgb_src.read_bytes()
        gt_file = next(gt.rglob(f"groundtruth/image_02/{frame}.png"))
        source = np.asarray(Image.open(gt_file))
        expected = source.astype(np.float32) / np.float32(256.0)
        depth = batches[key]["depth"][0, 0].numpy()
        np.testing.assert_array_equal(depth, expected)
        assert batches[key]["valid"][0, 0].numpy().sum() == (source > 0).sum()
    no_gt = batches["kitti/2011_09_26_drive_0023_sync/0000000000"]
    assert not no_gt["has_gt"][0] and not no_gt["valid"].any()
    assert verify_shards(tmp_path / "shards", progress=False).ok


def test_nyu_round_trip_is_exact(realdata, tmp_path):
    root, split = build_nyu_tree(realdata, tmp_path)
    prepare(tmp_path, dataset="nyu", root=root, split_file=split, split="train")
    stored = next(iter(read_tar(p) for p in shard_paths(tmp_path / "shards", "train")))
    batches = _loaded(tmp_path / "shards", "train")
    assert len(batches) == 3
    for frame in ("00000", "00050", "00100"):
        key = f"nyu/basement_0001a/rgb_{frame}"
        assert stored[key]["rgb.jpg"] == (root / "basement_0001a" / f"rgb_{frame}.jpg").read_bytes()
        source = np.asarray(Image.open(root / "basement_0001a" / f"sync_depth_{frame}.png"))
        expected = source.astype(np.float32) / np.float32(1000.0)
        np.testing.assert_array_equal(batches[key]["depth"][0, 0].numpy(), expected)
        assert batches[key]["focal"].item() == pytest.approx(518.8579)
        rgb = np.asarray(Image.open(root / "basement_0001a" / f"rgb_{frame}.jpg"))
        image = batches[key]["image"][0].permute(1, 2, 0).numpy()
        np.testing.assert_array_equal(np.rint(image * 255).astype(np.uint8), rgb)


def test_newcrfs_dense_list_uses_sync_depth_and_default_focal(realdata, tmp_path):
    root, _ = build_nyu_tree(realdata, tmp_path)
    split = tmp_path / "dense.txt"
    split.write_text(
        "basement_0001a/rgb_00000.jpg basement_0001a/sync_depth_00000.png "
        "basement_0001a/dense/sync_depth_dense_00000.png\n"
    )
    prepare(tmp_path, dataset="nyu", root=root, split_file=split, split="train")
    (batch,) = _loaded(tmp_path / "shards", "train").values()
    assert batch["focal"].item() == pytest.approx(518.8579)
    assert batch["valid"].float().mean() > 0.5
