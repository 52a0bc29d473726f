"""Loader benchmark: the shard loader vs a per-file loader in the style of BTS / NeWCRFs.

Both loaders decode the same 640×480 synthetic NYU-like frames, run the same augmentation and
collation in the same number of worker processes, and are timed alternately in one run (the
machines are noisy, so the ratio is what counts). The baseline reads each rgb/depth pair of the
raw layout (local files, or S3 objects in `depthkd.bench.loader_s3`) and decodes it with PIL
through a map-style `Dataset` and a shuffling `DataLoader`. With `cold=True` the page cache of
every raw file and shard is dropped before each timed pass (`posix_fadvise(DONTNEED)`), as on a
dataset larger than memory.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from depthkd import storage
from depthkd.config.schema import AugmentConfig, DataConfig, PrepareConfig
from depthkd.console import Log
from depthkd.data.augment import augment
from depthkd.data.constants import NYU_DEPTH_SCALE
from depthkd.data.loader import collate, train_loader
from depthkd.data.shards import PrepareReport, prepare_shards
from depthkd.data.sources import build_source
from depthkd.data.sources.base import read_split_file
from depthkd.data.sources.synthetic import write_synthetic
from depthkd.storage import Location

# NYU training augmentation as in BTS / URCDC (crop 416×544, ±2.5°), plus CutFlip.
BENCH_AUGMENT = AugmentConfig(crop=(416, 544), rotation_deg=2.5, cutflip_p=0.5)

LoaderFactory = Callable[[int], Iterable[dict[str, Any]]]  # round index -> a fresh loader


class PerFileDataset(Dataset):
    """The baseline: one read per rgb and per depth file, decoded with PIL, as BTS's
    DataLoadPreprocess does. `root` is a local folder or an `s3://` prefix (one object per file)."""

    def __init__(self, root: Location, split_file: Path, cfg: AugmentConfig, seed: int) -> None:
        self.pairs = [
            (
                storage.join(root, line.columns[0].lstrip("/")),
                storage.join(root, line.columns[1].lstrip("/")),
                line,
            )
            for line in read_split_file(split_file)
        ]
        self.cfg = cfg
        self.seed = seed

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, Any]:
        rgb_at, depth_at, line = self.pairs[index]
        rgb = np.asarray(_image(rgb_at).convert("RGB"))  # (H, W, 3) uint8
        depth = np.asarray(_image(depth_at), dtype=np.float32) / np.float32(NYU_DEPTH_SCALE)
        rng = np.random.default_rng([self.seed, index])
        image, depth = augment(rgb, depth, self.cfg, rng)
        return {
            "key": str(line.columns[0]),
            "rgb": image,
            "depth": depth,
            "focal": float(line.columns[2]),
            "has_gt": True,
        }


def _image(location: Location) -> Image.Image:
    return Image.open(io.BytesIO(storage.read_bytes(location)))


def per_file_loader(
    root: Location, split_file: Path, *, batch_size: int, workers: int, seed: int
) -> DataLoader:
    """The baseline's shuffling `DataLoader` over `PerFileDataset`, with the shard loader's
    collation, full batches only."""
    return DataLoader(
        PerFileDataset(root, split_file, BENCH_AUGMENT, seed),
        batch_size=batch_size,
        shuffle=True,
        num_workers=workers,
        collate_fn=collate,
        drop_last=True,
        generator=torch.Generator().manual_seed(seed),
    )


def shard_loader(
    shards: Location, *, batch_size: int, workers: int, batches: int, seed: int, epoch: int
) -> Iterable[dict[str, Any]]:
    """The training loader of the platform (`train_loader`) with the benchmark's augmentation,
    `batches + 1` batches long (the first one is not timed)."""
    data = DataConfig(
        shards=shards,
        batch_size=batch_size,
        num_workers=workers,
        steps_per_epoch=batches + 1,
        augment=BENCH_AUGMENT,
    )
    return train_loader(shards, "train", data, seed=seed, epoch=epoch)


@dataclass(frozen=True)
class BenchData:
    """The benchmark's frames: the raw NYU layout, its split file and the prepared shards."""

    raw: Path  # the per-file layout (`<scene>/rgb_*.jpg`, `<scene>/sync_depth_*.png`)
    split_file: Path
    shards: Path
    synth_seconds: float
    report: PrepareReport


