"""Per-image metrics against hand-computed values, the silog NaN trap, and MetricSums."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from depthkd.errors import DataError
from depthkd.eval.metrics import MetricSums, compute_metrics, metrics_vector
from depthkd.metric_names import METRIC_NAMES


def test_metrics_match_hand_computed_values():
    # p = [2, 4], g = [1, 4]: pixel 1 is off by a factor 2, pixel 2 is exact.
    m = compute_metrics(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 4.0]))
    ln2 = math.log(2.0)
    expected = {
        "abs_rel": 0.5,  # (|1-2|/1 + 0) / 2
        "sq_rel": 0.5,  # ((1-2)²/1 + 0) / 2
        "rmse": math.sqrt(0.5),  # sqrt((1 + 0) / 2)
        "rmse_log": ln2 / math.sqrt(2.0),  # sqrt((ln 2)² / 2)
        "log10": math.log10(2.0) / 2,  # (log10 2 + 0) / 2
        # e = [ln 2, 0]: population std = ln 2 / 2
        "silog": 100.0 * ln2 / 2,
        "d1": 0.5,  # ratios [2, 1]; 2 ≥ 1.25
        "d2": 0.5,  # 2 ≥ 1.5625
        "d3": 0.5,  # 2 ≥ 1.953125
    }
    assert list(m) == list(METRIC_NAMES)
    for name, value in expected.items():
        assert m[name] == pytest.approx(value, rel=1e-12), name


def test_metrics_accept_numpy_and_a_mask():
    pred = np.array([[2.0, 99.0], [4.0, 0.0]], dtype=np.float32)
    gt = np.array([[1.0, 0.0], [4.0, 0.0]], dtype=np.float32)
    m = compute_metrics(pred, gt, gt > 0)
    assert m["abs_rel"] == pytest.approx(0.5) and m["d1"] == pytest.approx(0.5)


def test_delta_thresholds_are_strict():
    # ratio exactly 1.25 (representable in binary) is not < 1.25
    m = compute_metrics(torch.tensor([1.25]), torch.tensor([1.0]))
    assert (m["d1"], m["d2"], m["d3"]) == (0.0, 1.0, 1.0)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [0.9, 1.0, 1.1, 3.0])
def test_silog_of_a_scaled_prediction_is_zero_not_nan(dtype, k):
    g = torch.linspace(1.0, 80.0, 100_000, dtype=dtype)
    m = compute_metrics(k * g, g)
    assert all(math.isfinite(v) for v in m.values())
    # float64: ln(k·g) − ln g is constant up to rounding (~1e-16) → silog ~1e-14.
    # float32: k·g is rounded to 24 bits (relative 6e-8) before we upcast → silog ~1e-5.
    assert m["silog"] == pytest.approx(0.0, abs=1e-9 if dtype == torch.float64 else 1e-4)
    assert m["rmse_log"] == pytest.approx(abs(math.log(k)), abs=1e-6)


def test_empty_selection_is_an_error():
    with pytest.raises(DataError, match="no valid pixel"):
        metrics_vector(torch.ones(3), torch.ones(3), torch.zeros(3, dtype=torch.bool))


def test_metric_sums_round_trip_merge_and_means():
    a = MetricSums()
    a.add(compute_metrics(torch.tensor([2.0, 4.0]), torch.tensor([1.0, 4.0])))
    a.add(None)
    b = MetricSums()
    b.add(metrics_vector(torch.tensor([1.0]), torch.tensor([1.0])))  # perfect image
    t = a.to_tensor()
    assert t.dtype == torch.float64 and t.shape == (len(METRIC_NAMES) + 2,)
    back = MetricSums.from_tensor(t)
    assert torch.equal(back.sums, a.sums) and (back.n_images, back.n_skipped) == (1, 1)
    merged = a.merge(b)
    assert (merged.n_images, merged.n_skipped) == (2, 1)
    means = merged.means()
    assert means["abs_rel"] == pytest.approx(0.25)  # (0.5 + 0) / 2 images
    assert means["d1"] == pytest.approx(0.75)  # (0.5 + 1) / 2
    assert not any(math.isnan(v) for v in means.values())
    assert a.n_images == 1  # merge does not mutate


def test_metric_sums_all_reduce_without_process_group_is_identity():
    a = MetricSums()
    a.add(compute_metrics(torch.tensor([2.0]), torch.tensor([1.0])))
    reduced = a.all_reduce()
    assert torch.equal(reduced.sums, a.sums) and reduced.n_images == 1


def test_means_of_nothing_is_a_clear_error():
    sums = MetricSums()
    sums.add(None)
    with pytest.raises(DataError, match=r"no image had a valid ground-truth pixel \(1 skipped\)"):
        sums.means()
