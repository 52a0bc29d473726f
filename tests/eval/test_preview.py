"""The preview a job ends with: every frame and column drawn, written atomically."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from depthkd.eval.preview import write_job_preview


def test_preview_draws_each_frame_and_column(tmp_path) -> None:
    depth = torch.linspace(1, 9, 32 * 48).reshape(1, 1, 32, 48).repeat(2, 1, 1, 1)
    frames = {"image": torch.rand(2, 3, 32, 48), "depth": depth, "valid": depth > 2}
    perfect, far = (lambda x: depth), (lambda x: torch.full_like(depth, 9.5))
    path = write_job_preview(
        tmp_path / "preview.png",
        frames,
        {"teacher": perfect, "student": far},
        max_depth=10.0,
        title="job t: test frames",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["preview.png"]  # no temporary left
    with Image.open(path) as image:
        pixels = np.asarray(image.convert("RGB")).astype(int)
    # five columns side by side, two rows: wider than tall, and not a blank canvas
    assert pixels.shape[1] > 2 * pixels.shape[0]
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 100
