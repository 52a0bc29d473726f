"""Tests of models.losses: values at and away from the target, hand-computed values, NaN safety."""

from __future__ import annotations

import math

import pytest
import torch

from depthkd.models.losses import (
    attentive_kd_loss,
    confidence_fit_loss,
    confidence_target,
    cross_distillation_loss,
    response_kd_loss,
    silog_loss,
    spatial_attention,
)

NAN = float("nan")


def depth(*values: float) -> torch.Tensor:
    """A (1, 1, 1, N) depth map."""
    return torch.tensor(values, dtype=torch.float32).view(1, 1, 1, -1)


@pytest.fixture
def gt() -> torch.Tensor:
    return torch.rand(2, 1, 6, 8, generator=torch.Generator().manual_seed(0)) * 9 + 1


def leaf(x: torch.Tensor) -> torch.Tensor:
    return x.clone().requires_grad_(True)


def assert_finite_backward(loss: torch.Tensor, *leaves: torch.Tensor) -> None:
    assert torch.isfinite(loss), loss
    loss.backward()
    for x in leaves:
        assert x.grad is not None
        assert torch.isfinite(x.grad).all()


# --- SILog -------------------------------------------------------------------------------------


def test_silog_zero_at_target_with_finite_zero_gradient(gt: torch.Tensor) -> None:
    pred = leaf(gt)
    loss = silog_loss(pred, gt)
    assert loss.item() <= 1e-6
    assert_finite_backward(loss, pred)
    assert pred.grad.abs().max() == 0


@pytest.mark.parametrize("factor", [0.5, 1.3])
def test_silog_positive_away_from_target(gt: torch.Tensor, factor: float) -> None:
    assert silog_loss(gt * factor, gt).item() > 0.1
    assert silog_loss(gt + torch.randn_like(gt), gt).item() > 0.1


def test_silog_hand_computed_pools_over_batch() -> None:
    # Valid pixels: e = ln(e) - ln 1 = 1 (image 0) and e = 0 (image 1); NaN, 0 and a gt below
    # min_depth are ignored. Pooled: 10·sqrt(mean e² − 0.85·mean(e)²) = 10·sqrt(0.5 − 0.2125).
    pred = torch.tensor([math.e, NAN, 1.0, 5.0, 3.0]).view(1, 1, 1, 5)
    pred = torch.cat([pred, pred.roll(-2, dims=3)])  # image 1: [1, 5, 3, e, NaN]
    gt = torch.tensor([[1.0, NAN, 0.0, 0.0, 0.05], [1.0, 0.0, 0.05, NAN, 0.0]]).view(2, 1, 1, 5)
    assert silog_loss(pred, gt).item() == pytest.approx(5.361902647381804, rel=1e-6)


def test_silog_no_valid_pixels_gives_connected_zero() -> None:
    pred = leaf(depth(1.0, 2.0, NAN))
    loss = silog_loss(pred, depth(0.0, NAN, 3.0), torch.zeros(1, 1, 1, 3, dtype=torch.bool))
    assert loss.item() == 0
    assert_finite_backward(loss, pred)


def test_silog_finite_with_zero_prediction_and_invalid_gt() -> None:
    pred = leaf(depth(0.0, 2.0, 3.0, NAN, 0.0))
    loss = silog_loss(pred, depth(1.0, 2.5, 2.0, 0.0, NAN))
    assert loss.item() > 0
    assert_finite_backward(loss, pred)


def test_silog_valid_mask_and_shape_checks() -> None:
    pred, gt = depth(2.0, 1.0), depth(1.0, 1.0)
    only_second = torch.tensor([False, True]).view(1, 1, 1, 2)
    assert silog_loss(pred, gt, only_second).item() == 0
    with pytest.raises(ValueError, match="shape mismatch"):
        silog_loss(pred, gt.view(1, 1, 2))
    with pytest.raises(ValueError, match="bool mask"):
        silog_loss(pred, gt, only_second.float())


# --- attentive feature KD ---------------------------------------------------------------------


def hot_spot_teacher() -> torch.Tensor:
    """(1, 2, 4, 4): direction e1 everywhere, strong at pixel (0, 0), weak elsewhere."""
    t = torch.zeros(1, 2, 4, 4)
    t[:, 0] = 0.1
    t[0, 0, 0, 0] = 3.0
    return t


