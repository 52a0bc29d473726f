"""The official NYU Depth V2 labeled set: `nyu_depth_v2_labeled.mat` (HDF5 / MATLAB v7.3).

Datasets `images` (N, 3, W, H) uint8 and `depths` / `rawDepths` (N, W, H) float metres are stored
transposed. The 795/654 train/test split comes from `splits.mat` (MATLAB v5, `trainNdxs` and
`testNdxs`, 1-based). Frames are written to shards as a lossless RGB PNG and a uint16 millimetre
depth PNG, keyed by the 0-based index as BTS names its extracted files (`rgb_00000.jpg`). BTS builds
its official test GT from `rawDepths`, which is the default here.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

from depthkd.data import images
from depthkd.data.constants import NYU_DEPTH_SCALE, NYU_FOCAL
from depthkd.data.sources.base import EncodedSample, RawSample, Source
from depthkd.errors import DataError

DepthField = Literal["rawDepths", "depths"]
_SPLIT_KEYS = {"train": "trainNdxs", "test": "testNdxs"}


def _open_mat(path: Path) -> Any:
    """This process's read-only HDF5 handle: h5py handles must not cross a fork or a pickle."""
    return _open_mat_in(path, os.getpid())


@cache
def _open_mat_in(path: Path, pid: int) -> Any:
    import h5py

    try:
        return h5py.File(path, "r")
    except FileNotFoundError:
        raise DataError(f"NYU labeled .mat not found: {path}") from None
    except OSError as exc:
        raise DataError(
            f"{path}: not an HDF5 (MATLAB v7.3) file: {exc}",
            hint="pass the official nyu_depth_v2_labeled.mat",
        ) from None


def read_split_indices(splits_mat: Path, subset: str) -> list[int]:
    """Reads the 1-based indices of `subset` (train|test) from the official splits.mat."""
    from scipy.io import loadmat

    if subset not in _SPLIT_KEYS:
        raise DataError(f"NYU .mat subset must be train or test, got {subset!r}")
    try:
        mat = loadmat(splits_mat)
    except FileNotFoundError:
        raise DataError(f"splits file not found: {splits_mat}") from None
    except Exception as exc:  # scipy raises MatReadError, IndexError, ValueError on bad files
        raise DataError(f"{splits_mat}: cannot read MATLAB split file: {exc}") from None
    key = _SPLIT_KEYS[subset]
    if key not in mat:
        raise DataError(f"{splits_mat}: no {key!r} variable (expected trainNdxs and testNdxs)")
    return [int(i) for i in np.asarray(mat[key]).ravel()]


class NyuMatSource(Source):
    """Frames of the labeled .mat selected by the official split.

    Args:
        mat: path of `nyu_depth_v2_labeled.mat`.
        splits_mat: path of `splits.mat`.
        subset: which index list to use, train or test.
        depth_field: `rawDepths` (Kinect depth with holes, BTS test GT) or `depths` (in-painted).
    """

    dataset = "nyu"
    depth_scale = NYU_DEPTH_SCALE

    def __init__(
        self,
        mat: Path,
        splits_mat: Path,
        subset: str,
        depth_field: DepthField = "rawDepths",
    ) -> None:
        self.mat = mat
        self.splits_mat = splits_mat
        self.subset = subset
        self.depth_field = depth_field

    def lines(self) -> list[int]:
        mat = _open_mat(self.mat)
        missing = [name for name in ("images", self.depth_field) if name not in mat]
        if missing:
            raise DataError(f"{self.mat}: no dataset(s) {', '.join(missing)} in the HDF5 file")
        return read_split_indices(self.splits_mat, self.subset)

    def sample(self, line: int) -> RawSample:
        where = f"{self.splits_mat}:{_SPLIT_KEYS[self.subset]}[{line}]"
        count = _open_mat(self.mat)["images"].shape[0]
        if not 1 <= line <= count:
            raise DataError(f"{where}: index {line} outside 1..{count} of {self.mat}")
        return RawSample(
            key=f"nyu/labeled/{line - 1:05d}",
            where=where,
            focal=NYU_FOCAL,
            extra={
                "mat": str(self.mat),
                "index": line - 1,
                "depth_field": self.depth_field,
            },
        )

    def encode(self, sample: RawSample) -> EncodedSample:
        mat = _open_mat(self.mat)
        index = sample.extra["index"]
        try:
            rgb = np.ascontiguousarray(mat["images"][index].transpose(2, 1, 0))  # (H, W, 3)
            metres = np.nan_to_num(mat[self.depth_field][index].T, nan=0.0)  # (H, W)
        except (OSError, ValueError, KeyError) as exc:
            raise DataError(
                f"{sample.where}: cannot read frame {index} of {self.mat}: {exc}"
            ) from None
        if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
            raise DataError(f"{sample.where}: images[{index}] is not uint8 RGB ({rgb.dtype})")
        if metres.shape != rgb.shape[:2]:
            raise DataError(
                f"{sample.where}: images[{index}] is {rgb.shape[0]}x{rgb.shape[1]} but "
                f"{self.depth_field}[{index}] is {metres.shape[0]}x{metres.shape[1]}"
            )
        stored = np.clip(np.rint(metres * self.depth_scale), 0, np.iinfo(np.uint16).max)
        return {
            "__key__": sample.key,
            "rgb.png": images.encode_rgb_png(rgb),
            "depth.png": images.encode_depth(stored.astype(np.uint16)),
            "meta.json": self.meta(sample, rgb.shape[0], rgb.shape[1], has_gt=True),
        }

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": "nyu-mat",
            "root": str(self.mat),
            "split_file": str(self.splits_mat),
            "subset": self.subset,
            "depth_field": self.depth_field,
            "depth_scale": self.depth_scale,
        }
