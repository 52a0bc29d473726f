"""Evaluation of a depth predictor over a stream of batches: the one place that turns predictions
into per-image metrics under a protocol (training-time evaluation and `depthkd evaluate` share it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch

from kdplatform.config.schema import DataConfig
from kdplatform.data.loader import eval_loader
from kdplatform.eval.metrics import MetricSums
from kdplatform.eval.protocols import Protocol, evaluate_image
from kdplatform.eval.tta import predict_with_flip

Predict = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_batches(
    predict: Predict,
    batches: Iterable[dict[str, Any]],
    protocol: Protocol | str,
    *,
    tta: str = "none",
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
    on_first: Callable[[dict[str, Any], torch.Tensor], None] | None = None,
) -> MetricSums:
    """Per-image metric sums of `predict` over `batches` (loader batches: image, depth, has_gt).

    Images without GT or without a valid pixel are skipped and counted. `on_first(batch, pred)`
    sees the first batch (e.g. for an image grid). Sums are local: all-reduce them across ranks.
    """
    sums = MetricSums()
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        pred = predict_with_flip(predict, batch["image"].to(device), tta).float().cpu()
        for j in range(pred.shape[0]):
            has_gt = bool(batch["has_gt"][j])
            sums.add(evaluate_image(pred[j, 0], batch["depth"][j, 0], protocol) if has_gt else None)
        if index == 0 and on_first is not None:
            on_first(batch, pred)
    return sums


def evaluate_split(
    model: torch.nn.Module,
    shards: Path,
    split: str,
    data: DataConfig,
    protocol: Protocol | str,
    *,
    tta: str = "none",
) -> MetricSums:
    """Metric sums of a depth model over every sample of one shard split, in this process.

    `model(images)` may return depth or an output with a `.depth` field (an acclimated teacher).
    """
    model.eval()

    def predict(images: torch.Tensor) -> torch.Tensor:
        out = model(images)
        return getattr(out, "depth", out)

    return evaluate_batches(predict, eval_loader(shards, split, data), protocol, tta=tta)
