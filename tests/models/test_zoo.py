"""Every registered student and teacher (tests generated from the registries): depth of input
size at KITTI and NYU train sizes, in (0, max_depth), and gradients that reach every parameter."""

from __future__ import annotations

import pytest
import torch

from depthkd.config.schema import StudentConfig, TeacherConfig
from depthkd.errors import RegistryError
from depthkd.models.zoo import STUDENTS, TEACHERS, build_student, build_teacher

KITTI_TRAIN = (352, 704)  # BTS / NeWCRFs KITTI random crop
NYU_TRAIN = (416, 544)  # BTS / NeWCRFs crop of the 480×640 NYU frame
MAX_DEPTH = 10.0
# The full-size teachers are the slowest tests here; they still run in CI.
LARGE_TEACHERS = {"swin_base", "vit_base_dpt"}


def _teacher_params() -> list:
    return [
        pytest.param(n, marks=pytest.mark.slow) if n in LARGE_TEACHERS else n
        for n in TEACHERS.names()
    ]


def _assert_depth(depth: torch.Tensor, size: tuple[int, int], batch: int) -> None:
    assert depth.shape == (batch, 1, *size)
    assert torch.isfinite(depth).all()
    assert depth.min() > 0 and depth.max() < MAX_DEPTH


def _assert_all_grads(model: torch.nn.Module) -> None:
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, f"no gradient reaches {missing[:5]} ({len(missing)} in all)"
    bad = [
        n for n, p in model.named_parameters() if p.grad is not None and not p.grad.isfinite().all()
    ]
    assert not bad, f"non-finite gradients in {bad[:5]}"


@pytest.fixture(scope="module", params=STUDENTS.names())
def student(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_student(StudentConfig(name=request.param), max_depth=MAX_DEPTH)


@pytest.fixture(scope="module", params=_teacher_params())
def teacher(request: pytest.FixtureRequest) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_teacher(TeacherConfig(name=request.param), max_depth=MAX_DEPTH)


@pytest.mark.parametrize("size", [KITTI_TRAIN, NYU_TRAIN], ids=["kitti", "nyu"])
def test_student_depth_has_input_size(student: torch.nn.Module, size: tuple[int, int]) -> None:
    with torch.inference_mode():
        _assert_depth(student.eval()(torch.rand(1, 3, *size)), size, 1)


@pytest.mark.parametrize("size", [KITTI_TRAIN, NYU_TRAIN], ids=["kitti", "nyu"])
def test_teacher_depth_has_input_size(teacher: torch.nn.Module, size: tuple[int, int]) -> None:
    with torch.inference_mode():
        _assert_depth(teacher.eval()(torch.rand(1, 3, *size)), size, 1)


def test_student_gradients_reach_every_parameter(student: torch.nn.Module) -> None:
    student.train().zero_grad()
    student(torch.rand(2, 3, 64, 96)).log().mean().backward()
    _assert_all_grads(student)


def test_teacher_gradients_reach_every_parameter(teacher: torch.nn.Module) -> None:
    teacher.train().zero_grad()
    teacher(torch.rand(2, 3, 64, 96)).log().mean().backward()
    _assert_all_grads(teacher)


@pytest.mark.parametrize("size", [(375, 1242), (225, 301)], ids=["kitti-full", "odd"])
def test_any_frame_size_is_padded_and_cropped_back(size: tuple[int, int]) -> None:
    """Swin needs sides divisible by 4 and ViTs by 16; full KITTI frames (375×1242) still work."""
    for model in (
        build_teacher(TeacherConfig(name="swin_micro"), max_depth=MAX_DEPTH),
        build_teacher(TeacherConfig(name="vit_micro_dpt"), max_depth=MAX_DEPTH),
        build_student(StudentConfig(name="mobilenetv2_050"), max_depth=MAX_DEPTH),
    ):
        with torch.inference_mode():
            _assert_depth(model.eval()(torch.rand(1, 3, *size)), size, 1)


def test_padding_does_not_change_depth_of_divisible_input() -> None:
    """Padding only adds pixels below/right: an already divisible input runs unpadded."""
    model = build_student(StudentConfig(name="resnet18"), max_depth=MAX_DEPTH).eval()
    image = torch.rand(1, 3, 64, 96)
    with torch.inference_mode():
        direct = model.head(model.decoder(model.encode(image)), (64, 96))
        assert torch.equal(model(image), direct)


def test_lg_global_path_switches_off() -> None:
    on = build_student(StudentConfig(), max_depth=MAX_DEPTH)
    off = build_student(StudentConfig(lg_global=False), max_depth=MAX_DEPTH)
    assert any(".context." in n for n, _ in on.named_parameters())
    assert not any(".context." in n for n, _ in off.named_parameters())
    with torch.inference_mode():
        _assert_depth(off.eval()(torch.rand(1, 3, 64, 96)), (64, 96), 1)


def test_timm_names_outside_the_registry_work() -> None:
    model = build_student(StudentConfig(name="mobilenetv3_small_050"), max_depth=MAX_DEPTH)
    with torch.inference_mode():
        _assert_depth(model.eval()(torch.rand(1, 3, 64, 96)), (64, 96), 1)


@pytest.mark.parametrize(
    ("build", "cfg", "close"),
    [
        (build_student, StudentConfig(name="mobilenetv2_10"), "mobilenetv2_100"),
        (build_teacher, TeacherConfig(name="swin_tiyn"), "swin_tiny"),
    ],
)
def test_unknown_backbone_names_close_matches(build, cfg, close: str) -> None:
    with pytest.raises(RegistryError, match=f"unknown .*{cfg.name}") as info:
        build(cfg, max_depth=MAX_DEPTH)
    assert close in (info.value.hint or "")


def test_checkpoint_arch_describes_the_model() -> None:
    model = build_student(
        StudentConfig(name="resnet18", decoder_channels=(16, 24, 32, 48)), max_depth=80
    )
    assert model.arch["kind"] == "student"
    assert model.arch["max_depth"] == 80
    rebuilt = build_student(StudentConfig.model_validate(model.arch["config"]), max_depth=80)
    rebuilt.load_state_dict(model.state_dict())  # strict: same architecture
