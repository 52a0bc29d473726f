"""Hugging Face depth models as teachers: tiny random models of each family, written with
`save_pretrained` and read back offline through `load_hf_teacher`; the depth / feature contract
at an input size no patch size divides, the output kind, normalisation from the image processor,
gradients into the encoder, and the errors for what cannot be loaded."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import transformers

from depthkd.errors import CheckpointError
from depthkd.models.hf_teachers import (
    FEATURE_NAMES,
    ExternalTeacher,
    ExternalTeacherOutput,
    load_hf_teacher,
)
from tests.hf_models import IMAGENET, NECK, TINY_VIT, save_tiny, tiny_depth_anything

H, W = 80, 256  # divisible by neither 14 nor 32
FEATURE_SIZES = [(20, 64), (10, 32), (5, 16), (3, 8)]  # ceil(80 / r), ceil(256 / r)


# the ViT and neck both tiny DPTs share
TINY_DPT = {
    **TINY_VIT,
    "num_hidden_layers": 4,
    "image_size": 64,
    "patch_size": 16,
    "backbone_out_indices": [0, 1, 2, 3],
    "neck_hidden_sizes": NECK,
    "fusion_hidden_size": 16,
}


def _dpt() -> transformers.PretrainedConfig:
    return transformers.DPTConfig(**TINY_DPT)


def _dpt_hybrid() -> transformers.PretrainedConfig:
    bit = transformers.BitConfig(
        global_padding="same",
        layer_type="bottleneck",
        depths=[1, 1, 1],
        hidden_sizes=[8, 16, 32],
        embedding_size=8,
        num_groups=2,
        embedding_dynamic_padding=True,
        out_features=["stage1", "stage2", "stage3"],
    )
    return transformers.DPTConfig(
        **TINY_DPT,
        is_hybrid=True,
        backbone_config=bit,
        backbone_featmap_shape=[1, 32, 4, 4],
        readout_type="project",
    )


def _zoedepth() -> transformers.PretrainedConfig:
    beit = transformers.BeitConfig(
        **TINY_VIT,
        num_hidden_layers=4,
        image_size=64,
        patch_size=16,
        out_indices=[1, 2, 3, 4],
        use_relative_position_bias=True,
        reshape_hidden_states=False,
    )
    return transformers.ZoeDepthConfig(
        backbone_config=beit,
        neck_hidden_sizes=NECK,
        fusion_hidden_size=16,
        bottleneck_features=16,
        num_relative_features=8,
        bin_embedding_dim=16,
        bin_configurations=[{"n_bins": 8, "min_depth": 0.001, "max_depth": 10.0}],
        num_attractors=[4, 2, 1, 1],
    )


# family: (config, image processor, output kind, input multiple)
FAMILIES: dict[str, tuple[Callable[[], transformers.PretrainedConfig], Callable, str, int]] = {
    "depth_anything": (
        tiny_depth_anything,
        lambda: transformers.DPTImageProcessor(**IMAGENET),
        "relative_disparity",
        14,
    ),
    "depth_anything_metric": (
        lambda: tiny_depth_anything(depth_estimation_type="metric", max_depth=80),
        lambda: transformers.DPTImageProcessor(**IMAGENET),
        "metric",
        14,
    ),
    "dpt": (_dpt, transformers.DPTImageProcessor, "relative_disparity", 32),
    "dpt_hybrid": (_dpt_hybrid, transformers.DPTImageProcessor, "relative_disparity", 32),
    "zoedepth": (_zoedepth, transformers.ZoeDepthImageProcessor, "metric", 32),
}


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """`{family: directory}` of the tiny models, each with its image processor."""
    root = tmp_path_factory.mktemp("hf")
    return {
        name: save_tiny(root / name, config(), processor())
        for name, (config, processor, _, _) in FAMILIES.items()
    }


@pytest.fixture(autouse=True)
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """No hub: the variable, and the flag huggingface_hub read from it when it was imported."""
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def _image(batch: int = 2) -> torch.Tensor:
    return torch.rand(batch, 3, H, W, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("family", FAMILIES)
def test_depth_and_features_follow_the_contract(family: str, saved: dict[str, Path]) -> None:
    teacher = load_hf_teacher(saved[family])
    with torch.inference_mode():
        out = teacher(_image())
    assert isinstance(out, ExternalTeacherOutput)
    assert out.depth.shape == (2, 1, H, W)
    assert torch.isfinite(out.depth).all() and (out.depth > 0).all()
    assert teacher.feature_channels == tuple(NECK)
    assert list(out.features) == list(FEATURE_NAMES)
    assert [tuple(f.shape) for f in out.features.values()] == [
        (2, c, *size) for c, size in zip(NECK, FEATURE_SIZES, strict=True)
    ]
    assert teacher.feature_info.channels == tuple(NECK)
    assert teacher.feature_info.reductions == (4, 8, 16, 32)


@pytest.mark.parametrize("family", FAMILIES)
def test_output_kind_and_input_multiple_follow_the_family(
    family: str, saved: dict[str, Path]
) -> None:
    _, _, kind, multiple = FAMILIES[family]
    teacher = load_hf_teacher(saved[family])
    assert (teacher.output, teacher.input_multiple) == (kind, multiple)
    # each side to the nearest multiple: 80 -> 84 and 256 -> 252 for 14; 80 (2.5 x 32) -> 96
    expected = (84, 252) if multiple == 14 else (96, 256)
    assert teacher.model_input_size(H, W) == expected
    assert not teacher.training


def test_output_kind_can_be_overridden_for_a_metric_dpt(saved: dict[str, Path]) -> None:
    assert load_hf_teacher(saved["dpt"], output="metric").output == "metric"
    with pytest.raises(CheckpointError, match="unknown output kind 'disparity'"):
        load_hf_teacher(saved["dpt"], output="disparity")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("family", "size"), [("depth_anything", (84, 252)), ("zoedepth", (96, 256))]
)
def test_depth_is_the_models_prediction_on_normalised_resized_input(
    family: str, size: tuple[int, int], saved: dict[str, Path]
) -> None:
    """What a user of transformers would compute by hand: normalise with the processor's mean and
    std, resize to the model's multiple, run the model, resize depth back."""
    teacher = load_hf_teacher(saved[family])
    processor = transformers.AutoImageProcessor.from_pretrained(saved[family])
    mean = torch.tensor(processor.image_mean).view(1, 3, 1, 1)
    std = torch.tensor(processor.image_std).view(1, 3, 1, 1)
    image = _image()
    pixels = F.interpolate((image - mean) / std, size=size, mode="bilinear", align_corners=False)
    with torch.inference_mode():
        reference = teacher.model(pixel_values=pixels).predicted_depth.unsqueeze(1)
        reference = F.interpolate(reference, size=(H, W), mode="bilinear", align_corners=False)
        depth = teacher(image).depth
    torch.testing.assert_close(depth, reference, rtol=1e-5, atol=1e-6)


