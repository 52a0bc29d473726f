"""What every raw source shares: the sample record, split-file reading and file-pair encoding.

A source lists `RawSample`s cheaply (parsing the split file, resolving paths) and encodes one sample
at a time into the bytes that go into a shard. Encoding is where images are read and checked, so it
runs in worker processes; sources are therefore small picklable objects.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depthkd.data import images
from depthkd.errors import DataError

# One shard sample: {"__key__", "rgb.png"|"rgb.jpg", optional "depth.png", "meta.json"} → bytes
EncodedSample = dict[str, Any]


@dataclass(frozen=True)
class RawSample:
    """One rgb (+ optional depth) pair of a raw dataset, located but not yet read.

    Attributes:
        key: stable unique shard key, e.g. "kitti/2011_09_26_drive_0002_sync/0000000069".
        where: the split-file line ("eigen_test.txt:12") or file it came from, for error messages.
        rgb: path of the RGB image (None for sources that hold arrays, like the NYU .mat).
        depth: path of the uint16 depth PNG, or None when the sample has no ground truth.
        focal: focal length in pixels, when known.
        extra: source-specific fields (an HDF5 index, the dense-depth path of a NeWCRFs list).
    """

    key: str
    where: str
    rgb: Path | None = None
    depth: Path | None = None
    focal: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SplitLine:
    """A non-empty line of a split file with its 1-based line number."""

    path: Path
    lineno: int
    columns: tuple[str, ...]

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


def read_split_file(path: Path) -> list[SplitLine]:
    """Reads a whitespace-separated split file, skipping blank lines and `#` comments."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise DataError(f"split file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read split file {path}: {exc}") from None
    lines = [
        SplitLine(path, n, tuple(raw.split()))
        for n, raw in enumerate(text.splitlines(), start=1)
        if raw.strip() and not raw.lstrip().startswith("#")
    ]
    if not lines:
        raise DataError(f"split file {path} lists no samples")
    return lines


def parse_focal(line: SplitLine, column: int) -> float:
    """Reads a positive focal length from `column` of a split line."""
    value = line.columns[column]
    try:
        focal = float(value)
    except ValueError:
        raise DataError(f"{line.where}: focal length must be a number, got {value!r}") from None
    if not focal > 0:
        raise DataError(f"{line.where}: focal length must be positive, got {value!r}")
    return focal


def expect_columns(line: SplitLine, allowed: tuple[int, ...], layout: str) -> None:
    """Raises a DataError naming the line when its column count is not in `allowed`."""
    if len(line.columns) not in allowed:
        counts = " or ".join(str(n) for n in allowed)
        raise DataError(
            f"{line.where}: expected {counts} columns ({layout}), got {len(line.columns)}: "
            f"{' '.join(line.columns)!r}"
        )


def join_relative(root: Path, rel: str) -> Path:
    """Joins a split-file path onto `root`; BTS lists start with '/', which is not absolute here."""
    return root / rel.lstrip("/")


class Source(ABC):
    """A raw dataset: lists samples and encodes each into shard bytes."""

    dataset: str
    # metres = stored depth / depth_scale; None for sources without depth (RGB-only images).
    depth_scale: float | None
    # Stored depth value that marks an invalid pixel besides 0 (some custom datasets use 65535).
    invalid_value: int = 0

    @abstractmethod
    def lines(self) -> list[Any]:
        """The units `sample()` turns into RawSamples (split lines, indices, files)."""

    @abstractmethod
    def sample(self, line: Any) -> RawSample:
        """Builds the RawSample of one line; raises DataError naming the line when it is bad."""

    @abstractmethod
    def describe(self) -> dict[str, Any]:
        """What the manifest records about this source (dataset, root, split file, scale)."""

    def encode(self, sample: RawSample) -> EncodedSample:
        """Reads and checks an rgb/depth file pair; the rgb and depth bytes are kept unchanged."""
        assert sample.rgb is not None  # sources without rgb files override encode
        rgb_bytes = images.read_bytes(sample.rgb, "rgb", sample.where)
        ext = images.rgb_extension(rgb_bytes, f"{sample.where}: {sample.rgb}")
        height, width = images.decode_rgb(rgb_bytes, f"{sample.where}: {sample.rgb}").shape[:2]
        out: EncodedSample = {"__key__": sample.key, f"rgb.{ext}": rgb_bytes}
        if sample.depth is not None:
            depth_bytes = images.read_bytes(sample.depth, "depth", sample.where)
            depth = images.decode_depth(depth_bytes, f"{sample.where}: {sample.depth}")
            check_same_size((height, width), depth.shape, sample)
            out["depth.png"] = depth_bytes
        out["meta.json"] = self.meta(sample, height, width, has_gt=sample.depth is not None)
        return out

    def meta(self, sample: RawSample, height: int, width: int, *, has_gt: bool) -> bytes:
        """The `<key>.meta.json` of a sample."""
        meta = {
            "dataset": self.dataset,
            "depth_scale": self.depth_scale,
            "invalid_value": self.invalid_value,
            "focal": sample.focal,
            "height": height,
            "width": width,
            "has_gt": has_gt,
            "source": {
                "where": sample.where,
                "rgb": str(sample.rgb) if sample.rgb else None,
                "depth": str(sample.depth) if sample.depth else None,
                **sample.extra,
            },
        }
        return json.dumps(meta, sort_keys=True).encode()

    def iter_samples(self) -> Iterator[RawSample | DataError]:
        """Yields each sample, or the DataError its line raised, so callers may skip bad lines."""
        seen: dict[str, str] = {}
        for line in self.lines():
            try:
                sample = self.sample(line)
                if sample.key in seen:
                    raise DataError(
                        f"{sample.where}: duplicate sample key {sample.key!r} "
                        f"(first at {seen[sample.key]})"
                    )
                seen[sample.key] = sample.where
                yield sample
            except DataError as exc:
                yield exc


def check_same_size(rgb_hw: tuple[int, int], depth_hw: tuple[int, ...], sample: RawSample) -> None:
    """Raises a DataError when rgb and depth sizes differ."""
    if tuple(depth_hw) != tuple(rgb_hw):
        raise DataError(
            f"{sample.where}: rgb is {rgb_hw[0]}x{rgb_hw[1]} but depth is "
            f"{depth_hw[0]}x{depth_hw[1]} (HxW) for {sample.rgb} / {sample.depth}"
        )
