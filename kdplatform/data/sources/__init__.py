"""Raw dataset readers, looked up by name: kitti, nyu, nyu-mat, folder.

Each builder takes the validated `PrepareConfig` and returns a `Source`. The synthetic generator
(`synthetic.py`) writes the KITTI-like and NYU-like raw layouts, which the same readers consume.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from kdplatform.config.schema import PrepareConfig
from kdplatform.data.sources.base import Source
from kdplatform.data.sources.folder import FolderSource
from kdplatform.data.sources.kitti import KittiSource
from kdplatform.data.sources.nyu import NyuSyncSource
from kdplatform.data.sources.nyu_mat import NyuMatSource
from kdplatform.errors import ConfigError
from kdplatform.registry import Registry

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


def build_source(cfg: PrepareConfig) -> Source:
    """The source named by `cfg.dataset`, configured from `cfg`."""
    return DATASETS.get(cfg.dataset)(cfg)
