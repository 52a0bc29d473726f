"""Carving a val list out of a real train list by whole NYU scenes or KITTI drives.

Selection (training-time evaluation, early stopping, sweeps, checkpoint choice) reads val, not
test (DESIGN §5), and the standard KITTI Eigen and NYU lists ship no val split. The frames of one
KITTI drive or one NYU scene are consecutive video frames, near-duplicates of each other, so a
frame-level random split leaks: val would score what train memorised. Val therefore takes whole
groups, and no group is in both lists.

Group keys: KITTI lines `<date>/<drive>_sync/image_02/data/<frame>.png ...` belong to the drive
folder (`2011_09_26_drive_0001_sync`); NYU lines `/<scene>/rgb_XXXXX.jpg ...` (with or without
the leading slash, BTS or NeWCRFs dense list) to the scene folder (`kitchen_0028b`), the first
path component. Lines are copied verbatim (focal columns, `None` GT, leading slashes), in their
input order; blank lines and `#` comments are dropped.
"""

from __future__ import annotations

import numbers
import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from depthkd import atomic
from depthkd.data.sources.base import SplitLine, read_split_file
from depthkd.errors import ConfigError, DataError

GroupBy = Literal["scene", "drive"]
GROUP_BY: tuple[str, ...] = ("scene", "drive")


@dataclass(frozen=True)
class GroupSplit:
    """A train list split into train and val lines by whole groups.

    Attributes:
        source: the input list.
        group_by: "scene" or "drive".
        train: the lines that stay in train, verbatim, in input order.
        val: the lines of the val groups, verbatim, in input order.
        train_groups: the groups of `train`.
        val_groups: the groups of `val`; disjoint from `train_groups`.
    """

    source: Path
    group_by: str
    train: tuple[str, ...]
    val: tuple[str, ...]
    train_groups: frozenset[str]
    val_groups: frozenset[str]


def group_of(line: SplitLine, group_by: GroupBy) -> str:
    """The scene or drive a split line's RGB path (its first column) belongs to.

    Raises:
        DataError: the path has no such component; the message names file and line.
    """
    rgb = line.columns[0]
    parts = Path(rgb.lstrip("/")).parts
    if group_by == "drive":
        # Same reading as the KITTI source: <date>/<drive>_sync/.../<frame>.png
        if len(parts) < 3 or "_drive_" not in parts[1]:
            raise DataError(
                f"{line.where}: cannot tell the KITTI drive of {rgb!r} "
                "(expected <date>/<date>_drive_<NNNN>_sync/image_02/data/<frame>.png)",
                hint="use --group-by scene for NYU-style lists",
            )
        return parts[1]
    if len(parts) < 2:
        raise DataError(
            f"{line.where}: cannot tell the scene of {rgb!r} (expected <scene>/rgb_XXXXX.jpg)"
        )
    # kitchen_0028a and kitchen_0028b are two recordings of one scene: one group
    return re.sub(r"(?<=\d)[a-z]$", "", parts[0])


def split_by_group(
    split_file: Path, *, val_fraction: float, group_by: GroupBy, seed: int
) -> GroupSplit:
    """Moves whole groups of `split_file` into val until val holds about `val_fraction` of it.

    The groups, sorted by name (so the input's line order does not matter), are shuffled with
    `seed`. Walking that order, each group joins val while val stays at or under the target of
    `val_fraction` × frames; then the one left-over group that brings val closest to the target
    joins it, if it does (or if val is still empty). Skipping the groups that overshoot keeps val
    near the target even when a few groups are large: two of the 33 Eigen train drives hold 42 %
    of the frames, and taking groups strictly in shuffled order would put 20 % or more into val
    for seeds that draw one of them first. Val gets at least one group and train keeps at least
    one. Deterministic for a seed; another seed gives another split.

    Raises:
        ConfigError: `val_fraction` not in (0, 1) or an unknown `group_by`.
        DataError: missing or empty file, a line without a group (file:line), or fewer than two
            groups.
    """
    _check_args(val_fraction, group_by)
    lines = read_split_file(split_file)
    text = split_file.read_text().splitlines()  # same splitting as read_split_file
    groups = [group_of(line, group_by) for line in lines]
    sizes = Counter(groups)
    if len(sizes) < 2:
        raise DataError(
            f"{split_file}: all {len(lines)} frames are in one {group_by} ({groups[0]}); carving "
            f"val by {group_by} needs at least 2"
        )
    val_groups = _choose_val(sizes, val_fraction * len(lines), random.Random(seed))
    train: list[str] = []
    val: list[str] = []
    for line, group in zip(lines, groups, strict=True):
        (val if group in val_groups else train).append(text[line.lineno - 1])
    return GroupSplit(
        source=split_file,
        group_by=group_by,
        train=tuple(train),
        val=tuple(val),
        train_groups=frozenset(sizes) - val_groups,
        val_groups=val_groups,
    )


def _check_args(val_fraction: float, group_by: str) -> None:
    if (
        isinstance(val_fraction, bool)
        or not isinstance(val_fraction, numbers.Real)
        or not 0.0 < val_fraction < 1.0
    ):
        raise ConfigError(f"val_fraction must be a number in (0, 1), got {val_fraction!r}")
    if group_by not in GROUP_BY:
        raise ConfigError(f"group_by must be one of {', '.join(GROUP_BY)}, got {group_by!r}")


def _choose_val(sizes: Counter[str], target: float, rng: random.Random) -> frozenset[str]:
    """The val groups: shuffled groups that fit under `target`, then the closest left-over one."""
    order = sorted(sizes)
    rng.shuffle(order)
    val: list[str] = []
    frames = 0
    for group in order:
        if len(val) == len(order) - 1:
            break
        if frames + sizes[group] <= target:
            val.append(group)
            frames += sizes[group]
    rest = [g for g in order if g not in val]
    if len(rest) > 1:
        closest = min(rest, key=lambda g: abs(frames + sizes[g] - target))
        if not val or abs(frames + sizes[closest] - target) < abs(frames - target):
            val.append(closest)
    return frozenset(val)


def write_split(split: GroupSplit, out: Path) -> tuple[Path, Path]:
    """Writes `out/train.txt` and `out/val.txt`; returns their paths.

    Each file is written atomically. An old `val.txt` is removed first and the new one is written
    last, so an interrupted run never leaves a val list beside a train list from another split
    (which could share groups with it): a folder without `val.txt` is incomplete.

    Raises:
        ConfigError: the input list is one of the two outputs (it would be overwritten).
        DataError: `out` cannot be written.
    """
    train_file, val_file = out / "train.txt", out / "val.txt"
    if split.source.resolve() in (train_file.resolve(), val_file.resolve()):
        raise ConfigError(
            f"--out {out} would overwrite the input {split.source}; choose another folder"
        )
    try:
        val_file.unlink(missing_ok=True)
        atomic.write_text(train_file, "".join(f"{line}\n" for line in split.train))
        atomic.write_text(val_file, "".join(f"{line}\n" for line in split.val))
    except OSError as exc:
        raise DataError(f"cannot write the split files into {out}: {exc}") from None
    return train_file, val_file


def shared_groups(train_file: Path, val_file: Path, group_by: GroupBy) -> frozenset[str]:
    """The groups listed in both files, read back from disk: empty for a leak-free split."""
    train, val = (
        {group_of(line, group_by) for line in read_split_file(path)}
        for path in (train_file, val_file)
    )
    return frozenset(train & val)
