"""The bundled synthetic dataset of the embedded default: generated and sharded on first use.

When a config names no shard dir, pipelines use procedural data under `$DEPTHKD_HOME/data`, one
folder per synthetic config (so changing its size or seed never reuses stale shards). Its train,
val and test lists become the shard splits `data.train_split`, `data.eval_split` and
`data.test_split`; with `synthetic.unlabeled_n > 0` its RGB-only frames become the split
`UNLABELED_SPLIT` (has_gt false, no depth files). Generation and preparation are both resumable
no-ops once complete, and run under an exclusive lock (`<folder>.lock` beside the folder): two
jobs started at once on a fresh home would otherwise render into the same files and clear each
other's temporary shard folders. The second job waits, then reuses the first one's result.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from depthkd.config.schema import UNLABELED_SPLIT, DataConfig, PrepareConfig, SynthConfig
from depthkd.data.shards import prepare_shards, read_manifest, split_entry, verify_shards
from depthkd.data.sources import build_source
from depthkd.data.sources.synthetic import write_synthetic
from depthkd.errors import ConfigError, DataError
from depthkd.locking import exclusive_lock
from depthkd.storage import Location


def synthetic_dir(synth: SynthConfig, home: Path) -> Path:
    """`$DEPTHKD_HOME/data/synthetic-<layout>-<config hash>`.

    `unlabeled_n` enters the hash only when set, so the folders of configs without unlabeled
    frames keep the names (and reuse the data) they had before the field existed.
    """
    fields = synth.model_dump(exclude={"unlabeled_n"} if synth.unlabeled_n == 0 else None)
    digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
    return home / "data" / f"synthetic-{synth.layout}-{digest[:10]}"


def ensure_shards(cfg: DataConfig, home: Path, *, progress: bool = True) -> Location:
    """The absolute shard dir (or `s3://` prefix) of `cfg`; the bundled synthetic set, generated
    on first use, when none is named.

    A named shard dir must hold the train and eval splits; its test split is optional (a user may
    keep the held-out set elsewhere) but, when listed, must not be empty.

    Raises:
        DataError: a named shard dir lacks the train or eval split or has an empty one, or a
            bundled shard fails verification.
    """
    if cfg.shards is not None:
        shards = cfg.shards
        listed = read_manifest(shards)["splits"]  # DataError: no manifest
        required = [cfg.train_split, cfg.eval_split]
        for split in required + [cfg.test_split] * (cfg.test_split in listed):
            if split_entry(shards, split)["num_samples"] == 0:
                raise DataError(f"split {split!r} in {shards} has no samples")
        return shards
    base = synthetic_dir(cfg.synthetic, home)
    with exclusive_lock(
        base.with_name(f"{base.name}.lock"),
        message=f"waiting for another process preparing {base}",
    ):
        return _build_bundled(cfg, base, progress)


def _build_bundled(cfg: DataConfig, base: Path, progress: bool) -> Path:
    """Generates (unless complete), prepares and verifies the bundled set; caller holds the lock."""
    raw = base / "raw"
    shards = base / "shards"
    synth = cfg.synthetic
    # Shard split name → synthetic list. A name given two roles is prepared once; the later
    # entry wins, so eval_split == test_split (allow_test_selection) reads the test list.
    lists = {cfg.eval_split: "val", cfg.test_split: "test", cfg.train_split: "train"}
    if synth.unlabeled_n > 0:
        if UNLABELED_SPLIT in lists:
            raise ConfigError(
                f"data split {UNLABELED_SPLIT!r} is the bundled set's RGB-only split: name the "
                "train, eval and test splits otherwise, or set data.synthetic.unlabeled_n to 0"
            )
        lists[UNLABELED_SPLIT] = "unlabeled"
    if not (raw / "splits" / "test.txt").is_file():  # written last: its presence means complete
        write_synthetic(
            synth.layout,
            raw,
            synth.n,
            synth.seed,
            test_fraction=synth.test_fraction,
            val_fraction=synth.val_fraction,
            height=synth.height,
            width=synth.width,
            unlabeled_n=synth.unlabeled_n,
            progress=progress,
        )
    for split, listed in lists.items():
        prepare = PrepareConfig(
            dataset=synth.layout,
            root=raw / ("raw" if synth.layout == "kitti" else "sync"),
            gt_root=raw / "gt" if synth.layout == "kitti" else None,
            split_file=raw / "splits" / f"{listed}.txt",
            split=split,
            out=shards,
        )
        prepare_shards(prepare, build_source(prepare), progress=progress)
    report = verify_shards(shards, progress=progress)
    if not report.ok:
        raise DataError(
            f"bundled synthetic shards in {shards} failed verification: "
            + "; ".join(report.problems[:5])
        )
    return shards
