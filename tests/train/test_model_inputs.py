"""Model references a job is given (`model.teacher.checkpoint`, `acclimate.ghost_from`,
`distill.teacher`) are checked on the driver, before Ray starts: their kind, their architecture
against the config, and an external teacher's keys through the documented key map."""

from __future__ import annotations

from pathlib import Path

import pytest
import ray
import torch

from depthkd.errors import CheckpointError, ConfigError
from depthkd.models.kinds import ModelKind
from depthkd.models.serialization import load_model, save_model
from depthkd.models.teacher_weights import rename_keys
from depthkd.models.zoo import build_acclimated_teacher, build_student, build_teacher
from depthkd.train.jobs import prepare_job
from tests.train.helpers import tiny_config

DISDEPTH = {"pretrain_teacher": True, "ghost": "copy"}


def _files(home: Path) -> dict[str, Path]:
    cfg = tiny_config(home)
    other = cfg.model.student.model_copy(update={"decoder_channels": (8, 8, 8, 8)})
    return {
        "teacher": save_model(build_teacher(cfg.model.teacher, max_depth=10.0), home / "t.pt"),
        "student": save_model(build_student(cfg.model.student, max_depth=10.0), home / "s.pt"),
        "acclimated": save_model(
            build_acclimated_teacher(cfg.model.teacher, cfg.model.student, max_depth=10.0),
            home / "a.pt",
        ),
        "acclimated_other": save_model(
            build_acclimated_teacher(cfg.model.teacher, other, max_depth=10.0), home / "a2.pt"
        ),
        "student_other": save_model(build_student(other, max_depth=10.0), home / "s2.pt"),
    }


def _refuses(cfg, job: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        prepare_job(cfg, job, progress=False)
    assert not ray.is_initialized()


def test_distill_teacher_must_be_acclimated_for_this_student(home: Path) -> None:
    files = _files(home)
    plain = tiny_config(home, distill={"teacher": str(files["teacher"])})
    _refuses(
        plain,
        "distill",
        r"holds a plain \(not acclimated\) teacher, where an acclimated teacher is needed",
    )
    other = tiny_config(home, distill={"teacher": str(files["acclimated_other"])})
    _refuses(other, "distill", r"acclimated for another student.*decoder_channels")
    good = tiny_config(home, distill={"teacher": str(files["acclimated"])})
    inputs = prepare_job(good, "distill", progress=False).inputs
    assert inputs[ModelKind.ACCLIMATED_TEACHER] == files["acclimated"]


def test_teacher_checkpoint_and_ghost_source_are_checked(home: Path) -> None:
    files = _files(home)
    teacher = {"name": "swin_micro"}
    acclimated = tiny_config(
        home,
        model={"teacher": {**teacher, "checkpoint": str(files["acclimated"])}},
        acclimate=DISDEPTH,
    )
    _refuses(
        acclimated,
        "acclimate",
        r"model.teacher.checkpoint .* holds an acclimated teacher, where a plain",
    )
    wrong_ghost = tiny_config(
        home,
        model={"teacher": {**teacher, "checkpoint": str(files["teacher"])}},
        acclimate={**DISDEPTH, "ghost_from": str(files["student_other"])},
    )
    _refuses(wrong_ghost, "acclimate", r"acclimate.ghost_from .* another architecture")
    other_teacher = tiny_config(
        home, model={"teacher": {"name": "vit_micro_dpt", "checkpoint": str(files["teacher"])}}
    )
    _refuses(other_teacher, "teacher", r"name: 'swin_micro' != 'vit_micro_dpt'")
    deep = tiny_config(
        home, model={"max_depth": 20.0, "teacher": {**teacher, "checkpoint": str(files["teacher"])}}
    )
    _refuses(deep, "teacher", r"max_depth: 10.0 != 20.0")
    ctx = prepare_job(
        tiny_config(
            home,
            model={"teacher": {**teacher, "checkpoint": str(files["teacher"])}},
            acclimate={**DISDEPTH, "ghost_from": str(files["student"])},
        ),
        "distill",
        progress=False,
    )
    assert ctx.stages == ["acclimate", "distill"]
    assert ctx.inputs == {ModelKind.TEACHER: files["teacher"], ModelKind.STUDENT: files["student"]}


def test_external_teacher_state_dict_loads_through_the_key_map(home: Path) -> None:
    cfg = tiny_config(home)
    ours = build_teacher(cfg.model.teacher, max_depth=10.0).state_dict()
    # an external layout: "encoder." for our backbone, "depth_decoder." for decoder + head,
    # plus an auxiliary head we do not have
    theirs = {}
    for key, value in ours.items():
        part, rest = key.split(".", 1)
        prefix = {
            "backbone": "encoder.",
            "decoder": "depth_decoder.dpt.",
            "head": "depth_decoder.out.",
        }
        theirs[prefix[part] + rest] = value.clone()
    theirs["aux_head.weight"] = torch.zeros(3)
    path = home / "external.pth"
    torch.save({"state_dict": theirs}, path)
    key_map = {
        "encoder.": "backbone.",
        "depth_decoder.dpt.": "decoder.",
        "depth_decoder.out.": "head.",
        "aux_head.": "",
    }
    assert rename_keys(theirs, key_map).keys() == ours.keys()

    teacher = {"name": "swin_micro", "checkpoint": str(path)}
    unmapped = tiny_config(home, model={"teacher": teacher})
    _refuses(unmapped, "teacher", r"missing \(\d+\): backbone\..*unexpected \(\d+\): encoder\.")
    mapped = tiny_config(home, model={"teacher": {**teacher, "key_map": key_map}})
    ctx = prepare_job(mapped, "teacher", progress=False)
    loaded = load_model(ctx.inputs[ModelKind.TEACHER], expect=ModelKind.TEACHER).state_dict()
    assert all(torch.equal(loaded[k], ours[k]) for k in ours)


def test_a_model_file_loads_only_as_its_own_kind(home: Path) -> None:
    """An acclimated teacher is not a plain teacher (their kinds once matched by suffix)."""
    files = _files(home)
    assert load_model(files["acclimated"], expect=ModelKind.ACCLIMATED_TEACHER)
    with pytest.raises(
        CheckpointError, match="holds a model of kind 'acclimated_teacher', not 'teacher'"
    ):
        load_model(files["acclimated"], expect=ModelKind.TEACHER)
    either = (ModelKind.TEACHER, ModelKind.ACCLIMATED_TEACHER)
    assert load_model(files["teacher"], expect=either)
    with pytest.raises(
        CheckpointError, match="kind 'student', not 'acclimated_teacher' or 'teacher'"
    ):
        load_model(files["student"], expect=either)
