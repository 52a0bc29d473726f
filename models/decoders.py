"""Top-down decoders that turn a four-scale pyramid into a 1/4-scale feature map.

* `LGDecoder` — the light student decoder built from LG blocks. The ghost decoder of acclimation
  is another instance of this class with the student's configuration.
* `DPTDecoder` — the teacher decoder: DPT's refinenet fusion (residual conv units at a constant
  width), the heavy, accurate kind of decoder transformer depth models carry.

Both take the pyramid finest-first (1/4 … 1/32) and return `(B, out_channels, H/4, W/4)`; heads
(`models/heads.py`) turn that into depth or confidence at input size.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

from depthkd.models.layers import ConvBNAct, resize_to
from depthkd.models.lg import LGBlock


class LGDecoder(nn.Module):
    """Lateral 1×1 projections, top-down upsampling and one LG block per scale.

    Args:
        in_channels: encoder channels per scale, finest first.
        channels: decoder width per scale, finest first.
        use_global: LG blocks with (True) or without (False) their global path.
        reduction: LG global MLP reduction.
    """

    def __init__(
        self,
        in_channels: Sequence[int],
        channels: Sequence[int],
        *,
        use_global: bool = True,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        if len(in_channels) != len(channels):
            raise ValueError(
                f"{len(in_channels)} encoder scales but {len(channels)} decoder widths"
            )
        self.in_channels = tuple(in_channels)
        self.channels = tuple(channels)
        self.out_channels = channels[0]
        self.lateral = nn.ModuleList(
            ConvBNAct(i, c, 1) for i, c in zip(in_channels, channels, strict=True)
        )
        # top-down: the coarser decoder state is narrowed to this scale's width before fusion
        self.narrow = nn.ModuleList(
            ConvBNAct(coarse, fine, 1, act=False) for fine, coarse in itertools.pairwise(channels)
        )
        self.blocks = nn.ModuleList(
            LGBlock(c, reduction=reduction, use_global=use_global) for c in channels
        )

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        x = self.blocks[-1](self.lateral[-1](feats[-1]))  # (B, C3, H/32, W/32)
        for level in range(len(feats) - 2, -1, -1):
            skip = self.lateral[level](feats[level])
            x = self.narrow[level](resize_to(x, skip.shape[-2:]))
            x = self.blocks[level](x + skip)
        return x  # (B, C0, H/4, W/4)


class ResidualConvUnit(nn.Module):
    """DPT's residual conv unit: `x + conv(relu(conv(relu(x))))`, 3×3 convs at a fixed width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class FusionBlock(nn.Module):
    """DPT's feature fusion: refine the skip, add the upsampled coarser path, refine, project."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.skip_unit = ResidualConvUnit(channels)
        self.out_unit = ResidualConvUnit(channels)
        self.project = nn.Conv2d(channels, channels, 1)

    def forward(self, coarse: torch.Tensor | None, skip: torch.Tensor) -> torch.Tensor:
        x = self.skip_unit(skip)
        if coarse is not None:
            x = x + resize_to(coarse, skip.shape[-2:])
        return self.project(self.out_unit(x))


class DPTDecoder(nn.Module):
    """DPT-style decoder: 3×3 projections of every scale to one width, then fusion blocks.

    Args:
        in_channels: encoder channels per scale, finest first.
        width: the decoder's constant width (DPT uses 256).
    """

    def __init__(self, in_channels: Sequence[int], *, width: int = 128) -> None:
        super().__init__()
        self.in_channels = tuple(in_channels)
        self.out_channels = width
        self.project = nn.ModuleList(
            nn.Conv2d(c, width, 3, padding=1, bias=False) for c in in_channels
        )
        self.fusion = nn.ModuleList(FusionBlock(width) for _ in in_channels)

    def forward(self, feats: Sequence[torch.Tensor]) -> torch.Tensor:
        coarsest = len(feats) - 1
        x = self.fusion[coarsest](None, self.project[coarsest](feats[coarsest]))
        for level in range(coarsest - 1, -1, -1):
            x = self.fusion[level](x, self.project[level](feats[level]))
        return x  # (B, width, H/4, W/4)