def test_spatial_attention_mean_one_and_sharpens_as_tau_falls() -> None:
    feat = torch.randn(3, 8, 5, 7, generator=torch.Generator().manual_seed(1))
    maxima, entropies = [], []
    for tau in (4.0, 1.0, 0.25):
        a = spatial_attention(feat, tau)
        assert a.shape == (3, 1, 5, 7)
        torch.testing.assert_close(a.mean(dim=(1, 2, 3)), torch.ones(3))
        p = a.flatten(1) / a.flatten(1).sum(dim=1, keepdim=True)
        maxima.append(a.amax().item())
        entropies.append(-(p * p.log()).sum(dim=1).mean().item())
    assert maxima == sorted(maxima) and len(set(maxima)) == 3
    assert entropies == sorted(entropies, reverse=True) and len(set(entropies)) == 3
    with pytest.raises(ValueError, match="tau must be > 0"):
        spatial_attention(feat, 0.0)


def test_attentive_kd_zero_at_target_and_gradients_only_into_student() -> None:
    teacher = [leaf(torch.randn(2, 4, 8, 8)), leaf(torch.randn(2, 6, 4, 4))]
    assert attentive_kd_loss([2 * t.detach() for t in teacher], teacher).item() <= 1e-6
    student = [leaf(torch.randn_like(t)) for t in teacher]
    loss = attentive_kd_loss(student, teacher, tau=0.5, weights=[1.0, 0.5])
    assert loss.item() > 0
    assert_finite_backward(loss, *student)
    assert all(t.grad is None for t in teacher)


def test_attentive_kd_zero_features_keep_gradients_finite() -> None:
    student = leaf(torch.zeros(1, 3, 2, 2))
    loss = attentive_kd_loss([student], [torch.zeros(1, 3, 2, 2)])
    assert loss.item() == 0
    assert_finite_backward(loss, student)


def test_attentive_kd_shape_mismatch_names_the_scale() -> None:
    good = torch.randn(1, 4, 8, 8)
    with pytest.raises(
        ValueError, match=r"scale 1: student features \(1, 4, 4, 4\).*\(1, 5, 4, 4\)"
    ):
        attentive_kd_loss([good, torch.randn(1, 4, 4, 4)], [good, torch.randn(1, 5, 4, 4)])
    with pytest.raises(ValueError, match="2 weights for 1 scales"):
        attentive_kd_loss([good], [good], weights=[1.0, 1.0])
    with pytest.raises(ValueError, match="1 student and 2 teacher"):
        attentive_kd_loss([good], [good, good])


@pytest.mark.parametrize("mismatch_at_hot_spot", [True, False])
def test_attentive_kd_weights_high_teacher_activation(mismatch_at_hot_spot: bool) -> None:
    teacher = hot_spot_teacher()
    student = teacher.clone()
    y, x = (0, 0) if mismatch_at_hot_spot else (3, 3)
    student[0, :, y, x] = torch.tensor([0.0, 1.0])  # orthogonal: ||n(S) − n(T)||² = 2 there
    losses = [attentive_kd_loss([student], [teacher], tau=tau).item() for tau in (4.0, 1.0, 0.25)]
    # Lower τ moves weight onto the hot spot: its error counts more, a cold pixel's less.
    assert losses == sorted(losses, reverse=not mismatch_at_hot_spot)
    assert len(set(losses)) == 3
    plain = attentive_kd_loss([student], [teacher], tau=0.25, attentive=False)
    assert plain.item() == pytest.approx(2 / 16)


# --- response KD ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["l1", "log_l1", "silog"])
def test_response_kd_zero_at_teacher_positive_elsewhere(gt: torch.Tensor, kind: str) -> None:
    teacher = leaf(gt)
    student = leaf(gt)
    loss = response_kd_loss(student, teacher, kind=kind)
    assert loss.item() <= 1e-6
    assert_finite_backward(loss, student)
    far = leaf(gt * 1.5)
    loss = response_kd_loss(far, teacher, kind=kind)
    assert loss.item() > 0.1
    assert_finite_backward(loss, far)
    assert teacher.grad is None


def test_response_kd_masks_and_rejects_unknown_kind() -> None:
    student = leaf(depth(0.0, 2.0, NAN))
    teacher = depth(1.0, 1.0, NAN)
    valid = torch.tensor([False, True, True]).view(1, 1, 1, 3)
    loss = response_kd_loss(student, teacher, valid, kind="l1")
    assert loss.item() == pytest.approx(1.0)
    assert_finite_backward(loss, student)
    with pytest.raises(ValueError, match=r"'l2'.*'l1', 'log_l1', 'silog'"):
        response_kd_loss(student, teacher, kind="l2")


# --- URCDC confidence and cross-distillation --------------------------------------------------


