"""Small building blocks shared by models: conv + norm + activation, resizing, input padding."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ConvBNAct(nn.Sequential):
    """`conv(k×k, groups) → BatchNorm → ReLU` (activation optional), padded to keep the size."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 1,
        *,
        stride: int = 1,
        groups: int = 1,
        act: bool = True,
    ) -> None:
        super().__init__(
            nn.Conv2d(
                in_channels,
                out_channels,
                kernel_size,
                stride=stride,
                padding=kernel_size // 2,
                groups=groups,
                bias=False,
            ),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True) if act else nn.Identity(),
        )


def resize_to(x: torch.Tensor, size: tuple[int, int] | torch.Size) -> torch.Tensor:
    """Bilinear resize of a feature map to `size` (no-op when it already has that size)."""
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False)


def pad_to_multiple(image: torch.Tensor, multiple: int) -> torch.Tensor:
    """Replicate-pads `(B, C, H, W)` at the bottom and right up to multiples of `multiple`, so any
    frame (KITTI's 375×1242) fits encoders that need divisible sizes; callers crop the output."""
    h, w = image.shape[-2:]
    # no shortcut for sizes that need no padding: an exported graph (ONNX, dynamic H and W) must
    # keep the padding arithmetic rather than the branch taken at the export size
    return F.pad(image, (0, -w % multiple, 0, -h % multiple), mode="replicate")
