"""Unlabeled RGB images: every PNG/JPEG under a folder (recursively), or matching a glob pattern.

Users hold far more images than depth ground truth; these become shard samples without
`depth.png` (meta `has_gt` false) for distillation from a teacher's predictions. Images may have
any and mixed sizes. The file bytes go into the shard unchanged; an EXIF orientation is applied
when the image is decoded (`images.decode_rgb`), so the recorded height and width are the upright
ones. Hidden files and folders (`.thumbnails/`, macOS `._IMG_0001.jpg`) are not listed.
"""

from __future__ import annotations

import glob
import hashlib
from pathlib import Path
from typing import Any

from depthkd.data.sources.base import RawSample, Source
from depthkd.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
_GLOB_CHARS = frozenset("*?[")


def is_pattern(root: Path) -> bool:
    """True when `root` is a glob pattern rather than a path."""
    return any(c in _GLOB_CHARS for c in str(root))


def pattern_base(pattern: Path) -> Path:
    """The longest leading part of a glob pattern without wildcards: keys are relative to it."""
    parts = []
    for part in pattern.parts:
        if is_pattern(Path(part)):
            break
        parts.append(part)
    return Path(*parts)


def image_key(prefix: str, rel: Path) -> str:
    """`<prefix>/<relative path without suffix>`; dots become `_` (WebDataset splits a member
    name at the first dot of its basename)."""
    return f"{prefix}/" + rel.with_suffix("").as_posix().replace(".", "_")


def listing_sha256(files: list[Path]) -> str:
    """Digest of a file listing (paths, sizes, modification times). It goes into a source's
    description, so re-running prepare after files were added, removed or replaced under the same
    root rebuilds the split instead of reporting it up to date."""
    digest = hashlib.sha256()
    for path in files:
        stat = path.stat()
        digest.update(f"{path}\t{stat.st_size}\t{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


class ImagesSource(Source):
    """RGB-only images from a folder tree, a single file or a glob pattern.

    Args:
        root: a folder (searched recursively), one image file, or a glob pattern such as
            `photos/**/*.jpg` (`**` matches any depth).
        focal: focal length in pixels for all images, if known.
    """

    dataset = "images"
    depth_scale = None

    def __init__(self, root: Path, *, focal: float | None = None) -> None:
        self.root = root
        self.focal = focal

    def _base(self) -> Path:
        if is_pattern(self.root):
            return pattern_base(self.root)
        return self.root.parent if self.root.is_file() else self.root

    def lines(self) -> list[Path]:
        if is_pattern(self.root):
            found = [Path(p) for p in glob.glob(str(self.root), recursive=True)]
            where = f"matching {self.root}"
        elif self.root.is_file():
            found = [self.root]
            where = f"at {self.root}"
        elif self.root.is_dir():
            found = list(self.root.rglob("*"))
            where = f"under {self.root}"
        else:
            raise DataError(f"image root not found: {self.root} (a folder, file or glob pattern)")
        base = self._base()
        files = sorted(
            p
            for p in found
            if p.suffix.lower() in IMAGE_SUFFIXES
            and p.is_file()
            and not _hidden(p.relative_to(base))
        )
        if not files:
            raise DataError(
                f"no .png/.jpg/.jpeg images {where}",
                hint="point --root at a folder of images or quote a glob like 'photos/**/*.jpg'",
            )
        return files

    def sample(self, line: Path) -> RawSample:
        rel = line.relative_to(self._base())
        return RawSample(key=image_key("images", rel), where=str(line), rgb=line, focal=self.focal)

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "focal": self.focal,
            "depth_scale": self.depth_scale,
            "files_sha256": listing_sha256(self.lines()),
        }