def test_transformers_dpt_alone_refuses_non_square_input_the_teacher_takes_it(
    saved: dict[str, Path],
) -> None:
    teacher = load_hf_teacher(saved["dpt"])
    with torch.inference_mode():
        assert teacher(torch.rand(1, 3, 96, 256)).depth.shape == (1, 1, 96, 256)
        with pytest.raises(RuntimeError, match="shape"):  # tokens reshaped to a square grid
            transformers.AutoModelForDepthEstimation.from_pretrained(saved["dpt"])(
                pixel_values=torch.rand(1, 3, 96, 256)
            )


@pytest.mark.parametrize(
    ("processor_kwargs", "scale"),
    [
        ({"image_mean": [0.1, 0.7, 0.3], "image_std": [0.05, 0.5, 0.2]}, 1.0),
        # no rescale: the processor's model sees 0 … 255, so our [0, 1] counts 255 times more
        ({"image_mean": [0.1, 0.7, 0.3], "image_std": [0.05, 0.5, 0.2], "do_rescale": False}, 255),
        ({"do_normalize": False, "image_mean": [0.1, 0.7, 0.3]}, None),
    ],
)
def test_normalisation_comes_from_the_image_processor(
    processor_kwargs: dict, scale: float | None, saved: dict[str, Path], tmp_path: Path
) -> None:
    other = save_tiny(
        tmp_path, tiny_depth_anything(), transformers.DPTImageProcessor(**processor_kwargs)
    )
    usual, unusual = load_hf_teacher(saved["depth_anything"]), load_hf_teacher(other)
    if scale is None:  # no normalisation at all
        mean, std = torch.zeros(3), torch.ones(3)
    else:
        mean = torch.tensor(processor_kwargs["image_mean"]) / scale
        std = torch.tensor(processor_kwargs["image_std"]) / scale
    torch.testing.assert_close(unusual.mean.flatten(), mean)
    torch.testing.assert_close(unusual.std.flatten(), std)
    torch.testing.assert_close(usual.mean.flatten(), torch.tensor(IMAGENET["image_mean"]))
    # same weights (same seed), different normalisation: different features and depth
    assert torch.equal(usual.model.neck.convs[0].weight, unusual.model.neck.convs[0].weight)
    with torch.inference_mode():
        a, b = usual(_image(batch=1)), unusual(_image(batch=1))
    assert not torch.allclose(a.features["stride4"], b.features["stride4"], atol=1e-3)
    assert not torch.allclose(a.depth, b.depth, atol=1e-4)


