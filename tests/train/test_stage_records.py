"""What a job keeps beside a stage's exports: a finished stage's result is taken on a re-run only
while it still describes the stage, and changed input models are refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from depthkd.errors import ConfigError
from depthkd.train.launcher import StageResult
from depthkd.train.stage_records import (
    check_same_inputs,
    finished_result,
    record_finished,
    stage_settings,
)

SETTINGS = {"stage": {"steps": 6, "optim": {"lr": 0.01}}, "model": {"student": "mobilenetv2_050"}}


def _result(folder: Path, *, step: int = 6) -> StageResult:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "student.pt").write_bytes(b"weights")
    return StageResult(
        "supervised", {"step": step, "val/abs_rel": 0.25}, {"student": folder / "student.pt"},
        "s3://bucket/run/checkpoint_000002", seconds=12.5,
    )  # fmt: skip


def _record(folder: Path, result: StageResult) -> None:
    record_finished(folder, result, steps=6, roles={"student"}, settings=SETTINGS)


def test_a_finished_stage_comes_back_as_it_ended(tmp_path: Path) -> None:
    result = _result(tmp_path)
    _record(tmp_path, result)
    again = finished_result(tmp_path, "supervised", steps=6, settings=SETTINGS)
    assert again == StageResult(
        result.stage, result.metrics, result.exports, result.checkpoint, seconds=0.0
    )


def test_other_settings_a_longer_stage_or_a_lost_export_run_again(tmp_path: Path) -> None:
    _record(tmp_path, _result(tmp_path))
    other = {**SETTINGS, "model": {"student": "resnet18"}}
    assert finished_result(tmp_path, "supervised", steps=6, settings=other) is None
    assert finished_result(tmp_path, "supervised", steps=8, settings=SETTINGS) is None
    (tmp_path / "student.pt").unlink()
    assert finished_result(tmp_path, "supervised", steps=6, settings=SETTINGS) is None


def test_a_stage_that_ended_elsewhere_or_without_its_model_is_not_recorded(tmp_path: Path) -> None:
    """Resumed past `steps` from an older, longer run, or ended without exporting."""
    _record(tmp_path / "past", _result(tmp_path / "past", step=8))
    bare = _result(tmp_path / "bare")
    _record(tmp_path / "bare", StageResult(bare.stage, bare.metrics, {}, None, seconds=1.0))
    for folder in ("past", "bare"):
        assert finished_result(tmp_path / folder, "supervised", steps=6, settings=SETTINGS) is None


def test_changed_input_models_are_refused(tmp_path: Path) -> None:
    teacher = tmp_path / "teacher.pt"
    teacher.write_bytes(b"v1")
    check_same_inputs(tmp_path / "acclimate", "job", "acclimate", {"teacher": teacher})
    check_same_inputs(tmp_path / "acclimate", "job", "acclimate", {"teacher": teacher})
    teacher.write_bytes(b"v2")
    with pytest.raises(ConfigError, match=r"stage acclimate was started from other input models"):
        check_same_inputs(tmp_path / "acclimate", "job", "acclimate", {"teacher": teacher})


def test_stage_settings_follow_every_part_that_decides_the_model(tmp_path: Path) -> None:
    from depthkd.config.loader import with_values
    from tests.train.helpers import tiny_config

    cfg = tiny_config(tmp_path)
    base = stage_settings(cfg, cfg.supervised, tmp_path / "shards")
    for change in ({"supervised.optim.lr": 0.5}, {"model.student.decoder_channels": [8, 8, 8, 8]},
                   {"data.batch_size": 3}, {"seed": 7}):  # fmt: skip
        other = with_values(cfg, change)
        assert stage_settings(other, other.supervised, tmp_path / "shards") != base, change
    assert stage_settings(cfg, cfg.supervised, tmp_path / "elsewhere") != base
    # the teacher's licence is a label, not a setting: declaring it trains nothing again
    labelled = with_values(cfg, {"model.teacher.licence": "apache-2.0"})
    assert stage_settings(labelled, labelled.supervised, tmp_path / "shards") == base
