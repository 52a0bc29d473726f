"""DisDepth's acclimation path: a depth-trained teacher, a ghost decoder copied from a trained
student and fixed for the whole stage (also across a resume), and freezing as a property of the
step rather than an event."""

from __future__ import annotations

from pathlib import Path

import mlflow
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from depthkd.config.schema import ExperimentConfig
from depthkd.errors import ConfigError
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import load_model, save_model
from depthkd.models.zoo import build_student, build_teacher
from depthkd.train.jobs import job_stages, prepare_job, run_job
from depthkd.train.profile import DataProfile
from depthkd.train.stages import STAGES, frozen_ghost_part
from tests.train.helpers import tiny_config

PROFILE = DataProfile(family="nyu", max_depth=10.0, loss_min_depth=0.1, protocol="nyu-eigen")
DISDEPTH = {"pretrain_teacher": True, "ghost": "copy"}


def _batch(seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    image = torch.rand(2, 3, 64, 96, generator=generator)
    depth = 1 + 4 * image.mean(1, keepdim=True)
    return {"image": image, "depth": depth, "valid": depth > 0}


def _state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _identical(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _student_part(student: nn.Module) -> dict[str, torch.Tensor]:
    return nn.ModuleList([student.decoder, student.head]).state_dict()


def _trained(model: nn.Module, steps: int = 3) -> nn.Module:
    """`model` after a few optimizer steps: weights and BatchNorm statistics unlike a fresh one."""
    optimizer = torch.optim.Adam(model.parameters(), 1e-2)
    model.train()
    for step in range(steps):
        model(_batch(step)["image"]).mean().backward()
        optimizer.step()
        optimizer.zero_grad()
    return model.eval()


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    cfg = tiny_config(tmp_path)
    torch.manual_seed(1)
    student = _trained(build_student(cfg.model.student, max_depth=10.0))
    teacher = _trained(build_teacher(cfg.model.teacher, max_depth=10.0))
    return {
        "teacher": save_model(teacher, tmp_path / "pretrained.pt"),
        "ghost": save_model(student, tmp_path / "student.pt"),
    }


def _run_steps(stage, steps: range) -> None:
    """What the loop does: on_step, forward/backward, an optimizer step, and back to train mode
    after an evaluation every other step."""
    params = [p for p in stage.model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, 1e-2)
    for step in steps:
        stage.model.train()  # the loop's state after each evaluation
        stage.on_step(stage.model, step)
        stage.step(stage.model, _batch(step), step)["loss"].backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_copied_ghost_is_the_students_decoder_and_stays_fixed(tmp_path, inputs) -> None:
    cfg = tiny_config(tmp_path, acclimate=DISDEPTH)
    stage = STAGES.get("acclimate").build(cfg, PROFILE, inputs)
    model = stage.model
    student = load_model(inputs["ghost"], expect="student")
    pretrained = load_model(inputs["teacher"], expect="teacher")
    # starts from the depth-trained teacher and the trained student's decoder + head
    assert _identical(_state(model.teacher), _state(pretrained))
    assert _identical(_state(model.ghost.fixed_part()), _student_part(student))
    adapters_before, teacher_before = _state(model.ghost.adapters), _state(model.teacher)

    _run_steps(stage, range(4))

    # byte-identical: weights and BatchNorm running statistics (the part ran in eval mode)
    assert _identical(_state(model.ghost.fixed_part()), _student_part(student))
    assert not any(p.requires_grad for p in model.ghost.fixed_part().parameters())
    # only the teacher and the adapters trained
    assert not _identical(_state(model.ghost.adapters), adapters_before)
    assert not _identical(_state(model.teacher), teacher_before)


def test_fresh_ghost_freezes_at_every_step_past_freeze_after_also_when_resumed(tmp_path) -> None:
    cfg = tiny_config(tmp_path, acclimate={"ghost": "fresh", "freeze_ghost_after": 2})
    stage = STAGES.get("acclimate").build(cfg, PROFILE, {})
    part = stage.model.ghost.fixed_part()
    assert all(p.requires_grad for p in part.parameters())  # trainable before step 2
    # a job resumed at step 5 never passes through step 2: frozen all the same
    stage.model.train()
    stage.on_step(stage.model, 5)
    assert not any(p.requires_grad for p in part.parameters())
    assert not any(m.training for child in part for m in child.modules())
    before = _state(part)
    _run_steps(stage, range(5, 8))
    assert _identical(_state(part), before)
    assert len(frozen_ghost_part(cfg, stage.model, 1)) == 0  # nothing fixed before step 2


def test_job_stages_follow_the_config(tmp_path) -> None:
    fast = tiny_config(tmp_path)  # a fresh teacher and ghost
    assert job_stages(fast, "distill") == ["acclimate", "distill"]
    full = tiny_config(tmp_path, acclimate=DISDEPTH)
    assert job_stages(full, "distill") == ["teacher", "supervised", "acclimate", "distill"]
    assert job_stages(full, "acclimate") == ["teacher", "supervised", "acclimate"]
    given = tiny_config(
        tmp_path,
        model={"teacher": {"name": "swin_micro", "checkpoint": "t.pt"}},
        acclimate={**DISDEPTH, "ghost_from": "s.pt"},
    )
    assert job_stages(given, "distill") == ["acclimate", "distill"]
    assert job_stages(full, "teacher") == ["teacher"]
    with_teacher = tiny_config(tmp_path, distill={"teacher": "depthkd-acclimated-teacher@newest"})
    assert job_stages(with_teacher, "distill") == ["distill"]


@pytest.mark.slow
def test_disdepth_job_trains_teacher_and_student_first_and_resumes_with_the_ghost_fixed(
    embedded_ray, home: Path
) -> None:
    cfg: ExperimentConfig = tiny_config(
        home,
        name="disdepth",
        acclimate={**DISDEPTH, "steps": 2},
        teacher={"steps": 4},
        supervised={"steps": 2},
        train={"workers": 1, "eval_every": 2},
    )
    ctx = run_job(prepare_job(cfg, "acclimate", progress=False), log=lambda *_: None)
    assert list(ctx.results) == ["teacher", "supervised", "acclimate"]
    assert ctx.registered == {
        "teacher": "depthkd-teacher v1 @pretrained",
        "acclimated_teacher": "depthkd-acclimated-teacher v1 @newest",
    }  # the student trained for the ghost is a means, not a challenger
    student = load_model(ctx.results["supervised"].exports["student"], expect="student")
    pretrained = ctx.results["teacher"].exports["teacher"]
    acclimated = load_model(
        ctx.results["acclimate"].exports["teacher"], expect=ModelKind.ACCLIMATED_TEACHER
    )
    assert _identical(_state(acclimated.ghost.fixed_part()), _student_part(student))
    # acclimation started from the depth-trained teacher: its val accuracy before the first
    # step (logged at step 0) is exactly the trained teacher's final one
    client = mlflow.MlflowClient(ctx.run.tracking_uri)
    before = client.get_metric_history(ctx.run.run_id, "acclimate/val/abs_rel")
    assert [m.step for m in before] == [0, 2]
    trained = ctx.results["teacher"].metrics["val/abs_rel"]
    assert before[0].value == pytest.approx(trained, rel=1e-6)
    assert load_model(pretrained, expect="teacher").arch["kind"] == "teacher"

    # the same job id, two more acclimation steps: resumes at step 2, the ghost still fixed
    longer = cfg.model_copy(update={"acclimate": cfg.acclimate.model_copy(update={"steps": 4})})
    lines: list[str] = []
    again = run_job(prepare_job(longer, "acclimate", progress=False), log=lines.append)
    assert again.results["acclimate"].metrics["step"] == 4
    # the finished stages are taken from their folders, no workers started for them
    skipped = [s.split("]")[0] for s in lines if " finished before (step " in s]
    assert skipped == ["[teacher", "[supervised"]
    assert again.results["supervised"].exports == ctx.results["supervised"].exports
    resumed = load_model(
        again.results["acclimate"].exports["teacher"], expect=ModelKind.ACCLIMATED_TEACHER
    )
    assert _identical(_state(resumed.ghost.fixed_part()), _student_part(student))
    assert not _identical(_state(resumed.teacher), _state(acclimated.teacher))

    # the teacher acclimation started from is replaced (as a longer teacher stage would replace
    # it): resuming acclimation would keep training from the old one, so the job refuses, before
    # any worker starts (the finished teacher and student stages are taken from their folders)
    replaced = load_model(pretrained, expect="teacher")
    with torch.no_grad():
        next(replaced.parameters()).add_(1.0)
    save_model(replaced, pretrained)
    with pytest.raises(ConfigError, match=r"stage acclimate was started from other input models"):
        run_job(prepare_job(longer, "acclimate", progress=False), log=lambda *_: None)


@pytest.mark.parametrize(
    ("sections", "match"),
    [
        ({"acclimate": {"ghost": "copy", "freeze_ghost_after": 3}}, "applies to ghost: fresh"),
        ({"acclimate": {"ghost": "fresh", "ghost_from": "s.pt"}}, "applies to ghost: copy"),
        (
            {"model": {"teacher": {"name": "swin_micro", "key_map": {"a.": "backbone."}}}},
            "model.teacher.checkpoint, which is unset",
        ),
    ],
)
def test_settings_that_would_do_nothing_are_refused(tmp_path, sections, match) -> None:
    with pytest.raises(ValidationError, match=match):
        tiny_config(tmp_path, **sections)


def test_relative_model_files_are_made_absolute(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "t.pt").write_bytes(b"")
    cfg = tiny_config(tmp_path, model={"teacher": {"name": "swin_micro", "checkpoint": "t.pt"}})
    assert cfg.model.teacher.checkpoint == str(tmp_path / "t.pt")
    registered = tiny_config(tmp_path, distill={"teacher": "depthkd-acclimated-teacher@newest"})
    assert registered.distill.teacher == "depthkd-acclimated-teacher@newest"
