"""Offline evaluation of a directory of 16-bit PNG predictions against a ground-truth directory.

The counterpart of BTS `utils/eval_with_pngs.py`, but predictions and ground truth are matched by
their relative path (recursively) instead of by parsing file names, so any layout works as long as
the prediction tree mirrors the ground-truth tree. A prediction without a ground-truth file (the
KITTI Eigen lines whose GT is `None`) or whose ground truth has no valid pixel in the crop is
skipped and counted, never averaged in as NaN.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from depthkd.data.images import decode_depth, read_bytes
from depthkd.errors import ConfigError, DataError
from depthkd.eval.metrics import MetricSums
from depthkd.eval.protocols import Protocol, evaluate_image, get_protocol


@dataclass
class PngEvalReport:
    """The result of `evaluate_pngs`.

    Attributes:
        protocol: the protocol's name.
        n_images: images evaluated.
        n_skipped: predictions without a ground-truth file or without a valid GT pixel.
        metrics: per-image means keyed by `METRIC_NAMES`.
        skipped: (relative path, reason) of every skipped prediction.
    """

    protocol: str
    n_images: int
    n_skipped: int
    metrics: dict[str, float]
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def to_json_dict(self) -> dict[str, object]:
        """The stable JSON form printed by `depthkd eval-pngs --json`."""
        return {
            "protocol": self.protocol,
            "n_images": self.n_images,
            "n_skipped": self.n_skipped,
            "metrics": dict(self.metrics),
        }


def _depth_metres(path: Path, scale: float, what: str) -> np.ndarray:
    raw = decode_depth(read_bytes(path, what, str(path)), f"{what} {path}")
    return raw.astype(np.float64) / scale


def _check_dir(path: Path, what: str) -> Path:
    if not path.is_dir():
        raise DataError(f"{what} directory not found: {path}")
    return path


def evaluate_pngs(
    pred_dir: Path,
    gt_dir: Path,
    protocol: Protocol | str,
    *,
    pred_scale: float | None = None,
    gt_scale: float | None = None,
    progress: bool = True,
    allow_missing: bool = False,
) -> PngEvalReport:
    """Evaluates every `*.png` under `pred_dir` against the file at the same relative path under
    `gt_dir`.

    Args:
        pred_dir: predictions, uint16 PNGs (metres = value / pred_scale), at the GT size or, where
            the protocol allows it, at the 352×1216 KB-crop size.
        gt_dir: ground truth, uint16 PNGs (metres = value / gt_scale, 0 = invalid).
        protocol: a `Protocol` or its registered name.
        pred_scale: defaults to the protocol's dataset scale (KITTI 256, NYU 1000).
        gt_scale: likewise.
        progress: show a tqdm bar on stderr (only when stderr is a terminal).
        allow_missing: ground truth without a prediction is skipped and counted instead of
            being an error (an incomplete prediction run must not pass for a full one).

    Raises:
        DataError: no prediction file, an undecodable file (named), sizes the protocol cannot
            reconcile, or no image with a valid ground-truth pixel at all.
    """
    proto = get_protocol(protocol)
    pred_scale = proto.depth_scale if pred_scale is None else pred_scale
    gt_scale = proto.depth_scale if gt_scale is None else gt_scale
    for name, value in (("pred_scale", pred_scale), ("gt_scale", gt_scale)):
        if not value > 0:
            raise ConfigError(f"{name} must be > 0, got {value}")
    pred_dir, gt_dir = Path(pred_dir), Path(gt_dir)
    _check_dir(pred_dir, "prediction")
    _check_dir(gt_dir, "ground-truth")
    preds = sorted(p for p in pred_dir.rglob("*") if p.suffix.lower() == ".png" and p.is_file())
    if not preds:
        raise DataError(
            f"no prediction PNG under {pred_dir}",
            hint="predictions are uint16 PNGs whose paths mirror the ground-truth tree",
        )

    sums = MetricSums()
    skipped: list[tuple[str, str]] = []
    predicted = {p.relative_to(pred_dir) for p in preds}
    missing = sorted(
        p.relative_to(gt_dir).as_posix()
        for p in gt_dir.rglob("*")
        if p.suffix.lower() == ".png" and p.is_file() and p.relative_to(gt_dir) not in predicted
    )
    if missing and not allow_missing:
        raise DataError(
            f"{len(missing)} ground-truth PNGs under {gt_dir} have no prediction, e.g. "
            f"{missing[0]}",
            hint="pass --allow-missing to skip (and count) them",
        )
    for name in missing:
        sums.add(None)
        skipped.append((name, "no prediction file"))
    # disable=None hides the bar when stderr is not a terminal (logs, CI, tests).
    bar = tqdm(
        preds,
        desc=f"eval {proto.name}",
        unit="img",
        file=sys.stderr,
        disable=None if progress else True,
    )
    for pred_path in bar:
        rel = pred_path.relative_to(pred_dir)
        gt_path = gt_dir / rel
        if not gt_path.is_file():
            sums.add(None)
            skipped.append((rel.as_posix(), "no ground-truth file"))
            continue
        pred = _depth_metres(pred_path, pred_scale, "prediction")
        gt = _depth_metres(gt_path, gt_scale, "ground truth")
        metrics = evaluate_image(pred, gt, proto, where=rel.as_posix())
        sums.add(metrics)
        if metrics is None:
            skipped.append((rel.as_posix(), "no valid ground-truth pixel in the crop"))
    return PngEvalReport(
        protocol=proto.name,
        n_images=sums.n_images,
        n_skipped=sums.n_skipped,
        metrics=sums.means(),
        skipped=skipped,
    )
