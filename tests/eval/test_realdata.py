"""`depthkd eval-pngs` on the real KITTI and NYU frames against values computed by hand.

The prediction is s·GT (s = 0.9, so no prediction reaches the 80 m / 10 m cap and no GT value is
pushed out of range). For p = s·g on every valid pixel the formulas reduce to:

    abs_rel  = mean |g − s·g| / g          = 1 − s                    = 0.1
    rmse_log = sqrt(mean (ln g − ln s·g)²) = |ln s|                   = 0.1053605...
    log10    = mean |log10 g − log10 s·g|  = |log10 s|                = 0.0457574...
    silog    = 100·std(ln s·g − ln g)      = 100·std(ln s)            = 0
    d1,d2,d3 : max(g/p, p/g) = 1/s = 1.11 < 1.25                      = 1
    rmse     = sqrt(mean (g − s·g)²)       = (1 − s)·sqrt(mean g²)
    sq_rel   = mean (g − s·g)² / g         = (1 − s)²·mean g

with the means of g and g² taken over each protocol's mask (valid GT inside the crop, written out
below as literal slices) by plain numpy, per image, then averaged over the images.

How the uint16 quantisation enters: the "exact" runs store the GT's own uint16 values as the
prediction and pass --pred-scale 256/s (1000/s for NYU), so the prediction is s·g up to float64
rounding and the tolerances are 1e-9. The "quantised" runs store round(s·value) at the default
scale, as a real model's PNGs are; then |p − s·g| ≤ 0.5/scale per pixel, which bounds
|Δabs_rel| ≤ 0.5/(scale·min g), |Δrmse| ≤ 0.5/scale, |Δrmse_log| ≤ 0.5/(scale·s·min g) and
silog ≤ 100·0.5/(scale·s·min g), and those bounds are the tolerances.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest

from depthkd.cli.main import main
from depthkd.data.images import decode_depth, encode_depth
from tests.conftest import (
    KITTI_DEMO,
    KITTI_DRIVE,
    KITTI_FRAMES,
    NYU_DEMO,
    NYU_FRAMES,
    REALDATA,
)

S = 0.9
KITTI_REL = f"{KITTI_DRIVE}/proj_depth/groundtruth/image_02"
KB = (slice(23, 375), slice(13, 1229))  # KB crop of 375×1242: top 375 − 352, left (1242 − 1216)//2
# Crop of each protocol in full-frame pixels of the real frames (375×1242 KITTI, 480×640 NYU):
CROPS = {
    "kitti-garg-full": (slice(153, 371), slice(44, 1197)),  # Garg fractions × (375, 1242)
    # Garg fractions × (352, 1216) = rows 143:349, cols 43:1172 of the KB cut → + (23, 13)
    "kitti-garg-kbcrop": (slice(166, 372), slice(56, 1185)),
    "kitti-eigen": (slice(124, 342), slice(44, 1197)),  # Eigen fractions × (375, 1242)
    "nyu-eigen": (slice(45, 471), slice(41, 601)),
}
MAX_DEPTH = {"kitti": 80.0, "nyu": 10.0}
SCALE = {"kitti": 256.0, "nyu": 1000.0}


def _gt_files(dataset):
    if dataset == "kitti":
        return {f"{KITTI_REL}/{f}.png": KITTI_DEMO / "depth" / f"{f}.png" for f in KITTI_FRAMES}
    files = {
        f"sync/sync_depth_{f}.png": NYU_DEMO / "depth" / f"sync_depth_{f}.png" for f in NYU_FRAMES
    }
    # The UniDepth frame (likely from the official test set) has GT exactly at the 10 m cap.
    files["official/depth.png"] = REALDATA / "nyu/lpiccinelli-eth_UniDepth/assets/demo/depth.png"
    return files


def _expected(gt_by_rel, protocol, dataset):
    """Hand formulas of the module docstring over the protocol's mask, averaged over images."""
    rows, cols = CROPS[protocol]
    rmse, sq_rel, min_g = [], [], math.inf
    for g in gt_by_rel.values():
        crop = g[rows, cols]
        v = crop[(crop > 1e-3) & (crop < MAX_DEPTH[dataset])]
        rmse.append((1 - S) * math.sqrt(np.mean(v**2)))
        sq_rel.append((1 - S) ** 2 * np.mean(v))
        min_g = min(min_g, float(v.min()))
    values = {
        "abs_rel": 1 - S,
        "sq_rel": float(np.mean(sq_rel)),
        "rmse": float(np.mean(rmse)),
        "rmse_log": abs(math.log(S)),
        "log10": abs(math.log10(S)),
        "silog": 0.0,
        "d1": 1.0,
        "d2": 1.0,
        "d3": 1.0,
    }
    return values, min_g


