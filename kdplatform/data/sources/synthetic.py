"""The bundled synthetic RGB-D sets written in the KITTI and NYU raw layouts.

The generator stands in for the real datasets wherever they are unavailable (tests, CI, smoke
runs, benchmarks): it writes the same directory layouts, depth encodings and split files as the
BTS-style KITTI (raw + annotated depth) and NYU ("sync") releases, so every reader downstream is
exercised unchanged. The frames come from the ray caster in `depthkd.data.sources.render`.
"""

from __future__ import annotations

import multiprocessing
import numbers
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm import tqdm

from depthkd.data.sources.render import (
    NATIVE,
    Layout,
    check_layout,
    check_size,
    focal_length,
    is_int,
    render_scene,
)
from depthkd.errors import ConfigError

KITTI_DATE = "2011_09_26"
FRAMES_PER_DRIVE = 50
FRAMES_PER_ROOM = 20
NO_GT_FRACTION = 0.05
_GROUP = {"kitti": FRAMES_PER_DRIVE, "nyu": FRAMES_PER_ROOM}  # frames per drive / room
# Fixed encoder settings, so the same pixels always give the same bytes. PNG level 1 encodes
# several times faster than the default 6 for ~10 % larger files.
_RGB_ENCODING = {
    "kitti": {"format": "PNG", "compress_level": 1},
    "nyu": {"format": "JPEG", "quality": 95, "subsampling": 0},
}
_DEPTH_PNG = {"format": "PNG", "compress_level": 1}

_Row = tuple[str, str | None]  # (RGB path, GT path or None) of one split line


@dataclass(frozen=True)
class SynthSummary:
    """What `write_synthetic` wrote.

    Attributes:
        out: the output directory.
        layout: "kitti" or "nyu".
        n_train: lines in splits/train.txt.
        n_val: lines in splits/val.txt.
        n_test: lines in splits/test.txt.
        n_test_without_gt: test lines whose GT column is `None` (KITTI only).
        train_split: path of splits/train.txt.
        val_split: path of splits/val.txt.
        test_split: path of splits/test.txt.
        root: directory the RGB paths of all splits are relative to.
        gt_root: directory the GT paths are relative to, or None when it is `root`.
        n_unlabeled: lines in splits/unlabeled.txt (RGB only, GT column `None`).
        unlabeled_split: path of splits/unlabeled.txt, or None when n_unlabeled is 0.
    """

    out: Path
    layout: str
    n_train: int
    n_val: int
    n_test: int
    n_test_without_gt: int
    train_split: Path
    val_split: Path
    test_split: Path
    root: Path
    gt_root: Path | None
    n_unlabeled: int = 0
    unlabeled_split: Path | None = None


