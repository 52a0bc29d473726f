"""The pseudo-label shard format: one sample per source frame, and the manifest record of a pass.

A pseudo-label set is a shard dir like any other (`manifest.json` with `splits.<split>.shards`,
so `shard_paths`, `verify_shards` and `upload_shards` work unchanged) plus a top-level
`"pseudo_labels"` object that says which teacher labelled which source at which size. Each
sample, under its source key:

* `<key>.rgb.png`: the frame resized to the labelling size (lossless, so the student sees
  exactly the pixels the teacher saw);
* `<key>.pseudo.png`: uint16 depth, metres = value / depth_scale, 0 = invalid; depth_scale is the
  largest whole number at which the teacher's `max_depth` still fits in 16 bits (an 80 m teacher
  gets 819, a 10 m one 6553), so the quantisation step is at most 1 / depth_scale metres;
* `<key>.confidence.png` (teachers with a confidence map only): uint16, confidence = value / 65535;
* `<key>.meta.json`: the source meta with height/width of the new size, `has_gt: false`,
  `"pseudo": true`, the pseudo map's `depth_scale`, `source_key`, `source_size` and the focal
  length scaled with the width.
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import Any

import numpy as np

from depthkd.data import images
from depthkd.data.constants import UINT16_MAX
from depthkd.data.sources.base import EncodedSample

FORMAT_VERSION = 1  # of the pseudo-label record and samples (the shard format is shards.py's)
PROGRESS_FILE = "pseudo_labels.partial.json"  # the resume record, gone once the manifest is out
LOCK_FILE = ".pseudo-label.lock"
RECORD_KEY = "pseudo_labels"  # the manifest's top-level object


def depth_scale_for(max_depth: float) -> float:
    """The largest whole scale at which `max_depth` metres still fit in a uint16."""
    if not max_depth > 0:
        raise ValueError(f"max_depth must be positive, got {max_depth}")
    return float(max(1, math.floor(UINT16_MAX / max_depth)))


def quantise_depth(depth: np.ndarray, depth_scale: float) -> np.ndarray:
    """Metres → uint16 `round(depth * scale)`; non-finite or non-positive depth becomes 0
    (invalid) and a positive depth never rounds down to 0."""
    scaled = np.rint(np.nan_to_num(depth.astype(np.float64), nan=0.0) * depth_scale)
    values = np.clip(scaled, 0, UINT16_MAX)
    values[(depth > 0) & np.isfinite(depth) & (values < 1)] = 1
    return values.astype(np.uint16)


def quantise_confidence(confidence: np.ndarray) -> np.ndarray:
    """A confidence in [0, 1] → uint16 `round(confidence * 65535)`."""
    clipped = np.clip(np.nan_to_num(confidence.astype(np.float64), nan=0.0), 0.0, 1.0)
    return np.rint(clipped * UINT16_MAX).astype(np.uint16)


def pseudo_meta(
    source: dict[str, Any], *, key: str, size: tuple[int, int], depth_scale: float
) -> dict[str, Any]:
    """The `meta.json` of a pseudo-labelled sample from its source sample's meta."""
    height, width = size
    source_size = [source.get("height"), source.get("width")]
    focal = source.get("focal")
    if focal and source_size[1]:
        focal = float(focal) * width / float(source_size[1])
    return {
        **source,
        "height": height,
        "width": width,
        "has_gt": False,
        "pseudo": True,
        "depth_scale": depth_scale,
        "invalid_value": 0,
        "focal": focal,
        "source_key": key,
        "source_size": source_size,
    }


def encode_sample(
    key: str,
    rgb: np.ndarray,
    depth: np.ndarray,
    confidence: np.ndarray | None,
    meta: dict[str, Any],
) -> EncodedSample:
    """The shard files of one sample: rgb (H, W, 3) uint8, depth and confidence (H, W) uint16."""
    sample: EncodedSample = {
        "__key__": key,
        "rgb.png": images.encode_rgb_png(rgb),
        "pseudo.png": images.encode_depth(depth),
        "meta.json": json.dumps(meta, sort_keys=True).encode(),
    }
    if confidence is not None:
        sample["confidence.png"] = images.encode_depth(confidence)
    return sample


def digest(obj: Any) -> str:
    """Hex sha256 of `obj` as canonical JSON."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()
