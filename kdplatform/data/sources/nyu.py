"""NYU Depth V2 in the BTS "sync" layout (uint16 PNG, millimetres, 0 = invalid).

Files: `<scene>/rgb_XXXXX.jpg` + `<scene>/sync_depth_XXXXX.png`. Two split-file variants are read:
BTS lists with a focal column (`/<scene>/rgb_XXXXX.jpg /<scene>/sync_depth_XXXXX.png 518.8579`,
train lines start with '/'), and the NeWCRFs/URCDC "dense" train list whose third column is a
dense-depth path instead of a focal. The dense path is recorded in the sample's meta but not read:
the supervised GT is the sync depth, as in those codebases. A depth column `None` marks an
RGB-only frame (the synthetic set's unlabeled list), as in KITTI lists.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from depthkd.data.constants import NYU_DEPTH_SCALE, NYU_FOCAL
from depthkd.data.sources.base import (
    RawSample,
    Source,
    SplitLine,
    expect_columns,
    join_relative,
    parse_focal,
    read_split_file,
)


def _is_path(column: str) -> bool:
    return "/" in column or column.endswith((".png", ".jpg"))


class NyuSyncSource(Source):
    """NYU Depth V2 sync frames listed by a BTS or NeWCRFs split file.

    Args:
        root: folder the split paths are relative to (`sync/` or `official_splits/test/`).
        split_file: the split file.
    """

    dataset = "nyu"
    depth_scale = NYU_DEPTH_SCALE

    def __init__(self, root: Path, split_file: Path) -> None:
        self.root = root
        self.split_file = split_file

    def lines(self) -> list[SplitLine]:
        return read_split_file(self.split_file)

    def sample(self, line: SplitLine) -> RawSample:
        expect_columns(line, (2, 3), "rgb_path depth_path [focal|dense_depth_path]")
        rgb_rel, depth_rel = line.columns[:2]
        extra: dict[str, Any] = {}
        focal = NYU_FOCAL
        if len(line.columns) == 3:
            if _is_path(line.columns[2]):
                extra["dense_depth"] = line.columns[2]
            else:
                focal = parse_focal(line, 2)
        rgb_path = Path(rgb_rel.lstrip("/"))
        return RawSample(
            key=f"nyu/{rgb_path.parent.as_posix()}/{rgb_path.stem}",
            where=line.where,
            rgb=join_relative(self.root, rgb_rel),
            depth=None if depth_rel == "None" else join_relative(self.root, depth_rel),
            focal=focal,
            extra=extra,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "split_file": str(self.split_file),
            "depth_scale": self.depth_scale,
        }
