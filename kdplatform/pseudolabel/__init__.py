"""Pseudo-labels: a frozen depth teacher labels unlabeled RGB shards on Ray Data.

* `format`: the output sample and the `pseudo_labels` manifest record (depth scale, confidence).
* `teacher`: a teacher reference → a local model file, its fingerprint, its depth (+confidence).
* `source`: the source split, its fingerprint and frame size; `reader`: its shards as Ray rows.
* `labeler`: the per-batch work (decode, resize, predict, quantise, encode) and the Ray actor.
* `progress`: the resume record and the fingerprint checks of an output directory.
* `writer`: a finished shard's tar (temporary name, then renamed).
* `runner`: `label_shards`, the Ray Data pass from source shards to a verified pseudo-label set.

`label_shards` and `PseudoLabelReport` are imported on first use: Ray's read workers import
`reader` alone, without torch.
"""

from typing import Any

__all__ = ["PseudoLabelReport", "label_shards"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from depthkd.pseudolabel import runner

        return getattr(runner, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