CASES = [
    # (protocol, prediction layout, quantised)
    ("kitti-garg-full", "kb", False),  # 352×1216 predictions pasted back (BTS)
    ("kitti-garg-full", "kb", True),
    ("kitti-garg-full", "full", False),
    ("kitti-garg-kbcrop", "kb", False),
    ("kitti-garg-kbcrop", "full", False),  # full-size predictions cut like the GT
    ("kitti-eigen", "full", False),
    ("kitti-eigen", "kb", False),
    ("nyu-eigen", "full", False),
    ("nyu-eigen", "full", True),
]


@pytest.mark.parametrize(("protocol", "layout", "quantised"), CASES)
def test_eval_pngs_on_real_frames_matches_hand_values(
    realdata, tmp_path, capsys, protocol, layout, quantised
):
    dataset = protocol.split("-")[0]
    scale = SCALE[dataset]
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    gt_m = {}
    for rel, src in _gt_files(dataset).items():
        (gt_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, gt_dir / rel)
        raw = decode_depth(src.read_bytes(), str(src))
        gt_m[rel] = raw.astype(np.float64) / scale
        pred_raw = np.round(S * raw).astype(np.uint16) if quantised else raw
        if layout == "kb":
            pred_raw = pred_raw[KB]
        (pred_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (pred_dir / rel).write_bytes(encode_depth(np.ascontiguousarray(pred_raw)))
    # A prediction without ground truth (like KITTI's `None` lines) is skipped and counted.
    orphan = pred_dir / "no_gt" / "0000000000.png"
    orphan.parent.mkdir(parents=True)
    shutil.copyfile(next(iter(pred_dir.rglob("*.png"))), orphan)

    argv = [
        "eval-pngs",
        "--protocol",
        protocol,
        "--pred",
        str(pred_dir),
        "--gt",
        str(gt_dir),
        "--json",
    ]
    if not quantised:
        argv += ["--pred-scale", repr(scale / S)]  # stored value v reads as s·v/scale metres
    assert main(argv) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["protocol"] == protocol
    assert (report["n_images"], report["n_skipped"]) == (len(gt_m), 1)

    expected, min_g = _expected(gt_m, protocol, dataset)
    got = report["metrics"]
    if not quantised:
        for name, value in expected.items():
            assert got[name] == pytest.approx(value, abs=1e-9), name
        return
    q = 0.5 / scale  # largest |p − s·g| from rounding to the uint16 grid
    tol = {
        "abs_rel": q / min_g,
        "sq_rel": 2 * (1 - S) * q + q * q / min_g,  # |(a+δ)² − a²|/g with a = (1−s)g, |δ| ≤ q
        "rmse": q,
        "rmse_log": q / (S * min_g),
        "log10": q / (S * min_g) / math.log(10),
        "silog": 100 * q / (S * min_g),
        "d1": 0.0,
        "d2": 0.0,
        "d3": 0.0,
    }
    for name, value in expected.items():
        assert got[name] == pytest.approx(value, abs=tol[name] + 1e-12), name


def test_kitti_conventions_give_different_numbers_on_real_frames(realdata, tmp_path, capsys):
    """Same KB-crop predictions, two protocols: the reported rmse differs because the masks do."""
    pred_dir, gt_dir = tmp_path / "pred", tmp_path / "gt"
    for rel, src in _gt_files("kitti").items():
        (gt_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, gt_dir / rel)
        raw = decode_depth(src.read_bytes(), str(src))
        (pred_dir / rel).parent.mkdir(parents=True, exist_ok=True)
        (pred_dir / rel).write_bytes(encode_depth(np.ascontiguousarray(raw[KB])))
    rmse = {}
    for protocol in ("kitti-garg-full", "kitti-garg-kbcrop"):
        assert (
            main(
                [
                    "eval-pngs",
                    "--protocol",
                    protocol,
                    "--pred",
                    str(pred_dir),
                    "--gt",
                    str(gt_dir),
                    "--json",
                    "--pred-scale",
                    repr(256 / S),
                ]
            )
            == 0
        )
        rmse[protocol] = json.loads(capsys.readouterr().out)["metrics"]["rmse"]
    assert rmse["kitti-garg-full"] != pytest.approx(rmse["kitti-garg-kbcrop"], rel=1e-6)


def test_real_frames_have_the_sizes_the_literal_crops_assume(realdata):
    for dataset, size in (("kitti", (375, 1242)), ("nyu", (480, 640))):
        for src in _gt_files(dataset).values():
            assert decode_depth(src.read_bytes(), str(src)).shape == size
