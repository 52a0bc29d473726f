"""The picture a finished job ends with: a few held-out frames as RGB | ground truth | teacher |
student | student error, labelled, with a depth colour bar in metres and an error colour bar.

Depth columns share one fixed scale [0, max_depth] (near = bright, as in the training grids of
`depthkd.eval.grids`); the error column is the student's abs-rel error on the pixels
with ground truth, saturating at `ABS_REL_RANGE`. Pixels without ground truth are black.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from depthkd.config.schema import DataConfig
from depthkd.data.loader import eval_loader
from depthkd.eval.grids import ABS_REL_RANGE, DEPTH_CMAP, ERROR_CMAP
from depthkd.storage import Location

Predictor = Callable[[torch.Tensor], torch.Tensor]


def first_frames(shards: Location, split: str, data: DataConfig, n: int) -> dict[str, torch.Tensor]:
    """The first `n` frames of `split` as the evaluator sees them (image, depth, valid)."""
    stream = eval_loader(shards, split, data.model_copy(update={"eval_batch_size": n}))
    batch = next(iter(stream))
    return {k: v[:n] for k, v in batch.items() if torch.is_tensor(v)}


def write_job_preview(
    path: Path,
    frames: dict[str, torch.Tensor],
    predictors: dict[str, Predictor],
    *,
    max_depth: float,
    title: str,
) -> Path:
    """Writes the preview of `frames` for `predictors` (`{"teacher": f, "student": f}`, each
    `images -> depth (B, 1, H, W)`); the error column belongs to the last predictor."""
    from matplotlib import colormaps
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure

    with torch.inference_mode():
        predictions = {name: f(frames["image"]).float().cpu() for name, f in predictors.items()}
    images = frames["image"].cpu().numpy().transpose(0, 2, 3, 1).clip(0, 1)
    gt = frames["depth"].cpu().numpy()[:, 0]
    valid = frames["valid"].cpu().numpy()[:, 0] & (gt > 0)
    last = predictions[list(predictors)[-1]].numpy()[:, 0]
    error = np.where(valid, np.abs(last - gt) / np.where(valid, gt, 1.0), np.nan)

    depth_cmap = colormaps[DEPTH_CMAP].with_extremes(bad="black")
    error_cmap = colormaps[ERROR_CMAP].with_extremes(bad="black")
    columns = ["RGB", "ground truth", *predictors, f"{list(predictors)[-1]} abs-rel error"]
    rows, (height, width) = len(images), gt.shape[-2:]
    cell = 2.2
    figure = Figure(
        figsize=(cell * len(columns) + 1.2, cell * height / width * rows + 0.9),
        layout="constrained",
    )
    FigureCanvasAgg(figure)
    figure.suptitle(title, fontsize=10)
    axes = figure.subplots(rows, len(columns), squeeze=False)
    depth_norm, error_norm = Normalize(0, max_depth), Normalize(0, ABS_REL_RANGE)
    for r in range(rows):
        maps = [np.where(valid[r], gt[r], np.nan), *(p.numpy()[r, 0] for p in predictions.values())]
        axes[r][0].imshow(images[r])
        for c, shown in enumerate(maps, start=1):
            axes[r][c].imshow(shown, cmap=depth_cmap, norm=depth_norm)
        axes[r][-1].imshow(error[r], cmap=error_cmap, norm=error_norm)
    for c, name in enumerate(columns):
        axes[0][c].set_title(name, fontsize=9)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.colorbar(
        ScalarMappable(depth_norm, depth_cmap), ax=axes[:, 1:-1], shrink=0.8, label="depth (m)"
    )
    figure.colorbar(
        ScalarMappable(error_norm, error_cmap), ax=axes[:, -1], shrink=0.8, label="abs-rel error"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp.png")
    figure.savefig(tmp, dpi=110)
    tmp.replace(path)
    return path
