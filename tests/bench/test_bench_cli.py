"""`depthkd bench train`: a smoke run of the platform-overhead benchmark on an embedded Ray.

Only checks that both sides run, report and print the ratio, and that they trained identically
(same final loss); the figures themselves are for closing notes, not for assertions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdplatform.cli.main import main
from tests.pseudolabel.conftest import save_teacher

pytestmark = [pytest.mark.ray, pytest.mark.slow]

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
TINY = ["--batch-size", "2", "--height", "64", "--width", "96", "--threads", "1"]


def test_bench_train_runs_both_sides_and_prints_the_ratio(
    embedded_ray, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    figures = home / "train.json"
    argv = ["bench", "train", "--steps", "2", "--warmup", "1", "--rounds", "1", *TINY]
    assert main([*argv, "--json", str(figures)]) == 0
    out = capsys.readouterr().out
    assert "ratio ray/plain" in out and "round 1/1 ray" in out and "round 1/1 plain" in out
    result = json.loads(figures.read_text())
    assert result["plain_samples_per_s"] > 0 and result["ray_samples_per_s"] > 0
    assert result["ratio"] == pytest.approx(
        result["ray_samples_per_s"] / result["plain_samples_per_s"]
    )
    assert result["ray_worker_threads"] == 1
    # one step function, same seed, same batch, same threads: the same math on both sides
    assert result["ray_final_loss"] == pytest.approx(result["plain_final_loss"], rel=1e-5)


def test_bench_train_rejects_more_threads_than_the_cluster_has(
    embedded_ray, home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "train", *TINY[:-2], "--threads", "64"]) == 2
    assert "the Ray cluster has 2 CPUs" in capsys.readouterr().err



def test_bench_pseudo_cache_times_both_steps_on_the_same_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    teacher = save_teacher(tmp_path / "teacher.pt")
    figures = tmp_path / "cache.json"
    argv = ["bench", "pseudo-cache", "--config", str(TINY_CONFIG), "--steps", "2"]
    argv += ["--warmup", "1", "--rounds", "2", "--threads", "1", "--json", str(figures)]
    assert main([*argv, f"model.teacher.checkpoint={teacher}"]) == 0
    out = capsys.readouterr().out
    assert "ratio cached/online" in out and "4 labeled + 4 unlabeled rows at 64x96" in out
    result = json.loads(figures.read_text())
    assert len(result["cached_rounds"]) == len(result["online_rounds"]) == 2
    assert result["ratio"] == pytest.approx(
        result["cached_frames_per_s"] / result["online_frames_per_s"]
    )
    # the same targets (the teacher's depth on the same rows) and init: the same training
    assert result["online_final_loss"] == pytest.approx(result["cached_final_loss"], rel=1e-5)


def test_bench_pseudo_cache_needs_a_teacher_file(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bench", "pseudo-cache", "--config", str(TINY_CONFIG)]) == 2
    assert "set model.teacher.checkpoint" in capsys.readouterr().err
