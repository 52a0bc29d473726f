"""Unlabeled video: every n-th frame of a video file, or of every video in a folder or glob.

Decoded with PyAV, which bundles its own FFmpeg (nothing to install on the system). Frames are
numbered from 0 in presentation order; frame k of `<root>/clips/a.mp4` gets the key
`video/clips/a/<k, 6 digits>` (the path relative to the folder or glob base without suffix; the
file stem for a single file). A kept frame is turned upright by the display rotation phones
record for portrait video (as EXIF orientation does for photos) and encoded once, as JPEG q95
with full chroma (`images.encode_rgb_jpeg` says why not PNG).

Listing demuxes every packet without decoding to learn each frame's timestamp and where the
keyframes are. Encoding frame k then seeks to the last keyframe at or before it, unless the
worker's open decoder already stands between that keyframe and k, when it decodes on: frames
arrive in order, so no group of pictures is decoded twice by one worker. Streams without
timestamps (raw `.h264`) are decoded from the start instead.
"""

from __future__ import annotations

import bisect
import glob
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
import numpy as np

from depthkd.data import images
from depthkd.data.sources.base import EncodedSample, RawSample, Source
from depthkd.data.sources.images import image_key, is_pattern, listing_sha256, pattern_base
from depthkd.errors import DataError

DEFAULT_EVERY = 10  # consecutive frames are near-duplicates: every 10th of 30 fps is 3 per second
VIDEO_SUFFIXES = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ts")


@dataclass(frozen=True)
class _Frame:
    """One kept frame of a listed video: its index and timestamp (None: stream has none)."""

    path: Path
    rel: Path
    index: int
    pts: int | None
    seconds: float | None


@dataclass(frozen=True)
class _Unreadable:
    """A listed video that could not be indexed: its line becomes a skippable DataError."""

    error: DataError


class VideoSource(Source):
    """Every `every`-th frame of one or more videos, as RGB-only samples.

    Args:
        root: a video file, a folder (searched recursively for video suffixes) or a glob pattern.
        every: keep frames 0, every, 2 * every, ... of each video (>= 1).
        focal: focal length in pixels, if known.
    """

    dataset = "video"
    depth_scale = None

    def __init__(self, root: Path, *, every: int, focal: float | None = None) -> None:
        if every < 1:
            raise DataError(f"every must be >= 1 (keep every n-th frame), got {every}")
        self.root = root
        self.every = every
        self.focal = focal
        self._keyframes: dict[Path, list[int]] = {}
        self._reader: _Reader | None = None

    def __getstate__(self) -> dict[str, Any]:
        # Workers get the listing's keyframes but open their own decoders.
        return {**self.__dict__, "_reader": None}

    def _files(self) -> tuple[Path, list[Path]]:
        """(base the keys are relative to, video files in order)."""
        if is_pattern(self.root):
            base = pattern_base(self.root)
            found = [Path(p) for p in glob.glob(str(self.root), recursive=True)]
            files = [p for p in found if p.is_file()]
            where = f"matching {self.root}"
        elif self.root.is_file():
            return self.root.parent, [self.root]
        elif self.root.is_dir():
            base, where = self.root, f"under {self.root}"
            files = [p for p in self.root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES]
            files = [p for p in files if p.is_file()]
        else:
            raise DataError(f"video root not found: {self.root} (a video file, folder or glob)")
        if not files:
            raise DataError(
                f"no video files {where} (looked for {', '.join(VIDEO_SUFFIXES)})",
                hint="point --root at a video file, a folder of videos or a quoted glob",
            )
        return base, sorted(files)

    def lines(self) -> list[_Frame | _Unreadable]:
        base, files = self._files()
        listed: list[_Frame | _Unreadable] = []
        for path in files:
            try:
                pts, keyframes, time_base = _index(path)
            except DataError as exc:
                listed.append(_Unreadable(exc))
                continue
            self._keyframes[path] = keyframes
            rel = path.relative_to(base)
            for k in range(0, len(pts), self.every):
                stamp = pts[k]
                seconds = None if stamp is None else float(stamp * time_base)
                listed.append(_Frame(path, rel, k, stamp, seconds))
        return listed

    def sample(self, line: _Frame | _Unreadable) -> RawSample:
        if isinstance(line, _Unreadable):
            raise line.error
        extra: dict[str, Any] = {"frame": line.index, "pts": line.pts, "seconds": line.seconds}
        return RawSample(
            key=f"{image_key('video', line.rel)}/{line.index:06d}",
            where=f"{line.path}:frame {line.index}",
            rgb=line.path,
            focal=self.focal,
            extra=extra,
        )

    def encode(self, sample: RawSample) -> EncodedSample:
        """Decodes the sample's frame, turns it upright and encodes it as JPEG."""
        assert sample.rgb is not None
        index, pts = sample.extra["frame"], sample.extra["pts"]
        if self._reader is None or self._reader.path != sample.rgb:
            if self._reader is not None:
                self._reader.close()
            self._reader = _Reader(sample.rgb)
        keyframe = self._keyframe_before(sample.rgb, pts)
        frame = self._reader.frame(index, pts, keyframe, sample.where)
        rgb: np.ndarray = frame.to_ndarray(format="rgb24")  # (H, W, 3) uint8
        quarter_turns = round((frame.rotation or 0) / 90) % 4  # counter-clockwise
        if quarter_turns:
            rgb = np.ascontiguousarray(np.rot90(rgb, quarter_turns))
        height, width = rgb.shape[:2]
        return {
            "__key__": sample.key,
            "rgb.jpg": images.encode_rgb_jpeg(rgb),
            "meta.json": self.meta(sample, height, width, has_gt=False),
        }

    def _keyframe_before(self, path: Path, pts: int | None) -> int | None:
        """The last keyframe timestamp <= pts; pts itself when the keyframes are not known."""
        keyframes = self._keyframes.get(path)
        if pts is None or not keyframes:
            return pts
        at = bisect.bisect_right(keyframes, pts)
        return keyframes[at - 1] if at else pts

    def describe(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "root": str(self.root),
            "every": self.every,
            "focal": self.focal,
            "depth_scale": self.depth_scale,
            "frame_encoding": "jpeg q95 4:4:4",
            "files_sha256": listing_sha256(self._files()[1]),
        }


