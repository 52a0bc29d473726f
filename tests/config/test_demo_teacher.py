"""The shipped demo teacher is the file its sha256 names and the model the demo config asks for."""

from __future__ import annotations

from pathlib import Path

import torch

from depthkd.config.files import DEFAULT_CONFIG
from depthkd.config.loader import load_config
from depthkd.data.constants import KITTI_MAX_DEPTH
from depthkd.data.shards import sha256_file
from depthkd.models.serialization import load_model
from depthkd.models.zoo import arch_mismatch

REPO = Path(__file__).resolve().parents[2]


def test_the_shipped_teacher_matches_its_sha256_and_the_demo_config() -> None:
    cfg = load_config(DEFAULT_CONFIG)
    path = REPO / cfg.model.teacher.checkpoint
    recorded, name = path.with_name(f"{path.name}.sha256").read_text().split()
    assert name == path.name and sha256_file(path) == recorded
    teacher = load_model(path, expect="teacher")
    assert teacher.arch["config"]["name"] == cfg.model.teacher.name
    # written before the teacher config had `source`: still the architecture the config asks for
    written = torch.load(path, map_location="cpu", weights_only=True)["arch"]["config"]
    assert "source" not in written and arch_mismatch(written, cfg.model.teacher) == []
    assert teacher.arch["max_depth"] == KITTI_MAX_DEPTH  # the demo's KITTI-like frames
    assert tuple(teacher.meta["input_size"]) == (
        cfg.data.synthetic.height,
        cfg.data.synthetic.width,
    )
