"""Raw source → verified WebDataset shards, and the manifest that makes a shard dir a dataset.

`prepare_shards` encodes every sample of a source (in worker processes), writes
`<out>/<split>-%06d.tar` through `webdataset.ShardWriter` into a temporary folder, moves the shards
in place and only then records the split in `<out>/manifest.json` (atomically). A directory or split
without a manifest entry is not a dataset, so an interrupted run never looks complete. Several
splits share one directory and one manifest, so prepares into one directory run one at a time,
under the lock file `<out>/.prepare.lock` (not a shard; `verify_shards` reads only the manifest).

`verify_shards` checks every shard against the manifest: size, sha256, sample count, and that each
sample decodes (rgb, uint16 depth, sizes as recorded).
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import shutil
import tarfile
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import webdataset as wds
from tqdm import tqdm

from depthkd import __version__, atomic, storage
from depthkd.config.schema import PrepareConfig
from depthkd.data import images
from depthkd.data.sources.base import EncodedSample, RawSample, Source
from depthkd.errors import DataError
from depthkd.locking import exclusive_lock
from depthkd.storage import Location

MANIFEST = "manifest.json"
LOCK_FILE = ".prepare.lock"
FORMAT = "depthkd-shards"
FORMAT_VERSION = 1
# Fixed tar member mtime: the same inputs give byte-identical shards.
_TAR_MTIME = 0.0


@dataclass
class PrepareReport:
    """What `prepare_shards` did."""

    out: Path
    split: str
    num_samples: int
    num_shards: int
    skipped: list[dict[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    up_to_date: bool = False


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_manifest(out: Location) -> dict[str, Any]:
    """The manifest of a shard dir or `s3://` prefix; a DataError when there is none."""
    path = storage.join(out, MANIFEST)
    if not storage.exists(path):
        raise DataError(
            f"{out} is not a prepared shard dir (no {MANIFEST})",
            hint="run `depthkd data prepare ... --out DIR` (and `depthkd data upload DIR s3://...`"
            "); an interrupted prepare leaves none",
        )
    try:
        manifest = json.loads(storage.read_bytes(path))
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(f"{path}: unreadable manifest: {exc}") from None
    if manifest.get("format") != FORMAT:
        raise DataError(f"{path}: not a depthkd shard manifest (format {manifest.get('format')!r})")
    return manifest


def manifest_fingerprint(manifest: dict[str, Any]) -> str:
    """32 hex digits (of a sha256) naming a shard set's content: every split's shard names and
    sha256s. Equal for equal shards wherever they are stored (a local dir and its S3 copy) and
    short enough for an MLflow dataset digest (at most 36 characters)."""
    content = {
        split: [[s["name"], s["sha256"]] for s in entry["shards"]]
        for split, entry in manifest["splits"].items()
    }
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()[:32]


def split_entry(out: Location, split: str) -> dict[str, Any]:
    """The manifest entry of one split, with a DataError listing the splits that do exist."""
    splits = read_manifest(out)["splits"]
    if split not in splits:
        raise DataError(
            f"{out}: no split {split!r} in {MANIFEST} (has: {', '.join(sorted(splits)) or 'none'})"
        )
    entry = splits[split]
    if not entry["shards"]:
        raise DataError(f"{out}: split {split!r} has no shards (empty shard set)")
    return entry


def shard_paths(out: Location, split: str) -> list[Location]:
    """The shards of `split` in manifest order: absolute paths, or URLs under an `s3://` prefix."""
    names = [s["name"] for s in split_entry(out, split)["shards"]]
    if storage.is_remote(out):
        return [storage.join(out, name) for name in names]
    return [(Path(out) / name).resolve() for name in names]


def prepare_shards(cfg: PrepareConfig, source: Source, *, progress: bool = True) -> PrepareReport:
    """Writes the shards and manifest entry of `cfg.split`; a no-op when they are up to date.

    Holds `<out>/.prepare.lock` throughout. Without it two prepares into one directory break each
    other: each clears the `.tmp-<split>-*` folders it takes for leftovers of a crashed run (the
    other's shard writer then dies with a FileNotFoundError), and each rewrites the shared manifest
    from the copy it read (one split's entry is lost). Under the lock the second run waits, then
    finds the split up to date (same inputs) or adds its own split to the first one's manifest.

    Raises:
        DataError: a bad sample (with `on_error="raise"`), no usable sample at all, or an existing
            split prepared from other inputs (without `force`).
    """
    out = cfg.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out / LOCK_FILE, message=f"waiting for another process preparing {out}"):
        return _prepare_locked(cfg, source, out, progress)


def _prepare_locked(cfg: PrepareConfig, source: Source, out: Path, progress: bool) -> PrepareReport:
    start = time.perf_counter()
    fingerprint = _fingerprint(cfg, source)
    existing = _existing_entry(out, cfg.split)
    if existing is not None and not cfg.force:
        if existing.get("fingerprint") == fingerprint and _shards_present(out, existing):
            return PrepareReport(
                out,
                cfg.split,
                existing["num_samples"],
                len(existing["shards"]),
                up_to_date=True,
            )
        raise DataError(
            f"{out}: split {cfg.split!r} already exists from other inputs or is incomplete",
            hint="pass --force to rebuild it, or choose another --out / --split",
        )
    for stale in out.glob(f".tmp-{cfg.split}-*"):
        shutil.rmtree(stale, ignore_errors=True)
    tmp = out / f".tmp-{cfg.split}-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        shards, skipped, without_gt = _write_shards(cfg, source, tmp, progress)
        _drop_split(out, cfg.split)  # only now: a failed --force run keeps the old split
        for old in out.glob(f"{cfg.split}-*.tar"):
            old.unlink()
        for shard in shards:
            (tmp / shard["name"]).replace(out / shard["name"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    entry = {
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "fingerprint": fingerprint,
        "source": source.describe(),
        "split_file_sha256": _split_file_sha(cfg),
        "shard_size": cfg.shard_size,
        "num_samples": sum(s["samples"] for s in shards),
        "num_without_gt": without_gt,
        "shards": shards,
        "skipped": skipped,
        "tool_version": __version__,
    }
    _update_manifest(out, cfg.split, entry)
    return PrepareReport(
        out,
        cfg.split,
        entry["num_samples"],
        len(shards),
        skipped,
        time.perf_counter() - start,
    )


def _write_shards(
    cfg: PrepareConfig, source: Source, tmp: Path, progress: bool
) -> tuple[list[dict[str, Any]], list[dict[str, str]], int]:
    counts: dict[str, int] = {}
    skipped: list[dict[str, str]] = []
    without_gt = 0
    writer: wds.ShardWriter | None = None
    samples = _listed(source, cfg.on_error, skipped)
    bar = tqdm(
        total=len(samples),
        desc=f"prepare {cfg.split}",
        unit="sample",
        disable=not progress,
    )
    try:
        for result in _encode_all(source, samples, cfg.workers):
            bar.update()
            if isinstance(result, DataError):
                if cfg.on_error == "raise":
                    raise result
                skipped.append(_skip_record(result))
                continue
            if writer is None:
                writer = wds.ShardWriter(
                    str(tmp / f"{cfg.split}-%06d.tar"),
                    maxcount=cfg.shard_size,
                    verbose=0,
                    encoder=False,
                    mtime=_TAR_MTIME,
                )
            writer.write(result)
            counts[Path(writer.fname).name] = counts.get(Path(writer.fname).name, 0) + 1
            without_gt += "depth.png" not in result
    finally:
        bar.close()
        if writer is not None:
            writer.close()
    if not counts:
        raise DataError(
            f"no usable samples for split {cfg.split!r}: all {len(samples) + len(skipped)} "
            "listed samples failed (see the skipped reasons) or the source lists none"
        )
    shards = [
        {
            "name": name,
            "samples": n,
            "bytes": (tmp / name).stat().st_size,
            "sha256": sha256_file(tmp / name),
        }
        for name, n in sorted(counts.items())
    ]
    return shards, skipped, without_gt


def _listed(source: Source, on_error: str, skipped: list[dict[str, str]]) -> list[RawSample]:
    samples = []
    for item in source.iter_samples():
        if isinstance(item, DataError):
            if on_error == "raise":
                raise item
            skipped.append(_skip_record(item))
        else:
            samples.append(item)
    return samples


def _skip_record(error: DataError) -> dict[str, str]:
    where, _, reason = str(error).partition(": ")
    return {"where": where, "reason": reason or str(error)}


# Worker processes hold the source once (set by the pool initializer), not once per task.
_WORKER_SOURCE: Source | None = None


def _init_worker(source: Source) -> None:
    global _WORKER_SOURCE
    _WORKER_SOURCE = source


def _encode_one(sample: RawSample) -> EncodedSample | DataError:
    assert _WORKER_SOURCE is not None
    try:
        return _WORKER_SOURCE.encode(sample)
    except DataError as exc:
        return exc


def _encode_all(
    source: Source, samples: list[RawSample], workers: int
) -> Iterator[EncodedSample | DataError]:
    """Encodes samples in order, in `workers` processes (in-process when 1)."""
    if workers <= 1 or len(samples) < 2:
        _init_worker(source)
        yield from map(_encode_one, samples)
        return
    # forkserver: the parent may hold threads (tqdm, Ray) that make a plain fork unsafe. The
    # server imports this module once (if it is not running yet), so the workers of every later
    # pool start in milliseconds instead of importing webdataset and torch again (2-3 s a pool;
    # the bundled set prepares three splits).
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["__main__", __name__])
    with ctx.Pool(workers, initializer=_init_worker, initargs=(source,)) as pool:
        yield from pool.imap(_encode_one, samples, chunksize=4)


def _fingerprint(cfg: PrepareConfig, source: Source) -> str:
    """Identifies the inputs of a split, so a re-run over the same inputs is a no-op."""
    ident = {
        "source": source.describe(),
        "split_file_sha256": _split_file_sha(cfg),
        "shard_size": cfg.shard_size,
        "on_error": cfg.on_error,
        "format_version": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _split_file_sha(cfg: PrepareConfig) -> str | None:
    if cfg.split_file is None or not cfg.split_file.is_file():
        return None
    return sha256_file(cfg.split_file)


def _existing_entry(out: Path, split: str) -> dict[str, Any] | None:
    if not (out / MANIFEST).exists():
        return None
    return read_manifest(out)["splits"].get(split)


def _shards_present(out: Path, entry: dict[str, Any]) -> bool:
    return all(
        (out / s["name"]).is_file() and (out / s["name"]).stat().st_size == s["bytes"]
        for s in entry["shards"]
    )


def _drop_split(out: Path, split: str) -> None:
    """Removes a split's manifest entry before its shards are touched."""
    if _existing_entry(out, split) is None:
        return
    manifest = read_manifest(out)
    del manifest["splits"][split]
    atomic.write_json(out / MANIFEST, manifest)


def _update_manifest(out: Path, split: str, entry: dict[str, Any]) -> None:
    manifest: dict[str, Any] = (
        read_manifest(out)
        if (out / MANIFEST).exists()
        else {"format": FORMAT, "format_version": FORMAT_VERSION, "splits": {}}
    )
    manifest["tool"] = "depthkd"
    manifest["tool_version"] = __version__
    manifest["splits"][split] = entry
    atomic.write_json(out / MANIFEST, manifest)


@dataclass
class VerifyReport:
    """Result of `verify_shards`: per-split sample counts and every problem found."""

    out: Location
    checked: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_shards(out: Location, *, progress: bool = True) -> VerifyReport:
    """Checks every shard of every split against the manifest and decodes every sample.

    Shards under an `s3://` prefix are downloaded one at a time into a temporary folder.
    """
    out = out if storage.is_remote(out) else Path(out).resolve()
    manifest = read_manifest(out)
    report = VerifyReport(out)
    shards = [(split, s) for split, e in manifest["splits"].items() for s in e["shards"]]
    with tempfile.TemporaryDirectory(prefix="depthkd-verify-") as scratch:
        for split, shard in tqdm(shards, desc="verify", unit="shard", disable=not progress):
            path = _local_copy(storage.join(out, shard["name"]), Path(scratch), report.problems)
            checked = _verify_shard(path, shard, report.problems) if path else 0
            report.checked[split] = report.checked.get(split, 0) + checked
            if path and storage.is_remote(out):
                path.unlink()
    for split, entry in manifest["splits"].items():
        if not entry["shards"]:
            report.problems.append(f"split {split!r}: no shards")
        if report.checked.get(split, 0) != entry["num_samples"]:
            report.problems.append(
                f"split {split!r}: {report.checked.get(split, 0)} samples decoded, "
                f"manifest says {entry['num_samples']}"
            )
    return report


def _local_copy(location: Location, scratch: Path, problems: list[str]) -> Path | None:
    """`location` as a local file (remote shards are downloaded), None when it is missing."""
    name = Path(str(location)).name
    if not storage.exists(location):
        problems.append(f"{name}: missing")
        return None
    if storage.is_remote(location):
        return storage.download_file(location, scratch / name)
    return Path(location)


def _verify_shard(path: Path, shard: dict[str, Any], problems: list[str]) -> int:
    """Checks one local shard; appends problems; returns the number of samples that decoded."""
    if not path.is_file():
        problems.append(f"{path.name}: missing")
        return 0
    if path.stat().st_size != shard["bytes"]:
        problems.append(f"{path.name}: {path.stat().st_size} bytes, manifest says {shard['bytes']}")
    if sha256_file(path) != shard["sha256"]:
        problems.append(f"{path.name}: sha256 mismatch (shard changed or corrupt)")
    try:
        samples = read_tar(path)
    except (tarfile.TarError, OSError) as exc:
        problems.append(f"{path.name}: not a readable tar: {exc}")
        return 0
    good = 0
    for key, files in samples.items():
        try:
            decode_sample_files(files, f"{path.name}:{key}")
            good += 1
        except DataError as exc:
            problems.append(str(exc))
    if len(samples) != shard["samples"]:
        problems.append(f"{path.name}: {len(samples)} samples, manifest says {shard['samples']}")
    return good


def upload_shards(out: Path, url: str, *, progress: bool = True) -> int:
    """Copies a prepared shard dir to an `s3://` prefix. A manifest already there is deleted
    first and the new one goes last, so a reader never sees a manifest whose shards are not all
    there (or are another set's). Returns the number of files copied."""
    out = out.resolve()
    manifest = read_manifest(out)
    storage.delete(storage.join(url, MANIFEST))
    names = sorted({s["name"] for e in manifest["splits"].values() for s in e["shards"]})
    for name in tqdm(names, desc="upload", unit="shard", disable=not progress):
        storage.upload_file(out / name, storage.join(url, name))
    storage.upload_file(out / MANIFEST, storage.join(url, MANIFEST))
    return len(names) + 1


def read_tar(path: Path) -> dict[str, dict[str, bytes]]:
    """All samples of a shard as {key: {extension: bytes}}."""
    samples: dict[str, dict[str, bytes]] = {}
    with tarfile.open(path) as tar:
        for member in tar:
            if not member.isfile():
                continue
            base, _, name = member.name.rpartition("/")
            key, _, ext = name.partition(".")
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            samples.setdefault(f"{base}/{key}" if base else key, {})[ext] = data
    return samples


def decode_sample_files(files: dict[str, bytes], where: str) -> dict[str, Any]:
    """Checks and decodes one shard sample's files: rgb, optional uint16 depth, optional uint16
    pseudo-label and confidence maps (`depthkd pseudo-label` output) and meta.

    Returns:
        {"rgb": uint8 (H, W, 3), "depth": uint16 (H, W) or None, "pseudo": uint16 (H, W) or
        None (metres = value / meta depth_scale), "confidence": uint16 (H, W) or None (value /
        65535), "meta": dict}.
    """
    rgb_name = next((n for n in ("rgb.png", "rgb.jpg") if n in files), None)
    if rgb_name is None or "meta.json" not in files:
        raise DataError(f"{where}: sample lacks rgb.png|rgb.jpg or meta.json ({sorted(files)})")
    try:
        meta = json.loads(files["meta.json"])
    except ValueError as exc:  # JSONDecodeError and UnicodeDecodeError
        raise DataError(f"{where}: corrupt meta.json: {exc}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{where}: meta.json is not an object")
    rgb = images.decode_rgb(files[rgb_name], f"{where}.{rgb_name}")
    depth = (
        images.decode_depth(files["depth.png"], f"{where}.depth.png")
        if "depth.png" in files
        else None
    )
    pseudo, confidence = (
        images.decode_depth(files[name], f"{where}.{name}") if name in files else None
        for name in ("pseudo.png", "confidence.png")
    )
    expected = (meta.get("height"), meta.get("width"))
    maps = (m for m in (depth, pseudo, confidence) if m is not None)
    if rgb.shape[:2] != expected or any(m.shape != expected for m in maps):
        raise DataError(f"{where}: image sizes differ from meta.json {expected}")
    if meta.get("has_gt") != (depth is not None):
        raise DataError(
            f"{where}: meta.json has_gt={meta.get('has_gt')} but depth.png presence differs"
        )
    if bool(meta.get("pseudo")) != (pseudo is not None):
        raise DataError(
            f"{where}: meta.json pseudo={meta.get('pseudo')} but pseudo.png presence differs"
        )
    if confidence is not None and pseudo is None:
        raise DataError(f"{where}: confidence.png without pseudo.png")
    return {"rgb": rgb, "depth": depth, "pseudo": pseudo, "confidence": confidence, "meta": meta}
