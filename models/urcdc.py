"""URCDC-Depth's dual branch: a transformer branch and a CNN branch trained jointly.

Each branch has a depth head and a confidence (uncertainty) head. Coupling units pass the
transformer's features into the CNN branch at every scale (DESIGN.md §3):

    y = ReLU(BN(W_up→down(ReLU(BN(W3x3(ReLU(BN(W1x1 x_c)) + ReLU(BN(sg(x_t)))))))) + x_c)

with the transformer features detached (sg), and the whole coupling bypassed with probability
`p_bypass` per forward pass (URCDC: 0.05). The deployed student must run without a teacher, so the
training loop anneals `p_bypass` towards 1, evaluation always bypasses, and `export_student()`
returns the plain student `DepthModel`, whose state holds no teacher or coupling keys.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn

from depthkd.models.depth_model import DepthModel
from depthkd.models.heads import ConfidenceHead
from depthkd.models.layers import ConvBNAct, pad_to_multiple, resize_to


class CouplingUnit(nn.Module):
    """Fuses a detached transformer feature `x_t` into a CNN feature `x_c` at one scale.

    The inner width is the transformer's channel count, as in the formula; `x_t` is resized to
    `x_c`'s size when the strides round differently.
    """

    def __init__(self, cnn_channels: int, transformer_channels: int) -> None:
        super().__init__()
        self.cnn_in = ConvBNAct(cnn_channels, transformer_channels, 1)
        self.transformer_in = nn.Sequential(
            nn.BatchNorm2d(transformer_channels), nn.ReLU(inplace=True)
        )
        self.mix = ConvBNAct(transformer_channels, transformer_channels, 3)
        self.up_to_down = ConvBNAct(transformer_channels, cnn_channels, 1, act=False)
        self.act = nn.ReLU(inplace=True)

    def forward(self, x_c: torch.Tensor, x_t: torch.Tensor) -> torch.Tensor:
        t = self.transformer_in(resize_to(x_t.detach(), x_c.shape[-2:]))
        return self.act(self.up_to_down(self.mix(self.cnn_in(x_c) + t)) + x_c)


class DualOutput(NamedTuple):
    teacher_depth: torch.Tensor  # (B, 1, H, W)
    teacher_confidence: torch.Tensor  # (B, 1, H, W) in (0, 1)
    student_depth: torch.Tensor
    student_confidence: torch.Tensor
    coupled: bool  # whether the coupling units ran in this pass


class CrossDistillModel(nn.Module):
    """Transformer branch + CNN branch with confidence heads and coupling units.

    Args:
        teacher: the transformer branch.
        student: the CNN branch; what `export_student()` returns.
        p_bypass: probability that a training forward pass skips the coupling units.
    """

    def __init__(self, teacher: DepthModel, student: DepthModel, *, p_bypass: float = 0.05) -> None:
        super().__init__()
        self.teacher = teacher
        self.student = student
        self.couplings = nn.ModuleList(
            CouplingUnit(c, t)
            for c, t in zip(
                student.backbone.feature_info.channels,
                teacher.backbone.feature_info.channels,
                strict=True,
            )
        )
        self.teacher_confidence = ConfidenceHead(teacher.decoder.out_channels)
        self.student_confidence = ConfidenceHead(student.decoder.out_channels)
        self.p_bypass = p_bypass

    @property
    def p_bypass(self) -> float:
        return self._p_bypass

    @p_bypass.setter
    def p_bypass(self, value: float) -> None:
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"p_bypass must be in [0, 1], got {value}")
        self._p_bypass = float(value)

    def forward(self, image: torch.Tensor, bypass: bool | None = None) -> DualOutput:
        """Both branches on one batch. `bypass=None` draws it (training) or bypasses (eval); the
        training loop may pass it explicitly so that all ranks agree."""
        if bypass is None:
            bypass = not self.training or bool(torch.rand(()) < self.p_bypass)
        height, width = image.shape[-2:]
        t_image = pad_to_multiple(image, self.teacher.backbone.input_multiple)
        t_feats = self.teacher.encode(t_image)
        t_map = self.teacher.decoder(t_feats)
        s_image = pad_to_multiple(image, self.student.backbone.input_multiple)
        s_feats = self.student.encode(s_image)
        if not bypass:
            s_feats = [
                unit(c, t) for unit, c, t in zip(self.couplings, s_feats, t_feats, strict=True)
            ]
        s_map = self.student.decoder(s_feats)
        t_size, s_size = t_image.shape[-2:], s_image.shape[-2:]
        maps = (
            self.teacher.head(t_map, t_size),
            self.teacher_confidence(t_map, t_size),
            self.student.head(s_map, s_size),
            self.student_confidence(s_map, s_size),
        )
        t_depth, t_conf, s_depth, s_conf = (m[..., :height, :width] for m in maps)
        return DualOutput(t_depth, t_conf, s_depth, s_conf, coupled=not bypass)

    def export_student(self) -> DepthModel:
        """The stand-alone CNN student (shares parameters with this model)."""
        return self.student


def bypass_schedule(
    step: int, total_steps: int, *, start: float, end: float = 1.0, anneal_from: float = 0.5
) -> float:
    """p_bypass at `step`: `start` until `anneal_from` of training, then linear to `end`."""
    if total_steps <= 0:
        raise ValueError("total_steps must be positive")
    progress = min(max(step / total_steps, 0.0), 1.0)
    if progress <= anneal_from:
        return start
    return start + (end - start) * (progress - anneal_from) / max(1.0 - anneal_from, 1e-12)
