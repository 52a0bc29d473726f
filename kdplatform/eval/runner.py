"""Evaluation of a depth predictor over a stream of batches: the one place that turns predictions
into per-image metrics under a protocol (training-time evaluation and `depthkd evaluate` share it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from depthkd.config.schema import DataConfig
from depthkd.data.loader import eval_loader
from depthkd.errors import ConfigError
from depthkd.eval.metrics import MetricSums
from depthkd.eval.protocols import Protocol, evaluate_image, get_protocol, model_input_box
from depthkd.eval.tta import TTAMode, predict_with_flip
from depthkd.models.ghost import AcclimatedTeacher
from depthkd.storage import Location

Predict = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def evaluate_batches(
    predict: Predict,
    batches: Iterable[dict[str, Any]],
    protocol: Protocol | str,
    *,
    tta: TTAMode = "none",
    device: torch.device | str = "cpu",
    max_batches: int | None = None,
    on_first: Callable[[dict[str, Any], torch.Tensor], None] | None = None,
) -> MetricSums:
    """Per-image metric sums of `predict` over `batches` (loader batches: image, depth, has_gt).

    The model sees `model_input_box` of each frame: under the full-frame KITTI protocols
    (`kitti-garg-full`, `kitti-eigen`) the KB crop of a full-size frame, as BTS evaluates; the
    prediction is pasted back into a zero canvas of the full ground truth, whose own crop is then
    evaluated (pixels outside the KB crop count as prediction 0, clamped to the minimum depth).
    Images without GT or without a valid pixel are skipped and counted. `on_first(batch, pred)`
    sees the first batch as the model saw it (image and depth cut like the input, e.g. for an
    image grid). Sums are local: all-reduce them across ranks.
    """
    proto = get_protocol(protocol)
    sums = MetricSums()
    for index, batch in enumerate(batches):
        if max_batches is not None and index >= max_batches:
            break
        top, bottom, left, right = model_input_box(proto, *batch["image"].shape[-2:])
        images = batch["image"][..., top:bottom, left:right]  # (B, 3, h, w)
        pred = predict_with_flip(predict, images.to(device), tta).float().cpu()  # (B, 1, h, w)
        for j in range(pred.shape[0]):
            has_gt = bool(batch["has_gt"][j])
            sums.add(evaluate_image(pred[j, 0], batch["depth"][j, 0], proto) if has_gt else None)
        if index == 0 and on_first is not None:
            depth = batch["depth"][..., top:bottom, left:right]
            on_first({**batch, "image": images, "depth": depth}, pred)
    return sums


def evaluate_split(
    model: nn.Module,
    shards: Location,
    split: str,
    data: DataConfig,
    protocol: Protocol | str,
    *,
    tta: TTAMode = "none",
) -> MetricSums:
    """Metric sums of a depth model over every sample of one shard split, in this process.

    An acclimated teacher is evaluated through its own head (`depth_network`).

    Raises:
        ConfigError: a full-frame protocol on frames that `data.eval_kb_crop` already cut.
    """
    proto = get_protocol(protocol)
    if proto.paste_kb and data.eval_kb_crop:
        raise ConfigError(
            f"protocol {proto.name} evaluates on the full KITTI frame, but data.eval_kb_crop=true "
            "cuts the frames to the KB crop",
            hint="set data.eval_kb_crop=false (the model still sees the KB crop), or use "
            "kitti-garg-kbcrop",
        )
    network = depth_network(model).eval()
    return evaluate_batches(network, eval_loader(shards, split, data), proto, tta=tta)


def depth_network(model: nn.Module) -> nn.Module:
    """What predicts depth (`images -> (B, 1, H, W)`): an acclimated teacher's own teacher (its
    ghost decoder serves acclimation and distillation only, never a prediction); any other
    model itself."""
    return model.teacher if isinstance(model, AcclimatedTeacher) else model