def bench_data(
    work: Path,
    *,
    n: int,
    height: int,
    width: int,
    workers: int,
    seed: int,
    force: bool = True,
    progress: bool = True,
) -> BenchData:
    """Generates `n` synthetic frames under `work/raw` (once: cached) and prepares their shards
    under `work/shards` (again each time with `force`, so that `data prepare` is timed)."""
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
        force=force,
    )
    report = prepare_shards(prepare, build_source(prepare), progress=progress)
    return BenchData(raw / "sync", split_file, shards, synth_seconds, report)


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


def alternating_rates(
    loaders: dict[str, LoaderFactory],
    *,
    rounds: int,
    batches: int,
    batch_size: int,
    before_pass: Callable[[], None] | None = None,
    log: Log | None = print,
) -> dict[str, list[float]]:
    """samples/s of each loader per round: the loaders take turns, in the given order in even
    rounds and reversed in odd ones, so load from other work hits all of them alike."""
    rates: dict[str, list[float]] = {name: [] for name in loaders}
    for r in range(rounds):
        order = list(loaders) if r % 2 == 0 else list(reversed(loaders))
        for name in order:
            if before_pass is not None:
                before_pass()
            rates[name].append(_samples_per_s(loaders[name](r), batches, batch_size))
            if log is not None:
                log(f"  round {r + 1}/{rounds} {name:8s} {rates[name][-1]:7.1f} samples/s")
    return rates


@dataclass(kw_only=True)
class LoaderComparison:
    """Settings and figures shared by the loader comparisons (samples/s: medians over rounds)."""

    n_samples: int
    height: int
    width: int
    workers: int
    batch_size: int
    batches: int
    rounds: int
    baseline_samples_per_s: float
    shards_samples_per_s: float
    baseline_rounds: list[float]
    shards_rounds: list[float]

    @property
    def ratio(self) -> float:
        return self.shards_samples_per_s / self.baseline_samples_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


@dataclass(kw_only=True)
class LoaderBenchResult(LoaderComparison):
    """Figures of one local-disk run, with the data preparation it timed."""

    cold_cache: bool
    synth_seconds: float
    prepare_seconds: float
    prepare_samples_per_s: float


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
    data = bench_data(
        work, n=n, height=height, width=width, workers=workers, seed=seed, progress=progress
    )
    raw_files = [p for p in data.raw.rglob("*") if p.is_file()]
    shard_files = sorted(data.shards.glob("train-*.tar"))
    rates = alternating_rates(
        {
            "baseline": lambda r: per_file_loader(
                data.raw, data.split_file, batch_size=batch_size, workers=workers, seed=seed + r
            ),
            "shards": lambda r: shard_loader(
                data.shards,
                batch_size=batch_size,
                workers=workers,
                batches=batches,
                seed=seed,
                epoch=r,
            ),
        },
        rounds=rounds,
        batches=batches,
        batch_size=batch_size,
        before_pass=(lambda: _evict(raw_files + shard_files)) if cold else None,
        log=print if progress else None,
    )
    report = data.report
    return LoaderBenchResult(
        n_samples=report.num_samples,
        height=height,
        width=width,
        workers=workers,
        batch_size=batch_size,
        batches=batches,
        rounds=rounds,
        cold_cache=cold,
        synth_seconds=data.synth_seconds,
        prepare_seconds=report.seconds,
        prepare_samples_per_s=report.num_samples / report.seconds,
        baseline_samples_per_s=statistics.median(rates["baseline"]),
        shards_samples_per_s=statistics.median(rates["shards"]),
        baseline_rounds=rates["baseline"],
        shards_rounds=rates["shards"],
    )
