"""Teacher acclimation (DisDepth): the ghost decoder and the adapters that feed it.

The ghost decoder is an instance of the student's decoder class with the student's configuration.
Per-scale adapters (resize to the student's stride, 1×1 conv + BN) map the teacher's pyramid onto
the channels and strides the student decoder expects, so after acclimation the adapted teacher
features have exactly the shape of the student's decoder inputs and attentive KD compares them
one to one. `AcclimatedTeacher` runs the teacher's encoder once and feeds both its own decoder and
the ghost decoder.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple, cast

import torch
from torch import nn

from depthkd.models.backbones import PYRAMID_REDUCTIONS
from depthkd.models.decoders import LGDecoder
from depthkd.models.depth_model import DepthModel, DepthOutput
from depthkd.models.heads import DepthHead
from depthkd.models.hf_teachers import ExternalDepthModel
from depthkd.models.layers import ConvBNAct, resize_to


def student_pyramid_sizes(height: int, width: int) -> list[tuple[int, int]]:
    """Feature sizes of a student `DepthModel` for an input of `height × width`: it pads to a
    multiple of the coarsest stride, so every scale divides exactly."""
    multiple = PYRAMID_REDUCTIONS[-1]
    height, width = math.ceil(height / multiple) * multiple, math.ceil(width / multiple) * multiple
    return [(height // r, width // r) for r in PYRAMID_REDUCTIONS]


class Adapters(nn.Module):
    """Per scale: resize to the student's feature size, then 1×1 conv + BN to its channels."""

    def __init__(self, teacher_channels: Sequence[int], student_channels: Sequence[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            ConvBNAct(t, s, 1, act=False)
            for t, s in zip(teacher_channels, student_channels, strict=True)
        )

    def forward(
        self, feats: Sequence[torch.Tensor], sizes: Sequence[tuple[int, int]]
    ) -> list[torch.Tensor]:
        return [
            conv(resize_to(f, size)) for conv, f, size in zip(self.convs, feats, sizes, strict=True)
        ]


class GhostDecoder(nn.Module):
    """Adapters + a student-configured `LGDecoder` + depth head, fed by teacher features."""

    def __init__(
        self,
        teacher_channels: Sequence[int],
        student_channels: Sequence[int],
        decoder_channels: Sequence[int],
        *,
        max_depth: float,
        use_global: bool = True,
        reduction: int = 4,
    ) -> None:
        super().__init__()
        self.adapters = Adapters(teacher_channels, student_channels)
        self.decoder = LGDecoder(
            student_channels, decoder_channels, use_global=use_global, reduction=reduction
        )
        self.head = DepthHead(self.decoder.out_channels, max_depth=max_depth)

    def fixed_part(self) -> nn.ModuleList:
        """The decoder and head: what DisDepth copies from the trained student and keeps fixed
        (the adapters in front of them are what acclimation trains)."""
        return nn.ModuleList([self.decoder, self.head])

    def copy_student(self, student: DepthModel) -> None:
        """Loads a trained student's decoder and head into this ghost (same student config)."""
        self.fixed_part().load_state_dict(
            nn.ModuleList([student.decoder, student.head]).state_dict()
        )

    def forward(
        self, teacher_feats: Sequence[torch.Tensor], size: tuple[int, int]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """Ghost depth `(B, 1, *size)` and the adapted features (the student-shaped pyramid) for
        teacher features of an image of `size`."""
        sizes = student_pyramid_sizes(*size)
        adapted = self.adapters(teacher_feats, sizes)
        padded = (sizes[0][0] * PYRAMID_REDUCTIONS[0], sizes[0][1] * PYRAMID_REDUCTIONS[0])
        depth = self.head(self.decoder(adapted), padded)[..., : size[0], : size[1]]
        return depth, adapted


class TeacherOutput(NamedTuple):
    depth: torch.Tensor  # (B, 1, H, W) teacher's own head
    ghost_depth: torch.Tensor  # (B, 1, H, W) through the ghost decoder
    features: list[torch.Tensor]  # adapted pyramid, same shapes as the student's decoder inputs


# a depth teacher: depthkd's own, or one from outside behind the same interface
TeacherModel = DepthModel | ExternalDepthModel


class AcclimatedTeacher(nn.Module):
    """A depth teacher plus its ghost decoder: one encoder pass, two depth maps."""

    def __init__(
        self, teacher: TeacherModel, ghost: GhostDecoder, *, arch: dict | None = None
    ) -> None:
        super().__init__()
        self.teacher = teacher
        self.ghost = ghost
        self.arch = dict(arch or {})

    @property
    def max_depth(self) -> float:
        return self.teacher.max_depth

    def forward(self, image: torch.Tensor) -> TeacherOutput:
        height, width = image.shape[-2:]
        # one encoder pass for both heads
        out = cast(DepthOutput, self.teacher(image, return_features=True))
        ghost_depth, adapted = self.ghost(out.features, (height, width))
        return TeacherOutput(out.depth, ghost_depth, adapted)
