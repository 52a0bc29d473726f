"""The teacher's fingerprint: a file by its sha256; a registered teacher also by name and
version, and it is the same file (same sha256) as the weights it was registered with."""

from __future__ import annotations

from pathlib import Path

import torch

from depthkd.config.schema import TeacherConfig
from depthkd.data.shards import sha256_file
from depthkd.models.serialization import save_model
from depthkd.models.zoo import build_teacher
from depthkd.pseudolabel.teacher import resolve_teacher
from depthkd.tracking.model_registry import log_depth_model, register_model
from depthkd.tracking.runs import open_job_run
from tests.pseudolabel.conftest import MAX_DEPTH


def test_registered_teacher_is_fingerprinted_with_its_version(home: Path, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_teacher(TeacherConfig(name="swin_micro"), max_depth=MAX_DEPTH)
    run = open_job_run(experiment="teachers", job_id="teacher-1")
    register_model(log_depth_model(run, model, name="teacher"), "kd-teacher", alias="pretrained")
    register_model(f"runs:/{run.run_id}/teacher", "kd-teacher", alias="pretrained")

    registered = resolve_teacher("kd-teacher@pretrained", tmp_path / "a")
    assert registered.fingerprint["registered_name"] == "kd-teacher"
    assert registered.fingerprint["version"] == 2
    assert registered.fingerprint["run_id"] == run.run_id
    assert registered.fingerprint["reference"] == "kd-teacher@pretrained"
    assert registered.fingerprint["sha256"] == sha256_file(registered.path)

    local = resolve_teacher(save_model(model, tmp_path / "teacher.pt"), tmp_path / "b")
    assert local.fingerprint["sha256"] == sha256_file(tmp_path / "teacher.pt")
    assert "registered_name" not in local.fingerprint
    assert (local.max_depth, local.input_size) == (MAX_DEPTH, None)
