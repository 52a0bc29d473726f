"""Heads that turn a 1/4-scale decoder map into a full-resolution depth or confidence map."""

from __future__ import annotations

import torch
from torch import nn

from depthkd.models.layers import ConvBNAct, resize_to


class _MapHead(nn.Module):
    """3×3 conv-BN-ReLU → 1×1 conv to one channel → upsample to the input size (logits)."""

    def __init__(self, in_channels: int, hidden: int | None = None) -> None:
        super().__init__()
        hidden = hidden or in_channels
        self.body = nn.Sequential(ConvBNAct(in_channels, hidden, 3), nn.Conv2d(hidden, 1, 1))

    def logits(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return resize_to(self.body(x), size)  # (B, 1, H, W)


class DepthHead(_MapHead):
    """Metric depth in (0, max_depth): `max_depth · sigmoid(logits)`, at the input size."""

    def __init__(self, in_channels: int, *, max_depth: float, hidden: int | None = None) -> None:
        super().__init__(in_channels, hidden)
        self.max_depth = float(max_depth)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return self.max_depth * torch.sigmoid(self.logits(x, size))


class ConfidenceHead(_MapHead):
    """Pixel-wise confidence in (0, 1) of a branch's own depth (URCDC's uncertainty head)."""

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        return torch.sigmoid(self.logits(x, size))
