"""Loader benchmark: the shard loader vs a per-file loader in the style of BTS / NeWCRFs.

Both loaders decode the same 640×480 synthetic NYU-like frames, run the same augmentation and
collation in the same number of worker processes, and are timed alternately in one run (the
machines are noisy, so the ratio is what counts). The baseline opens each rgb/depth pair with PIL
from the raw layout through a map-style `Dataset` and a shuffling `DataLoader`. With `cold=True`
the page cache of every raw file and shard is dropped before each timed pass
(`posix_fadvise(DONTNEED)`), as on a dataset larger than memory.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from kdplatform.config.schema import AugmentConfig, DataConfig, PrepareConfig
from kdplatform.data.augment import augment
from kdplatform.data.constants import NYU_DEPTH_SCALE
from kdplatform.data.loader import collate, train_loader
from kdplatform.data.shards import prepare_shards
from kdplatform.data.sources import build_source
from kdplatform.data.sources.base import read_split_file
from kdplatform.data.sources.synthetic import write_synthetic

# NYU training augmentation as in BTS / URCDC (crop 416×544, ±2.5°), plus CutFlip.
BENCH_AUGMENT = AugmentConfig(crop=(416, 544), rotation_deg=2.5, cutflip_p=0.5)


class PerFileDataset(Dataset):
    """The baseline: one PIL open per rgb and per depth file, as BTS's DataLoadPreprocess does."""

    def __init__(self, root: Path, split_file: Path, cfg: AugmentConfig, seed: int) -> None:
        self.pairs = [
            (root / line.columns[0].lstrip("/"), root / line.columns[1].lstrip("/"), line)
            for line in read_split_file(split_file)
        ]
        self.cfg = cfg
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rgb_path, depth_path, line = self.pairs[index]
        rgb = np.asarray(Image.open(rgb_path).convert("RGB"))
        depth = np.asarray(Image.open(depth_path), dtype=np.float32) / np.float32(NYU_DEPTH_SCALE)
        rng = np.random.default_rng([self.seed, index])
        image, depth = augment(rgb, depth, self.cfg, rng)
        return {
            "key": str(line.columns[0]),
            "rgb": image,
            "depth": depth,
            "focal": float(line.columns[2]),
            "has_gt": True,
        }


@dataclass
class LoaderBenchResult:
    """Figures of one benchmark run (samples/s are medians over rounds)."""

    n_samples: int
    height: int
    width: int
    workers: int
    batch_size: int
    batches: int
    rounds: int
    cold_cache: bool
    synth_seconds: float
    prepare_seconds: float
    prepare_samples_per_s: float
    baseline_samples_per_s: float
    shards_samples_per_s: float
    baseline_rounds: list[float]
    shards_rounds: list[float]

    @property
    def ratio(self) -> float:
        return self.shards_samples_per_s / self.baseline_samples_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def _evict(paths: Iterable[Path]) -> None:
    for path in paths:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _samples_per_s(loader: Iterable[dict[str, Any]], batches: int, batch_size: int) -> float:
    """Steady-state rate: the clock starts after the first batch (worker start-up excluded)."""
    it = iter(loader)
    next(it)
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return batches * batch_size / (time.perf_counter() - start)


def run_loader_benchmark(
    work: Path,
    *,
    n: int = 1000,
    height: int = 480,
    width: int = 640,
    workers: int = 2,
    batch_size: int = 8,
    batches: int = 40,
    rounds: int = 3,
    cold: bool = False,
    seed: int = 0,
    progress: bool = True,
) -> LoaderBenchResult:
    """Generates data (once), times `data prepare`, then times both loaders alternately."""
    raw, shards = work / "raw", work / "shards"
    tick = time.perf_counter()
    if not (raw / "splits" / "test.txt").is_file():
        write_synthetic(
            "nyu",
            raw,
            n,
            seed,
            test_fraction=0.0,
            val_fraction=0.0,
            height=height,
            width=width,
            workers=workers,
            progress=progress,
        )
    synth_seconds = time.perf_counter() - tick
    split_file = raw / "splits" / "train.txt"
    prepare = PrepareConfig(
        dataset="nyu",
        root=raw / "sync",
        split_file=split_file,
        split="train",
        out=shards,
        workers=workers,
        force=True,
    )
    report = prepare_shards(prepare, build_source(prepare), progress=progress)

    data = DataConfig(
        shards=shards,
        batch_size=batch_size,
        num_workers=workers,
        steps_per_epoch=batches + 1,
        augment=BENCH_AUGMENT,
    )
    raw_files = [p for p in (raw / "sync").rglob("*") if p.is_file()]
    shard_files = sorted(shards.glob("train-*.tar"))
    base_rates: list[float] = []
    shard_rates: list[float] = []
    for r in range(rounds):
        order = ("baseline", "shards") if r % 2 == 0 else ("shards", "baseline")
        for which in order:
            if cold:
                _evict(raw_files + shard_files)
            if which == "baseline":
                dataset = PerFileDataset(raw / "sync", split_file, BENCH_AUGMENT, seed + r)
                loader = DataLoader(
                    dataset,
                    batch_size=batch_size,
                    shuffle=True,
                    num_workers=workers,
                    collate_fn=collate,
                    drop_last=True,
                    generator=torch.Generator().manual_seed(seed + r),
                )
                base_rates.append(_samples_per_s(loader, batches, batch_size))
            else:
                loader = train_loader(shards, "train", data, seed=seed, epoch=r)
                shard_rates.append(_samples_per_s(loader, batches, batch_size))
            if progress:
                latest = base_rates[-1] if which == "baseline" else shard_rates[-1]
                print(f"  round {r + 1}/{rounds} {which:8s} {latest:7.1f} samples/s", flush=True)
    return LoaderBenchResult(
        n_samples=report.num_samples,
        height=height,
        width=width,
        workers=workers,
        batch_size=batch_size,
        batches=batches,
        rounds=rounds,
        cold_cache=cold,
        synth_seconds=synth_seconds,
        prepare_seconds=report.seconds,
        prepare_samples_per_s=report.num_samples / report.seconds,
        baseline_samples_per_s=statistics.median(base_rates),
        shards_samples_per_s=statistics.median(shard_rates),
        baseline_rounds=base_rates,
        shards_rounds=shard_rates,
    )