@pytest.mark.parametrize("family", ["depth_anything", "dpt", "zoedepth"])
def test_a_feature_loss_reaches_the_encoder(family: str, saved: dict[str, Path]) -> None:
    teacher = load_hf_teacher(saved[family]).train()
    out = teacher(_image(batch=1))
    sum(f.square().mean() for f in out.features.values()).backward()
    patch_embed = [
        p for n, p in teacher.named_parameters() if n.endswith("patch_embeddings.projection.weight")
    ]
    assert len(patch_embed) == 1 and patch_embed[0].requires_grad
    grad = patch_embed[0].grad
    assert grad is not None and torch.isfinite(grad).all() and grad.abs().sum() > 0


def test_running_under_inference_mode_does_not_break_later_training(
    saved: dict[str, Path],
) -> None:
    """BEiT (ZoeDepth's backbone) caches its relative position index per size; cached under
    inference mode it would fail every later backward at that size (an evaluation or preview
    in the middle of acclimation)."""
    teacher = load_hf_teacher(saved["zoedepth"])
    image = torch.rand(1, 3, 64, 96)  # a size no other test uses: a fresh cache entry
    with torch.inference_mode():
        teacher(image)
    out = teacher.train()(image)
    out.features["stride32"].mean().backward()
    tables = [p for n, p in teacher.named_parameters() if n.endswith("position_bias_table")]
    assert len(tables) == 4 and all(t.grad is not None for t in tables)


class _ToyTeacher(ExternalTeacher):
    """An external teacher with its own decoder, as the module docstring sketches one."""

    output = "metric"
    feature_channels = (4, 8, 16, 32)

    def __init__(self, channels: tuple[int, ...] = (4, 8, 16, 32)) -> None:
        super().__init__()
        self.stages = torch.nn.ModuleList(
            torch.nn.Conv2d(3, c, 3, stride=r, padding=1)
            for c, r in zip(channels, (4, 8, 16, 32), strict=True)
        )
        self.decoder = torch.nn.Conv2d(channels[0], 1, 1)

    def forward(self, images: torch.Tensor) -> ExternalTeacherOutput:
        feats = [stage(images) for stage in self.stages]
        depth = F.softplus(self.decoder(feats[0]))  # (B, 1, H/4, W/4)
        return self.finish(depth, feats, images.shape[-2:])


