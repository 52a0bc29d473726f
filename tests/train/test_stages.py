"""Per-batch steps of every stage without Ray: named loss terms, finite values, and a loss that
falls when the step is repeated on one batch."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from depthkd.config.schema import ExperimentConfig
from depthkd.errors import ConfigError
from depthkd.models.serialization import save_model
from depthkd.models.zoo import build_acclimated_teacher
from depthkd.train.profile import DataProfile
from depthkd.train.schedule import lr_factor
from depthkd.train.stages import STAGES
from tests.train.helpers import tiny_config

PROFILE = DataProfile(family="nyu", max_depth=10.0, loss_min_depth=0.1, protocol="nyu-eigen")
TERMS = {
    "teacher": {"silog"},
    "acclimate": {"silog_ghost", "silog_teacher"},
    "supervised": {"silog"},
    "distill": {"silog", "attentive_kd", "response_kd"},
    "cross_distill": {"silog_teacher", "silog_student", "confidence_fit"},
}


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    image = torch.rand(2, 3, 64, 96)
    depth = 1 + 4 * image.mean(1, keepdim=True)  # learnable: depth follows brightness
    depth[:, :, :4] = 0  # a band without GT
    return {"image": image, "depth": depth, "valid": depth > 0}


@pytest.fixture(scope="module")
def cfg(tmp_path_factory: pytest.TempPathFactory) -> ExperimentConfig:
    return tiny_config(tmp_path_factory.mktemp("home"))


@pytest.fixture(scope="module")
def teacher_file(cfg: ExperimentConfig, tmp_path_factory: pytest.TempPathFactory) -> Path:
    teacher = build_acclimated_teacher(cfg.model.teacher, cfg.model.student, max_depth=10.0)
    return save_model(teacher, tmp_path_factory.mktemp("teacher") / "teacher.pt")


@pytest.mark.parametrize("name", sorted(TERMS))
def test_stage_step_names_its_terms_and_learns(name: str, cfg, teacher_file) -> None:
    inputs = {"teacher": teacher_file} if name == "distill" else {}
    stage = STAGES.get(name).build(cfg, PROFILE, inputs)
    optimizer = torch.optim.Adam([p for p in stage.model.parameters() if p.requires_grad], 1e-3)
    batch, losses = _batch(), []
    stage.model.train()
    for step in range(0, 8, 2):  # even steps: URCDC's supervised phase
        terms = stage.step(stage.model, batch, step)
        assert TERMS[name] <= set(terms) and "loss" in terms
        assert all(torch.isfinite(v) for v in terms.values())
        optimizer.zero_grad()
        terms["loss"].backward()
        optimizer.step()
        losses.append(float(terms["loss"].detach()))
    assert losses[-1] < losses[0]
    stage.model.eval()
    with torch.no_grad():
        depth = stage.predict(stage.model, batch["image"])
    assert depth.shape == (2, 1, 64, 96)
    # what the job hands on to later stages and the registry is exactly what the stage exports
    assert set(stage.exports(stage.model)) == set(STAGES.get(name).produces)


def test_cross_distill_odd_steps_exchange_pseudo_labels(cfg) -> None:
    stage = STAGES.get("cross_distill").build(cfg, PROFILE, {})
    terms = stage.step(stage.model.train(), _batch(), 1)
    assert {"cross_t2s", "cross_s2t"} <= set(terms) and "silog_student" not in terms


def test_distill_teacher_gets_no_gradient(cfg, teacher_file) -> None:
    stage = STAGES.get("distill").build(cfg, PROFILE, {"teacher": teacher_file})
    stage.step(stage.model.train(), _batch(), 0)["loss"].backward()
    assert all(p.grad is not None for p in stage.model.parameters())


def test_poly_schedule_with_warmup(cfg) -> None:
    optim = cfg.distill.optim.model_copy(update={"warmup_steps": 4, "end_lr_ratio": 0.1})
    factors = [lr_factor(s, total=14, cfg=optim) for s in range(14)]
    assert factors[:4] == [0.25, 0.5, 0.75, 1.0]
    assert (
        factors[4] == 1.0
        and factors[-1] > 0.1
        and factors == sorted(factors[:4]) + sorted(factors[4:], reverse=True)
    )
    assert lr_factor(14, total=14, cfg=optim) == pytest.approx(0.1)


def test_bad_stage_and_missing_teacher_fail_before_any_worker(tmp_path, monkeypatch) -> None:
    from depthkd.train.jobs import prepare_job

    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path))
    cfg = tiny_config(tmp_path, data={"shards": str(tmp_path / "no-shards")})
    with pytest.raises(ConfigError, match="unknown stage 'distil'"):
        prepare_job(cfg, "distil")
    no_teacher = cfg.model_copy(
        update={"distill": cfg.distill.model_copy(update={"acclimate_first": False})}
    )
    with pytest.raises(ConfigError, match="distill needs a teacher"):
        prepare_job(no_teacher, "distill")


def test_distilled_and_baseline_students_start_from_the_same_init(cfg, teacher_file) -> None:
    torch.manual_seed(cfg.seed)
    baseline = STAGES.get("supervised").build(cfg, PROFILE, {}).model.state_dict()
    torch.manual_seed(cfg.seed)
    distill = STAGES.get("distill").build(cfg, PROFILE, {"teacher": teacher_file})
    distilled = distill.model.state_dict()
    assert all(torch.equal(baseline[k], distilled[k]) for k in baseline)


def test_cross_distill_teaches_both_branches_on_frames_without_ground_truth(tmp_path) -> None:
    # URCDC's own mode weights labelled pixels only; rectified mode lets unlabeled frames teach
    # each branch through the other's confidence
    cfg = tiny_config(
        tmp_path,
        data={"synthetic": {"layout": "nyu", "n": 30, "height": 64, "width": 96, "unlabeled_n": 4}},
        cross_distill={"steps": 2, "unlabeled_ratio": 1.0, "loss": {"cross_mode": "rectified"}},
    )
    stage = STAGES.get("cross_distill").build(cfg, PROFILE, {})
    assert stage.unlabeled_ratio == 1.0
    batch = _batch()
    batch["depth"] = torch.zeros_like(batch["depth"])
    batch["valid"] = torch.zeros_like(batch["valid"])
    terms = stage.step(stage.model.train(), batch, 1)
    assert all(float(terms[name].detach()) > 0 for name in ("cross_t2s", "cross_s2t"))
    terms["loss"].backward()
    student = stage.model.student
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"cross_distill": {"unlabeled_ratio": 1.0}}, "cross_mode=rectified"),
        (
            {"cross_distill": {"unlabeled_ratio": 1.0, "loss": {"cross_mode": "rectified"}}},
            "needs frames without ground truth",
        ),
    ],
)
def test_cross_distill_mixing_that_would_teach_nothing_is_refused(tmp_path, sections, match):
    with pytest.raises(ValueError, match=match):
        tiny_config(tmp_path, **sections)
