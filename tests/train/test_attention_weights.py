"""`distill.loss.attention_weights` reaches the attentive-KD term of the distill stage: a one-hot
weight vector gives exactly that scale's term, and the default weights give their sum."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from depthkd.models.kinds import ModelKind
from depthkd.models.losses import attentive_kd_loss
from depthkd.models.serialization import load_model, save_model
from depthkd.models.zoo import build_acclimated_teacher
from depthkd.train.profile import DataProfile
from depthkd.train.stages import STAGES
from tests.train.helpers import tiny_config

PROFILE = DataProfile(family="nyu", max_depth=10.0, loss_min_depth=0.1, protocol="nyu-eigen")


@pytest.fixture(scope="module")
def home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("home")


@pytest.fixture(scope="module")
def teacher_file(home: Path) -> Path:
    cfg = tiny_config(home)
    torch.manual_seed(0)
    teacher = build_acclimated_teacher(cfg.model.teacher, cfg.model.student, max_depth=10.0)
    return save_model(teacher, home / "teacher.pt")


@pytest.fixture(scope="module")
def image() -> torch.Tensor:
    return torch.rand(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))


def _distill_term(home, teacher_file, image, weights) -> tuple[float, list[float]]:
    """The stage's attentive_kd term with these weights (as a config sets them) and, from the same
    student and teacher, the unweighted term of each scale on its own."""
    cfg = tiny_config(home, distill={"steps": 4, "loss": {"attention_weights": list(weights)}})
    assert cfg.distill.loss.attention_weights == weights
    torch.manual_seed(2)  # the same student init for every weight vector
    stage = STAGES.get("distill").build(cfg, PROFILE, {"teacher": teacher_file})
    student = stage.model.eval()
    batch = {"image": image, "depth": torch.full((2, 1, 64, 96), 3.0)}
    batch["valid"] = batch["depth"] > 0
    with torch.no_grad():
        term = stage.step(student, batch, 0)["attentive_kd"]
        ours = student(image, return_features=True).features
        theirs = load_model(teacher_file, expect=ModelKind.ACCLIMATED_TEACHER)(image).features
    assert [f.shape[-1] for f in ours] == [96 // r for r in (4, 8, 16, 32)]  # w_1 is 1/4
    tau = cfg.distill.loss.attention_tau
    pairs = zip(ours, theirs, strict=True)
    per_scale = [attentive_kd_loss([s], [t], tau=tau).item() for s, t in pairs]
    return term.item(), per_scale


def test_one_hot_scale_weights_select_that_scale(home, teacher_file, image) -> None:
    finest, per_scale = _distill_term(home, teacher_file, image, (1.0, 0.0, 0.0, 0.0))
    coarsest, again = _distill_term(home, teacher_file, image, (0.0, 0.0, 0.0, 1.0))
    assert again == per_scale and len(per_scale) == 4
    assert finest == pytest.approx(per_scale[0], rel=1e-6)
    assert coarsest == pytest.approx(per_scale[3], rel=1e-6)
    assert finest != pytest.approx(coarsest, rel=1e-3)  # the scales really differ


def test_default_weights_sum_the_scales(home, teacher_file, image) -> None:
    total, per_scale = _distill_term(home, teacher_file, image, (1.0, 1.0, 1.0, 1.0))
    assert total == pytest.approx(sum(per_scale), rel=1e-6)
    half, _ = _distill_term(home, teacher_file, image, (0.5, 0.5, 0.5, 0.5))
    assert half == pytest.approx(total / 2, rel=1e-6)
