"""RunLogger: exactly-once metrics across crashes, rank-0 only, params, tags, artifacts."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from mlflow import MlflowClient
from PIL import Image

from depthkd.errors import ConfigError
from depthkd.tracking.logger import RunLogger
from depthkd.tracking.runs import JobRun, open_job_run


@pytest.fixture
def run(home: Path) -> JobRun:
    return open_job_run(experiment="distill", job_id="job-1", home=home)


def _history(run: JobRun, key: str) -> list[tuple[int, float]]:
    metrics = MlflowClient(run.tracking_uri).get_metric_history(run.run_id, key)
    return sorted((m.step, m.value) for m in metrics)


def test_metrics_are_written_only_by_flush_and_exactly_once_across_a_crash(run: JobRun) -> None:
    logger = RunLogger(run, system_metrics_interval=None)
    for step in (1, 2, 3):
        logger.log_metrics({"loss": float(step), "lr": 0.1}, step)
    assert _history(run, "loss") == []  # buffered
    assert logger.flush() == 6  # the checkpoint at step 3
    for step in (4, 5):
        logger.log_metrics({"loss": float(step), "lr": 0.1}, step)
    del logger  # the worker dies: steps 4 and 5 were never flushed

    resumed = open_job_run(experiment="distill", job_id="job-1")
    assert resumed.resumed and resumed.run_id == run.run_id
    logger = RunLogger(resumed, system_metrics_interval=None)
    for step in (4, 5, 6):  # the resumed job restarts after the step-3 checkpoint
        logger.log_metrics({"loss": 10.0 * step, "lr": 0.1}, step)
    logger.close()
    assert _history(run, "loss") == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0), (6, 60.0)]
    assert [s for s, _ in _history(run, "lr")] == [1, 2, 3, 4, 5, 6]


def test_replayed_steps_after_a_flush_are_not_duplicated(run: JobRun) -> None:
    # Flushed through step 3, then crashed before the step-3 checkpoint became durable: the job
    # resumes from step 0 and logs steps 1..3 again.
    logger = RunLogger(run, system_metrics_interval=None)
    for step in (1, 2, 3):
        logger.log_metrics({"loss": float(step)}, step)
    logger.flush()
    logger = RunLogger(run, system_metrics_interval=None)
    for step in range(1, 7):
        logger.log_metrics({"loss": 100.0 + step, "new": 1.0}, step)
    assert logger.flush() == 3 + 6
    assert _history(run, "loss") == [
        (1, 1.0),
        (2, 2.0),
        (3, 3.0),
        (4, 104.0),
        (5, 105.0),
        (6, 106.0),
    ]
    assert [s for s, _ in _history(run, "new")] == [1, 2, 3, 4, 5, 6]


def test_same_key_and_step_twice_keeps_the_last_value(run: JobRun) -> None:
    with RunLogger(run, system_metrics_interval=None) as logger:
        logger.log_metrics({"loss": 1.0}, 7)
        logger.log_metrics({"loss": torch.tensor(2.0)}, 7)  # type: ignore[dict-item]
    assert _history(run, "loss") == [(7, 2.0)]


def test_flush_chunks_past_the_batch_limit(run: JobRun) -> None:
    logger = RunLogger(run, system_metrics_interval=None)
    for step in range(1200):
        logger.log_metrics({"a": step, "b": -step}, step)
    assert logger.flush() == 2400
    assert len(_history(run, "a")) == 1200 and len(_history(run, "b")) == 1200


def test_a_crash_inside_the_context_drops_the_buffer(run: JobRun) -> None:
    with pytest.raises(RuntimeError), RunLogger(run, system_metrics_interval=None) as logger:
        logger.log_metrics({"loss": 1.0}, 1)
        raise RuntimeError("worker died")
    assert _history(run, "loss") == []


def test_other_ranks_log_nothing_and_never_contact_mlflow(run: JobRun, tmp_path: Path) -> None:
    nowhere = JobRun("sqlite:////nonexistent/dir/mlflow.db", "1", "0" * 32)
    for job_run in (run, nowhere):
        logger = RunLogger(job_run, rank=1, system_metrics_interval=0.05)
        logger.log_metrics({"loss": 1.0}, 1)
        logger.log_params({"a": 1})
        logger.set_tags({"t": "x"})
        logger.log_text("x", "x.txt")
        logger.log_dict({"a": 1}, "a.json")
        (tmp_path / "f.txt").write_text("f")
        logger.log_artifact(tmp_path / "f.txt")
        batch = torch.rand(1, 3, 8, 8)
        logger.log_image_grid(1, batch, batch[:, :1], batch[:, :1], max_depth=1.0)
        assert logger.flush() == 0
        logger.close()
    data = MlflowClient(run.tracking_uri).get_run(run.run_id).data
    assert data.metrics == {} and data.params == {} and "t" not in data.tags
    assert MlflowClient(run.tracking_uri).list_artifacts(run.run_id) == []


CONFIG = {
    "model": {
        "max_depth": 10.0,
        "student": {"name": "mobilenetv2_050", "decoder_channels": [8, 8, 8, 8], "weights": None},
    },
    "train": {"lr": 0.001, "amp": True, "extras": {}},
}
FLAT = {
    "model.max_depth": "10.0",
    "model.student.name": "mobilenetv2_050",
    "model.student.decoder_channels": "[8, 8, 8, 8]",
    "model.student.weights": "None",
    "train.lr": "0.001",
    "train.amp": "True",
    "train.extras": "{}",
}


def test_params_round_trip_and_a_changed_value_on_resume_names_the_key(run: JobRun) -> None:
    RunLogger(run, system_metrics_interval=None).log_params(CONFIG)
    client = MlflowClient(run.tracking_uri)
    assert client.get_run(run.run_id).data.params == FLAT

    resumed = RunLogger(open_job_run(experiment="distill", job_id="job-1"))
    resumed.log_params(CONFIG)  # identical: skipped
    resumed.log_params({**CONFIG, "seed": 3})  # new keys are added
    assert client.get_run(run.run_id).data.params == {**FLAT, "seed": "3"}
    changed = {**CONFIG, "train": {**CONFIG["train"], "lr": 0.01}}
    with pytest.raises(ConfigError, match=r"'train\.lr' was '0\.001', now '0\.01'") as info:
        resumed.log_params(changed)
    assert info.value.hint is not None and "job id" in info.value.hint
    resumed.close()


def test_many_and_long_params(run: JobRun) -> None:
    logger = RunLogger(run, system_metrics_interval=None)
    logger.log_params({f"p{i:03d}": i for i in range(250)} | {"long": "x" * 7000})
    params = MlflowClient(run.tracking_uri).get_run(run.run_id).data.params
    assert len(params) == 251 and params["p249"] == "249"
    assert params["long"] == "x" * 6000
    logger.log_params({"long": "x" * 7000})  # the same value again, after truncation


def test_tags_text_dict_artifact_and_image_grid(run: JobRun, tmp_path: Path) -> None:
    logger = RunLogger(run, system_metrics_interval=None)
    logger.set_tags({f"t{i}": i for i in range(150)})
    logger.set_tags({"t0": "changed"})
    logger.log_text("a: 1\n", "config/resolved.yaml")
    logger.log_dict({"abs_rel": 0.1}, "eval/metrics.json")
    (tmp_path / "report.txt").write_text("ok")
    logger.log_artifact(tmp_path / "report.txt", "reports")
    rgb = torch.rand(6, 3, 12, 16)
    gt = torch.rand(6, 1, 12, 16) * 10
    logger.log_image_grid(42, rgb, gt, gt * 1.1, max_depth=10.0, max_images=3)
    logger.close()

    client = MlflowClient(run.tracking_uri)
    tags = client.get_run(run.run_id).data.tags
    assert tags["t0"] == "changed" and tags["t149"] == "149"
    dst = Path(client.download_artifacts(run.run_id, "", str(tmp_path / "dl")))
    assert (dst / "config/resolved.yaml").read_text() == "a: 1\n"
    assert json.loads((dst / "eval/metrics.json").read_text()) == {"abs_rel": 0.1}
    assert (dst / "reports/report.txt").read_text() == "ok"
    grid = np.asarray(Image.open(dst / "images/eval_step_0000042.png"))
    assert grid.shape == (3 * 12, 4 * 16, 3) and grid.dtype == np.uint8


def test_system_metrics_are_sampled_and_stopped(run: JobRun) -> None:
    logger = RunLogger(run, system_metrics_interval=0.1)
    time.sleep(0.5)
    logger.close()
    metrics = MlflowClient(run.tracking_uri).get_run(run.run_id).data.metrics
    assert "system/cpu_utilization_percentage" in metrics
    logger.close()  # twice is fine


def test_missing_system_metrics_dependencies_do_not_fail(
    run: JobRun, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As if psutil were missing: the monitor module cannot be imported.
    monkeypatch.setitem(sys.modules, "mlflow.system_metrics.system_metrics_monitor", None)
    logger = RunLogger(run, system_metrics_interval=0.1)
    logger.log_metrics({"loss": 1.0}, 1)
    logger.close()
    assert _history(run, "loss") == [(1, 1.0)]
