"""Optimizer and learning-rate schedule of a stage: AdamW / Adam with the encoder at
`backbone_lr_mult`, linear warm-up, then polynomial decay to `end_lr_ratio` (BTS/NeWCRFs)."""

from __future__ import annotations

import torch
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

from depthkd.config.schema import OptimConfig
from depthkd.train.stages import Stage


def lr_factor(step: int, *, total: int, cfg: OptimConfig) -> float:
    """Multiplier of the base lr at optimizer step `step` (0-based) of `total`."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    span = max(total - cfg.warmup_steps, 1)
    progress = min((step - cfg.warmup_steps) / span, 1.0)
    return cfg.end_lr_ratio + (1 - cfg.end_lr_ratio) * (1 - progress) ** cfg.poly_power


def poly_scheduler(optimizer: Optimizer, *, total: int, cfg: OptimConfig) -> LambdaLR:
    return LambdaLR(optimizer, lambda step: lr_factor(step, total=total, cfg=cfg))


def build_optimizer(stage: Stage) -> Optimizer:
    """AdamW / Adam over the stage's trainable parameters, the encoder at `backbone_lr_mult`."""
    optim = stage.cfg.optim
    params = [p for p in stage.model.parameters() if p.requires_grad]
    encoder = [p for p in params if id(p) in stage.encoder_params]
    rest = [p for p in params if id(p) not in stage.encoder_params]
    groups = [
        {"params": encoder, "lr": optim.lr * optim.backbone_lr_mult},
        {"params": rest, "lr": optim.lr},
    ]
    cls = torch.optim.AdamW if optim.name == "adamw" else torch.optim.Adam
    return cls([g for g in groups if g["params"]], weight_decay=optim.weight_decay)


def stage_scheduler(stage: Stage, optimizer: Optimizer) -> LambdaLR:
    """The poly schedule over the stage's steps."""
    return poly_scheduler(optimizer, total=stage.cfg.steps, cfg=stage.cfg.optim)
