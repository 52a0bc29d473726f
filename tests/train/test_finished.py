"""A finished stage's recorded result: taken on a re-run only while it still describes the stage."""

from __future__ import annotations

from pathlib import Path

from depthkd.train.finished import finished_result, record_finished
from depthkd.train.launcher import StageResult


def _finished(out_dir: Path) -> StageResult:
    out_dir.mkdir(parents=True)
    (out_dir / "student.pt").write_bytes(b"weights")
    result = StageResult(
        "supervised", {"step": 6, "val/abs_rel": 0.25}, {"student": out_dir / "student.pt"},
        "s3://bucket/run/checkpoint_000002", seconds=12.5,
    )  # fmt: skip
    record_finished(out_dir, result, steps=6)
    return result


def test_a_finished_stage_comes_back_as_it_ended(tmp_path: Path) -> None:
    result = _finished(tmp_path / "supervised")
    again = finished_result(tmp_path / "supervised", "supervised", steps=6)
    assert again == StageResult(
        result.stage, result.metrics, result.exports, result.checkpoint, seconds=0.0
    )


def test_a_longer_stage_or_a_lost_export_runs_again(tmp_path: Path) -> None:
    _finished(tmp_path / "supervised")
    assert finished_result(tmp_path / "supervised", "supervised", steps=8) is None
    (tmp_path / "supervised" / "student.pt").unlink()
    assert finished_result(tmp_path / "supervised", "supervised", steps=6) is None
    assert finished_result(tmp_path / "never", "supervised", steps=6) is None
