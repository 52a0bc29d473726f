"""Per-image depth metrics and their distributed accumulator.

The metrics are the ones every KITTI / NYU paper reports (Eigen et al. 2014, as computed by BTS,
NeWCRFs and Monodepth2): abs_rel, sq_rel, rmse, rmse_log, log10, silog and the threshold
accuracies d1..d3. They are computed per image over the valid pixels and then averaged over images
(not over pixels), which is how those codebases report them.

Everything is computed in float64: silog subtracts two nearly equal numbers, and the one-pass form
`mean(e²) − mean(e)²` of the reference code goes negative (→ NaN) or noisy in float32 when the
prediction is a constant multiple of the ground truth. We use the two-pass form (subtract the mean
first), which is exactly the population variance and never negative.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.distributed as dist

from depthkd.errors import DataError
from depthkd.metric_names import METRIC_NAMES

# Threshold accuracies: fraction of pixels with max(g/p, p/g) < 1.25**k (strict).
DELTA_BASE = 1.25
_LN10 = math.log(10.0)

ArrayLike = torch.Tensor | np.ndarray


def _as_float64(x: ArrayLike) -> torch.Tensor:
    if isinstance(x, np.ndarray):
        x = torch.from_numpy(np.ascontiguousarray(x))
    return x.to(torch.float64)


def metrics_vector(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None) -> torch.Tensor:
    """The metrics of one image as a float64 tensor ordered like `METRIC_NAMES`.

    Args:
        pred: predicted depth in metres, > 0 (already clamped by the protocol).
        gt: ground-truth depth in metres, > 0 where evaluated.
        mask: optional boolean mask of the pixels to evaluate; without it every element of
            `pred` and `gt` is used (they are then usually 1-D, already masked).

    Returns:
        A (9,) float64 tensor on the device of the input; no `.item()` sync happens here, so
        accumulating on a GPU stays asynchronous.

    Raises:
        DataError: when no pixel is selected (the caller should skip such an image).
    """
    p, g = _as_float64(pred), _as_float64(gt)
    if p.shape != g.shape:
        raise DataError(f"prediction {tuple(p.shape)} and ground truth {tuple(g.shape)} differ")
    if mask is not None:
        m = mask if isinstance(mask, torch.Tensor) else torch.from_numpy(np.asarray(mask))
        m = m.to(device=p.device, dtype=torch.bool)
        p, g = p[m], g[m]
    p, g = p.reshape(-1), g.reshape(-1)
    if p.numel() == 0:
        raise DataError("no valid pixel to evaluate")

    diff = g - p
    log_p, log_g = torch.log(p), torch.log(g)
    e = log_p - log_g  # (N,) log error
    e_centred = e - e.mean()  # two-pass variance: p = k·g gives 0, never a negative variance
    variance = torch.clamp((e_centred * e_centred).mean(), min=0.0)
    ratio = torch.maximum(g / p, p / g)
    values = [
        (diff.abs() / g).mean(),  # abs_rel
        (diff * diff / g).mean(),  # sq_rel
        torch.sqrt((diff * diff).mean()),  # rmse
        torch.sqrt((e * e).mean()),  # rmse_log (natural log)
        (e.abs() / _LN10).mean(),  # log10: |log10 p − log10 g| = |ln p − ln g| / ln 10
        100.0 * torch.sqrt(variance),  # silog (λ = 1, ×100 as BTS/NeWCRFs print it)
        *((ratio < DELTA_BASE**k).to(torch.float64).mean() for k in (1, 2, 3)),
    ]
    return torch.stack(values)


def compute_metrics(
    pred: ArrayLike, gt: ArrayLike, mask: ArrayLike | None = None
) -> dict[str, float]:
    """The metrics of one image as a dict keyed by `METRIC_NAMES`.

    Same arguments as `metrics_vector`: `pred` and `gt` in metres (already masked to the valid
    pixels, or with `mask`); torch tensors or numpy arrays of any float dtype.
    """
    return dict(zip(METRIC_NAMES, metrics_vector(pred, gt, mask).tolist(), strict=True))


@dataclass
class MetricSums:
    """Sums of per-image metrics plus image counts, the state of an evaluation in progress.

    Per-image sums (not pixel sums) are what make the result independent of how images are spread
    over ranks: every rank adds its own images, `all_reduce` adds the ranks together, and
    `means()` divides once at the end.

    Attributes:
        sums: (9,) float64 sums ordered like `METRIC_NAMES`.
        n_images: images that contributed (had at least one valid pixel).
        n_skipped: images without ground truth or without a valid pixel.
    """

    sums: torch.Tensor = field(
        default_factory=lambda: torch.zeros(len(METRIC_NAMES), dtype=torch.float64)
    )
    n_images: int = 0
    n_skipped: int = 0

    def add(self, metrics: Mapping[str, float] | torch.Tensor | None) -> None:
        """Adds one image's metrics (dict or `metrics_vector` output); None counts a skip."""
        if metrics is None:
            self.n_skipped += 1
            return
        if isinstance(metrics, torch.Tensor):
            vec = metrics.to(torch.float64)
        else:
            vec = torch.tensor([float(metrics[k]) for k in METRIC_NAMES], dtype=torch.float64)
        if vec.shape != (len(METRIC_NAMES),):
            raise ValueError(f"expected {len(METRIC_NAMES)} metrics, got shape {tuple(vec.shape)}")
        self.sums = self.sums.to(vec.device) + vec
        self.n_images += 1

    def to_tensor(self, device: torch.device | str | None = None) -> torch.Tensor:
        """One float64 tensor `[*sums, n_images, n_skipped]` of shape (11,), for all_reduce.

        Counts are exact in float64 up to 2**53 images.
        """
        counts = torch.tensor([self.n_images, self.n_skipped], dtype=torch.float64)
        out = torch.cat([self.sums.detach().cpu(), counts])
        return out if device is None else out.to(device)

    @classmethod
    def from_tensor(cls, tensor: torch.Tensor) -> MetricSums:
        """Inverse of `to_tensor`."""
        t = tensor.detach().to("cpu", torch.float64)
        if t.shape != (len(METRIC_NAMES) + 2,):
            raise ValueError(f"expected shape ({len(METRIC_NAMES) + 2},), got {tuple(t.shape)}")
        n = len(METRIC_NAMES)
        return cls(
            sums=t[:n].clone(), n_images=round(t[n].item()), n_skipped=round(t[n + 1].item())
        )

    def merge(self, other: MetricSums) -> MetricSums:
        """A new accumulator holding both (self and other are unchanged)."""
        return MetricSums(
            sums=self.sums.detach().cpu() + other.sums.detach().cpu(),
            n_images=self.n_images + other.n_images,
            n_skipped=self.n_skipped + other.n_skipped,
        )

    def all_reduce(self, group: dist.ProcessGroup | None = None) -> MetricSums:
        """The sums over all ranks of `group`; a copy of self when no process group is running.

        Every rank must call it (it is a collective). NCCL reduces only CUDA tensors, so the
        tensor goes to the current CUDA device there and stays on the CPU for gloo.
        """
        if not (dist.is_available() and dist.is_initialized()):
            return MetricSums.from_tensor(self.to_tensor())
        device = (
            torch.device("cuda", torch.cuda.current_device())
            if dist.get_backend(group) == dist.Backend.NCCL
            else torch.device("cpu")
        )
        tensor = self.to_tensor(device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM, group=group)
        return MetricSums.from_tensor(tensor)

    def means(self) -> dict[str, float]:
        """Per-image means keyed by `METRIC_NAMES`.

        Raises:
            DataError: when no image was evaluated. We raise rather than return zeros or NaN: a
                table of zeros reads like a perfect score (d1 = 0 like a terrible one), and a run
                where every image was skipped is almost always a wrong GT path or scale.
        """
        if self.n_images == 0:
            raise DataError(
                f"no image had a valid ground-truth pixel ({self.n_skipped} skipped), "
                "so there is nothing to average",
                hint="check the ground-truth directory and depth scale",
            )
        means = (self.sums.detach().cpu() / self.n_images).tolist()
        return dict(zip(METRIC_NAMES, means, strict=True))
