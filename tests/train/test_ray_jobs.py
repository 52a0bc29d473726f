"""Real Ray Train jobs on an embedded local Ray: local mode end to end, a 2-worker DDP job that
loses a worker, resumes from its checkpoint and logs every step exactly once, and a driver resume
of the same job id that continues the same checkpoint and the same MLflow run."""

from __future__ import annotations

import json
import os
from pathlib import Path

import mlflow
import pytest
from ray.train import UserCallback

from depthkd.config.loader import with_values
from depthkd.data.shards import sha256_file
from depthkd.models.serialization import load_model
from depthkd.train.jobs import prepare_job, run_job
from depthkd.train.launcher import HEALTH_CHECK_ENV, HEALTH_CHECK_INTERVAL_S, run_stage
from tests.train.helpers import tiny_config

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _history(ctx, key: str) -> list[int]:
    client = mlflow.MlflowClient(ctx.run.tracking_uri)
    return [m.step for m in client.get_metric_history(ctx.run.run_id, key)]


def test_local_mode_distill_end_to_end(embedded_ray, home: Path) -> None:
    model = {"student": {"name": "mobilenetv2_050", "decoder_channels": [8, 8, 16, 16]}}
    model["teacher"] = {"name": "swin_micro", "licence": "cc-by-nc-4.0"}
    cfg = tiny_config(home, distill={"steps": 2}, train={"eval_every": 2}, model=model)
    ctx = run_job(prepare_job(cfg, "distill", progress=False), log=lambda *_: None)
    assert set(ctx.results) == {"acclimate", "distill"}
    assert ctx.results["distill"].metrics["step"] == 2
    assert load_model(ctx.results["distill"].exports["student"], expect="student")
    assert ctx.registered == {
        "acclimated_teacher": "depthkd-acclimated-teacher v1 @newest",
        "student": "depthkd-student v1 @challenger",
    }
    client = mlflow.MlflowClient(ctx.run.tracking_uri)
    # the student names the teacher it learnt from (the one acclimated here) in tags and card
    student = client.get_model_version_by_alias("depthkd-student", "challenger")
    acclimated = ctx.results["acclimate"].exports["teacher"]
    assert student.tags["teacher"] == "swin_micro (trained by this job)"
    assert student.tags["teacher_sha256"] == sha256_file(acclimated)
    assert student.tags["teacher_licence"] == "cc-by-nc-4.0"
    card = student.description
    assert card.startswith("**depthkd CNN student**: `mobilenetv2_050`, trained by job `tiny`")
    assert "* val: abs_rel " in card and "* test (nyu-eigen): abs_rel " in card
    assert "* teacher: `swin_micro (trained by this job)`, sha256 " in card
    # the acclimated teacher's version names the student its ghost decoder fits
    fitted = client.get_model_version_by_alias("depthkd-acclimated-teacher", "newest").tags
    student = cfg.model.student
    assert (fitted["student"], fitted["student_lg_global"]) == (student.name, "true")
    assert fitted["student_decoder_channels"] == ",".join(map(str, student.decoder_channels))
    # the teacher's own accuracy before (step 0) and after acclimation is in the run
    assert _history(ctx, "acclimate/val/abs_rel") == [0, 2]
    assert _history(ctx, "distill/val/abs_rel") == [2]

    # a later job distils from the registered teacher without restating its licence: inherited
    later = with_values(
        cfg,
        {
            "name": "later",
            "distill.teacher": "depthkd-acclimated-teacher@newest",
            "model.teacher.licence": None,
        },
    )
    again = run_job(prepare_job(later, "distill", progress=False), log=lambda *_: None)
    assert list(again.results) == ["distill"]
    student = client.get_model_version_by_alias("depthkd-student", "challenger")
    assert student.tags["teacher"] == "depthkd-acclimated-teacher@newest"
    assert student.tags["teacher_licence"] == "cc-by-nc-4.0"


def test_ddp_worker_failure_resumes_and_driver_resume_continues(embedded_ray, home: Path) -> None:
    train = {"workers": 2, "cpus_per_worker": 1, "max_failures": 1, "fail_at_step": 3}
    cfg = tiny_config(home, name="ddp", train=train, supervised={"steps": 4})
    ctx = run_job(prepare_job(cfg, "supervised", progress=False), log=lambda *_: None)
    result = ctx.results["supervised"]
    assert result.metrics["step"] == 4
    assert (home / "ray_results" / "ddp-supervised" / ".depthkd-fault-injected").exists()
    # rank 0 died at step 3 after the step-2 checkpoint: steps 3.. were redone, logged once
    assert _history(ctx, "supervised/train/loss") == [1, 2, 3, 4]

    # the same job id again, asked for 6 steps: continues at step 4 in the same MLflow run
    longer = cfg.model_copy(update={"supervised": cfg.supervised.model_copy(update={"steps": 6})})
    again = run_job(prepare_job(longer, "supervised", progress=False), log=lambda *_: None)
    assert again.run.run_id == ctx.run.run_id and again.run.resumed
    assert again.results["supervised"].metrics["step"] == 6
    assert _history(again, "supervised/train/loss") == [1, 2, 3, 4, 5, 6]


class _ReportRecorder(UserCallback):
    """Appends every report's step and eval_round, and how often the controller polls its workers,
    to a file (callbacks run in Ray's controller)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def after_report(self, run_context, metrics, checkpoint) -> None:
        with self.path.open("a") as f:
            poll_s = os.environ.get(HEALTH_CHECK_ENV)
            report = {**metrics[0], "checkpoint": checkpoint is not None, "poll_s": poll_s}
            f.write(json.dumps(report) + "\n")


def test_every_evaluation_is_reported_and_eval_round_survives_resume(
    embedded_ray, home: Path
) -> None:
    train = {"workers": 1, "eval_every": 2, "checkpoint_every": 4, "log_every": 2}
    cfg = tiny_config(home, name="rounds", train=train, supervised={"steps": 6})
    ctx = prepare_job(cfg, "supervised", progress=False)
    record = home / "reports.jsonl"

    def run(config):
        run_stage(
            config,
            "supervised",
            shards=ctx.shards,
            profile=ctx.profile,
            run=None,
            out_dir=home / "out",
            callbacks=[_ReportRecorder(record)],
        )
        reports = [json.loads(line) for line in record.read_text().splitlines()]
        record.unlink()
        # the controller polls often enough that a short stage is not spent waiting on it
        assert {r["poll_s"] for r in reports} == {HEALTH_CHECK_INTERVAL_S}
        return [(r["step"], r["eval_round"], "val/abs_rel" in r, r["checkpoint"]) for r in reports]

    # evaluations at 2, 4, 6 reach Ray whether or not a checkpoint is due (checkpoints: 4, 6)
    assert run(cfg) == [(2, 1, True, False), (4, 2, True, True), (6, 3, True, True)]
    # resumed at step 6 and asked for 9: the checkpoint's evaluation is reported again (a sweep
    # driver stopped before it reached Tune restores an older view), rounds continue at 4, the
    # last step is round 5
    longer = cfg.model_copy(update={"supervised": cfg.supervised.model_copy(update={"steps": 9})})
    assert run(longer) == [(6, 3, True, False), (8, 4, True, True), (9, 5, True, True)]
    # resumed at its last step: nothing left to train, and the final evaluation still reaches Ray
    assert run(longer) == [(9, 5, True, False)]
