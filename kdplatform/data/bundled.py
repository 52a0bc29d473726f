"""The bundled synthetic dataset of the embedded default: generated and sharded on first use.

When a config names no shard dir, pipelines use procedural data under `$DEPTHKD_HOME/data`, one
folder per synthetic config (so changing its size or seed never reuses stale shards). Generation
and preparation are both resumable no-ops once complete.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from kdplatform.config.schema import DataConfig, PrepareConfig, SynthConfig
from kdplatform.data.shards import prepare_shards, split_entry, verify_shards
from kdplatform.data.sources import build_source
from kdplatform.data.sources.synthetic import write_synthetic
from kdplatform.errors import DataError


def synthetic_dir(synth: SynthConfig, home: Path) -> Path:
    """`$DEPTHKD_HOME/data/synthetic-<layout>-<config hash>`."""
    digest = hashlib.sha256(json.dumps(synth.model_dump(), sort_keys=True).encode()).hexdigest()
    return home / "data" / f"synthetic-{synth.layout}-{digest[:10]}"


def ensure_shards(cfg: DataConfig, home: Path, *, progress: bool = True) -> Path:
    """The absolute shard dir of `cfg`, generating the bundled synthetic set when none is named.

    Raises:
        DataError: a named shard dir lacks the train or eval split, or a shard fails verification.
    """
    if cfg.shards is not None:
        shards = cfg.shards.resolve()
        for split in (cfg.train_split, cfg.eval_split):
            split_entry(shards, split)
        return shards
    base = synthetic_dir(cfg.synthetic, home)
    raw = base / "raw"
    shards = base / "shards"
    synth = cfg.synthetic
    if not (raw / "splits" / "test.txt").is_file():
        write_synthetic(
            synth.layout,
            raw,
            synth.n,
            synth.seed,
            test_fraction=synth.test_fraction,
            height=synth.height,
            width=synth.width,
            progress=progress,
        )
    for split, listed in ((cfg.train_split, "train"), (cfg.eval_split, "test")):
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