def test_a_subclass_gets_the_contract_from_finish() -> None:
    out = _ToyTeacher()(torch.rand(1, 3, 90, 250))
    assert out.depth.shape == (1, 1, 90, 250)
    assert [tuple(f.shape[1:]) for f in out.features.values()] == [
        (4, 23, 63),
        (8, 12, 32),
        (16, 6, 16),
        (32, 3, 8),
    ]
    with pytest.raises(ValueError, match=r"channels \(4, 8, 16, 16\), declared \(4, 8, 16, 32\)"):
        _ToyTeacher(channels=(4, 8, 16, 16))(torch.rand(1, 3, 64, 64))


# ---------------------------------------------------------------------------------------------
# what cannot be loaded


def test_a_missing_directory_is_a_checkpoint_error(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="cannot read the config of Hugging Face teacher"):
        load_hf_teacher(tmp_path / "no-such-dir")


def test_an_uncached_repo_offline_says_so() -> None:
    with pytest.raises(CheckpointError, match="depthkd-tests/no-such-depth-model") as err:
        load_hf_teacher("depthkd-tests/no-such-depth-model")
    assert err.value.hint is not None and "HF_HUB_OFFLINE" in err.value.hint


@pytest.mark.parametrize(
    ("make", "what"),
    [
        (lambda: transformers.Dinov2Model(tiny_depth_anything().backbone_config), "Dinov2Model"),
        (
            lambda: transformers.DPTForSemanticSegmentation(_dpt()),
            "DPTForSemanticSegmentation",
        ),
    ],
)
def test_a_model_that_is_not_a_depth_model_is_refused(
    make: Callable[[], torch.nn.Module], what: str, tmp_path: Path
) -> None:
    make().save_pretrained(tmp_path)
    transformers.DPTImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match=f"is a {what} model, not a supported depth-est"):
        load_hf_teacher(tmp_path)


def test_a_directory_without_image_processor_is_refused(tmp_path: Path) -> None:
    transformers.AutoModelForDepthEstimation.from_config(tiny_depth_anything()).save_pretrained(
        tmp_path
    )
    with pytest.raises(CheckpointError, match="cannot read the image processor"):
        load_hf_teacher(tmp_path)


def test_weights_that_do_not_fit_the_config_are_refused(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    save_tiny(tmp_path, tiny_depth_anything(), transformers.DPTImageProcessor())
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    save_file({k: v for k, v in state.items() if not k.startswith("head.")}, weights)
    with pytest.raises(CheckpointError, match=r"leave 6 parameters .* unset: head\.conv1\.bias"):
        load_hf_teacher(tmp_path)
    save_file(state, weights)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "fusion_hidden_size": 24}))
    with pytest.raises(CheckpointError, match="cannot read the model of Hugging Face teacher"):
        load_hf_teacher(tmp_path)


def test_without_transformers_the_error_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, saved: dict[str, Path]
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    with pytest.raises(CheckpointError, match="transformers is not installed") as err:
        load_hf_teacher(saved["dpt"])
    assert err.value.hint == "pip install 'depthkd[hf]'"


def test_a_depth_model_of_another_family_is_refused(tmp_path: Path) -> None:
    config = transformers.GLPNConfig(
        depths=[1, 1, 1, 1],
        hidden_sizes=[8, 16, 24, 32],
        num_attention_heads=[1, 1, 1, 1],
        decoder_hidden_size=8,
    )
    transformers.GLPNForDepthEstimation(config).save_pretrained(tmp_path)
    transformers.GLPNImageProcessor().save_pretrained(tmp_path)
    with pytest.raises(CheckpointError, match="is a GLPNForDepthEstimation model, not a supported"):
        load_hf_teacher(tmp_path)
