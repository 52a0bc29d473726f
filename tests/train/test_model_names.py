"""A model name nothing can build is a driver error, before Ray or data preparation start."""

from __future__ import annotations

from pathlib import Path


def test_an_unknown_student_fails_before_ray_starts(tmp_path: Path, monkeypatch, capsys) -> None:
    import ray

    from depthkd.cli.main import main

    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path))
    assert not ray.is_initialized()
    assert main(["distill", "model.student.name=resnet_9000", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "error: unknown student 'resnet_9000'" in err and "did you mean" in err
    assert not ray.is_initialized()
    assert not (tmp_path / "data").exists()  # not even the bundled shards were generated
