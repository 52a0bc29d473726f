"""The source of a pass: the RGB shards of one split (local or `s3://`), their fingerprint, the
size of their frames, and the Ray Data rows they turn into.

Reading: `ray.data.from_items` over the pending shards plus a `flat_map` (`reader.shard_rows`)
that streams one shard through `storage.open_read` and yields its samples as rows, each with its
shard name and position, which the driver needs to reassemble one output shard per source shard.
`ray.data.read_webdataset` was not used: it splits keys the same way (up to the first dot of the
last path component, so `kitti/<drive>/<frame>` keys survive), but it decodes images by default,
reads `s3://` through a pyarrow filesystem that ignores `AWS_ENDPOINT_URL_S3` (apache/arrow
#49643), and its rows do not say which shard they came from.
"""

from __future__ import annotations

import json
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from depthkd import storage
from depthkd.data.shards import split_entry
from depthkd.errors import DataError
from depthkd.pseudolabel.format import digest
from depthkd.storage import Location


@dataclass(frozen=True)
class SourceShard:
    """One source shard: its name (also the output shard's), location and sample count."""

    name: str
    url: str
    samples: int


@dataclass(frozen=True)
class SourceSplit:
    """The shards of one split of a shard set and the fingerprint the output records."""

    location: Location
    split: str
    entry: dict[str, Any]
    shards: list[SourceShard]

    @property
    def fingerprint(self) -> dict[str, Any]:
        """Location, split and sha256 of the split's manifest entry (every shard's sha256)."""
        return {"location": str(self.location), "split": self.split, "sha256": digest(self.entry)}

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)


def open_source(location: Location, split: str) -> SourceSplit:
    """The split `split` of the shard set at `location`.

    Raises:
        DataError: no manifest, no such split, or a split without shards.
    """
    location = location if storage.is_remote(location) else Path(location).resolve()
    entry = split_entry(location, split)
    shards = [
        SourceShard(s["name"], str(storage.join(location, s["name"])), int(s["samples"]))
        for s in entry["shards"]
    ]
    return SourceSplit(location, split, entry, shards)


def frame_size(source: SourceSplit) -> tuple[tuple[int, int], bool]:
    """The frames' (height, width) from the meta.json files, and whether every frame was seen.

    Local shards: every sample's meta is read (tar headers are skipped by seeking, image bytes
    are not read), so the size is known to be common to all frames. Remote shards: only the
    first sample's, to avoid downloading the set twice; the labelling actors then check the
    others.

    Raises:
        DataError: local frames of different sizes (naming two of them).
    """
    remote = storage.is_remote(source.location)
    found: dict[tuple[int, int], str] = {}
    for shard in source.shards[:1] if remote else source.shards:
        for key, meta in _metas(shard, first_only=remote):
            found.setdefault((int(meta["height"]), int(meta["width"])), f"{shard.name}:{key}")
            if len(found) > 1:
                (a, where_a), (b, where_b) = found.items()
                raise DataError(
                    f"{source.location}: frames differ in size ({where_a} is {a[0]}x{a[1]}, "
                    f"{where_b} is {b[0]}x{b[1]}) and the teacher file names no input_size",
                    hint="pass --size H W (frames are resized to it before labelling)",
                )
    if not found:
        raise DataError(f"{source.location}: split {source.split!r} holds no samples")
    return next(iter(found)), not remote


def _metas(shard: SourceShard, *, first_only: bool) -> Iterator[tuple[str, dict[str, Any]]]:
    """(key, meta) of a shard's samples (the first one only, streamed, with `first_only`),
    reading only the meta.json members."""
    if first_only:
        with storage.open_read(shard.url) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            yield from _meta_members(tar, first_only=True)
    else:
        with tarfile.open(shard.url, mode="r:") as tar:
            yield from _meta_members(tar, first_only=False)


def _meta_members(
    tar: tarfile.TarFile, *, first_only: bool
) -> Iterator[tuple[str, dict[str, Any]]]:
    for member in tar:
        base, _, name = member.name.rpartition("/")
        key, _, ext = name.partition(".")
        if ext != "meta.json":
            continue
        meta = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
        yield (f"{base}/{key}" if base else key), meta
        if first_only:
            return
