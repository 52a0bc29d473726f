"""Learning-rate schedule: linear warm-up, then polynomial decay to `end_lr_ratio` (BTS/NeWCRFs)."""

from __future__ import annotations

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from kdplatform.config.schema import OptimConfig


def lr_factor(step: int, *, total: int, cfg: OptimConfig) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based) of `total`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(total - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.end_lr_ratio + (1 - cfg.end_lr_ratio) * (1 - progress) ** cfg.poly_power


def poly_scheduler(optimizer: Optimizer, *, total: int, cfg: OptimConfig) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_factor(step, total=total, cfg=cfg))
