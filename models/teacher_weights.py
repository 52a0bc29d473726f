"""Depth teachers trained outside depthkd: a state dict whose keys a key map renames onto ours.

A depthkd teacher (`depthkd.models.zoo.build_teacher`) has three parts; its state dict keys start
with their names: `backbone.` (the timm encoder inside our pyramid wrapper, `backbone.body.` for
timm's own keys), `decoder.` (DPT decoder) and `head.` (depth head). `TeacherConfig.key_map`
maps prefixes of the external file onto these: the longest matching prefix wins, and a prefix
mapped to "" drops those keys (an auxiliary head the teacher does not have). The load is strict:
a key left over or missing is an error that lists them, so a wrong map never trains from a
half-loaded teacher.
"""

from __future__ import annotations

from pathlib import Path

import torch

from depthkd.config.schema import TeacherConfig
from depthkd.errors import CheckpointError
from depthkd.models.backbones import load_state_dict, mismatch_lines
from depthkd.models.depth_model import DepthModel
from depthkd.models.zoo import build_teacher


def rename_keys(state: dict[str, torch.Tensor], key_map: dict[str, str]) -> dict[str, torch.Tensor]:
    """`state` with each key's longest prefix in `key_map` replaced; keys mapped to "" dropped."""
    prefixes = sorted(key_map, key=len, reverse=True)
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        prefix = next((p for p in prefixes if key.startswith(p)), None)
        if prefix is None:
            renamed[key] = value
        elif key_map[prefix]:
            renamed[key_map[prefix] + key.removeprefix(prefix)] = value
    return renamed


def load_external_teacher(path: Path, cfg: TeacherConfig, *, max_depth: float) -> DepthModel:
    """The teacher `cfg` describes, with the weights of the state dict at `path` renamed by
    `cfg.key_map`; raises CheckpointError naming missing, unexpected or misshapen keys."""
    state = rename_keys(load_state_dict(Path(path)), cfg.key_map)
    model = build_teacher(
        cfg.model_copy(update={"weights": None, "pretrained": False}), max_depth=max_depth
    )
    ours = model.state_dict()
    missing = [k for k in ours if k not in state]
    unexpected = [k for k in state if k not in ours]
    misshapen = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in ours.items()
        if k in state and state[k].shape != v.shape
    ]
    problems = mismatch_lines(missing, unexpected, misshapen)
    if problems:
        raise CheckpointError(
            f"state dict {path} does not fit teacher {cfg.name!r}: " + "; ".join(problems),
            hint="map the file's key prefixes onto backbone. / decoder. / head. with "
            "model.teacher.key_map (docs/training.md: the teacher)",
        )
    model.load_state_dict(state)
    return model.eval()
