"""`depthkd eval-pngs` on small synthetic PNG trees: JSON and table output, skips and errors."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from depthkd.cli.main import main
from depthkd.data.images import encode_depth
from depthkd.errors import DataError
from depthkd.eval.pngs import evaluate_pngs
from depthkd.metric_names import METRIC_NAMES


def _write(path, depth_m, scale):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(encode_depth(np.round(np.asarray(depth_m) * scale).astype(np.uint16)))


@pytest.fixture
def nyu_tree(tmp_path):
    """pred/gt trees with NYU-sized maps: a/x.png (pred 2 m, GT 1 m → abs_rel 1), b/y.png (exact),
    c/none.png (no GT file), d/empty.png (GT all zero)."""
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    ones = np.ones((480, 640))
    _write(pred / "a" / "x.png", 2 * ones, 1000)
    _write(gt / "a" / "x.png", ones, 1000)
    _write(pred / "b" / "y.png", 3 * ones, 1000)
    _write(gt / "b" / "y.png", 3 * ones, 1000)
    _write(pred / "c" / "none.png", ones, 1000)
    _write(pred / "d" / "empty.png", ones, 1000)
    _write(gt / "d" / "empty.png", 0 * ones, 1000)
    return pred, gt


def test_eval_pngs_json(nyu_tree, capsys):
    pred, gt = nyu_tree
    assert (
        main(
            ["eval-pngs", "--protocol", "nyu-eigen", "--pred", str(pred), "--gt", str(gt), "--json"]
        )
        == 0
    )
    report = json.loads(capsys.readouterr().out)  # exactly one JSON object on stdout
    assert set(report) == {"protocol", "n_images", "n_skipped", "metrics"}
    assert report["protocol"] == "nyu-eigen"
    assert (report["n_images"], report["n_skipped"]) == (2, 2)
    assert list(report["metrics"]) == list(METRIC_NAMES)
    assert report["metrics"]["abs_rel"] == pytest.approx(0.5)  # (1 + 0) / 2 images
    assert report["metrics"]["d1"] == pytest.approx(0.5)
    assert report["metrics"]["rmse"] == pytest.approx(0.5)
    assert all(math.isfinite(v) for v in report["metrics"].values())


def test_eval_pngs_table_names_protocol_and_skips(nyu_tree, capsys):
    pred, gt = nyu_tree
    assert (
        main(
            [
                "eval-pngs",
                "--protocol",
                "nyu-eigen",
                "--pred",
                str(pred),
                "--gt",
                str(gt),
                "--quiet",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("protocol: nyu-eigen")
    assert "2 evaluated, 2 skipped" in out
    assert "skipped c/none.png: no ground-truth file" in out
    assert "skipped d/empty.png: no valid ground-truth pixel" in out


def test_scales_override_the_dataset_default(nyu_tree):
    pred, gt = nyu_tree
    # Predictions read at scale 2000 are half as deep: a/x.png becomes exact, b/y.png 0.5×.
    report = evaluate_pngs(pred, gt, "nyu-eigen", pred_scale=2000, progress=False)
    assert report.metrics["abs_rel"] == pytest.approx(0.25)


def test_bad_protocol_exits_2_with_the_valid_names(nyu_tree, capsys):
    pred, gt = nyu_tree
    assert (
        main(["eval-pngs", "--protocol", "kitti-garg", "--pred", str(pred), "--gt", str(gt)]) == 2
    )
    err = capsys.readouterr().err
    assert "error: unknown evaluation protocol 'kitti-garg'" in err
    assert "kitti-garg-full" in err and "nyu-eigen" in err


def test_no_prediction_files_is_an_error(tmp_path, capsys):
    (tmp_path / "pred").mkdir()
    (tmp_path / "gt").mkdir()
    assert (
        main(
            [
                "eval-pngs",
                "--protocol",
                "nyu-eigen",
                "--pred",
                str(tmp_path / "pred"),
                "--gt",
                str(tmp_path / "gt"),
            ]
        )
        == 2
    )
    assert "no prediction PNG under" in capsys.readouterr().err


def test_every_image_skipped_is_an_error_not_nan(nyu_tree, capsys):
    pred, gt = nyu_tree
    for rel in ("a/x.png", "b/y.png"):
        (gt / rel).unlink()
    assert (
        main(
            ["eval-pngs", "--protocol", "nyu-eigen", "--pred", str(pred), "--gt", str(gt), "--json"]
        )
        == 2
    )
    captured = capsys.readouterr()
    assert (
        captured.out == "" and "no image had a valid ground-truth pixel (4 skipped)" in captured.err
    )


def test_undecodable_prediction_names_the_file(nyu_tree, capsys):
    pred, gt = nyu_tree
    (pred / "b" / "y.png").write_bytes(b"not a png")
    assert main(["eval-pngs", "--protocol", "nyu-eigen", "--pred", str(pred), "--gt", str(gt)]) == 2
    err = capsys.readouterr().err
    assert "y.png" in err and "not a PNG" in err


def test_size_mismatch_names_file_shapes_and_protocol(tmp_path, capsys):
    _write(tmp_path / "pred" / "x.png", np.ones((240, 320)), 1000)
    _write(tmp_path / "gt" / "x.png", np.ones((480, 640)), 1000)
    assert (
        main(
            [
                "eval-pngs",
                "--protocol",
                "nyu-eigen",
                "--pred",
                str(tmp_path / "pred"),
                "--gt",
                str(tmp_path / "gt"),
            ]
        )
        == 2
    )
    err = capsys.readouterr().err
    assert "x.png" in err and "(240, 320)" in err and "(480, 640)" in err and "nyu-eigen" in err


def test_non_positive_scale_is_rejected(nyu_tree, capsys):
    pred, gt = nyu_tree
    assert (
        main(
            [
                "eval-pngs",
                "--protocol",
                "nyu-eigen",
                "--pred",
                str(pred),
                "--gt",
                str(gt),
                "--gt-scale",
                "0",
            ]
        )
        == 2
    )
    assert "gt_scale must be > 0" in capsys.readouterr().err


def test_ground_truth_without_prediction_is_an_error_unless_allowed(nyu_tree, capsys):
    pred, gt = nyu_tree
    _write(gt / "e" / "lost.png", np.ones((480, 640)), 1000)
    argv = ["eval-pngs", "--protocol", "nyu-eigen", "--pred", str(pred), "--gt", str(gt), "--json"]
    assert main(argv) == 2
    assert "1 ground-truth PNGs" in capsys.readouterr().err
    assert main([*argv, "--allow-missing"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["n_images"], report["n_skipped"]) == (2, 3)


def test_full_frame_protocol_refuses_kb_cropped_ground_truth(tmp_path):
    pred, gt = tmp_path / "pred", tmp_path / "gt"
    _write(pred / "f.png", np.full((352, 1216), 10.0), 256)
    _write(gt / "f.png", np.full((352, 1216), 10.0), 256)
    with pytest.raises(DataError, match="already KB-cropped"):
        evaluate_pngs(pred, gt, "kitti-garg-full", progress=False)
    assert evaluate_pngs(pred, gt, "kitti-garg-kbcrop", progress=False).n_images == 1
