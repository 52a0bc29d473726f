"""The official NYU labeled .mat (HDF5) with splits.mat, and the generic folder dataset."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
from PIL import Image
from scipy.io import savemat

from depthkd.config.schema import DataConfig
from depthkd.data.loader import eval_loader
from depthkd.errors import DataError
from tests.conftest import prepare

N, H, W = 5, 24, 32


@pytest.fixture
def labeled_mat(tmp_path):
    """A small file in the structure of nyu_depth_v2_labeled.mat: arrays stored transposed."""
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (N, H, W, 3), dtype=np.uint8)
    raw_depth = np.round(rng.uniform(0.5, 9.5, (N, H, W)), 3).astype(np.float32)
    raw_depth[:, 0, 0] = 0.0  # a Kinect hole
    with h5py.File(tmp_path / "labeled.mat", "w") as f:
        f["images"] = rgb.transpose(0, 3, 2, 1)  # (N, 3, W, H)
        f["rawDepths"] = raw_depth.transpose(0, 2, 1)  # (N, W, H)
        f["depths"] = (raw_depth + 0.25).transpose(0, 2, 1)
    savemat(
        tmp_path / "splits.mat",
        {
            "trainNdxs": np.array([[1], [3], [4]], np.uint16),
            "testNdxs": np.array([[2], [5]], np.uint16),
        },
    )
    return tmp_path / "labeled.mat", tmp_path / "splits.mat", rgb, raw_depth


def _by_key(shards, split):
    cfg = DataConfig(eval_batch_size=1, num_workers=0)
    return {b["key"][0]: b for b in eval_loader(shards, split, cfg, rank=0, world_size=1)}


def test_nyu_mat_split_indices_are_one_based_and_values_exact(tmp_path, labeled_mat):
    mat, splits, rgb, raw_depth = labeled_mat
    report = prepare(tmp_path, dataset="nyu-mat", root=mat, split_file=splits, split="test")
    assert report.num_samples == 2
    batches = _by_key(tmp_path / "shards", "test")
    assert sorted(batches) == ["nyu/labeled/00001", "nyu/labeled/00004"]  # testNdxs 2, 5
    got = batches["nyu/labeled/00004"]
    image = np.rint(got["image"][0].permute(1, 2, 0).numpy() * 255).astype(np.uint8)
    np.testing.assert_array_equal(image, rgb[4])
    expected = np.rint(raw_depth[4] * 1000).astype(np.uint16).astype(np.float32) / np.float32(1000)
    np.testing.assert_array_equal(got["depth"][0, 0].numpy(), expected)
    assert not got["valid"][0, 0, 0, 0]


def test_nyu_mat_depth_field_switch(tmp_path, labeled_mat):
    mat, splits, _, raw_depth = labeled_mat
    prepare(
        tmp_path,
        dataset="nyu-mat",
        root=mat,
        split_file=splits,
        split="train",
        depth_field="depths",
    )
    got = _by_key(tmp_path / "shards", "train")["nyu/labeled/00000"]
    assert got["depth"][0, 0, 5, 5].item() == pytest.approx(raw_depth[0, 5, 5] + 0.25, abs=1e-3)


def test_nyu_mat_index_out_of_range(tmp_path, labeled_mat):
    mat, _, _, _ = labeled_mat
    savemat(tmp_path / "bad.mat", {"trainNdxs": np.array([[9]]), "testNdxs": np.array([[1]])})
    with pytest.raises(DataError, match=r"trainNdxs\[9\]: index 9 outside 1\.\.5"):
        prepare(
            tmp_path, dataset="nyu-mat", root=mat, split_file=tmp_path / "bad.mat", split="train"
        )


def _write_folder(root, depth_dtype=np.uint16):
    for name in ("a", "sub/b.v2"):
        (root / "rgb" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "depth" / name).parent.mkdir(parents=True, exist_ok=True)
        Image.new("RGB", (W, H), (10, 20, 30)).save(root / "rgb" / f"{name}.png")
        depth = np.full((H, W), 1500 if depth_dtype == np.uint16 else 15, depth_dtype)
        depth[0, :] = 65535 if depth_dtype == np.uint16 else 255
        Image.fromarray(depth).save(root / "depth" / f"{name}.png")


def test_folder_dataset_scale_and_invalid_value(tmp_path):
    _write_folder(tmp_path / "data")
    prepare(
        tmp_path,
        dataset="folder",
        root=tmp_path / "data",
        split="train",
        depth_scale=500.0,
        invalid_value=65535,
        focal=400.0,
    )
    batches = _by_key(tmp_path / "shards", "train")
    assert sorted(batches) == ["folder/a", "folder/sub/b_v2"]
    depth = batches["folder/a"]["depth"][0, 0]
    assert depth[1:].eq(3.0).all() and depth[0].eq(0).all()
    assert batches["folder/a"]["focal"].item() == 400.0


def test_folder_dataset_rejects_8bit_depth_and_needs_scale(tmp_path):
    from depthkd.errors import ConfigError

    _write_folder(tmp_path / "data", depth_dtype=np.uint8)
    with pytest.raises(ConfigError, match="needs --depth-scale"):
        prepare(tmp_path, dataset="folder", root=tmp_path / "data", split="train")
    with pytest.raises(DataError, match=r"a\.png: depth map must be a 16-bit greyscale PNG"):
        prepare(
            tmp_path, dataset="folder", root=tmp_path / "data", split="train", depth_scale=1000.0
        )


def test_nyu_mat_without_depth_dataset(tmp_path, labeled_mat):
    _, splits, _, _ = labeled_mat
    with h5py.File(tmp_path / "images_only.mat", "w") as f:
        f["images"] = np.zeros((2, 3, W, H), np.uint8)
    with pytest.raises(DataError, match=r"images_only\.mat: no dataset\(s\) rawDepths"):
        prepare(
            tmp_path,
            dataset="nyu-mat",
            root=tmp_path / "images_only.mat",
            split_file=splits,
            split="train",
        )


def test_nyu_mat_unreadable_splits_file(tmp_path, labeled_mat):
    mat, _, _, _ = labeled_mat
    (tmp_path / "empty.mat").write_bytes(b"")
    with pytest.raises(DataError, match=r"empty\.mat: cannot read MATLAB split file"):
        prepare(
            tmp_path, dataset="nyu-mat", root=mat, split_file=tmp_path / "empty.mat", split="train"
        )
