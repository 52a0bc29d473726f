"""What cached pseudo-labels buy: the student's step with them against the same step with the
teacher labelling the unlabeled rows online (`depthkd bench pseudo-cache`).

Both sides are the config's `distill` stage (its student, optimizer and poly schedule) on the
same in-memory batch: `data.batch_size` labeled rows plus `distill.unlabeled_ratio` times as many
unlabeled rows, at the config's frame size. The cached side reads the unlabeled rows' targets
from the batch, as a job does after `depthkd pseudo-label`; the online side first runs the frozen
teacher on those rows inside the step (what the step costs when the teacher is not cached), then
the identical step. The targets are the same tensors on both sides, so both start from the same
init and end with the same loss: the final losses are kept as that check.

Warm-up steps are not timed; the sides alternate (cached first in even rounds) so other load on
the machine hits both alike. Figures: median frames/s (labeled + unlabeled rows) and the ratio
cached / online.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from depthkd.config.loader import with_values
from depthkd.config.schema import ExperimentConfig
from depthkd.console import Log
from depthkd.data.loader import unlabeled_batch_size
from depthkd.errors import ConfigError
from depthkd.models.kinds import ModelKind
from depthkd.tracking.references import load_model_reference
from depthkd.train.profile import DataProfile, family_profile
from depthkd.train.schedule import build_optimizer, poly_scheduler
from depthkd.train.stages import STAGES, Batch


@dataclass
class PseudoCacheBenchResult:
    """Median frames/s of each side over rounds, and what they ran."""

    student: str
    teacher: str
    size: list[int]
    labeled_rows: int
    unlabeled_rows: int
    steps: int
    threads: int
    rounds: int
    cached_frames_per_s: float
    online_frames_per_s: float
    cached_rounds: list[float]
    online_rounds: list[float]
    cached_final_loss: float
    online_final_loss: float

    @property
    def ratio(self) -> float:
        return self.cached_frames_per_s / self.online_frames_per_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def _batch(labeled: int, unlabeled: int, size: tuple[int, int], max_depth: float) -> Batch:
    """Random frames: GT on the labeled rows, none (0) on the unlabeled ones."""
    generator = torch.Generator().manual_seed(0)
    rows = labeled + unlabeled
    image = torch.rand((rows, 3, *size), generator=generator)
    depth = torch.zeros((rows, 1, *size))
    depth[:labeled] = 1 + (max_depth - 1) * torch.rand((labeled, 1, *size), generator=generator)
    return {
        "image": image,
        "depth": depth,
        "valid": depth > 0,
        "confidence": torch.ones_like(depth),
    }


@torch.no_grad()
def _teacher_targets(teacher: nn.Module, batch: Batch, labeled: int) -> torch.Tensor:
    """The teacher's depth on the unlabeled rows, 0 (no target) on the labeled ones."""
    out = teacher(batch["image"][labeled:])
    depth = out if isinstance(out, torch.Tensor) else out.depth  # an acclimated teacher's output
    return torch.cat([torch.zeros_like(batch["depth"][:labeled]), depth])


def _timed(
    cfg: ExperimentConfig,
    profile: DataProfile,
    batch: Batch,
    label: Callable[[Batch], None],
    *,
    steps: int,
    warmup: int,
) -> tuple[float, float]:
    """(seconds of the timed steps, final loss); `label` fills `batch["pseudo"]` each step."""
    torch.manual_seed(cfg.seed)
    stage = STAGES.get("distill").build(cfg, profile, {})
    model = stage.model.train()
    optimizer = build_optimizer(stage)
    scheduler = poly_scheduler(optimizer, total=warmup + steps, cfg=stage.cfg.optim)
    start, loss = time.perf_counter(), float("nan")
    for index in range(warmup + steps):  # the worker loop's step, without data loading
        if index == warmup:
            start = time.perf_counter()
        label(batch)
        stage.on_step(model, index)
        terms = stage.step(model, batch, index)
        terms["loss"].backward()
        if cfg.train.grad_clip:
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        scheduler.step()
        loss = float(terms["loss"].detach())
    return time.perf_counter() - start, loss


def run_pseudo_cache_benchmark(
    cfg: ExperimentConfig,
    *,
    steps: int = 10,
    warmup: int = 2,
    rounds: int = 3,
    threads: int = 2,
    log: Log = print,
) -> PseudoCacheBenchResult:
    """Times the cached and the online step alternately; needs `model.teacher.checkpoint`."""
    if cfg.model.teacher.checkpoint is None:
        raise ConfigError(
            "bench pseudo-cache labels with the config's teacher: set model.teacher.checkpoint"
        )
    synthetic = cfg.data.synthetic
    size = (synthetic.height, synthetic.width)
    if cfg.data.shards is not None or None in size:
        raise ConfigError(
            "bench pseudo-cache times the bundled synthetic frames: unset data.shards and set "
            "data.synthetic.height and width (the frame size)"
        )
    ratio = cfg.distill.unlabeled_ratio
    if not ratio > 0:
        raise ConfigError(
            "bench pseudo-cache needs distill.unlabeled_ratio > 0 (unlabeled rows to label)"
        )
    labeled = cfg.data.batch_size
    unlabeled = unlabeled_batch_size(labeled, ratio)
    teacher = load_model_reference(cfg.model.teacher.checkpoint, expect=ModelKind.TEACHER)
    teacher.eval().requires_grad_(False)
    profile = family_profile(cfg, synthetic.layout)
    # the cached objective: ground truth plus the teacher's depth on the unlabeled rows
    cfg = with_values(
        cfg,
        {"distill.losses": {"silog": 1.0, "pseudo_silog": 1.0}, "distill.unlabeled_ratio": ratio},
    )
    batch = _batch(labeled, unlabeled, size, profile.max_depth)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        cached = _teacher_targets(teacher, batch, labeled)

        def from_cache(b: Batch) -> None:
            b["pseudo"] = cached

        def online(b: Batch) -> None:
            b["pseudo"] = _teacher_targets(teacher, b, labeled)

        sides = {"cached": from_cache, "online": online}
        rates: dict[str, list[float]] = {"cached": [], "online": []}
        losses: dict[str, float] = {}
        for r in range(rounds):
            for side in ("cached", "online") if r % 2 == 0 else ("online", "cached"):
                seconds, losses[side] = _timed(
                    cfg, profile, batch, sides[side], steps=steps, warmup=warmup
                )
                rates[side].append(steps * (labeled + unlabeled) / seconds)
                log(
                    f"  round {r + 1}/{rounds} {side:6s} {rates[side][-1]:7.1f} frames/s "
                    f"(final loss {losses[side]:.4f})"
                )
    finally:
        torch.set_num_threads(previous_threads)
    return PseudoCacheBenchResult(
        student=cfg.model.student.name,
        teacher=str(cfg.model.teacher.checkpoint),
        size=list(size),
        labeled_rows=labeled,
        unlabeled_rows=unlabeled,
        steps=steps,
        threads=threads,
        rounds=rounds,
        cached_frames_per_s=statistics.median(rates["cached"]),
        online_frames_per_s=statistics.median(rates["online"]),
        cached_rounds=rates["cached"],
        online_rounds=rates["online"],
        cached_final_loss=losses["cached"],
        online_final_loss=losses["online"],
    )
