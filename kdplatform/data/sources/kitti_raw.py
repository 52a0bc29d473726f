"""KITTI raw frames without ground truth: the ~47k synchronised drive frames, not only the ~23k
that have annotated depth.

Frames are every `<root>/<date>/<drive>_sync/image_02/data/<frame>.png` (with `right=True` also
`image_03`), or the frames a split file lists: a line whose first column is an rgb path relative
to the root (Eigen/BTS lists; further columns ignored), or a monodepth2 line
`<date>/<drive>_sync <frame index> l|r`. Keys are the labeled KITTI source's (`kitti_key`), so
a frame has the same key in both and an unlabeled set can be checked against a test split.

Focal: `--focal` when given, else `P_rect_02` (`P_rect_03`) of `<root>/<date>/calib_cam_to_cam.txt`
when the calibration was downloaded with the drives (it differs per date), else KITTI's default.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Any

from depthkd.data.constants import KITTI_DEPTH_SCALE, KITTI_FOCAL
from depthkd.data.sources.base import RawSample, Source, SplitLine, read_split_file
from depthkd.data.sources.images import listing_sha256
from depthkd.data.sources.kitti import LEFT_CAMERA, kitti_key
from depthkd.errors import DataError

RIGHT_CAMERA = "image_03"
_MONODEPTH_SIDES = {"l": LEFT_CAMERA, "r": RIGHT_CAMERA}


class KittiRawSource(Source):
    """KITTI raw colour frames as RGB-only samples.

    Args:
        root: KITTI raw root (holds `<date>/<drive>_sync/image_02/data/*.png`).
        split_file: optional list of frames; without it every frame under the root is used.
        right: also list the right colour camera (image_03) when scanning the root.
        focal: focal length in pixels for every frame; per date from the calibration if None.
    """

    dataset = "kitti"  # the frames' dataset in each sample's meta; the manifest says kitti-raw
    depth_scale = KITTI_DEPTH_SCALE

    def __init__(
        self,
        root: Path,
        *,
        split_file: Path | None = None,
        right: bool = False,
        focal: float | None = None,
    ) -> None:
        self.root = root
        self.split_file = split_file
        self.right = right
        self.focal = focal

    def _cameras(self) -> tuple[str, ...]:
        return (LEFT_CAMERA, RIGHT_CAMERA) if self.right else (LEFT_CAMERA,)

    def _scan(self) -> list[Path]:
        if not self.root.is_dir():
            raise DataError(f"KITTI raw root not found: {self.root}")
        files = sorted(
            path
            for camera in self._cameras()
            for path in self.root.glob(f"*/*_sync/{camera}/data/*.png")
        )
        if not files:
            cameras = "|".join(self._cameras())
            raise DataError(
                f"no KITTI raw frames under {self.root} (looked for "
                f"<date>/<drive>_sync/{cameras}/data/*.png)",
                hint="--root is the folder holding the date folders (2011_09_26, ...)",
            )
        return files

    def lines(self) -> list[SplitLine] | list[Path]:
        if self.split_file is not None:
            return read_split_file(self.split_file)
        return self._scan()

    def sample(self, line: SplitLine | Path) -> RawSample:
        if isinstance(line, Path):
            return self._frame(line.relative_to(self.root), str(line))
        return self._frame(_listed_path(line), line.where)

    def _frame(self, rel: Path, where: str) -> RawSample:
        parts = rel.parts
        if len(parts) != 5 or parts[3] != "data" or not parts[1].endswith("_sync"):
            raise DataError(
                f"{where}: {rel.as_posix()!r} is not <date>/<drive>_sync/image_0X/data/<frame>.png"
            )
        date, drive, camera, _, name = parts
        path = self.root / rel
        if not path.is_file() and path.with_suffix(".jpg").is_file():
            path = path.with_suffix(".jpg")  # monodepth2 converts the frames to JPEG by default
        if not path.is_file():
            raise DataError(f"{where}: rgb file not found: {path}")
        focal = self.focal or _calibrated_focal(self.root / date, camera) or KITTI_FOCAL
        return RawSample(
            key=kitti_key(drive, Path(name).stem, camera), where=where, rgb=path, focal=focal
        )

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": "kitti-raw",
            "root": str(self.root),
            "split_file": str(self.split_file) if self.split_file else None,
            "right": self.right,
            "focal": self.focal,
            # with a split file its sha256 is recorded by prepare; a scan depends on the tree
            "files_sha256": None if self.split_file else listing_sha256(self._scan()),
        }


def _listed_path(line: SplitLine) -> Path:
    """The rgb path a split line names, relative to the root."""
    first = line.columns[0].lstrip("/")
    if first.lower().endswith((".png", ".jpg")):
        return Path(first)
    if len(line.columns) == 3 and line.columns[1].isdigit() and line.columns[2] in _MONODEPTH_SIDES:
        camera = _MONODEPTH_SIDES[line.columns[2]]
        return Path(first) / camera / "data" / f"{int(line.columns[1]):010d}.png"
    raise DataError(
        f"{line.where}: expected an rgb path (<date>/<drive>_sync/image_02/data/<frame>.png) or a "
        f"monodepth2 line (<date>/<drive>_sync <frame> l|r), got {' '.join(line.columns)!r}"
    )


@cache
def _calibrated_focal(date_dir: Path, camera: str) -> float | None:
    """fx of the rectified projection of `camera` from the date's calib_cam_to_cam.txt."""
    calib = date_dir / "calib_cam_to_cam.txt"
    field = f"P_rect_{camera[-2:]}:"
    try:
        text = calib.read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith(field):
            try:
                focal = float(line.split()[1])
            except (IndexError, ValueError):
                raise DataError(f"{calib}: malformed {field} line: {line!r}") from None
            return focal if focal > 0 else None
    return None
