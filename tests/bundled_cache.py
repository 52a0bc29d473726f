"""A session cache of the bundled synthetic data sets (`depthkd.data.bundled`) for the tests.

Nearly every job test gets a fresh `$DEPTHKD_HOME`, where the job builds the bundled set of its
config: it renders the frames, prepares three shard splits (in a worker pool that alone takes
seconds to start in a fresh process) and verifies them. The frames only depend on the synthetic
config, but the shards are not portable as they are: each sample's meta.json and the manifest
(each split's `source`, hence its `fingerprint`) name the absolute paths of the raw files.

So each set (per synthetic config and split names) is built once per session, for real, and then
*relocated* into each home that needs it: every file copied with the old folder's path replaced by
the new one, the tars rewritten member by member, the manifest's shard sizes, sha256s and split
fingerprints recomputed. `ensure_shards` then finds the set complete and verifies it, as it does
its own. The first time a set is relocated the result is compared with a second real build at the
very same path (every file equal but the manifest's `created` times); if they differ (the shard
format changed) the cache switches itself off with a warning and the tests build their data as
before.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

from depthkd.config.schema import DataConfig
from depthkd.data.bundled import ensure_shards, synthetic_dir
from depthkd.data.shards import FORMAT_VERSION, MANIFEST

# DataConfig fields that decide which splits a bundled set has (train, eval, test, unlabeled...)
SPLIT_FIELDS = tuple(name for name in DataConfig.model_fields if name.endswith("_split"))


class Unrelocatable(Exception):
    """A built set whose files this module does not know how to relocate."""


def cache_key(cfg: DataConfig) -> str:
    """What a bundled set's files depend on: its folder name (a hash of the synthetic config)
    and the names of its splits."""
    fields = {name: getattr(cfg, name) for name in SPLIT_FIELDS}
    fields["folder"] = synthetic_dir(cfg.synthetic, Path("/")).name
    return json.dumps(fields, sort_keys=True)


class BundledCache:
    """Built bundled sets under `root`, relocated on request (`place`)."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.off: str | None = None  # why the cache is switched off
        self.enabled = False  # whether `seeding_build` places sets (per test, see conftest)
        self._sets: dict[str, Path | None] = {}  # None: that config fails to build

    def owns(self, path: Path) -> bool:
        return path.is_relative_to(self.root)

    def place(self, cfg: DataConfig, base: Path) -> bool:
        """Puts the bundled set of `cfg` at `base` (its `synthetic_dir` in some home) as a real
        build would leave it. False, with nothing written, when it is not cached: `base` exists,
        the cache is off, or the set fails to build (the caller's own build then reports why)."""
        if self.off is not None or base.exists() or cfg.shards is not None:
            return False
        built = self._built(cfg)
        if built is None:
            return False
        try:
            relocate(built, base)
        except Exception as exc:  # checked for this set already: should not happen
            self.off = f"relocating {built} to {base} failed: {exc!r}"
            warnings.warn(f"bundled data cache off: {self.off}", stacklevel=2)
            return False
        return True

    def seed(self, cfg: DataConfig, home: Path) -> bool:
        """`place` into a home that a job of another process will use (`$DEPTHKD_HOME`)."""
        return cfg.shards is None and self.place(cfg, synthetic_dir(cfg.synthetic, home))

    def _built(self, cfg: DataConfig) -> Path | None:
        key = cache_key(cfg)
        if key not in self._sets:
            slot = self.root / f"set-{len(self._sets)}"
            try:
                built = Path(ensure_shards(cfg, slot / "built", progress=False)).parent
            except Exception:
                self._sets[key] = None  # e.g. a config a test expects to fail
                return None
            self._sets[key] = built
            problem = _check_relocation(cfg, built, slot / "check")
            if problem is not None:
                self.off = problem
                warnings.warn(f"bundled data cache off: {problem}", stacklevel=2)
                return None
        return self._sets[key]


def _check_relocation(cfg: DataConfig, built: Path, home: Path) -> str | None:
    """Why a relocated copy of `built` differs from a real build at the same path (None: it
    does not)."""
    try:
        real = Path(ensure_shards(cfg, home, progress=False)).parent
        aside = real.with_name(f"{real.name}.real")
        real.rename(aside)  # its files keep naming `real`, where the relocated copy now goes
        relocate(built, real)
        return _differences(real, aside)
    except Exception as exc:  # Unrelocatable, or a build that fails here only
        return f"{exc!r} while checking the relocation of {built}"
    finally:
        shutil.rmtree(home, ignore_errors=True)


