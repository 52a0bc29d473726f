"""Evaluation: per-image depth metrics, named protocols (crops, clamps, KITTI conventions), flip
test-time augmentation and offline evaluation of PNG predictions."""

from depthkd.eval.metrics import MetricSums, compute_metrics, metrics_vector
from depthkd.eval.pngs import PngEvalReport, evaluate_pngs
from depthkd.eval.protocols import (
    PROTOCOLS,
    Protocol,
    crop_box,
    evaluate_image,
    format_table,
    get_protocol,
)
from depthkd.eval.tta import TTA_MODES, edge_blend_weights, predict_with_flip

__all__ = [
    "PROTOCOLS",
    "TTA_MODES",
    "MetricSums",
    "PngEvalReport",
    "Protocol",
    "compute_metrics",
    "crop_box",
    "edge_blend_weights",
    "evaluate_image",
    "evaluate_pngs",
    "format_table",
    "get_protocol",
    "metrics_vector",
    "predict_with_flip",
]
