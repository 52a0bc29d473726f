"""Pyramid encoders: NCHW maps at 1/4 … 1/32 sized from timm's feature_info, local weights files
(.safetensors and .pth, read with weights_only=True) and clear errors for bad ones."""

from __future__ import annotations

import pickle
from pathlib import Path

import pytest
import timm
import torch
from safetensors.torch import save_file

from depthkd.errors import CheckpointError, ConfigError
from depthkd.models.backbones import PYRAMID_REDUCTIONS, build_backbone


@pytest.mark.parametrize(
    "name",
    [
        "mobilenetv2_050",
        "resnet18",
        "convnext_atto",
        "swin_tiny_patch4_window7_224",
        "vit_tiny_patch16_224",
    ],
)
def test_pyramid_is_nchw_at_the_four_reductions(name: str) -> None:
    kwargs = {"depths": (1, 1, 1, 1)} if name.startswith("swin") else {}
    backbone = build_backbone(name, **kwargs).eval()
    with torch.inference_mode():
        feats = backbone(torch.rand(1, 3, 128, 192))
    assert backbone.feature_info.reductions == PYRAMID_REDUCTIONS
    for feat, channels, r in zip(
        feats, backbone.feature_info.channels, PYRAMID_REDUCTIONS, strict=True
    ):
        # Swin's NHWC maps are permuted: channels in dim 1
        assert feat.shape == (1, channels, 128 // r, 192 // r)


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return timm.create_model("resnet18", pretrained=False).state_dict()


def _first_conv(backbone: torch.nn.Module) -> torch.Tensor:
    return backbone.body.conv1.weight


def test_safetensors_weights_are_loaded(tmp_path: Path, resnet_state: dict) -> None:
    path = tmp_path / "resnet18.safetensors"
    save_file({k: v.contiguous() for k, v in resnet_state.items()}, str(path))
    backbone = build_backbone("resnet18", weights=path)
    assert torch.equal(_first_conv(backbone), resnet_state["conv1.weight"])


def test_pth_weights_wrapped_in_state_dict_are_loaded(tmp_path: Path, resnet_state: dict) -> None:
    path = tmp_path / "resnet18.pth"
    torch.save({"state_dict": resnet_state, "epoch": 3}, path)
    backbone = build_backbone("resnet18", weights=path)
    assert torch.equal(_first_conv(backbone), resnet_state["conv1.weight"])
    assert not torch.equal(_first_conv(build_backbone("resnet18")), resnet_state["conv1.weight"])


class NotWeights:
    """A pickled object that weights_only=True must refuse to construct."""


def test_pickled_objects_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pth"
    with path.open("wb") as fh:
        pickle.dump({"model": NotWeights()}, fh, protocol=2)
    with pytest.raises(CheckpointError, match=r"cannot read weights file .*evil\.pth"):
        build_backbone("resnet18", weights=path)


def test_weights_of_another_architecture_are_rejected(tmp_path: Path) -> None:
    path = tmp_path / "resnet34.pth"
    torch.save(timm.create_model("resnet34", pretrained=False).state_dict(), path)
    with pytest.raises(CheckpointError, match=r"resnet34\.pth does not fit backbone resnet18"):
        build_backbone("resnet18", weights=path)


def test_missing_or_corrupt_weights_file(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="does not exist"):
        build_backbone("resnet18", weights=tmp_path / "nope.pth")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x00" * 20)
    with pytest.raises(CheckpointError, match=r"cannot read weights file .*bad\.safetensors"):
        build_backbone("resnet18", weights=bad)


def test_backbone_without_a_depth_pyramid_is_rejected() -> None:
    # vit features_only exposes one stride; outside the ViT path it has no 1/4 … 1/32 pyramid
    from depthkd.models.backbones import Backbone

    with pytest.raises(ConfigError, match=r"needs \[4, 8, 16, 32\]"):
        Backbone("vit_tiny_patch16_224")


@pytest.mark.parametrize("name", ["mobilenetv2_050", "efficientnet_b0", "mobilenetv3_large_100"])
def test_full_checkpoints_of_headless_feature_models_load(tmp_path: Path, name: str) -> None:
    """timm builds these feature extractors without conv_head/classifier: a full checkpoint's
    extra head keys are expected, not a mismatch."""
    full = timm.create_model(name, pretrained=False).state_dict()
    path = tmp_path / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in full.items()}, str(path))
    backbone = build_backbone(name, weights=path)
    assert torch.equal(backbone.body.conv_stem.weight, full["conv_stem.weight"])


def test_empty_weights_file_is_rejected_without_a_download(tmp_path: Path) -> None:
    path = tmp_path / "empty.pth"
    torch.save({"state_dict": {}}, path)
    with pytest.raises(CheckpointError, match=r"empty\.pth does not hold a state dict"):
        build_backbone("resnet18", weights=path)


def test_wrong_tensor_shapes_name_the_file(tmp_path: Path, resnet_state: dict) -> None:
    path = tmp_path / "reshaped.pth"
    torch.save({**resnet_state, "conv1.weight": torch.zeros(8, 3, 3, 3)}, path)
    with pytest.raises(CheckpointError, match=r"reshaped\.pth does not fit backbone resnet18"):
        build_backbone("resnet18", weights=path)


def test_vit_patch_sizes_outside_the_reassembly_are_rejected() -> None:
    with pytest.raises(ConfigError, match="patch size 14"):
        build_backbone("vit_small_patch14_dinov2", depth=4)
