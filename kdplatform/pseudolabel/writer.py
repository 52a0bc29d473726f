"""Output shards on the driver: labelled rows arrive in any order from the actors; a shard is
written as soon as all its samples are in, in source order, to a temporary name that is renamed
into place after an fsync. The tar is byte-for-byte a function of its samples (fixed member
mtime), like the shards `data prepare` writes."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import webdataset as wds

from depthkd.data.shards import sha256_file
from depthkd.errors import DataError
from depthkd.pseudolabel.labeler import output_sample

_TAR_MTIME = 0.0


class ShardAssembler:
    """Collects output rows per shard until each shard has its expected number of samples.

    Args:
        expected: sample count of each pending shard (from the source manifest).
    """

    def __init__(self, expected: dict[str, int]) -> None:
        self.expected = dict(expected)
        self._rows: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in expected}

    def add(self, row: dict[str, Any]) -> str | None:
        """Adds one output row; returns its shard's name when that shard is now complete."""
        name = str(row["shard"])
        rows = self._rows[name]
        rows[int(row["index"])] = row
        return name if len(rows) == self.expected[name] else None

    def take(self, name: str) -> list[dict[str, Any]]:
        """The rows of a complete shard in source order (and forgets them)."""
        rows = self._rows.pop(name)
        return [rows[i] for i in sorted(rows)]

    def check_done(self) -> None:
        """Raises a DataError for shards that yielded fewer samples than the manifest says."""
        if short := {n: len(r) for n, r in self._rows.items()}:
            listed = ", ".join(f"{n} ({k} of {self.expected[n]})" for n, k in sorted(short.items()))
            raise DataError(
                f"source shards yielded fewer samples than their manifest says: {listed}",
                hint="run `depthkd data verify` on the source shard set",
            )


def write_shard(out: Path, name: str, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Writes `<out>/<name>` from output rows (temporary name, fsync, rename); returns its
    manifest entry `{name, samples, bytes, sha256}`."""
    tmp = out / f".{name}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        with tmp.open("wb") as stream:
            with wds.TarWriter(stream, encoder=False, mtime=_TAR_MTIME) as tar:
                for row in rows:
                    tar.write(output_sample(row))
            stream.flush()
            os.fsync(stream.fileno())
        entry = {
            "name": name,
            "samples": len(rows),
            "bytes": tmp.stat().st_size,
            "sha256": sha256_file(tmp),
        }
        tmp.replace(out / name)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return entry
