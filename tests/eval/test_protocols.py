"""Protocols: crop indices, clamping, skipped images, KB paste vs KB cut, size errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from depthkd.errors import DataError, RegistryError
from depthkd.eval.protocols import (
    PROTOCOLS,
    crop_box,
    evaluate_image,
    format_table,
    get_protocol,
)

KITTI_GT = (375, 1242)


def test_registered_protocols():
    assert PROTOCOLS.names() == ["kitti-eigen", "kitti-garg-full", "kitti-garg-kbcrop", "nyu-eigen"]
    assert get_protocol("kitti-garg-full").max_depth == 80.0
    assert get_protocol("nyu-eigen").max_depth == 10.0
    assert get_protocol("kitti-eigen").depth_scale == 256.0
    assert get_protocol("nyu-eigen").depth_scale == 1000.0


def test_unknown_protocol_lists_the_valid_ones():
    with pytest.raises(RegistryError, match=r"kitti-garg-full.*nyu-eigen") as info:
        get_protocol("kitti-garg")
    assert "kitti-garg-full" in (info.value.hint or "")


def test_crop_indices():
    # int() truncation of the fractions, as BTS / Monodepth2 compute them on 375×1242:
    # Garg rows 0.40810811·375 = 153.04 → 153, 0.99189189·375 = 371.96 → 371,
    #      cols 0.03594771·1242 = 44.65 → 44, 0.96405229·1242 = 1197.35 → 1197
    assert crop_box("garg", *KITTI_GT) == (153, 371, 44, 1197)
    # Eigen rows 0.3324324·375 = 124.66 → 124, 0.91351351·375 = 342.57 → 342
    assert crop_box("eigen", *KITTI_GT) == (124, 342, 44, 1197)
    # Garg on the 352×1216 KB cut: 143.65 → 143, 349.15 → 349, 43.71 → 43, 1172.29 → 1172
    assert crop_box("garg", 352, 1216) == (143, 349, 43, 1172)
    assert crop_box("nyu-eigen", 480, 640) == (45, 471, 41, 601)


def _single_pixel_gt(shape, row, col, value=4.0):
    gt = np.zeros(shape)
    gt[row, col] = value
    return gt


@pytest.mark.parametrize(
    ("protocol", "shape", "inside", "outside"),
    [
        (
            "kitti-garg-full",
            KITTI_GT,
            [(153, 44), (370, 1196)],
            [(152, 44), (371, 100), (200, 1197)],
        ),
        ("kitti-eigen", KITTI_GT, [(124, 44), (341, 1196)], [(123, 100), (342, 100), (200, 43)]),
        # KB cut at rows 23:, cols 13:1229, then Garg 143:349, 43:1172 → full-frame 166:372, 56:1185
        (
            "kitti-garg-kbcrop",
            KITTI_GT,
            [(166, 56), (371, 1184)],
            [(165, 100), (372, 100), (200, 55)],
        ),
        ("nyu-eigen", (480, 640), [(45, 41), (470, 600)], [(44, 100), (471, 100), (100, 601)]),
    ],
)
def test_crop_selects_exactly_its_pixels(protocol, shape, inside, outside):
    pred = np.full(shape, 5.0)
    for row, col in inside:
        assert evaluate_image(pred, _single_pixel_gt(shape, row, col), protocol) is not None
    for row, col in outside:
        assert evaluate_image(pred, _single_pixel_gt(shape, row, col), protocol) is None


def test_far_and_nan_predictions_are_clamped():
    gt = torch.full((480, 640), 5.0)
    for bad, clamped in ((math.inf, 10.0), (1e6, 10.0), (math.nan, 1e-3), (-math.inf, 1e-3)):
        pred = torch.full((480, 640), bad)
        m = evaluate_image(pred, gt, "nyu-eigen")
        assert m is not None and all(math.isfinite(v) for v in m.values())
        assert m["abs_rel"] == pytest.approx(abs(5.0 - clamped) / 5.0), bad


def test_ground_truth_validity_bounds():
    # float64: 1e-3 stored as float32 is 0.00100000005 > 1e-3 and would count as valid
    gt = torch.full((480, 640), math.nan, dtype=torch.float64)
    gt[100, 100] = math.inf
    gt[101, 101] = 10.0  # == max: invalid (strict)
    gt[102, 102] = 1e-3  # == min: invalid (strict)
    assert evaluate_image(torch.ones(480, 640), gt, "nyu-eigen") is None
    gt[103, 103] = 2.0
    m = evaluate_image(torch.ones(480, 640), gt, "nyu-eigen")
    assert m is not None and m["abs_rel"] == pytest.approx(0.5)


def test_no_ground_truth_is_skipped():
    assert evaluate_image(torch.ones(480, 640), None, "nyu-eigen") is None


def test_kb_paste_and_kb_cut_differ_where_the_crops_differ():
    # GT valid at two places: rows 155:160 (inside the full-frame Garg crop, which starts at row
    # 153, but above the kb-cropped Garg crop, which starts at full-frame row 166) and rows
    # 200:300. The prediction is exact (10 m) on the first band and 2x too far on the second.
    gt = np.zeros(KITTI_GT)
    gt[155:160, 100:1100] = 10.0
    gt[200:300, 100:1100] = 20.0
    pred_full = np.full(KITTI_GT, 40.0)
    pred_full[155:160] = 10.0
    pred_kb = pred_full[23:375, 13:1229]  # the 352×1216 KB crop of the prediction
    full = evaluate_image(pred_kb, gt, "kitti-garg-full")  # pasted back, both bands count
    kb = evaluate_image(pred_kb, gt, "kitti-garg-kbcrop")  # only the lower band counts
    assert full is not None and kb is not None
    n_top, n_low = 5 * 1000, 100 * 1000
    assert kb["abs_rel"] == pytest.approx(1.0)  # |20 − 40| / 20
    assert full["abs_rel"] == pytest.approx(n_low / (n_top + n_low))
    # A full-size prediction gives the same numbers under either protocol as its KB crop.
    assert evaluate_image(pred_full, gt, "kitti-garg-kbcrop") == kb
    assert evaluate_image(pred_full, gt, "kitti-garg-full") == full


def test_pasted_zeros_outside_the_kb_crop_are_clamped_not_nan():
    gt = np.full(KITTI_GT, 10.0)  # valid everywhere, also outside the KB crop
    pred_kb = np.full((352, 1216), 10.0)
    m = evaluate_image(pred_kb, gt, get_protocol("kitti-garg-full"))
    assert m is not None and all(math.isfinite(v) for v in m.values())


@pytest.mark.parametrize(
    ("protocol", "pred_shape", "gt_shape"),
    [
        ("kitti-garg-full", (350, 1216), KITTI_GT),
        ("kitti-garg-kbcrop", (375, 1240), KITTI_GT),
        ("kitti-garg-kbcrop", (352, 1216), (300, 1242)),
        ("nyu-eigen", (240, 320), (480, 640)),
    ],
)
def test_size_mismatch_names_both_shapes_and_the_protocol(protocol, pred_shape, gt_shape):
    with pytest.raises(DataError, match=protocol) as info:
        evaluate_image(np.ones(pred_shape), np.ones(gt_shape), protocol, where="a.png")
    message = str(info.value)
    assert str(gt_shape) in message and message.startswith("a.png: ")
    if pred_shape != gt_shape:
        assert str(pred_shape) in message


def test_nyu_crop_scales_with_the_frame():
    """Half-size NYU-like frames (the bundled synthetic set) keep the Eigen box in fractions."""
    assert crop_box("nyu-eigen", 240, 320) == (22, 235, 20, 300)
    assert (
        evaluate_image(np.full((240, 320), 2.0), np.full((240, 320), 2.0), "nyu-eigen")["abs_rel"]
        == 0
    )


def test_format_table_names_the_protocol():
    means = dict.fromkeys(
        ("abs_rel", "sq_rel", "rmse", "rmse_log", "log10", "silog", "d1", "d2", "d3"), 0.5
    )
    text = format_table("kitti-garg-kbcrop", means, 3, 1)
    assert text.startswith("protocol: kitti-garg-kbcrop (")
    assert "3 evaluated, 1 skipped" in text and "abs_rel" in text and "0.5000" in text
