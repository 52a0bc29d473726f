"""Ghost decoder + adapters (acclimation) and URCDC's dual branch: shapes that match the student,
gradients where they belong, coupling bypass, and a student export free of teacher parts."""

from __future__ import annotations

import pytest
import torch

from depthkd.config.schema import StudentConfig, TeacherConfig
from depthkd.models.losses import attentive_kd_loss
from depthkd.models.urcdc import bypass_schedule
from depthkd.models.zoo import build_acclimated_teacher, build_cross_distill, build_student

MAX_DEPTH = 10.0
STUDENT = StudentConfig(name="mobilenetv2_050", decoder_channels=(16, 24, 32, 48))


@pytest.mark.parametrize("teacher", ["swin_micro", "vit_micro_dpt"])
@pytest.mark.parametrize("size", [(64, 96), (75, 250)], ids=["divisible", "odd"])
def test_adapted_teacher_features_have_the_student_decoder_input_shapes(
    teacher: str, size: tuple[int, int]
) -> None:
    torch.manual_seed(0)
    acclimated = build_acclimated_teacher(TeacherConfig(name=teacher), STUDENT, max_depth=MAX_DEPTH)
    student = build_student(STUDENT, max_depth=MAX_DEPTH)
    image = torch.rand(2, 3, *size)
    out = acclimated(image)
    s_out = student(image, return_features=True)
    assert [f.shape for f in out.features] == [f.shape for f in s_out.features]
    assert out.depth.shape == out.ghost_depth.shape == s_out.depth.shape == (2, 1, *size)
    # the ghost decoder is the student's decoder class with the student's configuration
    ghost_decoder = acclimated.ghost.decoder
    assert type(ghost_decoder) is type(student.decoder)
    assert [p.shape for p in ghost_decoder.parameters()] == [
        p.shape for p in student.decoder.parameters()
    ]
    # so attentive KD compares them scale by scale without any reshaping
    assert attentive_kd_loss(s_out.features, out.features, tau=1.0) > 0


def test_acclimation_losses_reach_teacher_adapters_and_ghost_decoder() -> None:
    acclimated = build_acclimated_teacher(
        TeacherConfig(name="swin_micro"), STUDENT, max_depth=MAX_DEPTH
    )
    out = acclimated(torch.rand(2, 3, 64, 96))
    (out.depth.log().mean() + out.ghost_depth.log().mean()).backward()
    missing = [n for n, p in acclimated.named_parameters() if p.grad is None]
    assert not missing, missing[:5]


@pytest.fixture
def dual() -> torch.nn.Module:
    torch.manual_seed(0)
    return build_cross_distill(
        TeacherConfig(name="swin_micro"), STUDENT, max_depth=MAX_DEPTH, p_bypass=0.05
    )


def test_coupled_pass_trains_couplings_but_not_through_teacher_features(dual) -> None:
    out = dual.train()(torch.rand(2, 3, 64, 96), bypass=False)
    assert out.coupled
    out.student_depth.log().mean().backward()
    assert all(p.grad is not None for p in dual.couplings.parameters())
    # transformer features enter the couplings detached: the student loss never reaches the teacher
    assert all(p.grad is None for p in dual.teacher.parameters())


def test_all_four_heads_train(dual) -> None:
    out = dual.train()(torch.rand(2, 3, 64, 96), bypass=False)
    sum(t.mean() for t in out[:4]).backward()
    missing = [n for n, p in dual.named_parameters() if p.grad is None]
    assert not missing, missing[:5]
    for confidence in (out.teacher_confidence, out.student_confidence):
        assert confidence.shape == (2, 1, 64, 96)
        assert confidence.min() > 0 and confidence.max() < 1


def test_bypassed_student_branch_is_the_stand_alone_student(dual) -> None:
    image = torch.rand(2, 3, 64, 96)
    dual.eval()
    with torch.inference_mode():
        out = dual(image)  # eval always bypasses
        assert not out.coupled
        assert torch.equal(out.student_depth, dual.export_student()(image))


def test_training_draws_bypass_with_p_bypass(dual) -> None:
    dual.train()
    image = torch.rand(2, 3, 64, 64)
    torch.manual_seed(0)
    dual.p_bypass = 1.0
    assert not any(dual(image).coupled for _ in range(3))
    dual.p_bypass = 0.0
    assert all(dual(image).coupled for _ in range(3))
    with pytest.raises(ValueError, match="p_bypass"):
        dual.p_bypass = 1.5


def test_exported_student_has_no_teacher_keys(dual) -> None:
    state = dual.export_student().state_dict()
    assert not [k for k in state if "teacher" in k or "coupling" in k or "confidence" in k]
    fresh = build_student(STUDENT, max_depth=MAX_DEPTH)
    fresh.load_state_dict(state)  # strict: exactly a plain student
    image = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        assert torch.equal(fresh.eval()(image), dual.eval()(image).student_depth)


def test_bypass_schedule_anneals_to_one() -> None:
    assert bypass_schedule(0, 100, start=0.05) == 0.05
    assert bypass_schedule(50, 100, start=0.05) == 0.05
    assert bypass_schedule(75, 100, start=0.05) == pytest.approx(0.525)
    assert bypass_schedule(100, 100, start=0.05) == 1.0
    assert bypass_schedule(150, 100, start=0.05) == 1.0
