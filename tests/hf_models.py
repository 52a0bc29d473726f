"""Tiny random Hugging Face depth models for tests, written with `save_pretrained`: loaded back
through exactly the path a hub download takes, without a network."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers

IMAGENET = {"image_mean": [0.485, 0.456, 0.406], "image_std": [0.229, 0.224, 0.225]}
NECK = [8, 16, 24, 32]  # neck_hidden_sizes of every tiny model: the declared feature channels
TINY_VIT = {"hidden_size": 32, "num_attention_heads": 2, "intermediate_size": 64}


def tiny_depth_anything(**kwargs: object) -> transformers.PretrainedConfig:
    """A Depth Anything of a 4-layer DINOv2 (patch 14); `kwargs` go to its config."""
    # four layers, not two: the neck takes four distinct layers and DINOv2's out_indices refuse
    # repeats (a 2-layer DINOv2 offers only stem, stage1, stage2)
    backbone = transformers.Dinov2Config(
        **TINY_VIT,
        num_hidden_layers=4,
        patch_size=14,
        image_size=28,
        out_indices=[1, 2, 3, 4],
        reshape_hidden_states=False,
    )
    return transformers.DepthAnythingConfig(
        backbone_config=backbone,
        reassemble_hidden_size=32,
        neck_hidden_sizes=NECK,
        fusion_hidden_size=16,
        head_hidden_size=8,
        **kwargs,
    )


def save_tiny(directory: Path, config: transformers.PretrainedConfig, processor: object) -> Path:
    """A random model of `config` and `processor`, written with save_pretrained.

    transformers initialises weights with std 0.02, which shrinks depth to ~1e-7 of noise around
    0; PyTorch's default init of the convs and linears keeps depth input-dependent, so that
    comparisons mean something, and a bias of 0.5 on a relative head's last conv (before
    its ReLU) keeps depth positive, as a trained head's is on ordinary images."""
    torch.manual_seed(0)
    model = transformers.AutoModelForDepthEstimation.from_config(config)
    for module in model.modules():
        if isinstance(module, (torch.nn.Conv2d, torch.nn.ConvTranspose2d, torch.nn.Linear)):
            module.reset_parameters()
    if config.model_type in ("depth_anything", "dpt"):
        last = model.head.conv3 if hasattr(model.head, "conv3") else model.head.head[4]
        torch.nn.init.constant_(last.bias, 0.5)
    model.save_pretrained(directory)
    processor.save_pretrained(directory)
    return directory