def _differences(copy: Path, real: Path) -> str | None:
    files = {p.relative_to(copy) for p in copy.rglob("*") if p.is_file()}
    expected = {p.relative_to(real) for p in real.rglob("*") if p.is_file()}
    if files != expected:
        return f"relocated files {sorted(map(str, files ^ expected))[:5]} differ from a real build"
    for name in sorted(files):
        ours, theirs = (copy / name).read_bytes(), (real / name).read_bytes()
        if name.name == MANIFEST:
            ours, theirs = (_without_created(json.loads(text)) for text in (ours, theirs))
        if ours != theirs:
            return f"relocated {name} differs from a real build"
    return None


def _without_created(manifest: dict[str, Any]) -> dict[str, Any]:
    for entry in manifest.get("splits", {}).values():
        entry.pop("created", None)
    return manifest


def relocate(src: Path, dst: Path) -> None:
    """Copies the bundled set folder `src` to `dst` with every path under `src` in its files
    renamed to the same path under `dst`.

    Raises:
        Unrelocatable: a manifest this module cannot rewrite (then nothing is left at `dst`).
    """
    old, new = str(src), str(dst)
    try:
        manifests = []
        for path in sorted(src.rglob("*")):
            out = dst / path.relative_to(src)
            if path.is_dir():
                out.mkdir(parents=True, exist_ok=True)
            elif path.name == MANIFEST:
                manifests.append((path, out))  # after the shards it lists
            elif path.suffix == ".tar":
                out.parent.mkdir(parents=True, exist_ok=True)
                _relocate_tar(path, out, old.encode(), new.encode())
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                out.write_bytes(path.read_bytes().replace(old.encode(), new.encode()))
        for path, out in manifests:
            _relocate_manifest(path, out, old, new)
    except BaseException:
        shutil.rmtree(dst, ignore_errors=True)
        raise


def _relocate_tar(src: Path, dst: Path, old: bytes, new: bytes) -> None:
    with tarfile.open(src) as tar_in, tarfile.open(dst, "w") as tar_out:
        for member in tar_in:
            reader = tar_in.extractfile(member) if member.isfile() else None
            if reader is None:
                tar_out.addfile(member)
                continue
            data = reader.read().replace(old, new)
            member.size = len(data)
            tar_out.addfile(member, io.BytesIO(data))


def _dump_manifest(manifest: dict[str, Any]) -> str:
    return json.dumps(manifest, indent=2, sort_keys=True) + "\n"  # as depthkd.atomic writes it


def _split_fingerprint(entry: dict[str, Any]) -> str:
    """`depthkd.data.shards._fingerprint` of a bundled split, from its manifest entry."""
    ident = {
        "source": entry["source"],
        "split_file_sha256": entry["split_file_sha256"],
        "shard_size": entry["shard_size"],
        "on_error": "raise",
        "format_version": FORMAT_VERSION,
    }
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()


def _relocate_manifest(src: Path, dst: Path, old: str, new: str) -> None:
    text = src.read_text()
    manifest = json.loads(text)
    if _dump_manifest(manifest) != text:
        raise Unrelocatable(f"{src} is not written as this module writes it")
    for split, entry in manifest["splits"].items():
        if entry.get("fingerprint") != _fingerprint_or_none(entry):
            raise Unrelocatable(f"the fingerprint of split {split!r} is not computed as expected")
    quoted_old, quoted_new = (json.dumps(s)[1:-1] for s in (old, new))
    manifest = json.loads(json.dumps(manifest).replace(quoted_old, quoted_new))
    for entry in manifest["splits"].values():
        for shard in entry["shards"]:
            data = (dst.parent / shard["name"]).read_bytes()
            shard["bytes"] = len(data)
            shard["sha256"] = hashlib.sha256(data).hexdigest()
        entry["fingerprint"] = _split_fingerprint(entry)
    dst.write_text(_dump_manifest(manifest))


def _fingerprint_or_none(entry: dict[str, Any]) -> str | None:
    try:
        return _split_fingerprint(entry)
    except KeyError:
        return None


def seeding_build(cache: BundledCache, build: Callable[..., Path]) -> Callable[..., Path]:
    """`depthkd.data.bundled._build_bundled` that first places a cached copy of the set (while
    `cache.enabled`, and never into the cache's own folders); the real function then finds it
    complete and verifies it."""

    def seeded(cfg: DataConfig, base: Path, *args: Any, **kwargs: Any) -> Path:
        if cache.enabled and not cache.owns(base):
            cache.place(cfg, base)
        return build(cfg, base, *args, **kwargs)

    return seeded
