"""Generic folder dataset for custom RGB-D data: `rgb/<name>.(png|jpg)` + `depth/<name>.png`.

Depth is a uint16 PNG with metres = value / depth_scale; 0 and the optional `invalid_value` mark
invalid pixels (the loader masks both). Pairs are matched by relative path without extension, or
listed by an optional split file with lines `rgb_path depth_path|None [focal]` relative to root.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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

RGB_SUFFIXES = (".png", ".jpg", ".jpeg")


def _key(rel: Path) -> str:
    # WebDataset splits a member name at the first dot of its basename: keys must hold none.
    return "folder/" + rel.with_suffix("").as_posix().replace(".", "_")


class FolderSource(Source):
    """RGB-D pairs from plain folders.

    Args:
        root: dataset root holding `rgb/` and `depth/`.
        depth_scale: metres = stored value / depth_scale (1000 for millimetres).
        invalid_value: stored value marking invalid pixels besides 0.
        focal: focal length in pixels for all frames, if known.
        split_file: optional list of pairs; without it every image under `rgb/` is used.
    """

    dataset = "folder"

    def __init__(
        self,
        root: Path,
        depth_scale: float,
        *,
        invalid_value: int = 0,
        focal: float | None = None,
        split_file: Path | None = None,
    ) -> None:
        if not depth_scale > 0:
            raise DataError(f"depth_scale must be positive, got {depth_scale}")
        self.root = root
        self.depth_scale = depth_scale
        self.invalid_value = invalid_value
        self.focal = focal
        self.split_file = split_file

    def lines(self) -> list[SplitLine] | list[Path]:
        if self.split_file is not None:
            return read_split_file(self.split_file)
        rgb_dir = self.root / "rgb"
        if not rgb_dir.is_dir():
            raise DataError(f"folder dataset {self.root} has no rgb/ directory")
        files = sorted(p for p in rgb_dir.rglob("*") if p.suffix.lower() in RGB_SUFFIXES)
        if not files:
            raise DataError(f"no .png/.jpg images under {rgb_dir}")
        return files

    def sample(self, line: SplitLine | Path) -> RawSample:
        if isinstance(line, Path):
            rel = line.relative_to(self.root / "rgb")
            depth = self.root / "depth" / rel.with_suffix(".png")
            if not depth.is_file():
                raise DataError(f"{line}: no depth map {depth} for this image")
            return RawSample(
                key=_key(rel), where=str(line), rgb=line, depth=depth, focal=self.focal
            )
        expect_columns(line, (2, 3), "rgb_path depth_path|None [focal]")
        rgb_rel, depth_rel = line.columns[:2]
        return RawSample(
            key=_key(Path(rgb_rel.lstrip("/"))),
            where=line.where,
            rgb=join_relative(self.root, rgb_rel),
            depth=None if depth_rel == "None" else join_relative(self.root, depth_rel),
            focal=parse_focal(line, 2) if len(line.columns) == 3 else self.focal,
        )

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "split_file": str(self.split_file) if self.split_file else None,
            "depth_scale": self.depth_scale,
            "invalid_value": self.invalid_value,
            "focal": self.focal,
        }
