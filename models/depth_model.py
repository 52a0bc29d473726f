"""`DepthModel`: pyramid encoder → decoder → depth head. Students and teachers are both this class;
they differ in the encoder (efficient CNN vs transformer) and decoder (LG vs DPT)."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import nn

from depthkd.models.heads import DepthHead
from depthkd.models.layers import pad_to_multiple

if TYPE_CHECKING:  # annotations only: importing this module does not load timm
    from depthkd.models.backbones import Backbone, ViTBackbone
    from depthkd.models.decoders import DPTDecoder, LGDecoder


class DepthOutput(NamedTuple):
    """Depth plus the intermediate maps that distillation losses read."""

    depth: torch.Tensor  # (B, 1, H, W) metres
    features: list[torch.Tensor]  # encoder pyramid = decoder input, finest first, NCHW


class DepthModel(nn.Module):
    """Monocular metric depth from an RGB batch in [0, 1], normalised inside with ImageNet stats.

    Args:
        backbone: pyramid encoder with `feature_info`.
        decoder: maps the pyramid to a 1/4-scale map with `out_channels` channels.
        head: depth head on that map.
        arch: registry name and builder arguments, stored so checkpoints describe themselves.
    """

    mean: torch.Tensor  # (1, 3, 1, 1) buffers, registered in __init__
    std: torch.Tensor

    def __init__(
        self,
        backbone: Backbone | ViTBackbone,
        decoder: LGDecoder | DPTDecoder,
        head: DepthHead,
        *,
        arch: dict | None = None,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.decoder = decoder
        self.head = head
        self.arch = dict(arch or {})
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1), False)
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1), False)

    @property
    def max_depth(self) -> float:
        return self.head.max_depth

    def encode(self, image: torch.Tensor) -> list[torch.Tensor]:
        """The encoder pyramid of an RGB batch `(B, 3, H, W)` in [0, 1]."""
        return self.backbone((image - self.mean) / self.std)

    def forward(
        self, image: torch.Tensor, return_features: bool = False
    ) -> torch.Tensor | DepthOutput:
        """Depth `(B, 1, H, W)` in metres, or a `DepthOutput` when `return_features` is set
        (a flag rather than a second method so DDP sees every call). Any input size works: the
        image is padded to the encoder's `input_multiple` and the depth cropped back; the
        features are those of the padded image."""
        height, width = image.shape[-2:]
        padded = pad_to_multiple(image, self.backbone.input_multiple)
        feats = self.encode(padded)
        decoded = self.decoder(feats)
        depth = self.head(decoded, padded.shape[-2:])[..., :height, :width]
        return DepthOutput(depth, feats) if return_features else depth
