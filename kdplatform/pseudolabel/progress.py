"""What an output directory already holds, and whether a pass may continue it.

A pass records its identity (teacher, source, size, format) before it labels anything, in the
progress record `pseudo_labels.partial.json`, and adds each shard there once its tar is in place
(atomically, so a kill at any point leaves a record that matches the files). The manifest, written
last, carries the same identity. A rerun compares identities:

* same teacher file (sha256), same source split (sha256 of its manifest entry), same size →
  continue with the shards not yet finished, or nothing at all when the manifest is there;
* anything else → `DataError` naming what changed (`--force` deletes the old output first).

The reference text and the source location are not compared: `name@champion` and the file it
points to are the same teacher; a shard set copied to S3 is the same source.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from depthkd import atomic
from depthkd.data.shards import MANIFEST, read_manifest, sha256_file
from depthkd.errors import DataError
from depthkd.pseudolabel.format import PROGRESS_FILE, RECORD_KEY


@dataclass
class OutputState:
    """An output directory as found: the recorded identity, if any, and its finished shards."""

    record: dict[str, Any] | None = None
    finished: dict[str, dict[str, Any]] = field(default_factory=dict)
    complete: bool = False  # the manifest is there


def identity(record: dict[str, Any]) -> dict[str, Any]:
    """The parts of a record that must match for a rerun to continue it."""
    return {
        "teacher": record["teacher"]["sha256"],
        "source": record["source"]["sha256"],
        "split": record["source"]["split"],
        "size": list(record["size"]),
        "format_version": record["format_version"],
    }


def read_state(out: Path) -> OutputState:
    """The state of `out` (a missing folder is an empty state).

    Raises:
        DataError: `out` holds a shard set that is not a pseudo-label set, or an unreadable
            progress record.
    """
    if (out / MANIFEST).exists():
        manifest = read_manifest(out)
        record = manifest.get(RECORD_KEY)
        if record is None:
            raise DataError(
                f"{out} holds a shard set that is not a pseudo-label set",
                hint="choose another --out; pseudo-labels never overwrite other data",
            )
        finished = {s["name"]: s for e in manifest["splits"].values() for s in e["shards"]}
        return OutputState(record, finished, complete=True)
    path = out / PROGRESS_FILE
    if not path.exists():
        return OutputState()
    try:
        progress = json.loads(path.read_text())
        return OutputState(progress[RECORD_KEY], dict(progress["shards"]))
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise DataError(
            f"{path}: unreadable progress record: {exc}", hint="pass --force to start over"
        ) from None


def check_continuable(out: Path, recorded: dict[str, Any], current: dict[str, Any]) -> None:
    """Raises a DataError naming every difference between the recorded and the current pass."""
    old, new = identity(recorded), identity(current)
    changes = []
    if old["teacher"] != new["teacher"]:
        changes.append(
            f"teacher: {recorded['teacher']['reference']!r} (sha256 {old['teacher'][:12]}) → "
            f"{current['teacher']['reference']!r} (sha256 {new['teacher'][:12]})"
        )
    if old["source"] != new["source"] or old["split"] != new["split"]:
        was, now = recorded["source"], current["source"]
        changes.append(
            f"source: {was['location']} split {was['split']!r} (sha256 {old['source'][:12]}) → "
            f"{now['location']} split {now['split']!r} (sha256 {new['source'][:12]})"
        )
    if old["size"] != new["size"]:
        changes.append(f"size: {_hw(old['size'])} → {_hw(new['size'])}")
    if old["format_version"] != new["format_version"]:
        changes.append(f"format version: {old['format_version']} → {new['format_version']}")
    if changes:
        raise DataError(
            f"{out} holds pseudo-labels of another pass; changed: {'; '.join(changes)}",
            hint="pass --force to delete them and start over, or choose another --out",
        )


def intact(out: Path, shards: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The recorded shards whose files are there with the recorded size and sha256."""
    return {
        name: entry
        for name, entry in shards.items()
        if (out / name).is_file()
        and (out / name).stat().st_size == entry["bytes"]
        and sha256_file(out / name) == entry["sha256"]
    }


def write_progress(out: Path, record: dict[str, Any], finished: dict[str, dict[str, Any]]) -> None:
    """Replaces the progress record (atomically)."""
    atomic.write_json(out / PROGRESS_FILE, {RECORD_KEY: record, "shards": finished})


def clear(out: Path, names: list[str]) -> None:
    """Deletes a previous pass (`--force`): manifest first, then the record, shards and temps."""
    (out / MANIFEST).unlink(missing_ok=True)
    (out / PROGRESS_FILE).unlink(missing_ok=True)
    for name in names:
        (out / name).unlink(missing_ok=True)
    remove_temporaries(out)


def remove_temporaries(out: Path) -> None:
    """Deletes shard files a killed pass left half-written (`.<name>.<id>.tmp`)."""
    for stale in out.glob(".*.tmp"):
        if stale.is_dir():
            shutil.rmtree(stale, ignore_errors=True)
        else:
            stale.unlink(missing_ok=True)


def _hw(size: list[int]) -> str:
    return f"{size[0]}x{size[1]}"
