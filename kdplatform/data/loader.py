"""DDP-safe WebDataset streams of prepared shards.

Training: `resampled=True` shard sampling (so a rank never runs dry), `split_by_node` and
`split_by_worker`, a sample shuffle buffer, augmentation, `batched(partial=False)` and
`WebLoader(...).with_epoch(steps)`: every rank yields exactly `steps_per_epoch` full batches, since
unequal counts hang DDP. Each epoch builds a fresh loader whose random streams are keyed by
(seed, epoch, rank, worker), so a run and its resume see the same data.

Evaluation: shards are split by rank (uneven counts allowed) and then by loader worker, no
resampling, `partial=True`: every sample is seen exactly once across all ranks, with its key.

Depth is decoded losslessly (uint16 PNG → float32 metres = value / depth_scale) before batching;
webdataset's own image decoders would reduce 16-bit PNGs to 8 bits.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator
from functools import partial
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
import webdataset as wds

from depthkd import storage
from depthkd.config.schema import AugmentConfig, DataConfig
from depthkd.data import augment as aug
from depthkd.data.constants import CONFIDENCE_SCALE
from depthkd.data.shards import decode_sample_files, shard_paths
from depthkd.errors import DataError
from depthkd.storage import Location

Batch = dict[str, Any]


def _opened(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Pipeline stage: {url} → {url, stream} for local shards and `s3://` objects alike (each
    loader worker opens its own streams, with its own S3 client)."""
    for item in src:
        yield {**item, "stream": storage.open_read(item["url"])}