def test_confidence_target_is_one_at_target_and_decreases_with_error() -> None:
    d = leaf(depth(2.0, 2.2, 3.0, 6.0, 0.0))
    c = confidence_target(d, depth(2.0, 2.0, 2.0, 2.0, 0.0))
    assert c[0, 0, 0, 0].item() == 1.0 and c[0, 0, 0, 4].item() == 1.0
    values = c[0, 0, 0, :4].tolist()
    assert values == sorted(values, reverse=True) and len(set(values)) == 4
    assert ((c > 0) & (c <= 1)).all() and not c.requires_grad
    # URCDC's literal: exp(−5·|2 − 3| / (2 + 3)) = exp(−1).
    assert c[0, 0, 0, 2].item() == pytest.approx(math.exp(-1))


SOURCE, TARGET, GT = (1.0, 1.0, 5.0), (2.0, 1.0, 3.0), (1.0, 2.0, 0.0)


def test_cross_distillation_urcdc_hand_computed_and_no_source_gradient() -> None:
    # Labelled pixels 0 and 1: ĉ = (1, exp(−5·1/3)), |d_S − d_T| = (1, 0); pixel 2 has no GT.
    source, target = leaf(depth(*SOURCE)), leaf(depth(*TARGET))
    loss = cross_distillation_loss(source, target, depth(*GT), None, weight=0.1)
    assert loss.item() == pytest.approx(0.1 / (1 + math.exp(-5 / 3)), rel=1e-6)
    assert_finite_backward(loss, target)
    assert source.grad is None
    assert target.grad[0, 0, 0, 2] == 0


@pytest.mark.parametrize("mode", ["urcdc", "rectified"])
def test_cross_distillation_zero_at_target(gt: torch.Tensor, mode: str) -> None:
    sparse = torch.where(torch.rand_like(gt) < 0.5, gt, 0.0)  # half the pixels unlabelled
    kwargs = {"source_confidence": torch.full_like(gt, 0.7), "mode": mode}
    assert cross_distillation_loss(gt, gt, sparse, None, **kwargs).item() <= 1e-6
    assert cross_distillation_loss(gt, gt * 1.2, sparse, None, **kwargs).item() > 0.1


def test_cross_distillation_rectified_uses_unlabelled_pixels() -> None:
    target = leaf(depth(*TARGET))
    confidence = depth(0.3, 0.3, 0.5)
    args = (depth(*SOURCE), target, depth(*GT), None)
    rectified = cross_distillation_loss(*args, source_confidence=confidence, mode="rectified")
    # Unlabelled pixel 2 enters with weight 0.5 and error |5 − 3| = 2.
    assert rectified.item() == pytest.approx(2 / (1 + math.exp(-5 / 3) + 0.5), rel=1e-6)
    assert rectified.item() != pytest.approx(cross_distillation_loss(*args).item())
    assert_finite_backward(rectified, target)
    assert target.grad[0, 0, 0, 2] != 0


def test_cross_distillation_errors_and_empty_mask() -> None:
    args = (depth(*SOURCE), depth(*TARGET), depth(*GT), None)
    with pytest.raises(ValueError, match="needs source_confidence"):
        cross_distillation_loss(*args, mode="rectified")
    with pytest.raises(ValueError, match="'urcdc', 'rectified'"):
        cross_distillation_loss(*args, mode="mirror")
    target = leaf(depth(2.0, NAN, 3.0))
    empty = torch.zeros(1, 1, 1, 3, dtype=torch.bool)
    loss = cross_distillation_loss(depth(1.0, 1.0, NAN), target, depth(1.0, 2.0, 0.0), empty)
    assert loss.item() == 0
    assert_finite_backward(loss, target)


def test_confidence_fit_zero_at_target_positive_elsewhere() -> None:
    d, gt = depth(1.0, 2.5, 4.0, 7.0), depth(1.0, 2.0, NAN, 0.0)
    perfect = leaf(confidence_target(d, gt))
    loss = confidence_fit_loss(perfect, d, gt, None)
    assert loss.item() <= 1e-6
    assert_finite_backward(loss, perfect)
    constant = leaf(torch.full_like(d, 0.5))
    loss = confidence_fit_loss(constant, d, gt, None)
    # Labelled pixels 0, 1: 0.5 · mean(|0.5 − 1|, |0.5 − exp(−5·0.5/4.5)|).
    expected = 0.5 * (0.5 + abs(0.5 - math.exp(-5 * 0.5 / 4.5))) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert_finite_backward(loss, constant)
    assert constant.grad[0, 0, 0, 2:].abs().max() == 0
