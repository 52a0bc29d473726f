"""The local-global (LG) block of the student decoder (DisDepth's local-global convolution).

The paper's exact equations are not public; this is our formulation (DESIGN.md §3):

* local path: depthwise 3×3 → BN → ReLU → pointwise 1×1 → BN, the cheap spatial detail;
* global path: global average pool → MLP (C → C/r → 2C) giving a per-channel gate and a
  per-channel context vector; the gate re-weights the local features and the context is
  broadcast back into every pixel: `y = ReLU(x + local(x) · σ(g) + c)`.

The global path costs O(C²/r) per image plus two elementwise passes, a small fraction of the
block. `use_global=False` drops it (the ablation "local only").
"""

from __future__ import annotations

import torch
from torch import nn

from depthkd.models.layers import ConvBNAct


class LGBlock(nn.Module):
    """Residual local-global block that keeps the channel count and size of its input.

    Args:
        channels: input and output channels.
        reduction: hidden size of the global MLP is `max(channels // reduction, 8)`.
        use_global: False turns the global path off.
    """

    def __init__(self, channels: int, *, reduction: int = 4, use_global: bool = True) -> None:
        super().__init__()
        self.local = nn.Sequential(
            ConvBNAct(channels, channels, 3, groups=channels),
            ConvBNAct(channels, channels, 1, act=False),
        )
        self.use_global = use_global
        if use_global:
            hidden = max(channels // reduction, 8)
            self.context = nn.Sequential(
                nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, 2 * channels)
            )
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        local = self.local(x)  # (B, C, H, W)
        if self.use_global:
            gate, context = self.context(x.mean(dim=(2, 3))).chunk(2, dim=1)  # 2 × (B, C)
            local = local * torch.sigmoid(gate)[..., None, None] + context[..., None, None]
        return self.act(x + local)
