"""`depthkd evaluate`: any exported model on a shard set under a named protocol, JSON report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from depthkd.cli.main import main
from depthkd.models.serialization import save_model
from depthkd.models.zoo import build_student
from tests.train.helpers import tiny_config


def test_evaluate_writes_a_report_naming_the_protocol(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path))
    cfg = tiny_config(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    model = save_model(build_student(cfg.model.student, max_depth=10.0), tmp_path / "s.pt")
    out = tmp_path / "report.json"
    argv = ["evaluate", "--model", str(model), "--config", str(config), "--tta", "mean"]
    assert main([*argv, "--out", str(out)]) == 0
    assert "protocol: nyu-eigen" in capsys.readouterr().out
    report = json.loads(out.read_text())
    assert report["protocol"] == "nyu-eigen" and report["tta"] == "mean"
    assert report["n_images"] == 6 and report["n_skipped"] == 0  # 20 % of 30 synthetic frames
    assert 0 < report["metrics"]["abs_rel"] < 10


def test_evaluate_rejects_unknown_model_reference(home: Path, capsys) -> None:
    cfg = tiny_config(home)
    config = home / "tiny.yaml"
    config.write_text(yaml.safe_dump(cfg.model_dump(mode="json")))
    assert main(["evaluate", "--model", "nobody@champion", "--config", str(config)]) == 2
    assert "nobody" in capsys.readouterr().err


@pytest.mark.parametrize("shards", ["missing-dir"])
def test_shard_dir_without_manifest_fails_before_any_worker(tmp_path, monkeypatch, capsys, shards):
    monkeypatch.setenv("DEPTHKD_HOME", str(tmp_path))
    (tmp_path / shards).mkdir()
    assert main(["distill", f"data.shards={tmp_path / shards}", "--quiet"]) == 2
    assert "no manifest.json" in capsys.readouterr().err