def tar_samples(src: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Pipeline stage: shard URLs → raw samples (`__key__`, `__url__`, one entry per file)."""
    files = wds.tariterators.tar_file_expander(_opened(src))
    return wds.tariterators.group_by_keys(files)


def decode_sample(sample: dict[str, Any]) -> dict[str, Any]:
    """Turns a raw shard sample (bytes) into rgb uint8 (H, W, 3) and depth float32 metres (H, W).

    Invalid pixels (0, or the dataset's `invalid_value`) are 0 in the result; samples without GT
    get an all-zero depth so they batch with the rest.
    """
    key = sample["__key__"]
    files = {name: data for name, data in sample.items() if not name.startswith("__")}
    decoded = decode_sample_files(files, f"{sample.get('__url__', '?')}:{key}")
    rgb, stored, meta = decoded["rgb"], decoded["depth"], decoded["meta"]
    if stored is None:
        depth = np.zeros(rgb.shape[:2], np.float32)
    else:
        depth = stored.astype(np.float32) / np.float32(meta["depth_scale"])
        if meta.get("invalid_value", 0):
            depth[stored == meta["invalid_value"]] = 0.0
    sample = {
        "key": key,
        "dataset": meta.get("dataset", ""),
        "rgb": rgb,
        "depth": depth,
        "focal": meta.get("focal") or 0.0,
        "has_gt": bool(meta["has_gt"]),
    }
    if decoded["pseudo"] is not None:  # a `depthkd pseudo-label` sample
        sample["pseudo"] = decoded["pseudo"].astype(np.float32) / np.float32(meta["depth_scale"])
        confidence = decoded["confidence"]
        sample["confidence"] = (
            np.ones_like(sample["pseudo"])
            if confidence is None
            else confidence.astype(np.float32) / np.float32(CONFIDENCE_SCALE)
        )
    return sample


def collate(samples: list[dict[str, Any]]) -> Batch:
    """Stacks decoded samples into tensors.

    Returns:
        image (B, 3, H, W) float32 in [0, 1]; depth (B, 1, H, W) float32 metres; valid (B, 1, H, W)
        bool (depth > 0); focal (B,) float32; has_gt (B,) bool; key list[str].
    """
    sizes = {s["depth"].shape for s in samples}
    if len(sizes) > 1:
        raise DataError(
            f"cannot batch images of different sizes {sorted(sizes)} (keys "
            f"{[s['key'] for s in samples][:4]})",
            hint="set data.augment.crop for training, or data.eval_batch_size=1",
        )
    image = np.stack([_as_float_rgb(s["rgb"]) for s in samples]).transpose(0, 3, 1, 2)
    depth = torch.from_numpy(np.stack([s["depth"] for s in samples]))[:, None]  # (B, 1, H, W)
    batch = {
        "image": torch.from_numpy(np.ascontiguousarray(image)),
        "depth": depth,
        "valid": depth > 0,
        "focal": torch.tensor([s["focal"] for s in samples], dtype=torch.float32),
        "has_gt": torch.tensor([s["has_gt"] for s in samples]),
        "key": [s["key"] for s in samples],
    }
    if all("pseudo" in s for s in samples):
        for name in ("pseudo", "confidence"):
            batch[name] = torch.from_numpy(np.stack([s[name] for s in samples]))[:, None]
    return batch


def mix_batches(labeled: Batch, unlabeled: Batch) -> Batch:
    """One batch of labeled rows followed by pseudo-labelled rows.

    Labeled rows get `pseudo` 0 (no pseudo-label) and `confidence` 1; pseudo-labelled rows have
    `depth` 0 and `valid` False, so supervised terms see only ground truth and `pseudo_silog`
    only pseudo-labels.
    """
    if labeled["image"].shape[-2:] != unlabeled["image"].shape[-2:]:
        raise DataError(
            f"labeled frames {tuple(labeled['image'].shape[-2:])} and pseudo-labelled frames "
            f"{tuple(unlabeled['image'].shape[-2:])} differ in size",
            hint="label the unlabeled frames at the training frame size (`depthkd pseudo-label "
            "--size H W`), or set data.augment.crop to a size both have",
        )
    zeros = torch.zeros_like(labeled["depth"])
    filled: Batch = {"pseudo": zeros, "confidence": torch.ones_like(zeros)}
    mixed: Batch = {}
    for name, value in unlabeled.items():
        first = labeled[name] if name in labeled else filled[name]
        mixed[name] = first + value if isinstance(value, list) else torch.cat([first, value])
    return mixed


def _as_float_rgb(rgb: np.ndarray) -> np.ndarray:
    return rgb if rgb.dtype == np.float32 else rgb.astype(np.float32) / 255.0


def rank_info() -> tuple[int, int]:
    """(rank, world_size) of this process: torch.distributed, else RANK/WORLD_SIZE, else (0, 1)."""
    rank, world_size, _, _ = wds.utils.pytorch_worker_info()
    if dist.is_available() and dist.is_initialized():
        rank, world_size = dist.get_rank(), dist.get_world_size()
    return rank, world_size


def _export_rank(worker_id: int, *, rank: int, world_size: int) -> None:
    """DataLoader worker init: a spawned worker cannot see the parent's process group, so
    `split_by_node` and the per-worker seeds read the rank from the environment instead."""
    os.environ["RANK"], os.environ["WORLD_SIZE"] = str(rank), str(world_size)


def _worker_rng(seed: int, epoch: int, stream: int = 0) -> np.random.Generator:
    """A generator unique to (seed, epoch, rank, loader worker, stream): the labeled stream is 0,
    the pseudo-labelled one 1."""
    rank, _, worker, _ = wds.utils.pytorch_worker_info()
    return np.random.default_rng([seed, epoch, rank, worker] + [stream] * (stream > 0))


def _shuffle_decode_augment(
    src: Iterable[dict[str, Any]],
    *,
    cfg: AugmentConfig,
    buffer: int,
    seed: int,
    epoch: int,
    border_mask: bool = False,
    stream: int = 0,
) -> Iterator[dict[str, Any]]:
    """Pipeline stage: shuffle raw samples in a buffer, then decode and augment them."""
    rng = _worker_rng(seed, epoch, stream)
    picker = random.Random(int(rng.integers(1 << 62)))
    augmented = partial(_augmented, cfg=cfg, rng=rng, border_mask=border_mask)
    pool: list[dict[str, Any]] = []
    for raw in src:
        pool.append(raw)
        if len(pool) > buffer:
            yield augmented(pool.pop(picker.randrange(len(pool))))
    picker.shuffle(pool)
    for raw in pool:
        yield augmented(raw)


def _augmented(
    raw: dict[str, Any], *, cfg: AugmentConfig, rng: np.random.Generator, border_mask: bool
) -> dict[str, Any]:
    sample = decode_sample(raw)
    if "pseudo" in sample:  # the pseudo-label and its confidence move with the frame
        planes = np.stack([sample["pseudo"], sample["confidence"]], axis=-1)  # (H, W, 2)
        sample["rgb"], planes = aug.augment(sample["rgb"], planes, cfg, rng)
        sample["pseudo"], sample["confidence"] = planes[..., 0], planes[..., 1]
        sample["depth"] = np.zeros_like(sample["pseudo"])
        return sample
    if border_mask and sample["dataset"] in aug.NYU_BORDER_DATASETS:
        sample["depth"] = aug.nyu_border_mask(sample["depth"])  # in the frame's own pixels
    sample["rgb"], sample["depth"] = aug.augment(sample["rgb"], sample["depth"], cfg, rng)
    return sample


def train_loader(
    shards: Location, split: str, cfg: DataConfig, *, seed: int, epoch: int = 0
) -> wds.WebLoader:
    """The training stream of one epoch: exactly `cfg.steps_per_epoch` batches on every rank.

    Args:
        shards: prepared shard dir (absolute: Ray workers change directory) or `s3://` prefix.
        split: split name in the manifest.
        cfg: batch size, workers, shuffle buffer, augmentation, the NYU border mask (samples of
            NYU sources only: their meta names the dataset).
        seed: run seed; with `epoch`, rank and worker it keys every random choice.
        epoch: epoch number, so that each epoch sees different shards and augmentations.
    """
    return _train_stream(shards, split, cfg, cfg.batch_size, seed=seed, epoch=epoch, stream=0)


def _train_stream(
    shards: Location,
    split: str,
    cfg: DataConfig,
    batch_size: int,
    *,
    seed: int,
    epoch: int,
    stream: int,
) -> wds.WebLoader:
    urls = [str(p) for p in shard_paths(shards, split)]
    rank, world_size = rank_info()
    pipeline = wds.DataPipeline(
        wds.ResampledShards(urls, seed=(seed * 100_003 + epoch) * (stream + 1), deterministic=True),
        wds.split_by_node,
        wds.split_by_worker,
        tar_samples,
        partial(
            _shuffle_decode_augment,
            cfg=cfg.augment,
            buffer=cfg.shuffle_buffer,
            seed=seed,
            epoch=epoch,
            border_mask=cfg.nyu_border_mask,
            stream=stream,
        ),
        wds.batched(batch_size, collation_fn=collate, partial=False),
    )
    loader = wds.WebLoader(
        pipeline,
        batch_size=None,
        num_workers=cfg.num_workers,
        worker_init_fn=partial(_export_rank, rank=rank, world_size=world_size),
    )
    return loader.with_epoch(cfg.steps_per_epoch)


def unlabeled_batch_size(batch_size: int, ratio: float) -> int:
    """Pseudo-labelled frames beside `batch_size` labeled ones at `ratio` (at least 1 if > 0)."""
    return max(1, round(batch_size * ratio)) if ratio > 0 else 0


def mixed_train_loader(
    shards: Location,
    split: str,
    cfg: DataConfig,
    *,
    pseudo_labels: Location,
    pseudo_split: str,
    ratio: float,
    seed: int,
    epoch: int = 0,
) -> Iterator[Batch]:
    """The training stream of one epoch with pseudo-labelled frames mixed in: every batch holds
    `cfg.batch_size` labeled frames, then `unlabeled_batch_size(cfg.batch_size, ratio)`
    pseudo-labelled ones (`mix_batches`), exactly `cfg.steps_per_epoch` batches on every rank.

    The pseudo-labelled stream is split by node and worker and keyed by (seed, epoch, rank,
    worker) like the labeled one, on a random stream of its own, so resumes see the same data.
    """
    labeled = train_loader(shards, split, cfg, seed=seed, epoch=epoch)
    unlabeled = _train_stream(
        pseudo_labels,
        pseudo_split,
        cfg,
        unlabeled_batch_size(cfg.batch_size, ratio),
        seed=seed,
        epoch=epoch,
        stream=1,
    )
    for ours, theirs in zip(labeled, unlabeled, strict=True):
        yield mix_batches(ours, theirs)


def _decode_for_eval(raw: dict[str, Any], *, kb_crop: bool) -> dict[str, Any]:
    sample = decode_sample(raw)
    if kb_crop:
        sample["rgb"], sample["depth"] = aug.kb_crop(sample["rgb"], sample["depth"])
    return sample


def eval_loader(
    shards: Location,
    split: str,
    cfg: DataConfig,
    *,
    rank: int | None = None,
    world_size: int | None = None,
) -> Iterable[Batch]:
    """The evaluation stream of this rank: its share of the shards, each sample exactly once.

    Args:
        shards: prepared shard dir or `s3://` prefix.
        split: split name in the manifest.
        cfg: eval batch size, workers, optional KB crop.
        rank: this rank; default from the environment or torch.distributed.
        world_size: number of ranks; default likewise.
    """
    if rank is None or world_size is None:
        rank, world_size = rank_info()
    mine = [str(p) for p in shard_paths(shards, split)][rank::world_size]
    if not mine:
        return []
    pipeline = wds.DataPipeline(
        wds.SimpleShardList(mine),
        wds.split_by_worker,
        tar_samples,
        wds.map(partial(_decode_for_eval, kb_crop=cfg.eval_kb_crop)),
        wds.batched(cfg.eval_batch_size, collation_fn=collate, partial=True),
    )
    return wds.WebLoader(pipeline, batch_size=None, num_workers=min(cfg.num_workers, len(mine)))