def write_synthetic(
    layout: Layout,
    out: Path,
    n: int,
    seed: int,
    *,
    test_fraction: float = 0.2,
    val_fraction: float = 0.1,
    height: int | None = None,
    width: int | None = None,
    unlabeled_n: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> SynthSummary:
    """Write `n` synthetic frames plus train/val/test split files in a dataset's raw layout.

    Sample `i` is rendered from `np.random.default_rng([seed, i])`, so the bytes written do not
    depend on `workers`. Samples are split in index order: train, then val, then the last
    `n_test` samples as test, with `n_test = max(1, round(n * test_fraction))` for n >= 2 (capped
    so one train sample remains) and 0 for n = 1, so the test set does not depend on
    `val_fraction`. `n_val = max(1, round(n * val_fraction))` when `val_fraction > 0`, capped so
    one train sample remains. Unlike real video frames, synthetic frames are independent renders,
    so this frame-level split does not leak. Split files are written last and atomically, test
    last of all: a directory without `splits/test.txt` is incomplete.

    `unlabeled_n` more frames are rendered as RGB only (their depth is never written) and listed
    in `splits/unlabeled.txt` with GT `None`. They are samples `first, first + 1, ...` where
    `first` is the first index >= n that starts a new drive (room), so they share neither a
    scene nor a drive with any train, val or test frame, and adding them changes no other
    frame's bytes.

    Args:
        layout: "kitti" (raw/ + gt/ trees, sparse depth) or "nyu" (sync/ tree, dense depth).
        out: output directory; created if missing, existing files of the same names replaced.
        n: number of frames (>= 1).
        seed: base seed.
        test_fraction: share of frames in the test split, in [0, 1).
        val_fraction: share of frames in the val split (training-time evaluation), in [0, 1).
        height: image height (>= 16); the dataset's native height when None.
        width: image width (>= 16); the dataset's native width when None. The focal in the
            split files is scaled by `width / native_width`.
        unlabeled_n: RGB-only frames besides the `n` (>= 0).
        workers: rendering processes; 1 renders in this process.
        progress: show a tqdm progress bar on stderr.

    Returns:
        The summary of what was written.

    Raises:
        ConfigError: an argument is out of range.
    """
    check_layout(layout)
    _check_write_args(n, seed, test_fraction, val_fraction, workers)
    if not is_int(unlabeled_n) or unlabeled_n < 0:
        raise ConfigError(f"unlabeled_n must be an integer >= 0, got {unlabeled_n!r}")
    (native_h, native_w), _, _ = NATIVE[layout]
    height = native_h if height is None else height
    width = native_w if width is None else width
    check_size("height", height)
    check_size("width", width)
    n, seed, height, width, workers = int(n), int(seed), int(height), int(width), int(workers)

    out = Path(out)
    n_test = _n_test(n, test_fraction)
    n_val = _n_val(n, n_test, val_fraction)
    n_train = n - n_val - n_test
    no_gt = _no_gt_indices(layout, n - n_test, n_test)
    jobs = [(i, i not in no_gt) for i in range(n)]
    first_unlabeled = -(-n // _GROUP[layout]) * _GROUP[layout]  # next drive (room) after n
    jobs += [(first_unlabeled + j, False) for j in range(int(unlabeled_n))]
    write_one = partial(_write_sample, layout, out, seed, height, width)
    rows = list(
        tqdm(
            _imap(write_one, jobs, workers),
            total=len(jobs),
            desc=f"synth {layout}",
            file=sys.stderr,
            disable=not progress,
        )
    )
    focal = f"{focal_length(layout, width):.4f}"
    # BTS lists NYU train paths with a leading slash and test paths without one; val is carved
    # out of a train list, so it keeps the slash.
    train_prefix = "/" if layout == "nyu" else ""
    splits = out / "splits"
    _write_text(splits / "train.txt", _split_text(rows[:n_train], focal, train_prefix))
    _write_text(splits / "val.txt", _split_text(rows[n_train : n - n_test], focal, train_prefix))
    unlabeled_split = splits / "unlabeled.txt" if unlabeled_n else None
    if unlabeled_split is not None:
        _write_text(unlabeled_split, _split_text(rows[n:], focal, ""))
    _write_text(splits / "test.txt", _split_text(rows[n - n_test : n], focal, ""))
    root, gt_root = _roots(layout, out)
    return SynthSummary(
        out=out,
        layout=layout,
        n_train=n_train,
        n_val=n_val,
        n_test=n_test,
        n_test_without_gt=len(no_gt),
        train_split=splits / "train.txt",
        val_split=splits / "val.txt",
        test_split=splits / "test.txt",
        root=root,
        gt_root=gt_root,
        n_unlabeled=int(unlabeled_n),
        unlabeled_split=unlabeled_split,
    )


# --- argument checks -------------------------------------------------------------------------


def _check_write_args(
    n: int, seed: int, test_fraction: float, val_fraction: float, workers: int
) -> None:
    if not is_int(n) or n < 1:
        raise ConfigError(f"n must be an integer >= 1, got {n!r}")
    if not is_int(seed) or seed < 0:
        raise ConfigError(f"seed must be an integer >= 0, got {seed!r}")
    for name, fraction in (("test_fraction", test_fraction), ("val_fraction", val_fraction)):
        if not isinstance(fraction, numbers.Real) or not 0.0 <= fraction < 1.0:
            raise ConfigError(f"{name} must be a number in [0, 1), got {fraction!r}")
    if not is_int(workers) or workers < 1:
        raise ConfigError(f"workers must be an integer >= 1, got {workers!r}")


def _n_test(n: int, test_fraction: float) -> int:
    if n < 2:
        return 0
    return min(n - 1, max(1, round(n * test_fraction)))


def _n_val(n: int, n_test: int, val_fraction: float) -> int:
    if val_fraction == 0:
        return 0
    return min(n - n_test - 1, max(1, round(n * val_fraction)))  # n_test <= n - 1: never < 0


def _no_gt_indices(layout: str, first_test: int, n_test: int) -> frozenset[int]:
    """Test samples listed with GT `None`, spread evenly like the missing frames of Eigen."""
    if layout != "kitti" or n_test == 0:
        return frozenset()
    count = round(n_test * NO_GT_FRACTION)
    if n_test >= 5:
        count = max(1, count)
    return frozenset(first_test + int((j + 0.5) * n_test / count) for j in range(count))


# --- writing ---------------------------------------------------------------------------------


def _imap(
    fn: Callable[[tuple[int, bool]], _Row], jobs: Sequence[tuple[int, bool]], workers: int
) -> Iterator[_Row]:
    """Map `fn` over `jobs` in order, in this process or in a pool of `workers`."""
    if workers == 1:
        yield from map(fn, jobs)
        return
    with multiprocessing.Pool(workers) as pool:
        yield from pool.imap(fn, jobs, chunksize=max(1, len(jobs) // (workers * 8)))


def _roots(layout: str, out: Path) -> tuple[Path, Path | None]:
    """Directories the split files' RGB and GT paths are relative to (None: the RGB one)."""
    if layout == "kitti":
        return out / "raw", out / "gt"
    return out / "sync", None


def _write_sample(
    layout: Layout, out: Path, seed: int, height: int, width: int, job: tuple[int, bool]
) -> _Row:
    """Render and write sample `job[0]`; return its RGB and GT paths as listed in the splits."""
    index, with_gt = job
    rgb, depth = render_scene(layout, np.random.default_rng([seed, index]), height, width)
    rgb_rel, gt_rel = _sample_paths(layout, index)
    root, gt_root = _roots(layout, out)
    _save_image(Image.fromarray(rgb), root / rgb_rel, _RGB_ENCODING[layout])
    if not with_gt:
        return rgb_rel, None
    _, _, scale = NATIVE[layout]
    encoded = np.round(depth.astype(np.float64) * scale).astype(np.uint16)
    _save_image(Image.fromarray(encoded), (gt_root or root) / gt_rel, _DEPTH_PNG)
    return rgb_rel, gt_rel


def _sample_paths(layout: str, index: int) -> tuple[str, str]:
    if layout == "kitti":
        drive = f"{KITTI_DATE}_drive_{index // FRAMES_PER_DRIVE + 1:04d}_sync"
        frame = f"{index % FRAMES_PER_DRIVE:010d}.png"
        return (
            f"{KITTI_DATE}/{drive}/image_02/data/{frame}",
            f"{drive}/proj_depth/groundtruth/image_02/{frame}",
        )
    scene = f"synth_room_{index // FRAMES_PER_ROOM:04d}"
    frame = f"{index % FRAMES_PER_ROOM:05d}"
    return f"{scene}/rgb_{frame}.jpg", f"{scene}/sync_depth_{frame}.png"


def _split_text(rows: Sequence[_Row], focal: str, prefix: str) -> str:
    lines = [f"{prefix}{rgb} {'None' if gt is None else prefix + gt} {focal}\n" for rgb, gt in rows]
    return "".join(lines)


def _save_image(image: Image.Image, path: Path, params: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    image.save(tmp, **params)
    os.replace(tmp, path)


def _write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
