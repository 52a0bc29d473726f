"""The pseudo-label sample without Ray: quantisation, which map of a model output is the label,
confidence maps, and `decode_sample_files` on pseudo-labelled samples."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from depthkd.config.schema import StudentConfig, TeacherConfig
from depthkd.data import images
from depthkd.data.shards import decode_sample_files
from depthkd.errors import DataError
from depthkd.models.zoo import build_acclimated_teacher, build_cross_distill
from depthkd.pseudolabel.format import depth_scale_for, quantise_confidence, quantise_depth
from depthkd.pseudolabel.labeler import label_batch, output_sample
from depthkd.pseudolabel.teacher import teacher_maps

STUDENT = StudentConfig(name="mobilenetv2_050", decoder_channels=(16, 24, 32, 48))
TEACHER = TeacherConfig(name="swin_micro")


def _rows(count: int, size: tuple[int, int] = (20, 28)) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (*size, 3), dtype=np.uint8) for _ in range(count)]
    meta = {"dataset": "x", "height": size[0], "width": size[1], "has_gt": False, "focal": 50.0}
    return {
        "shard": np.array(["s-000000.tar"] * count, dtype=object),
        "index": np.arange(count),
        "key": np.array([f"a/b.c/f{i}" for i in range(count)], dtype=object),
        "rgb": np.array([images.encode_rgb_png(f) for f in frames], dtype=object),
        "meta": np.array([json.dumps(meta).encode()] * count, dtype=object),
    }


def _decoded(out: dict[str, np.ndarray], i: int) -> dict:
    row = {name: column[i] for name, column in out.items()}
    files = {k: v for k, v in output_sample(row).items() if k != "__key__"}
    return decode_sample_files(files, row["key"])


def test_depth_scale_fits_max_depth_in_16_bits() -> None:
    for max_depth in (1.0, 10.0, 80.0, 250.0):
        scale = depth_scale_for(max_depth)
        assert max_depth * scale <= 65535 < max_depth * (scale + 1)
    depth = np.array([0.0, -1.0, np.nan, 1e-9, 5.0, 10.0])
    assert quantise_depth(depth, 6553.0).tolist() == [0, 0, 0, 1, 32765, 65530]
    assert quantise_confidence(np.array([0.0, 0.5, 1.0, 2.0])).tolist() == [0, 32768, 65535, 65535]


def test_cross_distill_teacher_branch_labels_with_its_confidence() -> None:
    torch.manual_seed(0)
    model = build_cross_distill(TEACHER, STUDENT, max_depth=10.0).eval()
    out = label_batch(model, _rows(2), size=(32, 40), depth_scale=6553.0)
    sample = _decoded(out, 1)
    assert sample["confidence"].dtype == np.uint16 and sample["confidence"].shape == (32, 40)
    with torch.no_grad():
        image = torch.from_numpy(np.array(sample["rgb"])).permute(2, 0, 1)[None].float() / 255
        dual = model(image)
    expected = dual.teacher_confidence[0, 0].numpy()
    assert np.abs(sample["confidence"] / 65535.0 - expected).max() <= 0.5 / 65535 + 1e-6
    depth = dual.teacher_depth[0, 0].numpy()
    assert np.abs(sample["pseudo"] / 6553.0 - depth).max() <= 0.5 / 6553 + 1e-5
    assert sample["meta"]["focal"] == pytest.approx(50.0 * 40 / 28)
    assert sample["meta"]["source_size"] == [20, 28]


def test_acclimated_teacher_labels_with_its_own_head() -> None:
    torch.manual_seed(0)
    model = build_acclimated_teacher(TEACHER, STUDENT, max_depth=10.0).eval()
    image = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        output = model(image)
    depth, confidence = teacher_maps(output)
    assert depth is output.depth and confidence is None
    assert teacher_maps(output.ghost_depth) == (output.ghost_depth, None)


def test_decode_rejects_pseudo_maps_that_do_not_match_meta() -> None:
    torch.manual_seed(0)
    model = build_cross_distill(TEACHER, STUDENT, max_depth=10.0).eval()
    row = {
        name: column[0]
        for name, column in label_batch(model, _rows(1), size=(16, 16), depth_scale=6553.0).items()
    }
    files = {k: v for k, v in output_sample(row).items() if k != "__key__"}
    small = images.encode_depth(np.zeros((8, 8), np.uint16))
    with pytest.raises(DataError, match="image sizes differ"):
        decode_sample_files({**files, "pseudo.png": small}, "k")
    with pytest.raises(DataError, match="image sizes differ"):
        decode_sample_files({**files, "confidence.png": small}, "k")
    without = {k: v for k, v in files.items() if k not in ("pseudo.png", "confidence.png")}
    with pytest.raises(DataError, match=r"pseudo=True but pseudo\.png"):
        decode_sample_files(without, "k")
    assert decode_sample_files(files, "k")["depth"] is None