def _index(path: Path) -> tuple[list[int] | list[None], list[int], float]:
    """Demuxes (does not decode) the first video stream of a file.

    Returns:
        (frame timestamps in presentation order, or all None when the stream has none; sorted
        keyframe timestamps; the stream's time base in seconds).
    """
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise DataError(f"{path}: no video stream in this file")
            stream = container.streams.video[0]
            time_base = float(stream.time_base or 0)
            packets = [
                (p.pts, p.is_keyframe)
                for p in container.demux(stream)
                if p.size and not p.is_discard
            ]
    except av.FFmpegError as exc:
        raise DataError(f"{path}: unreadable or corrupt video ({exc})") from None
    if not packets:
        raise DataError(f"{path}: the video stream holds no frames")
    stamps = [pts for pts, _ in packets if pts is not None]
    if len(stamps) < len(packets):
        return [None] * len(packets), [], time_base
    keyframes = [pts for pts, key in packets if key and pts is not None]
    return sorted(stamps), sorted(keyframes), time_base


class _Reader:
    """An open video whose decoder moves forward through the frames one worker needs.

    `_at` is where the decoder stands: the timestamp of the frame it returned last, or without
    timestamps its index (-1 before the first); None after a failure, to force a restart.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self._container: Any = None
        self._frames: Iterator[av.VideoFrame] = iter(())
        self._at: int | None = None

    def close(self) -> None:
        if self._container is not None:
            self._container.close()
            self._container = None

    def _restart(self, seek_pts: int | None) -> None:
        """Seeks back to the keyframe `seek_pts`, or reopens the file when it is None."""
        try:
            if self._container is None or seek_pts is None:
                self.close()
                self._container = av.open(str(self.path))
            stream = self._container.streams.video[0]
            if seek_pts is not None:
                self._container.seek(seek_pts, stream=stream, backward=True)
            self._frames = self._container.decode(stream)
            self._at = -1
        except av.FFmpegError as exc:
            self.close()
            raise DataError(f"{self.path}: unreadable or corrupt video ({exc})") from None

    def frame(self, index: int, pts: int | None, keyframe: int | None, where: str) -> av.VideoFrame:
        """Frame `index` (timestamp `pts`), decoding on from the current position when the
        decoder already stands past `keyframe`, otherwise after a seek (or reopen)."""
        target = index if pts is None else pts
        start = -1 if pts is None else keyframe
        at = self._at
        if at is None or start is None or not start <= at < target:
            self._restart(None if pts is None else keyframe)
            at = -1
        try:
            for frame in self._frames:
                if pts is None:
                    at += 1
                elif frame.pts is None:
                    continue
                else:
                    at = frame.pts
                self._at = at
                if at == target:
                    return frame
                if at > target:
                    break
        except av.FFmpegError as exc:
            self._at = None
            raise DataError(f"{where}: corrupt video data ({exc})") from None
        self._at = None
        raise DataError(f"{where}: frame not found when decoding (truncated or damaged video)")
