"""`depthkd bench train`: a smoke run of the platform-overhead benchmark on an embedded Ray.

Only checks that both sides run, report and print the ratio, and that they trained identically
(same final loss); the figures themselves are for closing notes, not for assertions.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from depthkd.cli.main import main

pytestmark = [pytest.mark.ray, pytest.mark.slow]

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
