"""`depthkd bench pseudo-cache`: both sides train on the same targets, the online side runs the
teacher in every step, and configs it cannot time are refused with the reason. The figures
themselves are for closing notes, not for assertions."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from depthkd.cli.main import main
from tests.pseudolabel.conftest import save_teacher

TINY_CONFIG = Path(__file__).resolve().parents[2] / "configs" / "tiny.yaml"
# tiny.yaml with unlabeled frames mixed into its distill batches
MIXED = ["data.synthetic.unlabeled_n=8", "distill.unlabeled_ratio=0.5"]


def test_bench_pseudo_cache_times_both_steps_on_the_same_targets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from depthkd.bench import pseudo_cache

    labelled = []
    real = pseudo_cache._teacher_targets
    monkeypatch.setattr(pseudo_cache, "_teacher_targets", lambda *a: labelled.append(1) or real(*a))
    teacher = save_teacher(tmp_path / "teacher.pt")
    figures = tmp_path / "cache.json"
    argv = ["bench", "pseudo-cache", "--config", str(TINY_CONFIG), "--steps", "2"]
    argv += ["--warmup", "1", "--rounds", "2", "--threads", "1", "--json", str(figures)]
    argv += [*MIXED, f"model.teacher.checkpoint={teacher}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ratio cached/online" in out and "4 labeled + 2 unlabeled rows at 64x96" in out
    result = json.loads(figures.read_text())
    assert len(result["cached_rounds"]) == len(result["online_rounds"]) == 2
    # the cache is labelled once; the online side labels in every step of its 2 rounds
    assert len(labelled) == 1 + 2 * (1 + 2)
    # the same targets (the teacher's depth on the same rows) and init: the same training
    assert result["online_final_loss"] == pytest.approx(result["cached_final_loss"], rel=1e-5)


def test_bench_pseudo_cache_refuses_what_it_cannot_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "pseudo-cache", "--config", str(TINY_CONFIG), *MIXED]) == 2
    assert "set model.teacher.checkpoint" in capsys.readouterr().err
    teacher = f"model.teacher.checkpoint={save_teacher(tmp_path / 'teacher.pt')}"
    assert main(["bench", "pseudo-cache", "--config", str(TINY_CONFIG), teacher]) == 2
    assert "needs distill.unlabeled_ratio > 0" in capsys.readouterr().err
