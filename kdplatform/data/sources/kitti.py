"""KITTI Eigen split with annotated depth (uint16 PNG, metres = value / 256, 0 = invalid).

Split lines: `<date>/<drive>_sync/image_02/data/<frame>.png <drive>_sync/proj_depth/groundtruth/
image_02/<frame>.png <focal>`, where the GT column may be `None` (45 of the 697 Eigen test lines).
Two GT layouts are in use and both are accepted: BTS puts `<drive>_sync/...` directly under the GT
root (train/ and val/ merged; the official train/ and val/ sub-folders are also searched), NeWCRFs
and URCDC nest it under the date (`<gt_root>/<date>/<drive>_sync/...`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthkd.data.constants import KITTI_DEPTH_SCALE
from depthkd.data.sources.base import (
    RawSample,
    Source,
    SplitLine,
    expect_columns,
    join_relative,
    parse_focal,
    read_split_file,
)
from depthkd.errors import DataError

LEFT_CAMERA = "image_02"


def kitti_key(drive: str, frame: str, camera: str = LEFT_CAMERA) -> str:
    """The shard key of a KITTI frame: `kitti/<drive>_sync/<frame>` for the left colour camera
    (image_02), `kitti/<drive>_sync/<camera>/<frame>` for another (image_03), so the two
    cameras' frames never share a key."""
    if camera == LEFT_CAMERA:
        return f"kitti/{drive}/{frame}"
    return f"kitti/{drive}/{camera}/{frame}"


class KittiSource(Source):
    """KITTI raw images + annotated depth, listed by an Eigen-style split file.

    Args:
        root: KITTI raw root (holds `<date>/<drive>_sync/image_02/data`).
        split_file: the split file.
        gt_root: annotated-depth root; defaults to `root` (the NeWCRFs date-nested layout).
    """

    dataset = "kitti"
    depth_scale = KITTI_DEPTH_SCALE

    def __init__(self, root: Path, split_file: Path, gt_root: Path | None = None) -> None:
        self.root = root
        self.split_file = split_file
        self.gt_root = gt_root or root

    def lines(self) -> list[SplitLine]:
        return read_split_file(self.split_file)

    def sample(self, line: SplitLine) -> RawSample:
        expect_columns(line, (3,), "rgb_path gt_path|None focal")
        rgb_rel, gt_rel, _ = line.columns
        parts = Path(rgb_rel.lstrip("/")).parts
        if len(parts) < 3:
            raise DataError(
                f"{line.where}: rgb path {rgb_rel!r} is not <date>/<drive>_sync/.../<frame>.png"
            )
        date, drive, frame = parts[0], parts[1], Path(parts[-1]).stem
        camera = parts[2] if len(parts) > 3 else LEFT_CAMERA
        depth = None if gt_rel == "None" else self._find_gt(line, date, gt_rel)
        return RawSample(
            key=kitti_key(drive, frame, camera),
            where=line.where,
            rgb=join_relative(self.root, rgb_rel),
            depth=depth,
            focal=parse_focal(line, 2),
        )

    def _find_gt(self, line: SplitLine, date: str, gt_rel: str) -> Path:
        rel = gt_rel.lstrip("/")
        candidates = [
            self.gt_root / rel,  # BTS: drives merged under one root
            self.gt_root / date / rel,  # NeWCRFs / URCDC: nested under the date
            self.gt_root / "train" / rel,  # official data_depth_annotated download
            self.gt_root / "val" / rel,
        ]
        for path in candidates:
            if path.is_file():
                return path
        tried = ", ".join(str(p) for p in candidates[:2])
        raise DataError(
            f"{line.where}: ground-truth depth not found for {gt_rel!r} (tried {tried}, "
            "and train/ and val/ under the GT root)",
            hint="pass --gt-root pointing at data_depth_annotated, or mark the line's GT as None",
        )

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "gt_root": str(self.gt_root),
            "split_file": str(self.split_file),
            "depth_scale": self.depth_scale,
        }
