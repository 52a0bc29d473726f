"""Ray Data's read step of a pass: one source shard → one row per sample.

`ShardReader` runs as a small pool of long-lived actors holding no CPU. As plain tasks, the reads
each started a fresh worker process on a node whose CPUs the labelling actors held (10-17 s a
shard on the busy two-node dev cluster, so one labelling actor kept up and the other idled).
Kept free of heavy imports (no torch, no webdataset): the readers import this module and
nothing else of the pass.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from typing import Any

from depthkd import storage
from depthkd.errors import DataError

RGB_FILES = ("rgb.png", "rgb.jpg")


def shard_rows(item: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Ray Data `flat_map`: `{"url", "name"}` of a source shard → rows `shard`, `index` (the
    sample's position in the shard), `key`, `rgb` (image bytes) and `meta` (meta.json bytes).

    Members are grouped by key as webdataset groups them (the key is the member name up to the
    first dot of its last path component, so `kitti/<drive>/<frame>` keys survive).

    Raises:
        DataError: a sample without rgb or meta.json, or a shard that is not a readable tar.
    """
    name = item["name"]
    for index, (key, files) in enumerate(_samples(item["url"], name)):
        rgb = next((files[n] for n in RGB_FILES if n in files), None)
        if rgb is None or "meta.json" not in files:
            raise DataError(f"{name}:{key}: sample lacks rgb.png|rgb.jpg or meta.json")
        yield {"shard": name, "index": index, "key": key, "rgb": rgb, "meta": files["meta.json"]}


def _samples(url: str, name: str) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) of consecutive members sharing a key, streamed."""
    key = ""
    files: dict[str, bytes] = {}
    try:
        with storage.open_read(url) as stream, tarfile.open(fileobj=stream, mode="r|") as tar:
            for member in tar:
                if not member.isfile():
                    continue
                base, _, last = member.name.rpartition("/")
                stem, _, ext = last.partition(".")
                member_key = f"{base}/{stem}" if base else stem
                if member_key != key and files:
                    yield key, files
                    files = {}
                key = member_key
                files[ext] = tar.extractfile(member).read()  # type: ignore[union-attr]
    except tarfile.TarError as exc:
        raise DataError(f"{name}: not a readable tar: {exc}") from None
    if files:
        yield key, files


class ShardReader:
    """Ray Data `flat_map` actor: `shard_rows` in a process that stays up for every shard."""

    def __call__(self, item: dict[str, Any]) -> Iterator[dict[str, Any]]:
        return shard_rows(item)
