"""Raw dataset readers, looked up by name: kitti, nyu, nyu-mat, folder, and the RGB-only
(unlabeled) images, video and kitti-raw.

Each builder takes the validated `PrepareConfig` and returns a `Source`. The synthetic generator
(`synthetic.py`) writes the KITTI-like and NYU-like raw layouts, which the same readers consume.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from depthkd.config.schema import PrepareConfig
from depthkd.data.sources.base import Source
from depthkd.data.sources.folder import FolderSource
from depthkd.data.sources.images import ImagesSource
from depthkd.data.sources.kitti import KittiSource
from depthkd.data.sources.kitti_raw import KittiRawSource
from depthkd.data.sources.nyu import NyuSyncSource
from depthkd.data.sources.nyu_mat import NyuMatSource
from depthkd.data.sources.video import DEFAULT_EVERY, VideoSource
from depthkd.errors import ConfigError
from depthkd.registry import Registry

DATASETS: Registry[Callable[[PrepareConfig], Source]] = Registry("dataset")


def _split_file(cfg: PrepareConfig) -> Path:
    if cfg.split_file is None:
        raise ConfigError(f"dataset {cfg.dataset!r} needs --split-file")
    return cfg.split_file


@DATASETS.register("kitti")
def _kitti(cfg: PrepareConfig) -> Source:
    return KittiSource(cfg.root, _split_file(cfg), cfg.gt_root)


@DATASETS.register("nyu")
def _nyu(cfg: PrepareConfig) -> Source:
    return NyuSyncSource(cfg.root, _split_file(cfg))


@DATASETS.register("nyu-mat")
def _nyu_mat(cfg: PrepareConfig) -> Source:
    return NyuMatSource(cfg.root, _split_file(cfg), cfg.subset or cfg.split, cfg.depth_field)


@DATASETS.register("folder")
def _folder(cfg: PrepareConfig) -> Source:
    if cfg.depth_scale is None:
        raise ConfigError("dataset 'folder' needs --depth-scale (metres = stored value / scale)")
    return FolderSource(
        cfg.root,
        cfg.depth_scale,
        invalid_value=cfg.invalid_value,
        focal=cfg.focal,
        split_file=cfg.split_file,
    )


def _no_split_file(cfg: PrepareConfig) -> None:
    if cfg.split_file is not None:
        raise ConfigError(
            f"dataset {cfg.dataset!r} takes no --split-file: --root names the files "
            "(a folder, one file or a quoted glob pattern)"
        )


@DATASETS.register("images")
def _images(cfg: PrepareConfig) -> Source:
    _no_split_file(cfg)
    return ImagesSource(cfg.root, focal=cfg.focal)


@DATASETS.register("video")
def _video(cfg: PrepareConfig) -> Source:
    _no_split_file(cfg)
    return VideoSource(cfg.root, every=cfg.every or DEFAULT_EVERY, focal=cfg.focal)


@DATASETS.register("kitti-raw")
def _kitti_raw(cfg: PrepareConfig) -> Source:
    if cfg.right_camera and cfg.split_file is not None:
        raise ConfigError(
            "--right-camera adds image_03 when scanning --root; with --split-file the lines "
            "name the camera (image_03 paths, or 'r' in a monodepth2 list)"
        )
    return KittiRawSource(
        cfg.root, split_file=cfg.split_file, right=cfg.right_camera, focal=cfg.focal
    )


def build_source(cfg: PrepareConfig) -> Source:
    """The source named by `cfg.dataset`, configured from `cfg`."""
    return DATASETS.get(cfg.dataset)(cfg)
