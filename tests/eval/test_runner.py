"""The evaluation runner under the full-frame KITTI protocols: the model sees the KB crop of a full
frame, its prediction is pasted into a zero canvas of the full GT and the full-frame crop is
evaluated (BTS offline), in training-time evaluation and `depthkd evaluate` alike."""

from __future__ import annotations

import pytest
import torch

from depthkd.config.schema import DataConfig
from depthkd.data.loader import eval_loader
from depthkd.errors import ConfigError
from depthkd.eval.runner import evaluate_batches, evaluate_split
from tests.conftest import build_kitti_tree, prepare

SCALE = 128.0  # depth = SCALE · image channel 0, exact in float32 for integer depths


def _batch(height: int, width: int, depth: torch.Tensor) -> dict:
    image = torch.zeros(1, 3, height, width)
    image[:, 0] = depth / SCALE  # the "scene" from which the predictor reads depth
    return {"image": image, "depth": depth[None, None], "has_gt": torch.tensor([True])}


class _Reader:
    """A fully convolutional stand-in for a model: depth from the image, at the input's size."""

    def __init__(self) -> None:
        self.seen: list[tuple[int, int]] = []

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        self.seen.append(tuple(images.shape[-2:]))
        return SCALE * images[:, :1]


def test_model_sees_the_kb_crop_and_exact_predictions_score_zero() -> None:
    gt = torch.arange(375 * 1242, dtype=torch.float32).reshape(375, 1242) % 79 + 1  # 1 … 79 m
    reader, shown = _Reader(), []
    sums = evaluate_batches(
        reader,
        [_batch(375, 1242, gt)],
        "kitti-garg-full",
        on_first=lambda batch, pred: shown.append((batch["image"].shape, batch["depth"], pred)),
    )
    assert reader.seen == [(352, 1216)]
    assert sums.n_images == 1 and sums.means()["abs_rel"] == 0.0
    assert sums.means()["rmse"] == 0.0 and sums.means()["d1"] == 1.0
    image_shape, depth, pred = shown[0]  # the grid shows what the model saw, aligned
    assert image_shape == (1, 3, 352, 1216) and torch.equal(depth[0, 0], gt[23:375, 13:1229])
    assert torch.equal(pred[0, 0], depth[0, 0])


def test_crop_pixels_outside_the_kb_crop_count_as_zero() -> None:
    # 375×1400: Garg cols int(0.03594771·1400) = 50 … int(0.96405229·1400) = 1349, KB cols
    # (1400 − 1216)//2 = 92 … 1308, so Garg cols 50:92 and 1308:1349 (83 of 1299) get the pasted
    # canvas's 0, clamped to 1e-3 m; rows 153:371 lie inside the KB rows 23:375.
    gt = torch.full((375, 1400), 10.0)
    reader = _Reader()
    sums = evaluate_batches(reader, [_batch(375, 1400, gt)], "kitti-garg-full")
    assert reader.seen == [(352, 1216)]
    expected = 83 / 1299 * (10.0 - 1e-3) / 10.0
    assert sums.means()["abs_rel"] == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize(
    ("protocol", "size"),
    [("kitti-garg-full", (40, 96)), ("kitti-garg-kbcrop", (375, 1242)), ("nyu-eigen", (480, 640))],
)
def test_other_frames_and_protocols_are_seen_whole(protocol, size) -> None:
    gt = torch.full(size, 5.0)
    reader = _Reader()
    sums = evaluate_batches(reader, [_batch(*size, gt)], protocol)
    assert reader.seen == [size] and sums.means()["abs_rel"] == 0.0


def test_full_frame_protocol_refuses_kb_cut_eval_frames(tmp_path) -> None:
    with pytest.raises(ConfigError, match=r"kitti-garg-full .*data.eval_kb_crop=true"):
        evaluate_split(
            torch.nn.Identity(), tmp_path, "test", DataConfig(eval_kb_crop=True), "kitti-garg-full"
        )


class _Oracle(torch.nn.Module):
    """Returns the ground truth of the frame whose KB crop it is shown, and zeros otherwise."""

    def __init__(self, answers: dict[bytes, torch.Tensor]) -> None:
        super().__init__()
        self.answers = answers

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack(
            [self.answers.get(image.numpy().tobytes(), image[:1] * 0) for image in images]
        )


def test_real_kitti_frames_under_garg_full(realdata, tmp_path) -> None:
    raw, gt, split = build_kitti_tree(realdata, tmp_path, nested=False)
    prepare(tmp_path, dataset="kitti", root=raw, gt_root=gt, split_file=split, split="test")
    shards, data = tmp_path / "shards", DataConfig(eval_batch_size=1, num_workers=0)
    answers = {}
    for batch in eval_loader(shards, "test", data):
        height, width = batch["image"].shape[-2:]
        top, left = height - 352, (width - 1216) // 2  # the KB crop, as BTS cuts it
        rows, cols = slice(top, top + 352), slice(left, left + 1216)
        key = batch["image"][0, :, rows, cols].contiguous().numpy().tobytes()
        answers[key] = batch["depth"][0, :, rows, cols]
    sums = evaluate_split(_Oracle(answers), shards, "test", data, "kitti-garg-full")
    assert (sums.n_images, sums.n_skipped) == (3, 1)  # the `None` line has no GT
    assert sums.means()["abs_rel"] == 0.0 and sums.means()["rmse"] == 0.0
