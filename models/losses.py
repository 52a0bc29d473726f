"""Depth and distillation losses as plain functions on tensors (DESIGN.md §3).

* SILog (Eigen et al.; BTS variant): the supervised depth loss of students, teachers and ghosts.
* Attentive feature KD (our formulation) and response KD: the DisDepth-style stage-2 terms.
* The pseudo-label loss on unlabeled images (SILog to cached teacher depth, the hardest pixels
  of each image ignored as in Depth Anything V2, optionally confidence-weighted).
* URCDC-Depth's uncertainty-rectified cross-distillation, its confidence target and the fit of
  the predicted confidences, plus our "rectified" extension for sparse ground truth.

Depths are (B, 1, H, W) in metres, masks are bool (B, 1, H, W). Every loss is a float32 scalar,
never NaN in value or gradient: pixels outside a mask are replaced by a harmless constant
*before* any log/abs/sqrt (``_fill``), so NaN/0/inf there cannot leak into the backward pass, and
an empty mask gives a zero that is still connected to the graph.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

RESPONSE_KINDS = ("l1", "log_l1", "silog")
CROSS_MODES = ("urcdc", "rectified")

# Denominator guard; URCDC uses 1e-7 in its confidence target and DiffLoss.
_DENOM_EPS = 1e-7
# Clamp before the log as P3Depth's SILogLoss does (SysCV/P3Depth src/losses/loss.py); BTS has none.
_LOG_EPS = 1e-6


def _check_shapes(**tensors: Tensor | None) -> None:
    """Raises ValueError unless all given tensors share one shape (no silent broadcasting)."""
    given = {name: t for name, t in tensors.items() if t is not None}
    shapes = {name: tuple(t.shape) for name, t in given.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"shape mismatch: {shapes}")


def _labelled(gt: Tensor, valid: Tensor | None, min_depth: float) -> Tensor:
    """Pixels with usable ground truth: finite, > min_depth and inside ``valid``. (B, 1, H, W)."""
    mask = torch.isfinite(gt) & (gt > min_depth)
    if valid is None:
        return mask
    if valid.dtype != torch.bool:
        raise ValueError(f"valid must be a bool mask, got dtype {valid.dtype}")
    return mask & valid


def _fill(x: Tensor, mask: Tensor, value: float = 1.0) -> Tensor:
    """``x`` on ``mask``, ``value`` elsewhere; the gradient outside the mask is exactly zero."""
    return torch.where(mask, x.float(), value)


def _weighted_mean(x: Tensor, weight: Tensor) -> Tensor:
    """Σ w·x / Σ w, and 0 (connected to x's graph) when all weights are 0."""
    return (x * weight).sum() / weight.sum().clamp_min(_DENOM_EPS)


def _safe_sqrt(x: Tensor) -> Tensor:
    """sqrt(max(x, 0)) whose gradient is 0, not inf·0 = NaN, where x <= 0."""
    positive = x > 0
    return torch.where(positive, torch.where(positive, x, 1.0).sqrt(), 0.0)


def _check_temperature(name: str, value: float) -> None:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")


def silog_loss(
    pred: Tensor,
    gt: Tensor,
    valid: Tensor | None = None,
    *,
    variance_focus: float = 0.85,
    scale: float = 10.0,
    min_depth: float = 0.1,
    eps: float = _LOG_EPS,
) -> Tensor:
    """Scale-invariant log loss, ``scale · sqrt(max(mean e² − λ·mean(e)², 0))``.

    Follows BTS (cleinc/bts ``pytorch/bts.py``, class ``silog_loss``, also used unchanged by
    URCDC-Depth ``newcrfs/utils.py``): e = ln d − ln g over the pixels selected by the mask,
    pooled over the whole batch (not averaged per image). BTS' mask is g > 0.1 m (NYU) or
    g > 1 m (KITTI), here ``min_depth``. Unlike BTS, prediction zeros are clamped to ``eps``
    before the log, the variance is clamped at 0 and the sqrt has a zero gradient at 0, so the
    loss and its gradient stay finite at the target and with an empty mask.

    Args:
        pred: predicted depth (B, 1, H, W).
        gt: ground-truth depth (B, 1, H, W); 0, NaN or inf mark missing pixels.
        valid: optional bool mask (B, 1, H, W) further restricting the pixels.
        variance_focus: λ; 1 gives a fully scale-invariant loss, 0 the log-RMSE.
        scale: BTS' factor 10.
        min_depth: ground truth at or below this is ignored.
        eps: lower clamp on ``pred`` before the log.

    Returns:
        Scalar tensor; exactly 0 when ``pred == gt`` on all selected pixels.
    """
    _check_shapes(pred=pred, gt=gt, valid=valid)
    mask = _labelled(gt, valid, min_depth)
    # Outside the mask both sides are 1, so e = 0 there and only the count needs the mask.
    e = _fill(pred, mask).clamp_min(eps).log() - _fill(gt, mask).log()  # (B, 1, H, W)
    count = mask.sum().clamp_min(1)
    mean_e = e.sum() / count
    mean_e2 = e.square().sum() / count
    return scale * _safe_sqrt(mean_e2 - variance_focus * mean_e.square())


def pseudo_label_loss(
    pred: Tensor,
    pseudo: Tensor,
    valid: Tensor | None = None,
    *,
    confidence: Tensor | None = None,
    ignore_top: float = 0.1,
    variance_focus: float = 0.85,
    scale: float = 10.0,
    min_depth: float = 0.1,
) -> Tensor:
    """SILog of the student against a teacher's cached pseudo-depth, robust to its mistakes.

    As ``silog_loss`` with the pseudo-depth as target, plus what Depth Anything V2 does for
    pseudo-labelled images: per image, the ``ignore_top`` share of pixels with the largest
    |ln d − ln p| is left out (a teacher's worst pixels are more often its errors than the
    student's). ``confidence`` (the teacher's per-pixel confidence in [0, 1], where it has one)
    weights the remaining pixels: mean e² and mean e become confidence-weighted means.

    Args:
        pred: student depth (B, 1, H, W).
        pseudo: pseudo-depth (B, 1, H, W); 0 marks pixels (and images) without one.
        valid: optional bool mask (B, 1, H, W), e.g. the rows of a batch that carry pseudo-labels.
        confidence: optional per-pixel weights (B, 1, H, W) in [0, 1]; detached here.
        ignore_top: share of each image's pixels with the largest error left out, in [0, 1).
        variance_focus: λ of SILog.
        scale: SILog's factor 10.
        min_depth: pseudo-depths at or below this are ignored.

    Returns:
        Scalar tensor; 0 when ``pred == pseudo`` on the kept pixels or no pixel is kept.
    """
    if not 0 <= ignore_top < 1:
        raise ValueError(f"ignore_top must be in [0, 1), got {ignore_top}")
    pseudo = pseudo.detach()
    _check_shapes(pred=pred, pseudo=pseudo, valid=valid, confidence=confidence)
    mask = _labelled(pseudo, valid, min_depth)
    e = _fill(pred, mask).clamp_min(_LOG_EPS).log() - _fill(pseudo, mask).log()  # (B, 1, H, W)
    if ignore_top > 0:
        err = torch.where(mask, e.detach().abs(), -1.0).flatten(1)  # (B, HW), -1 off the mask
        keep = (mask.flatten(1).sum(1) * (1 - ignore_top)).floor().long()  # (B,)
        rank = err.argsort(dim=1).argsort(dim=1)  # 0 = smallest error (off-mask pixels first)
        off = (~mask).flatten(1).sum(1, keepdim=True)
        mask = mask & (rank < off + keep[:, None]).view_as(mask)
    weight = mask.float()
    if confidence is not None:
        weight = weight * confidence.detach().float().clamp(0, 1)
    total = weight.sum().clamp_min(_DENOM_EPS)
    mean_e = (e * weight).sum() / total
    mean_e2 = (e.square() * weight).sum() / total
    return scale * _safe_sqrt(mean_e2 - variance_focus * mean_e.square())


def spatial_attention(teacher_feat: Tensor, tau: float) -> Tensor:
    """Spatial attention ``a = H·W · softmax_p(mean_c |T|(p) / τ)`` of one feature map.

    Mean exactly 1 per image (up to rounding), so it re-weights pixels without changing the
    loss scale; smaller τ concentrates the weight on the most active pixels. Not detached here:
    callers pass teacher features that are already stop-gradient.

    Args:
        teacher_feat: teacher features (B, C, H, W).
        tau: attention temperature, > 0.

    Returns:
        Attention map (B, 1, H, W), float32.
    """
    _check_temperature("tau", tau)
    if teacher_feat.ndim != 4:
        raise ValueError(f"teacher_feat must be (B, C, H, W), got {tuple(teacher_feat.shape)}")
    b, _, h, w = teacher_feat.shape
    energy = teacher_feat.float().abs().mean(dim=1).flatten(1) / tau  # (B, H*W)
    return (h * w * energy.softmax(dim=1)).view(b, 1, h, w)


def attentive_kd_loss(
    student_feats: Sequence[Tensor],
    teacher_feats: Sequence[Tensor],
    *,
    tau: float = 1.0,
    weights: Sequence[float] | None = None,
    attentive: bool = True,
) -> Tensor:
    """Attentive feature KD, ``Σ_l w_l · mean_p a_l(p) · ||n(S_l(p)) − n(sg(T_l(p)))||²``.

    n is the per-pixel L2 normalisation over channels and a_l = ``spatial_attention(T_l, tau)``;
    ``attentive=False`` sets a_l = 1 (plain normalised feature KD, the ablation). The mean runs
    over batch and pixels. Teacher features are detached.

    Args:
        student_feats: per-scale student decoder inputs S_l, each (B, C_l, H_l, W_l).
        teacher_feats: per-scale adapted teacher features T_l, same shapes as ``student_feats``.
        tau: attention temperature, > 0.
        weights: per-scale weights w_l; all 1 when None.
        attentive: use the teacher attention (True) or uniform weights (False).

    Returns:
        Scalar tensor, 0 when the student features are positive multiples of the teacher's.
    """
    n_scales = len(student_feats)
    if n_scales == 0 or n_scales != len(teacher_feats):
        raise ValueError(
            f"need one teacher feature per student feature and at least one scale, got "
            f"{n_scales} student and {len(teacher_feats)} teacher scales"
        )
    weights = [1.0] * n_scales if weights is None else list(weights)
    if len(weights) != n_scales:
        raise ValueError(f"got {len(weights)} weights for {n_scales} scales")
    terms = []
    for i, (s, t, w) in enumerate(zip(student_feats, teacher_feats, weights, strict=True)):
        if s.shape != t.shape or s.ndim != 4:
            raise ValueError(
                f"scale {i}: student features {tuple(s.shape)} and teacher features "
                f"{tuple(t.shape)} must have the same (B, C, H, W) shape"
            )
        t = t.detach()
        n_s = F.normalize(s.float(), dim=1, eps=_DENOM_EPS)
        n_t = F.normalize(t.float(), dim=1, eps=_DENOM_EPS)
        dist = (n_s - n_t).square().sum(dim=1, keepdim=True)  # (B, 1, H, W)
        if attentive:
            dist = spatial_attention(t, tau) * dist
        terms.append(w * dist.mean())
    return torch.stack(terms).sum()


def response_kd_loss(
    student_depth: Tensor,
    teacher_depth: Tensor,
    valid: Tensor | None = None,
    *,
    kind: str = "log_l1",
    min_depth: float = 1e-3,
) -> Tensor:
    """Response KD: the student's depth regressed onto the detached teacher depth.

    Pixels: finite teacher depth > ``min_depth`` (and ``valid`` if given). Kinds:
    ``l1`` mean |d_S − d_T|, ``log_l1`` mean |ln d_S − ln d_T|, ``silog`` ``silog_loss`` with the
    teacher as target.

    Args:
        student_depth: student depth (B, 1, H, W).
        teacher_depth: teacher depth (B, 1, H, W); detached here.
        valid: optional bool mask (B, 1, H, W).
        kind: one of ``RESPONSE_KINDS``.
        min_depth: teacher depths at or below this are ignored.

    Returns:
        Scalar tensor, 0 when the student equals the teacher on the selected pixels.
    """
    if kind not in RESPONSE_KINDS:
        raise ValueError(f"unknown response KD kind {kind!r}; expected one of {RESPONSE_KINDS}")
    teacher = teacher_depth.detach()
    if kind == "silog":
        return silog_loss(student_depth, teacher, valid, min_depth=min_depth)
    _check_shapes(student_depth=student_depth, teacher_depth=teacher, valid=valid)
    mask = _labelled(teacher, valid, min_depth)
    s, t = _fill(student_depth, mask), _fill(teacher, mask)
    if kind == "log_l1":
        s, t = s.clamp_min(_LOG_EPS).log(), t.log()
    return _weighted_mean((s - t).abs(), mask.float())


def confidence_target(depth: Tensor, reference: Tensor, *, temperature: float = 0.2) -> Tensor:
    """URCDC's confidence target ``ĉ = exp(−|r − sg(d)| / ((r + sg(d))·T))``, shape of ``depth``.

    URCDC-Depth ``urcdc/train.py`` computes
    ``exp(-5·|gt − d.detach()| / (gt + d.detach() + 1e-7))``, i.e. T = 0.2; here the guard is
    ``max((r + d)·T, 1e-7)``. Exactly 1 where d == r (also where both are 0), in (0, 1] for
    non-negative depths. The result carries no gradient into ``depth``.

    Args:
        depth: predicted depth d (B, 1, H, W); detached here.
        reference: reference depth r (B, 1, H, W), usually the ground truth.
        temperature: T, > 0; smaller is stricter.
    """
    _check_temperature("temperature", temperature)
    d = depth.detach().float()
    r = reference.float()
    return torch.exp(-(r - d).abs() / ((r + d) * temperature).clamp_min(_DENOM_EPS))


def cross_distillation_loss(
    source_depth: Tensor,
    target_depth: Tensor,
    gt: Tensor,
    valid: Tensor | None,
    *,
    source_confidence: Tensor | None = None,
    temperature: float = 0.2,
    weight: float = 1.0,
    mode: str = "urcdc",
) -> Tensor:
    """Pseudo-label loss ``L_{S→T} = w · Σ W·|sg(d_S) − d_T| / Σ W`` of one direction.

    The source branch provides the pseudo-label and is detached; the gradient flows only into
    ``target_depth``. Call it twice (S→T and T→S) for URCDC's mirrored pair.

    * ``urcdc`` — URCDC-Depth's behaviour (``urcdc/train.py`` losses 3/4 with
      ``newcrfs/utils.py`` ``DiffLoss``): W = M·ĉ_S with M the labelled pixels (``valid`` & finite
      gt > 0; URCDC's M is gt > 0.1 m NYU / > 1 m KITTI, so pass that in ``valid``) and
      ĉ_S = ``confidence_target(d_S, gt)``. URCDC uses w = 0.1 and divides by Σ(W + 1e-7);
      here the denominator is max(Σ W, 1e-7). ``source_confidence`` is ignored, as URCDC does.
    * ``rectified`` — our extension for sparse (KITTI) GT: W as above on labelled pixels plus
      W = sg(c_S) on unlabelled ones, c_S being the source's predicted confidence in [0, 1].

    Args:
        source_depth: pseudo-label provider's depth d_S (B, 1, H, W).
        target_depth: depth d_T being taught (B, 1, H, W).
        gt: ground truth (B, 1, H, W); 0/NaN mark missing pixels.
        valid: optional bool mask (B, 1, H, W) of pixels whose GT may be used.
        source_confidence: source confidence head output (B, 1, H, W); required in rectified mode.
        temperature: T of ``confidence_target``.
        weight: w.
        mode: one of ``CROSS_MODES``.

    Returns:
        Scalar tensor; 0 (graph-connected) when no pixel has weight.
    """
    if mode not in CROSS_MODES:
        raise ValueError(f"unknown cross-distillation mode {mode!r}; expected one of {CROSS_MODES}")
    if mode == "rectified" and source_confidence is None:
        raise ValueError("mode 'rectified' needs source_confidence (the source confidence head)")
    _check_shapes(
        source_depth=source_depth,
        target_depth=target_depth,
        gt=gt,
        valid=valid,
        source_confidence=source_confidence,
    )
    source = source_depth.detach()
    labelled = _labelled(gt, valid, 0.0)
    # Detached weights, so NaN in the branch torch.where discards cannot reach any gradient.
    conf = torch.where(labelled, confidence_target(source, gt, temperature=temperature), 0.0)
    if mode == "rectified" and source_confidence is not None:  # checked above: never None here
        conf = torch.where(labelled, conf, source_confidence.detach().float().clamp(0.0, 1.0))
    used = conf > 0
    diff = (_fill(source, used) - _fill(target_depth, used)).abs()  # (B, 1, H, W)
    return weight * _weighted_mean(diff, conf)


def confidence_fit_loss(
    predicted_confidence: Tensor,
    depth: Tensor,
    gt: Tensor,
    valid: Tensor | None,
    *,
    temperature: float = 0.2,
    weight: float = 0.5,
) -> Tensor:
    """Fit of a confidence head, ``w · mean_M |c − ĉ|`` with ĉ = ``confidence_target(depth, gt)``.

    As URCDC-Depth ``urcdc/train.py`` (losses 5/6: ``0.5·|u_gt[mask] − u[mask]|.mean()``): L1 on
    the labelled pixels M (``valid`` & finite gt > 0), target detached, w = 0.5.

    Args:
        predicted_confidence: confidence head output c (B, 1, H, W).
        depth: the same branch's depth (B, 1, H, W); detached inside the target.
        gt: ground truth (B, 1, H, W).
        valid: optional bool mask (B, 1, H, W).
        temperature: T of ``confidence_target``.
        weight: w.

    Returns:
        Scalar tensor; 0 when c equals ĉ on every labelled pixel or none is labelled.
    """
    _check_shapes(predicted_confidence=predicted_confidence, depth=depth, gt=gt, valid=valid)
    labelled = _labelled(gt, valid, 0.0)
    target = _fill(confidence_target(depth, gt, temperature=temperature), labelled)
    diff = (_fill(predicted_confidence, labelled) - target).abs()
    return weight * _weighted_mean(diff, labelled.float())
